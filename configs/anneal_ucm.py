"""ANNEAL active learning on UC Merced (Hoxha, Sumbul et al., Sec. IV).

python launch.py --config configs/anneal_ucm.py --workdir workdirs/anneal \
    --config.al.strategy=mgue --config.al.rounds=4 --config.seed=0

Strategies: random, mgue, bcgue, mgue_nodiv, bcgue_nodiv, cal, and
`--config.al.upper_bound=True` (all training pairs). Trials: --config.seed
(the initial set; the paper averages 3). Data: the UC Merced folder at
data.manual_dir, split 80/10/10 (preset "anneal"); mAP@5 with queries from
validation and archive = test.

al.frozen_backbone=True (the default, CPU mode): frozen EfficientNet-Lite0
ImageNet features (ResNet-18 ImageNet weights cannot be had offline here,
1280-d, cached once), then the trainable layers: the backbone top
model.frozen_top (Dense 512 + ReLU), the projection head, the BCGUE pair
classifier on the top's outputs, CAL's class head on the projection.

Retrieval, eval.retrieval_features: "backbone" (default) as the paper
(Sec. IV-B: "the projection head is discarded and the feature
representations obtained from the backbone (i.e., ResNet18) are used to
perform CBIR"), by cosine similarity, the similarity s of the metric space
(Sec. III-A, eq. 1); "projection": the projection head's output. "Backbone
features" means the input of the projection head in both modes: with the
backbone fine-tuned, its pooled output; in the CPU mode the output of the
trainable top, which stands in for the fine-tuned end of the backbone
(frozen features alone do not depend on the labels, so every strategy
would retrieve alike; 512 = ResNet-18's feature width). frozen_top=()
gives the former head-only model, where "backbone" ranks the frozen
features. Each round records both kinds: map@5 (the chosen one) and
projection_map@5 / backbone_map@5 (the other).

al.frozen_backbone=False (the paper's setting, for GPUs): the backbone is
fine-tuned with the heads on the images (rs_jax/active_learning/finetune.py),
from model.weights ("imagenet" for EfficientNet-Lite0, an .npz file, or ""
for a random init), batches sharded over all devices (train.batch_size and
eval.batch_size: multiples of the device count). For the paper's schedule
(15 epochs of the labeled set per round) also set
--config.train.min_batches_per_epoch=0.
"""
import ml_collections

from configs import raw_data


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.task = "active_learning.anneal"
  config.seed = 0  # trial: the initial set and every random draw

  config.data = ml_collections.ConfigDict()
  config.data.name = "ucmerced"
  config.data.data_dir = "data"  # relative paths are inside the workdir
  config.data.manual_dir = raw_data.raw_dir("ucmerced")  # or set it
  config.data.options = ml_collections.ConfigDict(dict(splits="anneal",
                                                       seed=0))
  config.data.image_size = 256  # a few UC Merced images are 247-256 px
  config.data.inputs = ("image",)
  config.data.label_key = "label"
  config.data.train_split = "train"

  config.model = ml_collections.ConfigDict()
  config.model.backbone = "efficientnet_lite0"
  config.model.weights = "imagenet"
  config.model.feature_views = 1
  config.model.crop_padding = 0
  config.model.projection_hidden = 512  # Sec. IV-B: 512 and 256 units
  config.model.projection_features = 256
  config.model.pair_hidden = (512, 256)  # BCGUE classifier (not in the paper)
  # CPU mode only: trainable Dense + ReLU widths on the frozen features; their
  # output is the backbone feature (retrieval, BCGUE's input). See above.
  config.model.frozen_top = (512,)

  config.al = ml_collections.ConfigDict()
  config.al.strategy = "mgue"
  config.al.rounds = 10
  config.al.h = 336  # pairs (bits) per round
  config.al.initial_fraction = 0.05
  config.al.num_similar = 4
  config.al.num_dissimilar = 4
  config.al.initial_cost = "class_labels"  # 84 images x log2 21 = 369 bits
  config.al.lam = 3.0  # MGUE lambda, eq. 7
  config.al.p_factor = 4  # p = 4h
  config.al.kmeans_iters = 50
  config.al.pool_size = 0  # 0: U = all training pairs not in T
  config.al.rule = "any_shared"
  config.al.oracle = "simulated"  # or "file": CSVs under WORKDIR/queries
  config.al.frozen_backbone = True
  config.al.upper_bound = False

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 15
  config.train.batch_size = 128
  config.train.lr = 1e-4
  config.train.margin = 0.5  # m of eq. 1
  config.train.gamma = 0.5  # eq. 11; the paper does not give its value
  config.train.upper_bound_steps = 20000  # batches from all training pairs
  # CPU mode: an epoch has at least this many batches (repeated passes), so
  # a fresh head on frozen features trains on small labeled sets too (CAL's
  # first 84 images are one batch; the paper fine-tunes a whole network).
  config.train.min_batches_per_epoch = 20
  # al.frozen_backbone=False: a split's images are kept in host memory
  # (uint8) when they take at most this many MiB, else read batch by batch.
  config.train.image_cache_mb = 4096

  config.eval = ml_collections.ConfigDict()
  config.eval.query_split = "validation"
  config.eval.database_split = "test"
  config.eval.batch_size = 64
  config.eval.retrieval_features = "backbone"  # or "projection"; see above
  return config
