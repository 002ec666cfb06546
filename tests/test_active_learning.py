"""Tests of rs_jax.active_learning (ANNEAL) against plain NumPy references."""
import csv
import json
import math
import os

import jax
import numpy as np
import pytest

from rs_jax.active_learning import acquisition
from rs_jax.active_learning import kmeans as kmeans_lib
from rs_jax.active_learning import loop
from rs_jax.active_learning import oracle as oracle_lib
from rs_jax.active_learning import pairs as pairs_lib
from rs_jax.active_learning import state as state_lib
from rs_jax.active_learning import transitivity
from rs_jax.active_learning import uncertainty


def _np_cos(e, pairs):
  u = e / np.linalg.norm(e, axis=1, keepdims=True)
  return np.sum(u[pairs[:, 0]] * u[pairs[:, 1]], 1)


def _np_alpha(s, y, lam):
  return (s[y].mean() + s[~y].mean() - lam * (s[y].std() - s[~y].std())) / 2


def _blobs(n_per, centers, scale, seed):
  rng = np.random.default_rng(seed)
  centers = np.asarray(centers, np.float64)
  x = np.concatenate([c + scale * rng.normal(size=(n_per, len(c)))
                      for c in centers])
  return x.astype(np.float32), np.repeat(np.arange(len(centers)), n_per)


# ------------------------------------------------------------ uncertainty --


def test_pair_cosine_chunks_match_numpy():
  rng = np.random.default_rng(0)
  e = rng.normal(size=(30, 5)).astype(np.float32)
  p = rng.integers(0, 30, size=(37, 2))
  want = _np_cos(e.astype(np.float64), p)
  np.testing.assert_allclose(uncertainty.pair_cosine(e, p, chunk=16), want,
                             atol=1e-6)
  np.testing.assert_allclose(uncertainty.pair_cosine(e, p), want, atol=1e-6)
  assert uncertainty.pair_cosine(e, np.zeros((0, 2))).shape == (0,)


@pytest.mark.parametrize("lam", [0.0, 3.0])
def test_mgue_threshold_and_ranking_vs_numpy(lam):
  rng = np.random.default_rng(1)
  e = rng.normal(size=(40, 6)).astype(np.float32)
  everything = pairs_lib.unlabeled_pool(40, [])
  labeled = everything[rng.choice(len(everything), 60, replace=False)]
  y = rng.random(len(labeled)) < 0.3
  pool = pairs_lib.unlabeled_pool(40, labeled)
  s_t = _np_cos(e.astype(np.float64), labeled)
  alpha = _np_alpha(s_t, y, lam)
  got = uncertainty.mgue_threshold(similarities=s_t, similar=y, lam=lam)
  np.testing.assert_allclose(got, alpha, rtol=1e-5, atol=1e-6)
  unc = np.abs(_np_cos(e.astype(np.float64), pool) - alpha)
  scores = acquisition.pair_scores(strategy="mgue", pool=pool, embeddings=e,
                                   labeled_pairs=labeled, labeled_similar=y,
                                   lam=lam)
  np.testing.assert_allclose(scores, unc, atol=1e-5)
  # The h most uncertain by eq. 8 (no ties within float tolerance here).
  assert set(np.argsort(scores)[:25]) == set(np.argsort(unc)[:25])
  idx = acquisition.select_pairs(strategy="mgue_nodiv", pool=pool, h=25,
                                 seed=0, round=1, embeddings=e,
                                 labeled_pairs=labeled, labeled_similar=y,
                                 lam=lam)
  assert set(idx) == set(np.argsort(unc)[:25])


def test_mgue_needs_both_labels():
  e = np.eye(4, dtype=np.float32)
  with pytest.raises(ValueError, match="similar and dissimilar"):
    acquisition.pair_scores(strategy="mgue", pool=[[0, 1]], embeddings=e,
                            labeled_pairs=[[1, 2], [2, 3]],
                            labeled_similar=[True, True])


def test_bcgue_and_class_confidence_vs_numpy():
  p = np.array([0.1, 0.5, 0.45, 0.95, 0.62], np.float32)
  unc = uncertainty.bcgue_uncertainty(probs=p)
  np.testing.assert_allclose(unc, np.abs(p - 0.5), atol=1e-7)
  assert list(np.argsort(np.asarray(unc), kind="stable")) == [1, 2, 4, 0, 3]
  rng = np.random.default_rng(2)
  probs = rng.dirichlet(np.ones(5), size=8).astype(np.float32)
  srt = np.sort(probs, 1)
  refs = {"least_confidence": srt[:, -1], "margin": srt[:, -1] - srt[:, -2],
          "entropy": np.sum(probs * np.log(probs), 1)}
  for kind, want in refs.items():
    np.testing.assert_allclose(
        uncertainty.class_confidence(probs=probs, kind=kind), want,
        rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="kind must be one of"):
    uncertainty.class_confidence(probs=probs, kind="bald")


# ----------------------------------------------------------------- kmeans --


def _np_lloyd(x, c, iters):
  x, c = x.astype(np.float64), c.astype(np.float64)
  for _ in range(iters):
    a = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), 1)
    for j in range(len(c)):
      if np.any(a == j):
        c[j] = x[a == j].mean(0)
  return c, np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), 1)


def _same_partition(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return np.array_equal(a[:, None] == a[None], b[:, None] == b[None])


_CENTERS = 10.0 * np.concatenate([np.eye(6), -np.eye(6)[:2]])  # 8 in 6-D


def test_kmeans_matches_numpy_on_separable_blobs():
  # [32, 6] into k = 8: the shapes of the loop tests' diversity step, so
  # the jit cache is shared.
  x, truth = _blobs(4, _CENTERS, 0.5, 3)
  init = x[:8]  # a bad start: two blobs hold all eight centroids
  want_c, want_a = _np_lloyd(x, init, 50)
  got_c, got_a = kmeans_lib.lloyd(x, init, iters=50)
  np.testing.assert_array_equal(got_a, want_a)
  np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-5)
  assert not _same_partition(got_a, truth)  # Lloyd alone cannot fix it
  for init_kind in kmeans_lib.INITS:
    key = jax.random.key(7)
    c, a = kmeans_lib.kmeans(x, k=8, key=key, init=init_kind)
    c2, a2 = kmeans_lib.kmeans(x, k=8, key=key, init=init_kind)
    np.testing.assert_array_equal(a, a2)  # deterministic
    np.testing.assert_array_equal(c, c2)
    ref_c, ref_a = _np_lloyd(x, np.asarray(c), 1)  # a fixed point of NumPy
    np.testing.assert_array_equal(a, ref_a)
    np.testing.assert_allclose(c, ref_c, rtol=1e-5, atol=1e-5)
  # k-means++ seeding puts one centroid per well-separated blob.
  for seed in range(3):
    _, a = kmeans_lib.kmeans(x, k=8, key=jax.random.key(seed))
    assert _same_partition(a, truth)
  with pytest.raises(ValueError, match="k must be in"):
    kmeans_lib.kmeans(x, k=33, key=jax.random.key(0))


# ----------------------------------------------------------- transitivity --


def _as_dict(p, s):
  return {tuple(map(int, r)): bool(v) for r, v in zip(p, s)}


def test_transitivity_rules_one_step_only():
  # 1 is shared by (0,1) sim and (1,2) sim; 2 by (1,2) sim and (2,3) dis;
  # 0 by (0,1) sim and (0,4) dis; 6 by two dissimilar pairs.
  pairs = [[0, 1], [2, 1], [2, 3], [0, 4], [5, 6], [6, 7]]
  sim = [1, 1, 0, 0, 0, 0]
  new, new_sim, conflicts = transitivity.one_step(pairs, sim, num_images=8)
  assert _as_dict(new, new_sim) == {(0, 2): True, (1, 3): False,
                                    (1, 4): False}
  assert conflicts == 0
  # A second step would give (0, 3) dissimilar from (0,2) sim + (2,3) dis
  # and (2, 4) from (0,2) sim + (0,4) dis: they must not appear.
  assert (0, 3) not in _as_dict(new, new_sim)
  # Through the state: T = annotated + free; U loses both; bits only for
  # the annotated; a later annotation is combined with annotated pairs only.
  st = state_lib.ALState(num_images=8, num_classes=2, seed=0,
                         pool=pairs_lib.unlabeled_pool(8, []))
  st = state_lib.add_pair_labels(st, pairs, sim)
  assert st.bits == 6 and st.labeled_pairs == 6 and st.free_pairs == 3
  assert len(st.pool) == 28 - 9
  st = state_lib.add_pair_labels(st, [[3, 7]], [True])
  got = _as_dict(st.pairs[st.free], st.similar[st.free])
  # new: (3,7) sim + (2,3) dis -> (2,7) dis; (3,7) sim + (6,7) dis -> (3,6)
  # dis. (0,2) is free, so (0,2)+(2,3) still gives nothing.
  assert got == {(0, 2): True, (1, 3): False, (1, 4): False, (2, 7): False,
                 (3, 6): False}
  assert st.bits == 7 and st.labeled_pairs == 7


def test_transitivity_conflicts_are_counted_not_added():
  new, _, conflicts = transitivity.one_step([[0, 1], [1, 2], [0, 2]],
                                            [1, 1, 0], num_images=3)
  assert len(new) == 0 and conflicts == 3


# ----------------------------------------------------------------- oracle --


def test_simulated_oracle_single_and_multi_label():
  o = oracle_lib.SimulatedOracle(np.array([0, 1, 0, 2]))
  np.testing.assert_array_equal(o.answer([[0, 2], [0, 1], [3, 2]]),
                                [True, False, False])
  np.testing.assert_array_equal(o.classify([3, 0]), [2, 0])
  multi = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
  pairs = [[0, 1], [0, 2], [1, 3]]
  np.testing.assert_array_equal(
      oracle_lib.SimulatedOracle(multi).answer(pairs), [True, True, False])
  np.testing.assert_array_equal(
      oracle_lib.SimulatedOracle(multi, rule="identical").answer(pairs),
      [False, True, False])
  with pytest.raises(ValueError, match="single-label"):
    oracle_lib.SimulatedOracle(multi).classify([0])
  with pytest.raises(ValueError, match="rule must be"):
    oracle_lib.SimulatedOracle(multi, rule="most")


def _fill(path, values):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  for row, v in zip(rows[1:], values):
    row[5] = v
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return rows


def test_file_oracle_csv_round_trip_and_errors(tmp_path):
  paths = [f"/data/img{i}.tif" for i in range(6)]
  o = oracle_lib.FileOracle(str(tmp_path), paths)
  q = np.array([[0, 3], [2, 5], [1, 4]])
  with pytest.raises(oracle_lib.AnswersPending) as e:
    o.answer(q, round=2)
  path = e.value.path
  assert path == str(tmp_path / "query_round002.csv")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == list(oracle_lib.CSV_COLUMNS)
  assert rows[2] == ["1", "2", "5", "/data/img2.tif", "/data/img5.tif", ""]
  with pytest.raises(oracle_lib.AnswersPending):  # still empty
    o.answer(q, round=2)
  _fill(path, ["1", "0", " 1 "])
  np.testing.assert_array_equal(o.answer(q, round=2), [True, False, True])

  def broken(values=("1", "0", "1"), edit=None):
    rows = _fill(path, values)
    if edit:
      edit(rows)
      with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path

  with pytest.raises(ValueError, match=r"line 3: similar must be 0 or 1, got "
                                       r"'yes'"):
    oracle_lib.read_answers(broken(("1", "yes", "0")), q)
  with pytest.raises(ValueError, match=r"lines \[4\] have no answer"):
    oracle_lib.read_answers(broken(("1", "0", "")), q)
  with pytest.raises(ValueError, match=r"line 2: pair_id,index1,index2 = "
                                       r"0,0,4, expected 0,0,3"):
    oracle_lib.read_answers(broken(edit=lambda r: r[1].__setitem__(2, "4")),
                            q)
  with pytest.raises(ValueError, match="2 pair rows, expected 3"):
    oracle_lib.read_answers(broken(edit=lambda r: r.pop()), q)
  with pytest.raises(ValueError, match="header must be"):
    oracle_lib.read_answers(
        broken(edit=lambda r: r[0].__setitem__(5, "label")), q)


# -------------------------------------------------------- pairs and state --


def test_initial_set_pool_and_oversampling():
  labels = np.repeat(np.arange(5), 20)
  anchors, pairs, sim = pairs_lib.initial_set(labels, fraction=0.1, seed=4)
  assert len(anchors) == 10 and len(np.unique(anchors)) == 10
  k = pairs_lib.keys(pairs, 100)
  assert len(np.unique(k)) == len(pairs) <= 80 and np.all(pairs[:, 0] <
                                                          pairs[:, 1])
  np.testing.assert_array_equal(sim, labels[pairs[:, 0]] == labels[pairs[:, 1]])
  for a in anchors:
    mine = np.any(pairs == a, 1)
    assert sim[mine].sum() >= 4 and (~sim[mine]).sum() >= 4
  again = pairs_lib.initial_set(labels, fraction=0.1, seed=4)
  np.testing.assert_array_equal(again[1], pairs)
  assert not np.array_equal(
      pairs_lib.initial_set(labels, fraction=0.1, seed=5)[0], anchors)
  with pytest.raises(ValueError, match="image 0 has 1 similar"):
    pairs_lib.initial_set(np.array([0, 0, 1, 1, 1, 1, 1]), fraction=1.0)

  full = pairs_lib.unlabeled_pool(100, pairs)
  assert len(full) == 4950 - len(pairs)
  assert not np.isin(pairs_lib.keys(full, 100), k).any()
  # Sampled pool: distinct, none of T, and T's (j, i) count as T.
  flipped = pairs[:, ::-1]
  sample = pairs_lib.unlabeled_pool(100, flipped, max_pairs=500, seed=1)
  sk = pairs_lib.keys(sample, 100)
  assert len(sample) == 500 == len(np.unique(sk))
  assert not np.isin(sk, k).any()
  np.testing.assert_array_equal(
      sample, pairs_lib.unlabeled_pool(100, flipped, max_pairs=500, seed=1))

  idx = pairs_lib.oversample_minority(sim, seed=0)
  assert sim[idx].sum() == (~sim[idx]).sum() == (~sim).sum()
  assert set(idx) == set(range(len(sim)))


def test_state_save_load_round_trip_and_curve(tmp_path):
  labels = np.repeat(np.arange(3), 10)
  st = state_lib.new_pair_state(labels, num_classes=3, fraction=0.2, seed=0)
  assert st.bits == pytest.approx(6 * math.log2(3))
  assert state_lib.new_pair_state(labels, num_classes=3, fraction=0.2, seed=0,
                                  initial_cost="pairs").bits == st.labeled_pairs
  st.pending = st.pool[:3]
  path = str(tmp_path / "s" / "al_state.npz")
  state_lib.save(path, st)
  back = state_lib.load(path)
  for f in ("num_images", "seed", "round", "phase", "bits", "conflicts"):
    assert getattr(back, f) == getattr(st, f)
  for f in ("pairs", "similar", "free", "pool", "pending", "images"):
    np.testing.assert_array_equal(getattr(back, f), getattr(st, f))
    assert getattr(back, f).dtype == getattr(st, f).dtype
  assert os.listdir(tmp_path / "s") == ["al_state.npz"]  # no temp files left
  curve = str(tmp_path / "al_curve.json")
  state_lib.append_curve(curve, {"round": 0, "map@5": 0.1})
  state_lib.append_curve(curve, {"round": 1, "map@5": 0.2})
  state_lib.append_curve(curve, {"round": 1, "map@5": 0.3})  # rerun of 1
  assert json.load(open(curve)) == [{"round": 0, "map@5": 0.1},
                                    {"round": 1, "map@5": 0.3}]


# -------------------------------------------------------------- selection --


def _fake_embeddings(n, dim, seed=0):
  return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("strategy", ["random", "mgue", "mgue_nodiv", "bcgue",
                                      "bcgue_nodiv"])
def test_select_pairs_invariants(strategy):
  labels = np.repeat(np.arange(4), 10)
  st = state_lib.new_pair_state(labels, num_classes=4, fraction=0.2, seed=0)
  e = _fake_embeddings(40, dim=3)
  probs = np.asarray(1 / (1 + np.exp(-5 * uncertainty.pair_cosine(e, st.pool))))
  h = 8
  idx = acquisition.select_pairs(
      strategy=strategy, pool=st.pool, h=h, seed=0, round=1, embeddings=e,
      labeled_pairs=st.pairs, labeled_similar=st.similar, pair_probs=probs)
  assert len(idx) == h == len(np.unique(idx))
  chosen = st.pool[idx]
  assert not np.isin(pairs_lib.keys(chosen, 40),
                     pairs_lib.keys(st.pairs, 40)).any()
  if strategy != "random":
    scores = acquisition.pair_scores(
        strategy=strategy, pool=st.pool, embeddings=e, labeled_pairs=st.pairs,
        labeled_similar=st.similar, pair_probs=probs)
    rank = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    assert rank[idx].max() < (h if strategy.endswith("nodiv") else 4 * h)
  with pytest.raises(ValueError, match="h must be in"):
    acquisition.select_pairs(strategy=strategy, pool=st.pool[:3], h=4, seed=0,
                             round=1, embeddings=e, labeled_pairs=st.pairs,
                             labeled_similar=st.similar, pair_probs=probs[:3])


def test_diversity_takes_one_pair_per_cluster():
  # 8 tight groups of 4 candidates; uncertainty prefers group 0 overall,
  # but with h = 8 the diversity step must take the best of each group.
  feats, group = _blobs(4, _CENTERS, 0.1, 5)
  scores = np.arange(32, dtype=np.float64)
  scores[group == 0] = [-4, -3, -2, -1]
  picked = acquisition.diverse_most_uncertain(
      scores, lambda top: feats[top], h=8, p=32, key=jax.random.key(0))
  np.testing.assert_array_equal(picked, [0, 4, 8, 12, 16, 20, 24, 28])
  assert set(np.argsort(scores)[:4]) == {0, 1, 2, 3}  # uncertainty alone


def test_select_images_cal_invariants():
  rng = np.random.default_rng(3)
  probs = rng.dirichlet(np.ones(4), size=40)
  e = _fake_embeddings(40, dim=6)
  unlabeled = np.arange(5, 40)
  got = acquisition.select_images(class_probs=probs, embeddings=e,
                                  unlabeled=unlabeled, n=8, seed=0, round=1)
  assert len(got) == 8 == len(np.unique(got)) and np.all(got >= 5)
  conf = np.max(probs[unlabeled], 1)
  top = unlabeled[np.argsort(conf, kind="stable")[:32]]
  assert np.isin(got, top).all()
  assert acquisition.images_for_bits(336, 21) == 76  # 336 / log2 21 = 76.5


# ------------------------------------------------------------------- loop --


class FakeModel:
  """A linear map W fitted in closed form to the labeled pairs (directions
  that spread dissimilar pairs relative to similar ones), or for CAL a
  nearest-class-mean classifier. Gaussian blobs in 6-D, 4 classes."""

  def __init__(self, seed=0):
    centers = np.zeros((4, 6))
    centers[np.arange(4), np.arange(4)] = 3.0
    self.x, self.labels = _blobs(12, centers, 1.0, seed)
    rng = np.random.default_rng(seed + 1)
    self.x[:, 4:] += 4 * rng.normal(size=(48, 2))  # nuisance dims
    self.xq, self.lq = _blobs(5, centers, 1.0, seed + 2)
    self.xq[:, 4:] += 4 * rng.normal(size=(20, 2))
    self.train_calls = 0
    self.fail_at = None

  def train_fn(self, items, labels, params):
    self.train_calls += 1
    if self.train_calls == self.fail_at:
      raise RuntimeError("simulated crash")
    if items.ndim == 1:  # CAL: class means
      return {"means": np.stack([self.x[items[labels == c]].mean(0)
                                 if np.any(labels == c) else np.zeros(6)
                                 for c in range(4)])}
    d = self.x[items[:, 0]] - self.x[items[:, 1]]
    s_sim = d[labels].T @ d[labels] + 1e-3 * np.eye(6)
    s_dis = d[~labels].T @ d[~labels]
    w, v = np.linalg.eig(np.linalg.solve(s_sim, s_dis))
    return {"w": np.real(v[:, np.argsort(-np.real(w))[:3]])}

  def _emb(self, params, x):
    return x @ params["w"] if "w" in params else x

  def embed_fn(self, params, idx):
    out = {"embeddings": self._emb(params, self.x[idx])}
    if "means" in params:
      d = ((self.x[idx, None] - params["means"][None]) ** 2).sum(-1)
      p = np.exp(-(d - d.min(1, keepdims=True)) / 4)
      out["class_probs"] = p / p.sum(1, keepdims=True)
    return out

  def pair_prob_fn(self, params, embedded, pairs):
    s = np.asarray(uncertainty.pair_cosine(embedded["embeddings"], pairs))
    return 1 / (1 + np.exp(-8 * (s - 0.5)))

  def evaluate_fn(self, params):
    q, db = self._emb(params, self.xq), self._emb(params, self.x)
    cos = _np_cos(np.concatenate([q, db]), np.stack(np.meshgrid(
        np.arange(20), 20 + np.arange(48), indexing="ij"), -1).reshape(-1, 2))
    top = np.argsort(-cos.reshape(20, 48), 1, kind="stable")[:, :5]
    rel = self.labels[top] == self.lq[:, None]
    prec = np.cumsum(rel, 1) / np.arange(1, 6)
    ap = np.sum(prec * rel, 1) / np.maximum(rel.sum(1), 1)
    return {"map@5": float(ap.mean())}


class CountingOracle(oracle_lib.SimulatedOracle):

  def __init__(self, labels):
    super().__init__(labels)
    self.asked = []

  def answer(self, pairs, *, round=0):
    self.asked.append((round, pairs_lib.keys(pairs, 48).tolist()))
    return super().answer(pairs)


def _run(tmp_path, model, oracle, strategy="mgue", rounds=3, name="a", h=8):
  init = (state_lib.new_image_state if strategy == "cal" else
          state_lib.new_pair_state)(model.labels, num_classes=4,
                                    fraction=0.1, seed=0)
  return loop.run_active_learning(
      state_path=str(tmp_path / name / "al_state.npz"),
      curve_path=str(tmp_path / name / "al_curve.json"), strategy=strategy,
      rounds=rounds, h=h, oracle=oracle, train_fn=model.train_fn,
      embed_fn=model.embed_fn, evaluate_fn=model.evaluate_fn,
      pair_prob_fn=model.pair_prob_fn, initial_state=init,
      log=lambda *_: None)


@pytest.mark.parametrize("strategy", ["mgue", "bcgue", "random"])
def test_loop_end_to_end_curve(tmp_path, strategy):
  model = FakeModel()
  res = _run(tmp_path, model, oracle_lib.SimulatedOracle(model.labels),
             strategy)
  assert res.waiting_for is None and res.state.round == 3
  curve = json.load(open(tmp_path / "a" / "al_curve.json"))
  assert [e["round"] for e in curve] == [0, 1, 2, 3]
  init_bits = 5 * math.log2(4)  # 10% of 48 images, class labels
  assert [e["bits"] for e in curve] == [init_bits + 8 * r for r in range(4)]
  assert np.diff([e["labeled_pairs"] for e in curve]).tolist() == [8, 8, 8]
  assert all(e["free_pairs"] > 0 and 0 <= e["map@5"] <= 1 for e in curve)
  assert set(curve[0]) == {"round", "bits", "labeled_pairs", "free_pairs",
                           "labeled_images", "map@5"}
  st = res.state
  assert len(np.unique(pairs_lib.keys(st.pairs, 48))) == len(st.pairs)
  assert not np.isin(pairs_lib.keys(st.pool, 48),
                     pairs_lib.keys(st.pairs, 48)).any()
  assert len(st.pool) + len(st.pairs) == 48 * 47 // 2
  np.testing.assert_array_equal(
      st.similar, model.labels[st.pairs[:, 0]] == model.labels[st.pairs[:, 1]])
  # The metric learned from the labeled pairs beats the raw features.
  assert curve[-1]["map@5"] > model.evaluate_fn({})["map@5"]


def test_loop_resume_after_crash_loses_no_labels(tmp_path):
  ref_model = FakeModel()
  ref = _run(tmp_path, ref_model, CountingOracle(ref_model.labels), name="ref")
  model = FakeModel()
  model.fail_at = 3  # round 0, round 1, then crash training round 2
  oracle = CountingOracle(model.labels)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _run(tmp_path, model, oracle, name="b")
  saved = state_lib.load(str(tmp_path / "b" / "al_state.npz"))
  assert (saved.round, saved.phase) == (2, "train")  # answers of round 2 kept
  assert [r for r, _ in oracle.asked] == [1, 2]
  model.fail_at = None
  res = _run(tmp_path, model, oracle, name="b")
  assert [r for r, _ in oracle.asked] == [1, 2, 3]  # round 2 not re-queried
  asked = [k for _, ks in oracle.asked for k in ks]
  assert len(asked) == len(set(asked)) == 24
  for f in ("pairs", "similar", "free", "pool"):
    np.testing.assert_array_equal(getattr(res.state, f), getattr(ref.state, f))
  assert res.state.bits == ref.state.bits
  assert (json.load(open(tmp_path / "b" / "al_curve.json"))
          == json.load(open(tmp_path / "ref" / "al_curve.json")))


def test_loop_with_file_oracle(tmp_path):
  model = FakeModel()
  paths = [f"img{i}.png" for i in range(48)]
  o = oracle_lib.FileOracle(str(tmp_path / "q"), paths)
  res = _run(tmp_path, model, o, rounds=2)
  assert res.waiting_for == o.path(1) and res.state.phase == "query"
  for rnd in (1, 2):
    pend = state_lib.load(str(tmp_path / "a" / "al_state.npz")).pending
    _fill(o.path(rnd), [str(int(v)) for v in
                        model.labels[pend[:, 0]] == model.labels[pend[:, 1]]])
    res = _run(tmp_path, model, o, rounds=2)
  assert res.waiting_for is None and res.state.round == 2
  assert res.state.labeled_pairs == (
      state_lib.new_pair_state(model.labels, num_classes=4, fraction=0.1,
                               seed=0).labeled_pairs + 16)


def test_loop_cal(tmp_path):
  model = FakeModel()
  res = _run(tmp_path, model, oracle_lib.SimulatedOracle(model.labels), "cal",
             rounds=2, h=16)
  st = res.state
  per_round = acquisition.images_for_bits(16, 4)  # 16 bits / 2 bits each
  assert per_round == 8
  assert len(st.images) == len(np.unique(st.images)) == 5 + 2 * per_round
  np.testing.assert_array_equal(st.image_labels, model.labels[st.images])
  assert st.bits == pytest.approx(len(st.images) * 2.0)
  assert len(st.pairs) == 0
  with pytest.raises(ValueError, match="does not match the state"):
    _run(tmp_path, model, oracle_lib.SimulatedOracle(model.labels), "mgue")
