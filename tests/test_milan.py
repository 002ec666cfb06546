"""benchmarks/milan_table.py helpers and configs/milan_ucm.py on tiny data."""
import itertools
import os

import numpy as np
from PIL import Image
import pytest

from benchmarks import milan_table
from configs import milan_aid
from configs import milan_ucm
from rs_jax import input_pipeline
from rs_jax.data import rgb_folders


def _map_at_k_reference(dist, labels, k):
  """MiLaN code (MHCLN eval.py): per query, the archive without the query,
  stable sort by distance, AP@k = sum of precisions at the relevant ranks /
  number of relevant items in the top k (0 if none); also by min(k, R)."""
  aps, aps_r = [], []
  for q in range(len(labels)):
    others = np.delete(np.arange(len(labels)), q)
    order = others[np.argsort(dist[q, others], kind="stable")][:k]
    rel = labels[order] == labels[q]
    prec = np.cumsum(rel) / np.arange(1, k + 1)
    hits = rel.sum()
    num_rel = (labels[others] == labels[q]).sum()
    aps.append((prec * rel).sum() / hits if hits else 0.0)
    aps_r.append((prec * rel).sum() / min(k, num_rel) if num_rel else 0.0)
  return np.mean(aps), np.mean(aps_r)


def test_retrieval_scores_match_numpy_reference():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 40)
  outputs = np.clip(labels[:, None] / 4 + rng.normal(0, 0.3, (40, 24)), 0,
                    1).astype(np.float32)
  bits = outputs >= 0.5
  ham = (bits[:, None, :] != bits[None, :, :]).sum(-1)
  euc = ((outputs[:, None, :] - outputs[None, :, :]) ** 2).sum(-1)
  got_h = milan_table.retrieval_scores(milan_table.hamming_codes(outputs),
                                       labels, metric="hamming")
  got_e = milan_table.retrieval_scores(outputs, labels, metric="euclidean")
  for got, dist in ((got_h, ham), (got_e, euc)):
    want = _map_at_k_reference(dist, labels, milan_table.K_TOP)
    np.testing.assert_allclose([got["map"], got["map_r"]], want, rtol=1e-5)


def test_configs_follow_the_paper():
  c = milan_ucm.get_config()
  assert (c.model.head_hidden, c.train.batch_size, c.train.sampler) == (
      (1024, 512), 90, "triplet")
  assert (c.optim.lr, c.optim.b1, c.optim.b2) == (1e-4, 0.5, 0.9)
  assert dict(c.loss.weights) == dict(triplet=1.0, push=0.001,
                                      bit_balance=1.0)
  assert c.loss.options.triplet.margin == 0.2
  assert c.loss.options.triplet.normalize  # as MHCLN's code
  assert c.data.options.splits == "milan" and c.eval.select == "map@20"
  aid = milan_aid.get_config()
  assert aid.data.name == "aid"
  aid.data.name = "ucmerced"
  assert aid.to_dict() == c.to_dict()
  with pytest.raises(ValueError, match="'eurosat'"):
    milan_ucm.get_config("eurosat")


def test_variants():
  base = milan_ucm.get_config()
  v = milan_table.variant(base, "lambda_1", bits=16, seed=2)
  assert (v.model.bits, v.seed, v.loss.weights.push,
          v.loss.weights.bit_balance) == (16, 2, 1.0, 1.0)
  v = milan_table.variant(base, "lambda_0.001", bits=24, seed=0)
  assert (v.loss.weights.push, v.loss.weights.bit_balance) == (0.001, 0.001)
  v = milan_table.variant(base.copy_and_resolve_references().lock(),
                          "semi_hard", bits=32, seed=0)
  assert v.train.sampler == "pk" and "triplet" not in v.loss.weights
  assert v.loss.options.triplet_mined.miner == "semi_hard"
  assert v.train.sampler_options.p * v.train.sampler_options.k == 90
  v = milan_table.variant(base, "eq1_printed", bits=16, seed=0)
  assert not v.loss.options.triplet.normalize
  assert base.train.sampler == "triplet"  # the base config is not touched
  assert base.loss.options.triplet.normalize
  with pytest.raises(ValueError, match="'nope'"):
    milan_table.variant(base, "nope", bits=16, seed=0)


def test_table_rows_and_spread():
  records = [dict(method="nn_float", bits=0, seed=0, map=0.5, map_r=0.4)]
  records += [dict(method="kslsh", bits=b, seed=s, map=0.1 * s + b / 100,
                   map_r=0.0) for b in (16, 32) for s in (0, 1, 2)]
  times = {("nn_float", 0): 1.0, ("kslsh", 16): 0.5, ("kslsh", 32): 0.6}
  md = milan_table.table(records, times, ["nn_float", "kslsh"], [16, 32],
                         "map").splitlines()
  assert len(md) == 4 and all(len(l.split("|")) == 11 for l in md)
  assert "0.500 (paper 0.724)" in md[2]
  assert "0.260 ± 0.100" in md[3] and "0.420 ± 0.100" in md[3]
  assert "0.557" in md[3]  # the paper's KSLSH value at K=16
  assert milan_table.mean_spread([0.3]) == (0.3, 0.0)


def test_authors_protocol_config():
  c, authors = milan_ucm.get_config(), milan_ucm.get_config("authors")
  assert authors.data.train_split == "train+validation"
  assert not authors.eval.val_query_split and not authors.eval.val_database_split
  assert authors.train.sampler_options.two_classes
  assert milan_ucm.get_config("aid,authors").data.name == "aid"
  for key in ("data", "eval", "train"):  # nothing else changes
    authors[key] = c[key]
  assert authors.to_dict() == c.to_dict()
  c.lock()  # as the benchmark's --config flag gives it
  assert milan_table.variant(c, "authors", bits=16, seed=0).data.train_split \
      == "train+validation"
  with pytest.raises(ValueError, match="'ucmerced,aid'"):
    milan_ucm.get_config("ucmerced,aid")


def test_authors_protocol_splits_and_batches(tmp_path):
  """40 images per class, preset "milan": the authors train on all 60 % (24
  per class: train 4 + validation 20), test on 40 %, validate on nothing;
  each batch is 2T distinct images of one class and T of another."""
  for c in rgb_folders.UCMERCED_CLASSES:
    os.makedirs(tmp_path / "raw" / c)
    for i in range(40):
      Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(
          tmp_path / "raw" / c / f"{c}{i:02d}.png")
  config = milan_ucm.get_config("authors")
  config.data.manual_dir = str(tmp_path / "raw")
  config.data.data_dir = str(tmp_path / "data")
  config.model.frozen = False  # images, not cached features
  config.train.batch_size = 3 * 12
  data = input_pipeline.load(config, tmp_path)
  assert {s: len(src) for s, src in data.sources.items()} == {
      "train+validation": 21 * 24, "test": 21 * 16}
  train_labels = np.array([ex["label"] for ex in
                           (data.sources["train+validation"][i]
                            for i in range(21 * 24))])
  assert (np.bincount(train_labels) == 24).all()
  for batch in itertools.islice(data.train_batches(seed=0), 3):
    a, pos, neg = np.split(batch["label"], 3)
    assert len(set(a) | set(pos)) == 1 and len(set(neg)) == 1
    assert neg[0] != a[0]
    # anchors + positives: all 24 training images of the class, once each
    assert len({int(x[0, 0, 0]) for x in batch["image"][:24]}) == 24


def test_add_rows_merges_without_touching_the_other_rows():
  record = dict(records=[dict(method="itq", bits=16, seed=0, map=0.7),
                         dict(method="authors", bits=16, seed=0, map=0.1)],
                query_time_ms={"itq@16": 0.4, "authors@16": 9.0},
                added=[dict(variants=["authors"], command="old")])
  new = [dict(method="authors", bits=16, seed=0, map=0.8),
         dict(method="authors", bits=32, seed=0, map=0.9)]
  merged = milan_table.merge_rows(
      record, new, {("authors", 16): 0.5},
      dict(variants=["authors"], command="new", total_s=1.0))
  assert merged["records"] == record["records"][:1] + new
  assert merged["query_time_ms"] == {"itq@16": 0.4, "authors@16": 0.5}
  assert [a["command"] for a in merged["added"]] == ["new"]
  assert len(record["records"]) == 2  # the input is not changed
