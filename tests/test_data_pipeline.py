"""Tests for rs_jax.data.pipeline and rs_jax.data.augment."""
import itertools

import jax
import numpy as np
import pytest

from rs_jax.data import augment
from rs_jax.data import pipeline
from rs_jax.data import synthetic


@pytest.fixture(scope="module")
def multi():
  return pipeline.ArraySource(synthetic.generate(60, seed=1, size=8))


@pytest.fixture(scope="module")
def single():
  rng = np.random.default_rng(0)
  return pipeline.ArraySource({
      "image": rng.integers(0, 256, (50, 6, 6, 3)).astype(np.uint8),
      "label": np.arange(50) % 5,
  })


def _processes(monkeypatch, index, count):
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(jax, "process_count", lambda: count)


def test_eval_one_exact_pass(single):
  batches = list(pipeline.eval_batches(single, batch_size=8, keys=["label"]))
  assert len(batches) == 7 and set(batches[0]) == {"label", "mask", "index"}
  index = np.concatenate([b["index"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(index[mask], np.arange(50))
  assert mask.sum() == 50 and not mask[50:].any()
  for b in batches:
    np.testing.assert_array_equal(b["label"], single.arrays["label"][b["index"]])


def test_eval_sharding_disjoint_complete(single, monkeypatch):
  seen, counts = [], []
  for p in range(3):
    _processes(monkeypatch, p, 3)
    batches = list(pipeline.eval_batches(single, batch_size=4))
    counts.append(len(batches))
    seen.append(np.concatenate([b["index"][b["mask"]] for b in batches]))
  assert len(set(counts)) == 1  # every process runs the same number of steps
  np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(50))


def test_random_sampler_epochs_sharding_determinism(single, monkeypatch):
  per_process = []
  for p in range(2):
    _processes(monkeypatch, p, 2)
    it = pipeline.train_batches(single, batch_size=10, seed=7)
    per_process.append([next(it)["image"] for _ in range(5)])  # one epoch
  # Epoch of 50 = 5 global batches of 10, 5 rows per process: every example
  # once.
  assert per_process[0][0].shape[0] == 5
  images = np.concatenate([np.concatenate(x) for x in per_process])
  flat = images.reshape(50, -1)
  ref = single.arrays["image"].reshape(50, -1)
  assert len(np.unique(flat, axis=0)) == 50
  np.testing.assert_array_equal(np.unique(flat, axis=0), np.unique(ref, axis=0))
  _processes(monkeypatch, 0, 2)
  again = pipeline.train_batches(single, batch_size=10, seed=7)
  np.testing.assert_array_equal(next(again)["image"], per_process[0][0])
  other = pipeline.train_batches(single, batch_size=10, seed=8)
  assert not np.array_equal(next(other)["image"], per_process[0][0])
  with pytest.raises(ValueError, match="multiple of the 2 processes"):
    pipeline.train_batches(single, batch_size=5, seed=7)


@pytest.mark.parametrize("sampler, options", [
    ("random", {}), ("triplet", {}), ("pairs", {}), ("pk", {"k": 3}),
])
@pytest.mark.parametrize("augment", [False, True])
def test_processes_read_rows_of_the_one_process_batch(single, monkeypatch,
                                                      sampler, options,
                                                      augment):
  """The batches of 2 processes side by side are the 1-process batch, so
  [anchors; positives; negatives] and [firsts; seconds] survive."""
  kwargs = dict(batch_size=12, seed=3, sampler=sampler, augment=augment,
                **options)
  _processes(monkeypatch, 0, 1)
  whole = list(itertools.islice(pipeline.train_batches(single, **kwargs), 2))
  parts = []
  for p in range(2):
    _processes(monkeypatch, p, 2)
    parts.append(list(itertools.islice(
        pipeline.train_batches(single, **kwargs), 2)))
  for t in range(2):
    for key in whole[t]:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][t][key], parts[1][t][key]]),
          whole[t][key], err_msg=f"{sampler} step {t} {key}")


def test_pk_sampler(single):
  it = pipeline.train_batches(single, batch_size=12, seed=0, sampler="pk", k=4)
  for batch in itertools.islice(it, 3):
    labels = batch["label"].reshape(3, 4)
    assert (labels == labels[:, :1]).all()          # k of one class per row
    assert len(set(labels[:, 0])) == 3              # p distinct classes
  with pytest.raises(ValueError, match="p \\* k"):
    pipeline.train_batches(single, batch_size=10, seed=0, sampler="pk", k=4,
                           p=3)


def test_triplet_sampler_multilabel(multi):
  it = pipeline.train_batches(multi, batch_size=9, seed=0, sampler="triplet",
                              label_key="labels", keys=["labels", "s1", "s2"])
  for batch in itertools.islice(it, 4):
    a, pos, neg = np.split(batch["labels"].astype(int), 3)
    assert ((a * pos).sum(1) >= 1).all() and ((a * neg).sum(1) == 0).all()
    assert batch["s1"].shape == (9, 8, 8, 2) and batch["s2"].shape == (9, 8, 8, 12)
    assert not any(np.array_equal(x, y) for x, y in
                   zip(*np.split(batch["s2"], 3)[:2]))  # positive != anchor


def test_pairs_sampler_from_labels_and_given_pairs(single):
  it = pipeline.train_batches(single, batch_size=8, seed=0, sampler="pairs")
  batch = next(it)
  first, second = np.split(batch["label"], 2)
  np.testing.assert_array_equal(batch["pair_label"], first == second)
  assert batch["pair_label"].sum() == 2
  # 9 dissimilar pairs, 1 similar: batches are still half similar.
  pairs = np.array([[0, 5]] + [[i, i + 1] for i in range(9)])
  labels = np.array([1] + [0] * 9)
  it = pipeline.train_batches(single, batch_size=16, seed=0, sampler="pairs",
                              pairs=pairs, pair_labels=labels)
  batch = next(it)
  assert batch["pair_label"].sum() == 4
  first, second = np.split(batch["label"], 2)
  np.testing.assert_array_equal(batch["pair_label"], first == second)


def test_augment_dihedral_and_crop():
  x = np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
  outs = {augment.dihedral(x, t).tobytes() for t in range(8)}
  assert len(outs) == 8
  np.testing.assert_array_equal(augment.dihedral(x, 1), np.rot90(x, 1, (1, 2)))
  np.testing.assert_array_equal(augment.dihedral(x, 4), x[:, :, ::-1])
  rng = np.random.default_rng(0)
  s2 = rng.normal(size=(6, 8, 8, 12))
  batch = augment.random_dihedral({"s2": s2, "s1": s2[..., :2].copy()}, rng=rng)
  np.testing.assert_array_equal(batch["s1"], batch["s2"][..., :2])
  batch = augment.random_crop({"s2": s2, "s1": s2[..., :2].copy()}, size=5,
                              rng=rng)
  assert batch["s2"].shape == (6, 5, 5, 12)
  np.testing.assert_array_equal(batch["s1"], batch["s2"][..., :2])
  with pytest.raises(ValueError, match="does not fit"):
    augment.crop(x, 1, 0, 4, 4)


def test_train_augment_applies_same_transform(multi):
  it = pipeline.train_batches(multi, batch_size=6, seed=0, augment=True)
  batch = next(it)
  plain = next(pipeline.train_batches(multi, batch_size=6, seed=0))
  for x, y in zip(batch["s2"], plain["s2"]):
    assert any(np.array_equal(x, augment.dihedral(y, t)) for t in range(8))


def test_standardize_matches_numpy():
  from rs_jax.models import encoder  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, (4, 5, 5, 12)).astype(np.float32)
  stats = {"mean": rng.normal(size=12).astype(np.float32),
           "std": rng.uniform(0.5, 2.0, 12).astype(np.float32)}
  np.testing.assert_allclose(encoder.standardize(x, stats),
                             (x - stats["mean"]) / stats["std"], rtol=1e-6)
  np.testing.assert_array_equal(encoder.standardize(x, None), x)


def test_bad_arguments(single):
  with pytest.raises(ValueError, match="unknown sampler"):
    pipeline.train_batches(single, batch_size=4, seed=0, sampler="nope")
  with pytest.raises(ValueError, match="3T"):
    pipeline.train_batches(single, batch_size=4, seed=0, sampler="triplet")
  with pytest.raises(KeyError, match="nope"):
    next(pipeline.eval_batches(single, batch_size=4, keys=["nope"]))


@pytest.fixture(scope="module")
def views():
  """10 images x 3 cached views, view-major as features.cached_sources."""
  rng = np.random.default_rng(4)
  return pipeline.ArraySource({
      "x": rng.normal(size=(30, 4)).astype(np.float32),
      "index": np.tile(np.arange(10), 3),
      "label": np.tile(np.arange(10) % 3, 3)})


def test_views_sampler_halves_are_views_of_the_same_images(views):
  it = pipeline.train_batches(views, batch_size=8, seed=0, sampler="views",
                              view_key="index", keys=["x", "index"])
  seen = []
  for batch in itertools.islice(it, 2):  # one epoch: 2 x 4 of 10 images
    first, second = np.split(batch["index"], 2)
    np.testing.assert_array_equal(first, second)
    assert len(set(first)) == 4
    x1, x2 = np.split(batch["x"], 2)
    assert not (x1 == x2).all(1).any()  # two distinct views of each image
    rows = [np.flatnonzero((views.arrays["x"] == x).all(1))[0]
            for x in batch["x"]]
    np.testing.assert_array_equal(views.arrays["index"][rows], batch["index"])
    seen += list(first)
  assert len(set(seen)) == 8  # an epoch draws images without repetition


def test_views_sampler_without_view_key_needs_augment(single):
  it = pipeline.train_batches(single, batch_size=6, seed=1, sampler="views",
                              augment=True, keys=["image"])
  x1, x2 = np.split(next(it)["image"], 2)
  for a, b in zip(x1, x2):  # the same image, each view its own D4 transform
    assert any(np.array_equal(augment.dihedral(a, t), b) for t in range(8))
  with pytest.raises(ValueError, match="views would be the same"):
    pipeline.train_batches(single, batch_size=6, seed=1, sampler="views")
  with pytest.raises(ValueError, match="2B"):
    pipeline.train_batches(single, batch_size=5, seed=1, sampler="views",
                           augment=True)
  with pytest.raises(ValueError, match="only the option view_key"):
    pipeline.train_batches(single, batch_size=6, seed=1, sampler="views",
                           augment=True, k=3)


@pytest.mark.parametrize("augment", [False, True])
def test_views_sampler_global_batch_and_determinism(views, single,
                                                    monkeypatch, augment):
  """Process p of P yields rows [p b, (p + 1) b) of the 1-process batch,
  which is a function of (seed, t)."""
  for source, options in ((views, dict(view_key="index")),
                          (single, dict(augment=True))):
    kwargs = dict(batch_size=8, seed=3, sampler="views", **options)
    kwargs.setdefault("augment", augment)
    _processes(monkeypatch, 0, 1)
    whole = list(itertools.islice(pipeline.train_batches(source, **kwargs), 3))
    again = list(itertools.islice(pipeline.train_batches(source, **kwargs), 3))
    other = next(pipeline.train_batches(source, **{**kwargs, "seed": 4}))
    assert any(not np.array_equal(other[k], whole[0][k]) for k in other)
    for processes in (2, 4):
      parts = []
      for p in range(processes):
        _processes(monkeypatch, p, processes)
        parts.append(list(itertools.islice(
            pipeline.train_batches(source, **kwargs), 3)))
      for t in range(3):
        for key in whole[t]:
          np.testing.assert_array_equal(again[t][key], whole[t][key])
          np.testing.assert_array_equal(
              np.concatenate([part[t][key] for part in parts]), whole[t][key],
              err_msg=f"{processes} processes, step {t}, {key}")


def test_triplet_sampler_two_classes(single):
  """The MiLaN authors' batches: anchors and positives 2T distinct images of
  one class, the T negatives distinct images of one other class."""
  it = pipeline.train_batches(single, batch_size=12, seed=0,
                              sampler="triplet", two_classes=True,
                              keys=["image", "label"])
  for batch in itertools.islice(it, 5):
    a, pos, neg = np.split(batch["label"], 3)
    assert len(set(a) | set(pos)) == 1 and len(set(neg)) == 1
    assert neg[0] != a[0]
    flat = batch["image"].reshape(12, -1)
    assert len(np.unique(flat[:8], axis=0)) == 8
    assert len(np.unique(flat[8:], axis=0)) == 4
  with pytest.raises(ValueError, match="class of >= 12"):  # classes of 10
    pipeline.train_batches(single, batch_size=18, seed=0, sampler="triplet",
                           two_classes=True)
