"""Tests for rs_jax.models: ResNet shapes/counts, heads vs NumPy, weights files.

Shape-only checks use `jax.eval_shape` (no compilation); one small ResNet-18
is compiled for the numerical checks, to keep the file fast on CPU. Init keys
use the "rbg" PRNG: compiling a ResNet init with threefry takes ~16 s on a
2-core CPU, with rbg ~5 s.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from rs_jax import models
from rs_jax.models import weights


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _random_variables(template, seed=0):
  """Random float32 arrays with the template's shapes (no init compile)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda t: (0.1 * rng.standard_normal(t.shape)).astype(np.float32),
      template)


def _n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init_shapes(model, shape, **kw):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False, **kw), x)


def _apply_shape(model, variables, shape, **kw):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda v, x: model.apply(v, x, **kw), variables, x)


# ------------------------------------------------------------------ ResNet --


@pytest.mark.parametrize("name, count", [("resnet18", 11_689_512),
                                         ("resnet34", 21_797_672),
                                         ("resnet50", 25_557_032)])
def test_param_counts_match_torchvision(name, count):
  model = models.BACKBONES[name](num_classes=1000)
  v = _init_shapes(model, (1, 224, 224, 3))
  assert _n_params(v["params"]) == count
  assert set(v) == {"params", "batch_stats"}


@pytest.mark.parametrize("channels", [2, 3, 12])
def test_feature_shapes_any_band_count(channels):
  model = models.resnet18()
  v = _init_shapes(model, (2, 32, 32, channels))
  assert v["params"]["conv_init"]["kernel"].shape == (7, 7, channels, 64)
  out = _apply_shape(model, v, (2, 32, 32, channels))
  assert out.shape == (2, 512) and out.dtype == jnp.float32


def test_resnet50_features_and_classifier_shapes():
  model = models.resnet50()
  v = _init_shapes(model, (2, 64, 64, 12))
  assert _apply_shape(model, v, (2, 64, 64, 12)).shape == (2, 2048)
  assert models.FEATURE_DIMS["resnet50"] == 2048
  model = models.resnet18(num_classes=10)
  v = _init_shapes(model, (2, 32, 32, 2))
  assert _apply_shape(model, v, (2, 32, 32, 2)).shape == (2, 10)


def test_bfloat16_compute_keeps_float32_params_and_output():
  model = models.resnet18(dtype=jnp.bfloat16)
  v = _init_shapes(model, (2, 32, 32, 3))
  assert {x.dtype for x in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}
  assert _apply_shape(model, v, (2, 32, 32, 3)).dtype == jnp.float32


@pytest.mark.parametrize("small, stem, final", [(True, 3, 15), (False, 7, 4)])
def test_small_inputs_stem_on_120(small, stem, final):
  """120x120: small stem keeps full resolution (15x15 at layer4), else 4x4."""
  model = models.resnet18(small_inputs=small)
  v = _init_shapes(model, (2, 120, 120, 12))
  assert v["params"]["conv_init"]["kernel"].shape == (stem, stem, 12, 64)
  out, state = _apply_shape(
      model, v, (2, 120, 120, 12), mutable=["intermediates"],
      capture_intermediates=lambda m, _: m.name == "layer4_1")
  assert out.shape == (2, 512)
  (l4,) = state["intermediates"]["layer4_1"]["__call__"]
  assert l4.shape == (2, final, final, 512)


def test_small_inputs_runs_on_120():
  model = models.resnet18(small_inputs=True)
  v = _random_variables(_init_shapes(model, (2, 120, 120, 12)))
  v["batch_stats"] = jax.tree.map(np.abs, v["batch_stats"])  # var >= 0
  x = np.random.default_rng(1).standard_normal((2, 120, 120, 12), np.float32)
  out = jax.jit(model.apply)(v, x)
  assert out.shape == (2, 512) and bool(jnp.all(jnp.isfinite(out)))


def test_bad_rank_input_is_an_error():
  with pytest.raises(ValueError, match=r"NHWC"):
    _init_shapes(models.resnet18(), (32, 32, 3))


@pytest.fixture(scope="module")
def r18():
  """A compiled ResNet-18 (3 bands, 10 classes) on a 2x32x32 batch."""
  model = models.resnet18(num_classes=10)
  x = np.random.default_rng(1).standard_normal((2, 32, 32, 3), np.float32)
  init = jax.jit(lambda k, x: model.init(k, x, train=False))
  evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
  train = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                           mutable=["batch_stats"]))
  return dict(model=model, x=x, init=init, eval=evaluate, train=train,
              variables=init(_key(0), x))


def test_train_mode_updates_batch_stats_and_differs_from_eval(r18):
  v, x = r18["variables"], r18["x"]
  out_train, new_state = r18["train"](v, x)
  out_eval = r18["eval"](v, x)
  assert out_train.shape == out_eval.shape == (2, 10)
  assert not np.allclose(out_train, out_eval)
  old = traverse_util.flatten_dict(v["batch_stats"])
  new = traverse_util.flatten_dict(new_state["batch_stats"])
  assert old.keys() == new.keys()
  assert all(not np.allclose(old[k], new[k]) for k in new)
  # momentum 0.9: new running mean = 0.9 * 0 + 0.1 * batch mean of the stem.
  mean = np.asarray(new["bn_init", "mean"])
  assert np.all(np.abs(mean) > 0) and np.all(old["bn_init", "mean"] == 0)


def test_deterministic(r18):
  v, x = r18["variables"], r18["x"]
  v2 = r18["init"](_key(0), x)
  jax.tree.map(np.testing.assert_array_equal, v, v2)
  np.testing.assert_array_equal(r18["eval"](v, x), r18["eval"](v2, x))
  a, sa = r18["train"](v, x)
  b, sb = r18["train"](v, x)
  np.testing.assert_array_equal(a, b)
  jax.tree.map(np.testing.assert_array_equal, sa, sb)


# ------------------------------------------------------------------- heads --


def _dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"])


def _relu(x):
  return np.maximum(x, 0.0)


def _init_apply(model, *xs):
  v = jax.jit(model.init)(_key(3), *xs)
  return v["params"], np.asarray(jax.jit(model.apply)(v, *xs), np.float64)


@pytest.fixture(scope="module")
def feats():
  rng = np.random.default_rng(2)
  return (rng.standard_normal((3, 40), np.float32),
          rng.standard_normal((3, 40), np.float32))


def test_hash_head_matches_numpy(feats):
  x = feats[0]
  p, out = _init_apply(models.HashHead(bits=16), x)
  assert [p[n]["kernel"].shape for n in ("dense0", "dense1", "out")] == [
      (40, 1024), (1024, 512), (512, 16)]
  h = _dense(p["dense0"], x)
  h = np.where(h > 0, h, 0.2 * h)
  h = _dense(p["dense1"], h)
  h = np.where(h > 0, h, 0.2 * h)
  ref = 1.0 / (1.0 + np.exp(-_dense(p["out"], h)))
  assert out.shape == (3, 16) and np.all((out > 0) & (out < 1))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_projection_head_matches_numpy(feats):
  x = feats[0]
  p, out = _init_apply(models.ProjectionHead(), x)
  ref = _dense(p["out"], _relu(_dense(p["dense0"], x)))
  assert out.shape == (3, 256) and p["dense0"]["kernel"].shape == (40, 512)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_pair_classifier_matches_numpy(feats):
  x1, x2 = feats
  p, out = _init_apply(models.PairClassifier(), x1, x2)
  h = np.concatenate([x1, x2], -1)
  h = _relu(_dense(p["dense0"], h))
  h = _relu(_dense(p["dense1"], h))
  ref = _dense(p["out"], h)[:, 0]
  assert out.shape == (3,) and p["dense0"]["kernel"].shape == (80, 512)
  assert p["out"]["kernel"].shape == (256, 1)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_class_head_matches_numpy(feats):
  x = feats[0]
  p, out = _init_apply(models.ClassHead(num_classes=21), x)
  np.testing.assert_allclose(out, _dense(p["out"], x), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- weights --


def test_weights_round_trip(r18, tmp_path):
  v, x = r18["variables"], r18["x"]
  _, state = r18["train"](v, x)  # non-trivial batch_stats
  v = {"params": v["params"], "batch_stats": state["batch_stats"]}
  path = tmp_path / "r18.npz"
  weights.save_npz(path, v)
  keys = set(np.load(path).files)
  assert {"params/conv_init/kernel", "batch_stats/bn_init/mean",
          "params/layer2_0/downsample_conv/kernel",
          "params/fc/kernel"} <= keys
  template = jax.eval_shape(lambda: v)
  loaded = weights.load_npz(path, template)
  jax.tree.map(np.testing.assert_array_equal, loaded, v)
  np.testing.assert_array_equal(r18["eval"](loaded, x), r18["eval"](v, x))


def _template(channels):
  return _init_shapes(models.resnet18(num_classes=10), (1, 32, 32, channels))


def test_load_shape_mismatch_names_file_key_and_shapes(r18, tmp_path):
  path = tmp_path / "rgb.npz"
  weights.save_npz(path, r18["variables"])
  with pytest.raises(ValueError) as e:
    weights.load_npz(path, _template(12))
  msg = str(e.value)
  assert "rgb.npz" in msg and "params/conv_init/kernel" in msg
  assert "(7, 7, 3, 64)" in msg and "(7, 7, 12, 64)" in msg


def test_load_missing_and_unexpected_keys(r18, tmp_path):
  flat = traverse_util.flatten_dict(r18["variables"], sep="/")
  flat = {k: np.asarray(v) for k, v in flat.items()}
  missing = dict(flat)
  del missing["batch_stats/bn_init/var"]
  np.savez(tmp_path / "missing.npz", **missing)
  with pytest.raises(ValueError, match=r"missing\.npz.*missing keys "
                     r"\['batch_stats/bn_init/var'\]"):
    weights.load_npz(tmp_path / "missing.npz", _template(3))
  extra = dict(flat, **{"params/fc/extra": np.zeros(3)})
  np.savez(tmp_path / "extra.npz", **extra)
  with pytest.raises(ValueError, match=r"extra\.npz.*unexpected keys "
                     r"\['params/fc/extra'\]"):
    weights.load_npz(tmp_path / "extra.npz", _template(3))


def test_adapt_first_conv_rule():
  k = np.arange(2 * 1 * 3 * 2, dtype=np.float32).reshape(2, 1, 3, 2)
  out = weights.adapt_first_conv(k, 12)
  assert out.shape == (2, 1, 12, 2) and out.dtype == np.float32
  ref = k.mean(axis=2, keepdims=True) * 3 / 12
  np.testing.assert_allclose(out, np.broadcast_to(ref, out.shape))
  # Sum over input channels preserved: same response to a grey image.
  np.testing.assert_allclose(out.sum(2), k.sum(2), rtol=1e-6)
  np.testing.assert_allclose(weights.adapt_first_conv(k, 2).sum(2), k.sum(2),
                             rtol=1e-6)
  np.testing.assert_array_equal(weights.adapt_first_conv(k, 3), k)
  with pytest.raises(ValueError, match="kh, kw, in, out"):
    weights.adapt_first_conv(k[0], 12)


def test_adapted_stem_loads_into_sentinel_model(r18, tmp_path):
  v = jax.tree.map(np.asarray, r18["variables"])
  v["params"]["conv_init"]["kernel"] = weights.adapt_first_conv(
      v["params"]["conv_init"]["kernel"], 12)
  weights.save_npz(tmp_path / "s2.npz", v)
  loaded = weights.load_npz(tmp_path / "s2.npz", _template(12))
  assert loaded["params"]["conv_init"]["kernel"].shape == (7, 7, 12, 64)
