"""Unsupervised contrastive hashing (NT-Xent on two views) on UC Merced.

python launch.py --config configs/contrastive_ucm.py --workdir workdirs/cl_ucm \\
    --config.data.manual_dir=/path/to/ucmerced --config.model.bits=32

No label is used for training or model selection (sampler "views":
`train.loss_inputs` passes the losses no labels); labels only score the
test split. Settings and where they come from:
- Data: the MiLaN split (preset "milan", the test split of
  benchmarks/milan_table.py); training on the 840 "train" images, whose
  labels are never read; the 420 "validation" images are not used (no
  model selection: the state after the last step is tested).
- Features and hash network: MiLaN's (configs/milan_ucm.py): frozen
  ImageNet EfficientNet-Lite0 pooled features (1280-d) -> Dense 1024 ->
  LeakyReLU -> Dense 512 -> LeakyReLU -> Dense K -> sigmoid; codes
  b = (sign(v - 0.5) + 1) / 2 (MiLaN eq. 5).
- The two views. With frozen features the encoder sees a cached feature
  vector, so images cannot be augmented after caching. The views are real
  image augmentations cached once: model.feature_views = 8 caches the
  features of the 8 flips / 90-degree rotations (dihedral group D4, exact
  for nadir imagery) of every training image (rs_jax/features.py), and
  each pair is two distinct of these 8 (sampler option view_key="index").
  This is weaker than SimCLR's random resized crops and colour distortion
  (Chen et al. 2020, Sec. 3): only 8 views per image, and the frozen
  ImageNet network is already nearly invariant to some of them.
- Loss: NT-Xent (SimCLR eq. 1, `losses.ntxent`) on the two views with
  temperature tau = 0.5 (SimCLR's setting for CIFAR-10) on the
  centred outputs v - 0.5 (offset 0.5: cosines of binary codes are
  1 - 2 Hamming / K), plus bit balance in the per-bit form (each bit on
  for half the batch: the prose of MiLaN Sec. II "each output neuron
  fires with 50% chance"), weight 1 as MiLaN's lambda2, plus the
  quantization loss (survey Sec. 11.3: pulls the outputs to the codes,
  mean_i ||v_i - b_i||^2) with weight 0.1; these two weights are ours,
  not a paper's (they were not tuned on labels).
- Batches: B = 128 images (256 rows [first views; second views]); SimCLR
  uses 256-8192, bounded here by the 840 training images.
- Adam lr 1e-4, beta1 0.5, beta2 0.9 (MiLaN's, for the same head), 3000
  steps (~450 epochs of the 840 images), constant rate.
Result (benchmarks/results/unsupervised_ucm_cpu.md, seed 0): test mAP@20
0.753 / 0.805 / 0.792 at K = 16 / 32 / 64, ITQ on the same features 0.702 /
0.766 / 0.800; at K = 32 over seeds 0-2 0.797 +- 0.009 (ITQ 0.766 +- 0.004).
This one setting was run; nothing was tuned.
"""
import ml_collections

from configs import raw_data


def get_config(arg=None):
  """Returns the config; arg is unused."""
  del arg
  config = ml_collections.ConfigDict()
  config.task = "train_task"
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "ucmerced"
  config.data.data_dir = "data"  # relative paths are inside the workdir
  config.data.manual_dir = raw_data.raw_dir("ucmerced")
  config.data.options = ml_collections.ConfigDict(dict(splits="milan", seed=0))
  config.data.inputs = ("image",)
  config.data.label_key = "label"  # read for the test metrics only
  config.data.train_split = "train"

  config.model = ml_collections.ConfigDict()
  config.model.backbone = "efficientnet_lite0"
  config.model.weights = "imagenet"
  config.model.frozen = True
  config.model.feature_views = 8  # the two views: 2 of the 8 D4 transforms
  config.model.crop_padding = 0
  config.model.transform_input = True  # inception_v3 only
  config.model.bits = 32
  config.model.head_hidden = (1024, 512)

  config.loss = ml_collections.ConfigDict()
  config.loss.weights = ml_collections.ConfigDict(dict(
      ntxent=1.0, bit_balance=1.0, quantization=0.1))
  config.loss.options = ml_collections.ConfigDict(dict(
      ntxent=dict(temperature=0.5, offset=0.5),
      bit_balance=dict(form="per_bit")))

  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-4, b1=0.5, b2=0.9, weight_decay=0.0,
      schedule="constant", warmup_steps=0, grad_clip=0.0))

  config.train = ml_collections.ConfigDict(dict(
      steps=3000, batch_size=256, sampler="views", augment=False,
      sampler_options=dict(view_key="index"), log_every=500,
      checkpoint_every=3000))

  config.eval = ml_collections.ConfigDict(dict(
      every=3000, batch_size=256, ks=(5, 20, 50), select="map@20",
      query_split="test", database_split="test",
      val_query_split="", val_database_split=""))
  return config
