"""The embedded demo: a hash encoder trained on a generated S2-like archive.

python launch.py --config configs/demo.py --workdir workdirs/demo

Data: the `synthetic` archive (rs_jax/data/synthetic.py), 12-band 32x32
patches with 1-3 of 8 labels, prepared into WORKDIR/data on first use.
Model: a narrow ResNet-18 (width 16, small-input stem) -> hash MLP -> 32
bits. Loss: batch-all triplet on multi-label relevance (share >= 1 label)
+ push + bit balance (MiLaN eqs. 1-4). Protocol: queries and archive = the
test split, the query itself excluded (MiLaN); validation picks the best
checkpoint by mAP@20. Runs in about 2 minutes on a 2-core CPU.
"""
import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.task = "train_task"
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "synthetic"
  config.data.data_dir = "data"  # relative paths are inside the workdir
  config.data.manual_dir = ""
  config.data.options = ml_collections.ConfigDict(dict(
      num_examples=3000, size=32, num_labels=8, seed=0,
      splits=dict(train=0.6, validation=0.1, test=0.3)))
  config.data.inputs = ("s2",)
  config.data.label_key = "labels"
  config.data.train_split = "train"

  config.model = ml_collections.ConfigDict()
  config.model.backbone = "resnet18"
  config.model.width = 16
  config.model.small_inputs = True
  config.model.bits = 32
  config.model.head_hidden = (256,)
  config.model.weights = ""  # or an .npz of backbone weights (fine-tuning)
  config.model.frozen = False

  config.loss = ml_collections.ConfigDict()
  config.loss.weights = ml_collections.ConfigDict(dict(
      triplet_mined=1.0, push=0.001, bit_balance=1.0))
  config.loss.options = ml_collections.ConfigDict(dict(
      triplet_mined=dict(margin=0.2, miner="batch_all"),
      bit_balance=dict(form="code")))

  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0,
      schedule="cosine", warmup_steps=20, grad_clip=0.0))

  config.train = ml_collections.ConfigDict(dict(
      steps=150, batch_size=64, sampler="random",
      # No flips/rotations: texture orientation tells labels apart here.
      augment=False, log_every=25, checkpoint_every=75))

  config.eval = ml_collections.ConfigDict(dict(
      every=75, batch_size=256, ks=(5, 20, 50), select="map@20",
      query_split="test", database_split="test",
      val_query_split="validation", val_database_split="validation"))
  return config
