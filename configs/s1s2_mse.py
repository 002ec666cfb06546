"""S1/S2 deep hashing with the thesis' MSE loss (H. Bank, M.Sc. thesis, TU
Berlin 2020, Sec. 3.1), on BigEarthNet-MM.

python launch.py --config configs/s1s2_mse.py --workdir workdirs/s1s2_mse \
    --config.data.manual_dir=/path/to/bigearthnet-mm \
    --config.model.bits=32 --config.model.backbone=resnet18
python launch.py --config configs/s1s2_mse.py:synthetic --workdir ...

Model: one ResNet-50 per modality (S1: VV, VH; S2: 12 bands) -> one linear
layer to K bits -> sigmoid (thesis Sec. 3; `head_hidden=()`).
Loss (eq. 3.2): mse_cosine_label (eqs. 3.4-3.13: intra-S1, intra-S2, inter
same-place with target 1, inter different-place; weights 0.33 / 0.33 / 0.33
and 0.5 / 0.5; partners = adjacent rows of the shuffled batch, Fig. 3.1)
+ 0.001 push + 1 balancing, each on both networks (`losses.s1s2_push`, `losses.s1s2_balance`).
The thesis prints push / balancing as sums over the batch (eqs. 2.5, 2.6)
next to a mean-reduced main loss (eq. 2.2); we use their batch means
(form="code") so lambda1 / lambda2 keep their weight relative to the main
loss at any batch size; form="paper" restores the printed sums.
Optimiser: Adam lr 1e-3, weight decay 1e-4 coupled as torch.optim.Adam
(thesis Sec. 3), batch 200 S1/S2 pairs, 10 epochs. Splits 50 / 25 / 25 %
(thesis Sec. 2.4; use data.options.split_csvs for official lists).
Protocol (thesis): queries = test, archive = validation; the best epoch by
validation mAP@20 (validation queries against the validation archive, the
query itself left out within a modality); all four directions S1->S1,
S1->S2, S2->S1, S2->S2 are scored ("s1->s2/map@20" ...).

arg: comma-separated words (python launch.py --config FILE:labels_43,...):
  synthetic  the generated two-modality archive (rs_jax/data/synthetic.py;
             32x32 px, 8 labels) instead of BigEarthNet, with the
             small-input ResNet stem;
  labels_43  the thesis' label set: the 43 CORINE classes of BigEarthNet v1
             (default: BigEarthNet-19);
  reben      BigEarthNet v2 (reBEN: official splits, 19 classes) instead of
             v1.
The thesis' Serbia subset: with v1, --config.data.options.include_csvs=
serbia_patches.csv (a list of the Serbia S2 or S1 patch names); with reben,
--config.data.options.countries=Serbia. S2 bands are read at 120 x 120 with
data.read_options.resampling (nearest, bilinear, bicubic).
python -m rs_jax.data.prepare_cli --config configs/s1s2_mse.py ... prepares
exactly this data section beforehand (else the first run prepares it).
"""
import ml_collections

# BigEarthNet Serbia in the thesis: 35,928 training pairs / 200 = 180 steps.
_STEPS_PER_EPOCH = 180


def get_config(arg=None):
  words = {w.strip() for w in (arg or "").split(",") if w.strip()}
  unknown = words - {"synthetic", "labels_43", "reben"}
  if unknown or {"labels_43", "reben"} <= words:
    raise ValueError(f"config arg {arg!r}: expected comma-separated words "
                     "from synthetic, labels_43, reben (reBEN has no 43-class "
                     "labels)")
  synthetic = "synthetic" in words
  config = ml_collections.ConfigDict()
  config.task = "train_task"
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = "data"  # relative paths are inside the workdir
  config.data.inputs = ("s1", "s2")
  config.data.train_split = "train"
  splits = dict(train=0.5, validation=0.25, test=0.25)
  if synthetic:
    config.data.name = "synthetic"
    config.data.manual_dir = ""
    config.data.label_key = "labels"
    config.data.options = ml_collections.ConfigDict(dict(
        num_examples=3000, size=32, num_labels=8, seed=0, splits=splits))
  elif "reben" in words:
    config.data.name = "bigearthnet_v2/mm"
    config.data.manual_dir = ""  # metadata.parquet + the LMDB or folders
    config.data.label_key = "labels_19"
    config.data.read_options = ml_collections.ConfigDict(dict(
        resampling="nearest"))
    config.data.options = ml_collections.ConfigDict(dict(
        seed=0, countries="", include_snow_cloud=False))
  else:
    config.data.name = "bigearthnet/mm"
    config.data.manual_dir = ""  # the folder holding the S1 and S2 roots
    config.data.label_key = ("labels_43" if "labels_43" in words
                             else "labels_19")
    config.data.read_options = ml_collections.ConfigDict(dict(
        resampling="nearest"))
    # split_csvs: "train=a.csv,validation=b.csv,test=c.csv" (official
    # lists) replaces the ratios; the *_csvs take "a.csv,b.csv".
    config.data.options = ml_collections.ConfigDict(dict(
        seed=0, splits=splits, split_csvs="", include_csvs="",
        exclude_csvs=""))

  config.model = ml_collections.ConfigDict()
  config.model.backbone = "resnet50"
  config.model.width = 64
  config.model.small_inputs = synthetic
  config.model.bits = 32
  config.model.head_hidden = ()
  config.model.weights = ""  # or an .npz of backbone weights (fine-tuning)
  config.model.frozen = False

  config.loss = ml_collections.ConfigDict()
  config.loss.weights = ml_collections.ConfigDict(dict(
      mse_cosine_label=1.0, s1s2_push=0.001, s1s2_balance=1.0))
  config.loss.options = ml_collections.ConfigDict(dict(
      mse_cosine_label=dict(pairing="adjacent"),
      s1s2_push=dict(form="code"), s1s2_balance=dict(form="code")))

  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=1e-4,
      schedule="constant", warmup_steps=0, grad_clip=0.0))

  epoch = 8 if synthetic else _STEPS_PER_EPOCH  # 1500 / 200 synthetic pairs
  config.train = ml_collections.ConfigDict(dict(
      steps=10 * epoch, batch_size=200, sampler="random", augment=False,
      log_every=min(epoch, 50), checkpoint_every=epoch))

  config.eval = ml_collections.ConfigDict(dict(
      every=epoch, batch_size=200, ks=(20, 50),
      select="mean/map@20",  # the average of the four directions
      query_split="test", database_split="validation",
      val_query_split="validation", val_database_split="validation"))
  return config
