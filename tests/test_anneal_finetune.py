"""ANNEAL with the backbone fine-tuned (al.frozen_backbone=False) on the
generated archive: 16 x 16 x 12 patches, ResNet-18 of width 8 with the
small-input stem from a random init, batches sharded over the 8 fake CPU
devices of conftest.py."""
import functools
import json

import jax
import numpy as np
import pytest

from configs import anneal_ucm
from rs_jax.active_learning import anneal
from rs_jax import data
from rs_jax import sharding
from rs_jax.active_learning import finetune
from rs_jax.active_learning import oracle as oracle_lib
from rs_jax.active_learning import trainer
from rs_jax.models import efficientnet_lite
from tests import test_anneal
from tests import test_train

FINETUNE = {"model.width": 8, "model.small_inputs": True,
            "al.frozen_backbone": False, "eval.batch_size": 16,
            "train.min_batches_per_epoch": 2}


@pytest.fixture(scope="module", autouse=True)
def fast_random_init():
  """The random init compiles ~6x faster on CPU with the non-partitionable
  threefry (36 s -> 6 s for this ResNet under load); the values differ, no
  test depends on them."""
  old = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", False)
  yield
  jax.config.update("jax_threefry_partitionable", old)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("finetune") / "data"
  data.prepare("synthetic", None, path, **test_train.OPTIONS)
  return path


@pytest.fixture(scope="module")
def parts(data_dir):
  """(config, model (pairs + pair classifier), init variables, train
  Images)."""
  config = test_anneal._set(test_anneal._config(data_dir.parent), FINETUNE)
  train = finetune.Images(data.load("synthetic", "train", data_dir), "s2",
                          "labels")
  stats = data.statistics("synthetic", data_dir)["s2"]
  model = finetune.create_model(config.model, mode="pairs_bce",
                                num_classes=0, image_dtype=train.dtype,
                                stats=stats)
  init = finetune.init_variables(model, config.model, train.shape,
                                 train.dtype, seed=0)
  return config, model, init, train


def _labeled_pairs(labels, n=16):
  """n similar and n dissimilar (any shared label) training pairs."""
  i, j = np.triu_indices(len(labels), k=1)
  pairs = np.stack([i, j], 1)
  similar = oracle_lib.similar(labels, pairs, rule="any_shared")
  rng = np.random.default_rng(0)
  chosen = np.r_[rng.choice(np.flatnonzero(similar), n, replace=False),
                 rng.choice(np.flatnonzero(~similar), n, replace=False)]
  return pairs[chosen], similar[chosen]


def test_a_round_trains_the_backbone_and_lowers_the_loss(parts):
  _, model, init, train = parts
  assert jax.device_count() == 8
  pairs, similar = _labeled_pairs(train.labels)
  fit = functools.partial(finetune.fit, model, init, train, pairs, similar,
                          mode="pairs_bce", seed=0, batch_size=16, lr=1e-3)
  variables, losses = fit(epochs=15)
  assert losses.shape == (15 * 2,) and np.all(np.isfinite(losses))
  per_epoch = losses.reshape(15, 2).mean(1)  # 32 pairs = 2 batches
  assert per_epoch[-1] < 0.5 * per_epoch[0]
  before = jax.tree.leaves(init["params"]["backbone"])
  after = jax.tree.leaves(jax.device_get(variables["params"]["backbone"]))
  assert all(not np.allclose(a, b) for a, b in zip(before, after))
  stats = zip(jax.tree.leaves(init["batch_stats"]),
              jax.tree.leaves(jax.device_get(variables["batch_stats"])))
  assert all(not np.allclose(a, b) for a, b in stats)  # BN running stats
  # The step sharded over 8 devices equals it on one (global-batch BN).
  _, one = fit(epochs=1, mesh=sharding.create_mesh(jax.devices()[:1]))
  np.testing.assert_allclose(one, losses[:2], rtol=2e-4, atol=1e-5)


def _np_pair_probs(heads, f, pairs):
  p = heads["pair"]
  h = np.concatenate([f[pairs[:, 0]], f[pairs[:, 1]]], 1).astype(np.float64)
  for name in ("dense0", "dense1"):
    h = np.maximum(h @ p[name]["kernel"] + p[name]["bias"], 0.0)
  logit = (h @ p["out"]["kernel"] + p["out"]["bias"])[:, 0]
  return 1.0 / (1.0 + np.exp(-logit))


def test_embed_and_pair_probs_equal_a_pair_by_pair_reference(parts):
  _, model, init, train = parts
  indices = np.arange(3, 40)  # 37: two full batches of 16 and a padded one
  out = finetune.embed(model, init, train, indices, batch_size=16)
  x = finetune.preprocess(model, train.take(indices))
  backbone = {"params": init["params"]["backbone"],
              "batch_stats": init["batch_stats"]["backbone"]}
  want = model.backbone.apply(backbone, x, train=False)
  np.testing.assert_allclose(out["features"], want, rtol=1e-4, atol=1e-5)
  heads = jax.device_get(init["params"]["heads"])
  np.testing.assert_allclose(
      out["embeddings"], model.heads.apply({"params": heads}, want,
                                           method="embed"),
      rtol=1e-4, atol=1e-5)
  pairs = np.random.default_rng(0).integers(0, len(indices), (50, 2))
  got = finetune.pair_probs(init, out["features"], pairs, chunk=16)
  np.testing.assert_allclose(
      got, _np_pair_probs(heads, out["features"].astype(np.float64), pairs),
      rtol=1e-4, atol=1e-6)


def test_imagenet_preprocessing_matches_the_frozen_pipeline():
  rng = np.random.default_rng(0)
  # A smooth image: resampling differences stay at rounding level.
  yy, xx = np.mgrid[:256, :256] / 256.0
  image = np.stack([128 + 100 * np.sin(6 * xx + k) * np.cos(4 * yy)
                    for k in range(3)], -1)
  images = np.clip(image[None] + rng.normal(0, 2, (2, 256, 256, 3)), 0,
                   255).astype(np.uint8)
  config = anneal_ucm.get_config()
  model = finetune.Model(backbone=None, heads=None, imagenet_rgb=True,
                         crop_padding=32)
  got = np.asarray(jax.jit(lambda x: finetune.preprocess(model, x))(images))
  want = efficientnet_lite.preprocess(images, crop_padding=32)
  assert got.shape == want.shape == (2, 224, 224, 3)
  assert np.abs(got - want).mean() * efficientnet_lite.STDDEV_RGB < 1.0
  assert config.model.backbone == "efficientnet_lite0"
  assert finetune.create_model(config.model, mode="pairs").imagenet_rgb


def test_run_fine_tunes_every_round_and_resumes(data_dir, tmp_path,
                                                 monkeypatch):
  config = test_anneal._set(test_anneal._config(data_dir.parent),
                            {**FINETUNE, "al.strategy": "bcgue"})
  fits = []
  fit = finetune.fit
  monkeypatch.setattr(finetune, "fit",
                      lambda *a, **k: fits.append(1) or fit(*a, **k))
  monkeypatch.setattr(trainer, "fit", None)  # the frozen path is not taken
  curve = anneal.run(config, str(tmp_path))
  assert json.loads((tmp_path / anneal.CURVE).read_text()) == curve
  assert [e["round"] for e in curve] == [0, 1, 2]
  assert np.diff([e["labeled_pairs"] for e in curve]).tolist() == [8, 8]
  assert all(0.0 <= e["map@5"] <= 1.0 for e in curve)
  assert len(fits) == 3
  # Rerun: the saved state is finished, nothing is trained again.
  assert anneal.run(config, str(tmp_path)) == curve
  assert len(fits) == 3
