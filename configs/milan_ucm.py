"""MiLaN (Roy, Sangineto, Demir, Sebe, IEEE GRSL 2021) on UC Merced.

python launch.py --config configs/milan_ucm.py --workdir workdirs/milan_ucm \\
    --config.data.manual_dir=/path/to/ucmerced --config.model.bits=16

Every number is the paper's (Sec. II-III) unless noted:
- Features: a frozen ImageNet network (the paper: Inception-v3 pool3,
  2048-d; by default EfficientNet-Lite0's pooled 1280-d features, the only
  ImageNet weights available offline), computed once and cached
  (rs_jax/features.py). The paper's features: convert torchvision's
  Inception-v3 weights (`python -m rs_jax.models.convert --arch
  inception_v3 ...`), then --config.model.backbone=inception_v3
  --config.model.weights=inception_v3.npz (299x299, ImageNet mean/std).
- Hash network f: Dense 1024 -> LeakyReLU -> Dense 512 -> LeakyReLU -> Dense K
  -> sigmoid; codes b = (sign(v - 0.5) + 1) / 2 (eq. 5).
- Loss (eq. 4): triplet (eq. 1, margin alpha = 0.2) + lambda1 = 0.001 push
  (eq. 2) + lambda2 = 1 bit balance (eq. 3). The triplet term is the mean
  over the M triplets (eq. 1 sums) of L2-normalised outputs, as the authors'
  code (MHCLN trainer.py) computes it; eq. 1 as printed uses the raw sigmoid
  outputs, where margin 0.2 is small against squared distances up to K and
  the loss stops acting early (UCM, K = 16, 10000 steps, seed 0: test
  mAP@20 0.840 raw vs 0.884 normalised; --config.loss.options.triplet.
  normalize=False gives the printed form). Push and bit balance use
  form="code", the mean over the batch rows, which keeps eq. 4's relative
  weights (every term of eq. 4 is a sum over the same mini-batch) and is
  what the authors' code computes.
- Batches: M = 30 random triplets (anchor and positive of one class, negative
  of another), rows [anchors; positives; negatives].
- Adam, lr 1e-4, beta1 0.5, beta2 0.9, constant rate.
- Split ("milan" preset): 60 % of each class for training of which 20 images
  per class are the validation set (model selection), 40 % test. Queries =
  archive = test, the query itself excluded; mAP@20 (both normalisations are
  reported: map@20 by the relevant retrieved, map_r@20 by min(20, R)).
- Training length: not stated in the paper; the authors' code runs 10000
  iterations. Validation every 500 steps keeps the best by val mAP@20.

The authors' protocol (configs/milan_ucm.py:authors, or "aid,authors"), as
their code (MHCLN UCMD/dataset_generator.py, trainer.py) runs it rather than
as the paper describes it:
- Train on the whole 60 % (UCM: 1,260 images = our "train" + "validation"
  splits of the "milan" preset; the same 840 test images), no validation
  split and so no model selection: the state after the last step is tested.
- Batches of their get_triplets: per step one random class gives the 30
  anchors and 30 positives (60 distinct images: with 60 training images per
  class, the whole class) and one other random class the 30 negatives
  (sampler "triplet", option two_classes). The paper says only that anchors
  are drawn at random, positives from the anchor's class and negatives from
  another class (Sec. II), which is what the default sampler does per
  triplet.
- Everything else as above (10000 iterations, Adam 1e-4 / 0.5 / 0.9, the
  L2-normalised triplet term, push / K and bit balance as batch means).
The authors' split takes the first 60 images of each class in file order;
ours is the seeded per-class permutation of the "milan" preset.

Ablations: --config.loss.weights.push=1 --config.loss.weights.bit_balance=1
(paper: lambda1 = lambda2 = 1) etc.; semi-hard mining:
--config.train.sampler=pk with loss triplet_mined (see benchmarks/milan_table.py).
"""
import ml_collections

from configs import raw_data


def authors_protocol(config):
  """Returns a copy of a MiLaN config switched to the authors' protocol
  (module docstring): train on train + validation, no validation, two-class
  triplet batches."""
  config = config.copy_and_resolve_references()
  config.data.train_split = "train+validation"
  config.eval.val_query_split = config.eval.val_database_split = ""
  with config.unlocked():  # a locked command-line config has no such field
    config.train.sampler_options = ml_collections.ConfigDict(
        dict(two_classes=True))
  return config


def get_config(arg=None):
  """arg: "DATASET" or "DATASET,authors": the dataset "ucmerced" (default)
  or "aid" (configs/milan_aid.py); "authors" alone is UC Merced with the
  authors' protocol (module docstring)."""
  names = [a for a in (arg or "").split(",") if a]
  authors = "authors" in names
  names = [a for a in names if a != "authors"] or ["ucmerced"]
  dataset = names[0]
  if len(names) > 1 or dataset not in ("ucmerced", "aid"):
    raise ValueError(f"dataset must be 'ucmerced' or 'aid' (optionally "
                     f"',authors'), got {arg!r}")
  config = ml_collections.ConfigDict()
  config.task = "train_task"
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = dataset
  config.data.data_dir = "data"  # relative paths are inside the workdir
  config.data.manual_dir = raw_data.raw_dir(dataset)  # class folders
  config.data.options = ml_collections.ConfigDict(dict(splits="milan", seed=0))
  config.data.inputs = ("image",)
  config.data.label_key = "label"
  config.data.train_split = "train"

  config.model = ml_collections.ConfigDict()
  config.model.backbone = "efficientnet_lite0"
  config.model.weights = "imagenet"
  config.model.frozen = True
  config.model.feature_views = 1  # 8: also the flips/rotations of train images
  config.model.crop_padding = 0  # whole image resized to 224 (299)
  # inception_v3 only: torchvision's input mapping; False for timm's gluon
  # weights (rs_jax/models/inception.py).
  config.model.transform_input = True
  config.model.bits = 32
  config.model.head_hidden = (1024, 512)

  config.loss = ml_collections.ConfigDict()
  config.loss.weights = ml_collections.ConfigDict(dict(
      triplet=1.0, push=0.001, bit_balance=1.0))
  config.loss.options = ml_collections.ConfigDict(dict(
      triplet=dict(margin=0.2, normalize=True), push=dict(form="code"),
      bit_balance=dict(form="code")))

  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-4, b1=0.5, b2=0.9, weight_decay=0.0,
      schedule="constant", warmup_steps=0, grad_clip=0.0))

  config.train = ml_collections.ConfigDict(dict(
      steps=10000, batch_size=90, sampler="triplet", augment=False,
      log_every=500, checkpoint_every=10000))

  config.eval = ml_collections.ConfigDict(dict(
      every=500, batch_size=256, ks=(5, 20, 50), select="map@20",
      query_split="test", database_split="test",
      val_query_split="validation", val_database_split="validation"))
  return authors_protocol(config) if authors else config
