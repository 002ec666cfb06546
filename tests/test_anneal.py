"""ANNEAL end to end: rs_jax.active_learning.anneal.run on the generated archive, resume
after a crash, and the trainer's parts against NumPy references.

The frozen "backbone" here is per-band means and standard deviations of the
normalised patch (24-d), put in place of `features.compute_features` so the
test compiles no CNN; the backbone feature cache itself is tested in
tests/test_features.py."""
import json
import shutil

import numpy as np
import pytest

from configs import anneal_ucm
from rs_jax.active_learning import anneal
from rs_jax import features
from rs_jax.active_learning import state as state_lib
from rs_jax.active_learning import trainer
from tests import test_train

SMALL_HEADS = {"model.projection_hidden": 32, "model.projection_features": 16,
               "model.pair_hidden": (16, 8)}


def _set(config, overrides):
  for key, value in overrides.items():
    *path, last = key.split(".")
    node = config
    for name in path:
      node = node[name]
    node[last] = value
  return config


def band_statistics(config, source, modality, stats, *, views=(0,),
                    batch_size=64):
  """Stand-in backbone: float32[N, 24] band means and stds of a source."""
  del config, batch_size
  assert tuple(views) == (0,)
  x = np.stack([source[i][modality] for i in range(len(source))])
  x = (x - stats["mean"]) / stats["std"]
  return np.concatenate([x.mean((1, 2)), x.std((1, 2))], 1).astype(np.float32)


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
  from rs_jax import data
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(features, "compute_features", band_statistics)
    root = tmp_path_factory.mktemp("anneal")
    data.prepare("synthetic", None, root / "data", **test_train.OPTIONS)
    yield _config(root)


def _config(root):
  config = anneal_ucm.get_config()
  _set(config, {
      "data.name": "synthetic", "data.data_dir": str(root / "data"),
      "data.manual_dir": "", "data.image_size": 0, "data.inputs": ("s2",),
      "data.label_key": "labels", "model.backbone": "resnet18",
      "model.weights": "", "al.h": 8,
      "al.rounds": 2, "al.initial_fraction": 0.05, "al.kmeans_iters": 5,
      "train.epochs": 1, "train.batch_size": 16, **SMALL_HEADS})
  return config


def _curve(workdir):
  return json.loads((workdir / anneal.CURVE).read_text())


@pytest.fixture(scope="module")
def straight(base_config, tmp_path_factory):
  """An uninterrupted BCGUE run of 2 rounds: (config, workdir, curve)."""
  config = _set(base_config.copy_and_resolve_references(),
                {"al.strategy": "bcgue"})
  workdir = tmp_path_factory.mktemp("straight")
  return config, workdir, anneal.run(config, str(workdir))


def test_run_writes_a_curve_per_round(straight):
  _, workdir, curve = straight
  assert curve == _curve(workdir)
  assert [e["round"] for e in curve] == [0, 1, 2]
  # Initial set: 4 of 80 images x log2 4 classes; then h = 8 bits a round.
  np.testing.assert_allclose([e["bits"] for e in curve], [8.0, 16.0, 24.0])
  assert np.diff([e["labeled_pairs"] for e in curve]).tolist() == [8, 8]
  # map@5: backbone features (the default); the projection's is kept too.
  assert all(0.0 <= e["map@5"] <= 1.0 and 0.0 <= e["projection_map@5"] <= 1.0
             for e in curve)


def test_run_refuses_unknown_retrieval_features(base_config, tmp_path):
  config = _set(base_config.copy_and_resolve_references(),
                {"eval.retrieval_features": "pooled"})
  with pytest.raises(ValueError, match="eval.retrieval_features"):
    anneal.run(config, str(tmp_path))


def test_more_rounds_resume_a_finished_run(straight, tmp_path):
  """al.rounds may grow on resume (rs_jax.workdir.RESUMABLE): the finished
  rounds are kept and one more is run."""
  config, workdir, curve = straight
  shutil.copytree(workdir, tmp_path / "run")
  longer = _set(config.copy_and_resolve_references(), {"al.rounds": 3})
  got = anneal.run(longer, str(tmp_path / "run"))
  assert got[:3] == curve and [e["round"] for e in got] == [0, 1, 2, 3]
  assert "al.rounds: 2 -> 3" in (tmp_path / "run" /
                                 "config_changes.log").read_text()


class Crash(Exception):
  pass


def test_resume_after_crash_mid_round_loses_no_labels(straight, tmp_path,
                                                      monkeypatch):
  config, straight_dir, straight_curve = straight
  fit, calls = trainer.fit, []

  def crashing_fit(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # training round 2, after its labels were saved
      raise Crash()
    return fit(*args, **kwargs)

  monkeypatch.setattr(trainer, "fit", crashing_fit)
  with pytest.raises(Crash):
    anneal.run(config, str(tmp_path))
  assert [e["round"] for e in _curve(tmp_path)] == [0, 1]
  monkeypatch.setattr(trainer, "fit", fit)
  # Every round trains from the same initialisation on the same labels.
  assert anneal.run(config, str(tmp_path)) == straight_curve
  a = state_lib.load(str(straight_dir / anneal.STATE))
  b = state_lib.load(str(tmp_path / anneal.STATE))
  np.testing.assert_array_equal(a.pairs, b.pairs)
  np.testing.assert_array_equal(a.similar, b.similar)


def _blobs(n_per=24, classes=3, dim=12, seed=0):
  rng = np.random.default_rng(seed)
  centers = 3.0 * rng.normal(size=(classes, dim))
  labels = np.repeat(np.arange(classes), n_per)
  x = centers[labels] + 0.3 * rng.normal(size=(len(labels), dim))
  return x.astype(np.float32), labels


def _model(mode, num_classes=0, top=()):
  config = anneal_ucm.get_config()
  _set(config, SMALL_HEADS)
  return trainer.create_model(config.model, mode=mode,
                              num_classes=num_classes, top=top)


def _map_at_k(q, q_labels, db, db_labels, k):
  """NumPy mAP@k of cosine retrieval, normalised by the relevant items in
  the top k (ANNEAL eq. 12 with r_i = relevant retrieved)."""
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  db = db / np.linalg.norm(db, axis=1, keepdims=True)
  order = np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :k]
  rel = (db_labels[order] == q_labels[:, None]).astype(np.float64)
  prec = np.cumsum(rel, 1) / np.arange(1, k + 1)
  hits = rel.sum(1)
  return np.mean(np.where(hits > 0, (prec * rel).sum(1) / np.maximum(hits, 1),
                          0.0))


def test_retrieval_ranks_the_chosen_features():
  """Backbone features that separate the classes, projections that do not:
  the plain key follows eval.retrieval_features, the other kind is kept
  under its prefix."""
  rng = np.random.default_rng(0)
  lq, ldb = np.repeat(np.arange(3), 4), np.repeat(np.arange(3), 8)

  def noise(n):
    return 0.3 * rng.normal(size=(n, 3))

  # Projections of the queries sit at the next class: every top 5 is wrong
  # there but for the noise.
  q = {"features": np.eye(3)[lq] + noise(12),
       "embeddings": np.eye(3)[(lq + 1) % 3] + noise(12)}
  db = {"features": np.eye(3)[ldb] + noise(24),
        "embeddings": np.eye(3)[ldb] + noise(24)}
  ref = {k: _map_at_k(q[k], lq, db[k], ldb, 5) for k in q}
  assert ref["features"] > 0.9 and ref["embeddings"] < 0.3
  got = trainer.retrieval_metrics(q, lq, db, ldb, features="backbone",
                                  ks=(5,))
  assert got["map@5"] == pytest.approx(ref["features"], abs=1e-5)
  assert got["projection_map@5"] == pytest.approx(ref["embeddings"], abs=1e-5)
  got = trainer.retrieval_metrics(q, lq, db, ldb, features="projection",
                                  ks=(5,))
  assert got["map@5"] == pytest.approx(ref["embeddings"], abs=1e-5)
  assert got["backbone_map@5"] == pytest.approx(ref["features"], abs=1e-5)


def test_evaluate_ranks_the_output_of_the_trainable_top():
  """CPU mode: "backbone" = relu(x W + b) of the top, not the frozen x and
  not the projection g(f) (NumPy reference on the init parameters)."""
  x, labels = _blobs(n_per=6)
  model = _model("pairs", top=(8,))
  params = trainer.init_params(model, x.shape[1], seed=1)
  p = params["params"]
  f = np.maximum(x @ np.asarray(p["top0"]["kernel"])
                 + np.asarray(p["top0"]["bias"]), 0.0)
  h = np.maximum(f @ np.asarray(p["projection"]["dense0"]["kernel"])
                 + np.asarray(p["projection"]["dense0"]["bias"]), 0.0)
  g = (h @ np.asarray(p["projection"]["out"]["kernel"])
       + np.asarray(p["projection"]["out"]["bias"]))
  for kind, z in (("backbone", f), ("projection", g)):
    got = trainer.evaluate(params, x, labels, x, labels, model=model,
                           features=kind, ks=(5,))
    assert got["map@5"] == pytest.approx(_map_at_k(z, labels, z, labels, 5),
                                         abs=1e-5)
  out = trainer.embed(params, x, model=model)
  np.testing.assert_allclose(out["features"], f, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["embeddings"], g, rtol=1e-4, atol=1e-4)


def test_defaults_retrieve_on_backbone_features_with_a_trainable_top():
  config = anneal_ucm.get_config()
  assert config.eval.retrieval_features == "backbone"
  assert tuple(config.model.frozen_top) == (512,)


@pytest.mark.parametrize("top", [(), (8,)])
def test_pair_probs_equal_the_pair_classifier(top):
  x, _ = _blobs()
  model = _model("pairs_bce", top=top)
  params = trainer.init_params(model, x.shape[1], seed=3)
  pairs = np.random.default_rng(1).integers(0, len(x), (50, 2))
  f = trainer.embed(params, x, model=model)["features"]  # after the top
  got = trainer.pair_probs(params, f, pairs, chunk=16)
  logits = model.apply(params, x[pairs[:, 0]], x[pairs[:, 1]],
                       method="pair_logits")
  np.testing.assert_allclose(got, 1.0 / (1.0 + np.exp(-np.asarray(logits))),
                             rtol=1e-5, atol=1e-6)


def test_schedule_oversamples_and_fills_batches():
  similar = np.r_[np.ones(5, bool), np.zeros(20, bool)]
  rows = trainer.schedule(similar, mode="pairs", epochs=3, batch_size=16,
                          seed=0)
  assert rows.shape == (3 * 3, 16)  # 40 per epoch -> 3 batches of 16
  first = rows[:3].reshape(-1)[:40]
  assert np.sum(similar[first]) == 20  # both labels equally often
  assert set(first[~similar[first]]) == set(range(5, 25))


def test_schedule_min_batches_repeats_short_epochs():
  labels = np.arange(10) % 3
  rows = trainer.schedule(labels, mode="classes", epochs=2, batch_size=4,
                          seed=0, min_batches=5)
  assert rows.shape == (2 * 5, 4)  # 10 images -> 2 passes (20 rows) per epoch
  for epoch in rows.reshape(2, -1):
    np.testing.assert_array_equal(np.bincount(epoch), np.full(10, 2))
  assert trainer.schedule(labels, mode="classes", epochs=2, batch_size=4,
                          seed=0).shape == (2 * 3, 4)


@pytest.mark.parametrize("mode", ["pairs", "classes"])
def test_fit_learns_a_metric_space(mode):
  x, labels = _blobs()
  model = _model(mode, num_classes=3)
  if mode == "classes":
    items, targets = np.arange(len(x)), labels
  else:
    i, j = np.triu_indices(len(x), k=1)
    items, targets = np.stack([i, j], 1), labels[i] == labels[j]
  params, _ = trainer.fit(model, x, items, targets, mode=mode, seed=0,
                          epochs=3, batch_size=32, lr=1e-2)
  z = np.array(trainer.embed(params, x, model=model)["embeddings"])
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  cos = z @ z.T
  same = labels[:, None] == labels[None, :]
  off = ~np.eye(len(x), dtype=bool)
  # NumPy reference: the learnt cosines separate the classes.
  assert cos[same & off].min() > cos[~same].max()
  got = trainer.evaluate(params, x, labels, x, labels, model=model, ks=(5,),
                         features="projection")
  assert float(got["map@5"]) == pytest.approx(1.0)


def test_file_oracle_names_images_by_their_path(tmp_path):
  """The annotator's CSV names files that open: stored names (bytes) decoded
  and placed under data.manual_dir (its Images/ folder when it has one)."""
  (tmp_path / "Images" / "forest").mkdir(parents=True)
  config = anneal_ucm.get_config()
  config.data.manual_dir = str(tmp_path)
  source = [{"filename": b"forest/forest00.webp"}, {"filename": "a/b.png"}]
  assert anneal._image_paths(config, source) == [
      str(tmp_path / "Images" / "forest" / "forest00.webp"),
      str(tmp_path / "Images" / "a" / "b.png")]
  config.data.manual_dir = ""
  assert anneal._image_paths(config, source) == ["forest/forest00.webp",
                                                 "a/b.png"]
