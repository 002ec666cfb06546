"""Classification-based deep hashing on UC Merced: a class head on the hash
layer, trained with softmax CE (21 classes) or sigmoid BCE (17 labels).

python launch.py --config configs/dhcnn_ucm.py --workdir workdirs/dhcnn_ucm \\
    --config.data.manual_dir=/path/to/ucmerced            # multi-label, BCE
python launch.py --config configs/dhcnn_ucm.py:single ...  # 21 classes, CE

The family (survey: Sumbul, Kang, Demir, "Deep learning for image search and
retrieval in large remote sensing archives", Sec. 11.3 and Table 11.2):
DHCNN (Song et al. 2019) joins "(i) the contrastive loss function; (ii) the
cross-entropy loss function (which aims at increasing the class
discrimination capability of hash codes); and (iii) the quantization loss.
In order to predict the classes based on the hash codes, a FC layer is
connected to the hash layer". (DHNN, Li et al. 2018b, the survey's first
example, uses the contrastive and quantization losses only, with no class
head; the classification-based member is DHCNN.) The survey gives no
hyperparameters and Song et al. is not in our papers, so ours are stated
here as choices:
- Features, hash network, split, optimiser, validation: as
  configs/milan_ucm.py (frozen ImageNet EfficientNet-Lite0 features, Dense
  1024 -> 512 -> K sigmoid, split preset "milan", Adam 1e-4).
- Class head: one Dense layer on the sigmoid outputs v, logits = v W + b
  (model.num_classes; `rs_jax.models.heads.ClassHead`).
- Loss: class term (weight 1) + 0.01 quantization (mean_i ||v_i - b_i||^2,
  b the binarized v). Multi-label (arg "multi", the default): labels = the
  17-d multi-hot vectors of `multilabels.tsv` (Chaudhuri et al., IEEE TGRS
  2018; data.options.multilabels, a path inside manual_dir), sigmoid BCE
  (thesis eq. 2.3). Single-label (arg "single"): the 21 classes, softmax CE.
  DHCNN's contrastive term is available and off:
  --config.loss.weights.contrastive=1 --config.train.sampler=pairs.
- Batches: 90 random training images; 3000 steps (benchmarks/multilabel_ucm.py
  trains 1500: validation mAP@20 is flat after a few hundred).
"""
from configs import milan_ucm

MULTI, SINGLE = "multi", "single"


def get_config(arg=None):
  """arg: "multi" (default; 17 labels, BCE) or "single" (21 classes, CE)."""
  labels = arg or MULTI
  if labels not in (MULTI, SINGLE):
    raise ValueError(f"arg must be {MULTI!r} or {SINGLE!r}, got {labels!r}")
  config = milan_ucm.get_config("ucmerced")
  config.data.options.multilabels = ""  # "": the 21-class label only
  if labels == MULTI:
    config.data.options.multilabels = "multilabels.tsv"
    config.data.label_key = "labels"
    config.model.num_classes = 17
    class_loss = "sigmoid_bce"
  else:
    config.model.num_classes = 21
    class_loss = "cross_entropy"
  config.loss.weights = {class_loss: 1.0, "quantization": 0.01,
                         "contrastive": 0.0}
  config.loss.options = {"contrastive": {"margin": 1.0}}
  config.train.sampler = "random"
  config.train.steps = 3000
  config.train.log_every = 500
  config.train.checkpoint_every = 3000
  return config
