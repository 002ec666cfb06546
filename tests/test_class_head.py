"""Classification-based deep hashing: a class head on the hash layer trained
with softmax CE (class ids) and sigmoid BCE (multi-hot) through
`train.loss_inputs`, on tiny UC Merced-named folders with the real
multi-label TSV; loss values against NumPy; checkpoints, `load_trained` and
index building with the extra parameters; config errors."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from configs import dhcnn_ucm
from rs_jax import index_build
from rs_jax import input_pipeline
from rs_jax import losses
from rs_jax import optimizers
from rs_jax import train
from rs_jax import trained
from rs_jax.data import rgb_folders
from rs_jax.models import encoder as encoder_lib

from tests import shared_data
from tests.test_train import tiny_config


def real_tsv():
  """The real multilabels.tsv, read in place (skips where it is absent)."""
  return shared_data.real("ucmerced") + "/multilabels.tsv"


SETTINGS = {  # label key -> (num_classes, class loss)
    "label": (21, "cross_entropy"), "labels": (17, "sigmoid_bce")}


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
  """21 class folders x 4 images of 8 x 8 px under the real UCM names."""
  root = tmp_path_factory.mktemp("ucm_raw")
  rng = np.random.default_rng(0)
  for c in rgb_folders.UCMERCED_CLASSES:
    (root / c).mkdir()
    for i in range(4):
      Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
          root / c / f"{c}{i:02d}.png")
  return root


def class_config(raw_dir, data_dir, label_key, **overrides):
  """A tiny ResNet run (2 steps) on the folders; the class term weight 1,
  0.1 quantization."""
  num_classes, loss = SETTINGS[label_key]
  config = tiny_config(data_dir, **{
      "data.name": "ucmerced", "data.manual_dir": str(raw_dir),
      "data.options": dict(multilabels=real_tsv(),
                           splits=dict(train=0.5, test=0.5)),
      "data.inputs": ("image",), "data.label_key": label_key,
      "model.num_classes": num_classes, "train.steps": 2, "eval.every": 2,
      "eval.val_query_split": "", "eval.val_database_split": "",
      **overrides})
  config.loss = ml_collections.ConfigDict(dict(
      weights={loss: 1.0, "quantization": 0.1}))
  return config


def np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _one_batch(label_key, batch_size=12, dim=10):
  """Random features with labels: class ids, or real rows of the TSV."""
  rng = np.random.default_rng(1)
  table = rgb_folders.read_multilabels(real_tsv())
  names = sorted(table)[::175][:batch_size]
  labels = (np.array([rgb_folders.UCMERCED_CLASSES.index(n[:-2])
                      for n in names]) if label_key == "label"
            else np.stack([table[n] for n in names]))
  return {"image": rng.normal(size=(batch_size, dim)).astype(np.float32),
          label_key: labels}


@pytest.mark.parametrize("label_key", ["label", "labels"])
def test_one_step_losses_equal_numpy(label_key):
  num_classes, class_term = SETTINGS[label_key]
  config = dhcnn_ucm.get_config("single" if label_key == "label" else None)
  config.model.head_hidden = (32,)
  config.model.bits = 16
  config.loss.weights = {class_term: 1.0, "quantization": 0.1}
  batch = jax.tree.map(jnp.asarray, _one_batch(label_key))
  models = {"image": encoder_lib.HashEncoder(
      backbone=None, bits=16, head_hidden=(32,), num_classes=num_classes)}
  tx, schedule = optimizers.create_optimizer(config.optim, 3)
  state = train.create_train_state(config, models, {"image": (10,)}, tx,
                                   pretrained=False)
  assert state["params"]["image"]["class_head"]["out"]["kernel"].shape == (
      16, num_classes)
  loss_fn = losses.combine(config.loss.weights.to_dict())
  step = jax.jit(train.make_train_step(
      models, tx, schedule, loss_fn, {}, label_key=label_key,
      sampler="random", with_logits=True))
  outputs, logits, _ = encoder_lib.encode(
      models, state["params"], state["batch_stats"], batch, {},
      train=True, with_logits=True)
  v, x = (np.asarray(outputs["image"], np.float64),
          np.asarray(logits["image"], np.float64))
  head = state["params"]["image"]["class_head"]["out"]
  # The head reads the relaxed (sigmoid) hash layer: logits = v W + b.
  np.testing.assert_allclose(x, v @ np.asarray(head["kernel"]) +
                             np.asarray(head["bias"]), rtol=1e-4, atol=1e-5)
  y = np.asarray(batch[label_key])
  if label_key == "label":
    expected = np.mean(np.log(np.exp(x).sum(1)) - x[np.arange(len(y)), y])
  else:
    assert y.shape == (12, 17) and 0 < y.mean() < 1
    expected = -np.mean(y * np_log_sigmoid(x) + (1 - y) * np_log_sigmoid(-x))
  quant = np.mean(np.sum((v - (v >= 0.5)) ** 2, 1))
  new_state, scalars = step(state, batch)
  np.testing.assert_allclose(scalars[f"loss/{class_term}"], expected,
                             rtol=1e-5)
  np.testing.assert_allclose(scalars["loss/quantization"], quant, rtol=1e-5)
  np.testing.assert_allclose(scalars["loss"], expected + 0.1 * quant,
                             rtol=1e-5)
  # The class term's gradient reaches the head and the hash network.
  for part in ("class_head", "head"):
    before, after = (jax.tree.leaves(s["params"]["image"][part])
                     for s in (state, new_state))
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("label_key", ["label", "labels"])
def test_train_restore_and_index(raw_dir, tmp_path, label_key):
  workdir = tmp_path / "run"
  config = class_config(raw_dir, tmp_path / "data", label_key)
  results = train.train_and_evaluate(config, str(workdir),
                                     devices=jax.devices()[:1])
  assert np.isfinite(results["train/loss"])
  assert 0 <= results["test/map@10"] <= 1
  restored = trained.load_trained(workdir)
  assert restored.step == 2
  assert "class_head" in restored.state["params"]["image"]
  index = index_build.build_index(workdir, split="test")
  source = input_pipeline.load(config, workdir).sources["test"]
  images = np.stack([source[i]["image"] for i in range(len(source))])
  np.testing.assert_array_equal(index.codes, restored.encode("image", images))
  assert index.labels.shape == ((42,) if label_key == "label" else (42, 17))


def test_class_head_config_errors(raw_dir, tmp_path):
  config = class_config(raw_dir, tmp_path / "data", "labels")
  config.model.num_classes = 0
  with pytest.raises(ValueError, match="loss.weights.sigmoid_bce needs the "
                     "class head's logits: set model.num_classes"):
    train.check_config(config, 8)
  config.model.num_classes = -1
  with pytest.raises(ValueError, match="model.num_classes = -1"):
    train.check_config(config, 8)
  wrong = [("labels", dict(num_classes=21), "model.num_classes = 21: "
            "data.label_key = 'labels' has 17 labels"),
           ("label", dict(num_classes=20), "model.num_classes = 20: "
            "data.label_key = 'label' has class ids 0..20"),
           ("label", dict(loss="sigmoid_bce"), "loss.weights.sigmoid_bce "
            "takes multi-hot labels; data.label_key = 'label' holds class "
            "ids: use cross_entropy")]
  for case, (label_key, change, message) in enumerate(wrong):
    config = class_config(raw_dir, tmp_path / "data", label_key)
    if "num_classes" in change:
      config.model.num_classes = change["num_classes"]
    else:
      config.loss.weights = {change["loss"]: 1.0}
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(config, str(tmp_path / f"run{case}"))
  with pytest.raises(ValueError, match="with_logits=True: this encoder has no "
                     "class head"):
    encoder_lib.HashEncoder(backbone=None, bits=4).init(
        jax.random.key(0), jnp.zeros((2, 3)), with_logits=True)


def test_dhcnn_configs():
  multi, single = dhcnn_ucm.get_config(), dhcnn_ucm.get_config("single")
  assert (multi.data.label_key, multi.model.num_classes) == ("labels", 17)
  assert multi.data.options.multilabels == "multilabels.tsv"
  assert multi.loss.weights.sigmoid_bce == 1.0
  assert (single.data.label_key, single.model.num_classes) == ("label", 21)
  assert single.loss.weights.cross_entropy == 1.0
  train.check_config(multi, 1)
  train.check_config(single, 1)
  with pytest.raises(ValueError, match="arg must be 'multi' or 'single'"):
    dhcnn_ucm.get_config("both")
