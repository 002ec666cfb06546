"""Inception-v3 module: sizes, input checks, preprocessing, MiLaN features.

Its outputs against torchvision's are in tests/test_torch_checkpoints.py;
here shapes use `jax.eval_shape`, and one 299x299 compile checks that
`model.backbone=inception_v3` frozen features are the module's outputs on
`inception.preprocess`ed images.
"""
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import milan_ucm
from rs_jax import features
from rs_jax.models import encoder
from rs_jax.models import inception
from rs_jax.models import preprocessing
from rs_jax.models import torch_checkpoints
from rs_jax.models import weights
from tests import test_torch_checkpoints
from tools import make_torchvision_reference as ref

# torchvision 0.29.1 inception_v3(aux_logits=False, num_classes=1000).
TORCHVISION_PARAMS = 23_834_568


def _shapes(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False),
                       variables, x)
  return variables, out


def test_parameter_count_and_outputs():
  variables, out = _shapes(inception.InceptionV3(num_classes=1000),
                           (2, 299, 299, 3))
  assert sum(int(np.prod(v.shape)) for v in
             jax.tree.leaves(variables["params"])) == TORCHVISION_PARAMS
  assert out.shape == (2, 1000) and out.dtype == jnp.float32
  variables, out = _shapes(inception.InceptionV3(), (2, 75, 75, 12))
  assert out.shape == (2, inception.FEATURE_DIM)
  assert variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"].shape == (
      3, 3, 12, 32)


def test_input_errors():
  with pytest.raises(ValueError, match="at least 75x75"):
    _shapes(inception.InceptionV3(), (1, 74, 80, 3))
  with pytest.raises(ValueError, match="needs RGB input, got 12 bands"):
    _shapes(inception.InceptionV3(transform_input=True), (1, 80, 80, 12))
  with pytest.raises(ValueError, match="NHWC"):
    _shapes(inception.InceptionV3(), (80, 80, 3))


def test_preprocess_is_torchvisions_resize_and_normalize():
  """Bit for bit: torchvision's Resize((299, 299)) + ToTensor + Normalize
  gave the same float32 input (fixture, tools/make_torchvision_reference)."""
  with np.load(test_torch_checkpoints.FIXTURES /
               "torchvision_reference.npz") as f:
    want = str(f["inception_v3/preprocess_sha256"])
  x = inception.preprocess(ref.reference_image())
  assert x.shape == (299, 299, 3)
  assert hashlib.sha256(x.tobytes()).hexdigest() == want


def test_preprocess_resizes_and_normalises_as_torchvision():
  grey = np.full((2, 240, 256, 3), 128, np.uint8)
  x = inception.preprocess(grey)
  assert x.shape == (2, 299, 299, 3) and x.dtype == np.float32
  want = (np.float32(128 / 255) - preprocessing.IMAGENET_MEAN) / \
      preprocessing.IMAGENET_STD
  np.testing.assert_allclose(x, np.broadcast_to(want, x.shape), atol=1e-6)
  with pytest.raises(TypeError, match="uint8"):
    inception.preprocess(grey.astype(np.float32))


def test_milan_frozen_features_on_inception_v3(tmp_path):
  """configs/milan_ucm.py with --config.model.backbone=inception_v3 and an
  .npz from the converter: the cached features are the module's outputs on
  preprocessed images (each image alone: sizes differ, as in UC Merced)."""
  config = milan_ucm.get_config()
  config.model.backbone = "inception_v3"
  config.model.weights = str(tmp_path / "inception_v3.npz")
  with np.load(test_torch_checkpoints.FIXTURES /
               "torchvision_reference.npz") as f:
    state = ref.reference_state_dict(str(f["inception_v3/state"]))
  variables = torch_checkpoints.convert(state, "inception_v3")
  weights.save_npz(config.model.weights, variables)
  rng = np.random.default_rng(0)
  blocks = rng.integers(0, 256, (2, 8, 8, 3), np.uint8)
  images = [np.kron(b, np.ones((32, 32, 1), np.uint8)) for b in blocks]
  images[1] = images[1][:247]
  source = [{"image": im} for im in images]
  got = features.compute_features(config, source, "image", None,
                                  batch_size=2)
  module = encoder.create_backbone(config.model)
  assert module.transform_input
  x = np.concatenate([inception.preprocess(im)[None] for im in images])
  want = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x)
  assert got.shape == (2, inception.FEATURE_DIM)
  assert np.abs(got[0] - got[1]).max() > 1e-3
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  key = features.cache_key(config, "test", "image", 1)
  config.model.transform_input = False
  assert features.cache_key(config, "test", "image", 1) != key
