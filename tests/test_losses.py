"""Tests for rs_jax.losses against plain-NumPy (loop) references."""
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import losses

MINERS = ("batch_all", "batch_hard", "semi_hard", "label_hamming")


class _Jitted:
  """`L.name(**kw)` calls `losses.name` under `jax.jit`.

  String options are static (closed over), everything else is traced, so a
  new margin or weight does not recompile. Compiling a whole loss once is far
  cheaper on CPU than op-by-op eager dispatch of each primitive.
  """

  def __init__(self):
    self._cache = {}

  def __getattr__(self, name):
    fn = getattr(losses, name)

    def call(**kw):
      static = tuple(sorted(
          (k, v) for k, v in kw.items() if isinstance(v, (str, bool))))
      key = (name, static)
      if key not in self._cache:
        self._cache[key] = jax.jit(lambda **t: fn(**t, **dict(static)))
      traced = {k: v for k, v in kw.items()
                if not isinstance(v, (str, bool))}
      return self._cache[key](**traced)

    return call


L = _Jitted()


# ------------------------------------------------------ NumPy references --


def np_sqdist(x, y):
  return np.array([[float(np.sum((a - b) ** 2)) for b in y] for a in x])


def np_cos(a, b):
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  if na == 0 or nb == 0:
    return 0.0
  return float(np.dot(a, b) / (na * nb))


def np_relevant(labels, i, j):
  if labels.ndim == 1:
    return labels[i] == labels[j]
  return bool(np.any((labels[i] > 0) & (labels[j] > 0)))


def np_hamming(labels, i, j):
  if labels.ndim == 1:
    return int(labels[i] != labels[j])
  return int(np.sum(labels[i] != labels[j]))


def np_mined(d, labels, margin, miner):
  """Reference miner on a distance matrix d[anchor, candidate] (loops)."""
  b = d.shape[0]
  hinge = lambda x: max(0.0, x)
  vals = []
  for a in range(b):
    others = [j for j in range(b) if j != a]
    if miner == "label_hamming":
      if not others:
        continue
      hams = [np_hamming(labels, a, j) for j in others]
      p = others[int(np.argmin(hams))]
      n = others[int(np.argmax(hams))]
      if np_hamming(labels, a, n) > np_hamming(labels, a, p):
        vals.append(hinge(d[a, p] - d[a, n] + margin))
      continue
    pos = [j for j in others if np_relevant(labels, a, j)]
    neg = [j for j in range(b) if not np_relevant(labels, a, j)]
    if miner == "batch_all":
      for p in pos:
        for n in neg:
          l = hinge(d[a, p] - d[a, n] + margin)
          if l > 0:
            vals.append(l)
    elif miner == "batch_hard":
      if pos and neg:
        vals.append(hinge(max(d[a, p] for p in pos)
                          - min(d[a, n] for n in neg) + margin))
    elif miner == "semi_hard":
      if not neg:
        continue
      for p in pos:
        semi = [d[a, n] for n in neg if d[a, p] < d[a, n] < d[a, p] + margin]
        chosen = min(semi) if semi else min(d[a, n] for n in neg)
        vals.append(hinge(d[a, p] - chosen + margin))
  return float(np.mean(vals)) if vals else 0.0


def np_triplet(a, p, n, margin):
  return float(np.mean([max(0.0, np.sum((a[i] - p[i]) ** 2)
                            - np.sum((a[i] - n[i]) ** 2) + margin)
                        for i in range(len(a))]))


def np_cross_modal(s1, s2, labels, margin, miner="label_hamming"):
  d11, d22, d12 = np_sqdist(s1, s1), np_sqdist(s2, s2), np_sqdist(s1, s2)
  d21 = np_sqdist(s2, s1)
  intra = 0.5 * np_mined(d11, labels, margin, miner) + 0.5 * np_mined(
      d22, labels, margin, miner)
  inter = 0.5 * np_mined(d12, labels, margin, miner) + 0.5 * np_mined(
      d21, labels, margin, miner)
  return 0.5 * intra + 0.5 * inter


def np_contrastive_cosine(x1, x2, sim, margin):
  out = []
  for a, b, y in zip(x1, x2, sim):
    s = np_cos(a, b)
    out.append(1 - s if y else max(0.0, s - margin))
  return float(np.mean(out))


def np_contrastive(x1, x2, sim, margin):
  out = []
  for a, b, y in zip(x1, x2, sim):
    d = math.sqrt(np.sum((a - b) ** 2))
    out.append(0.5 * d * d if y else 0.5 * max(0.0, margin - d) ** 2)
  return float(np.mean(out))


def np_ntxent(x1, x2, tau):
  z = np.concatenate([x1, x2])
  n = len(z)
  b = n // 2
  out = []
  for i in range(n):
    j = (i + b) % n
    denom = sum(math.exp(np_cos(z[i], z[k]) / tau) for k in range(n) if k != i)
    out.append(-math.log(math.exp(np_cos(z[i], z[j]) / tau) / denom))
  return float(np.mean(out))


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_bce(x, y):
  p = np_sigmoid(x)
  return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def np_cross_entropy(logits, labels):
  out = []
  for row, y in zip(logits, labels):
    out.append(-(row[y] - math.log(sum(math.exp(v) for v in row))))
  return float(np.mean(out))


def np_push(v, form):
  k = v.shape[1]
  per = [np.sum((row - 0.5) ** 2) / k for row in v]
  return -(sum(per) if form == "paper" else np.mean(per))


def np_balance(v, form):
  if form == "per_bit":
    return float(np.mean([(np.mean(v[:, k]) - 0.5) ** 2
                          for k in range(v.shape[1])]))
  per = [(np.mean(row) - 0.5) ** 2 for row in v]
  return float(sum(per) if form == "paper" else np.mean(per))


def np_quantization(v, low=0.0, high=1.0):
  b = np.where(v >= (low + high) / 2, high, low)
  return float(np.mean([np.sum((r - c) ** 2) for r, c in zip(v, b)]))


def np_mse_cosine_label(s1, s2, lab, pairing="adjacent", w=(0.33, 0.33, 0.33),
                        w_same=0.5, w_diff=0.5):
  """Literal thesis eqs. 3.4-3.13 over a list of (row1, row2) pairs."""
  b = len(s1)
  if pairing == "adjacent":
    pairs = [(2 * p, 2 * p + 1) for p in range(b // 2)]
  else:
    pairs = [(i, j) for i in range(b) for j in range(b) if i != j]
  m = lambda xs: float(np.mean(xs)) if xs else 0.0
  t = {(i, j): np_cos(lab[i], lab[j]) for i, j in pairs}
  intra1 = m([(np_cos(s1[i], s1[j]) - t[i, j]) ** 2 for i, j in pairs])
  intra2 = m([(np_cos(s2[i], s2[j]) - t[i, j]) ** 2 for i, j in pairs])
  if pairing == "adjacent":
    same1 = m([(np_cos(s1[i], s2[i]) - 1.0) ** 2 for i, _ in pairs])
    same2 = m([(np_cos(s1[j], s2[j]) - 1.0) ** 2 for _, j in pairs])
    diff1 = m([(np_cos(s1[i], s2[j]) - t[i, j]) ** 2 for i, j in pairs])
    diff2 = m([(np_cos(s1[j], s2[i]) - t[i, j]) ** 2 for i, j in pairs])
    same = 0.5 * same1 + 0.5 * same2                        # (3.12)
    diff = 0.5 * diff1 + 0.5 * diff2                        # (3.13)
  else:
    same = m([(np_cos(s1[i], s2[i]) - 1.0) ** 2 for i in range(b)])
    diff = m([(np_cos(s1[i], s2[j]) - t[i, j]) ** 2 for i, j in pairs])
  inter = w_same * same + w_diff * diff                     # (3.11)
  return w[0] * intra1 + w[1] * intra2 + w[2] * inter       # (3.10)


# --------------------------------------------------------------- fixtures --


def rng(seed=0):
  return np.random.default_rng(seed)


def sigmoid_codes(r, b, k):
  return np_sigmoid(r.normal(size=(b, k)) * 2).astype(np.float32)


def multi_hot(r, b, c, p=0.3):
  lab = (r.random((b, c)) < p).astype(np.int32)
  lab[np.arange(b), r.integers(0, c, b)] = 1  # at least one label each
  return lab


def close(actual, expected, tol=1e-5):
  actual = np.asarray(actual)
  assert actual.shape == () and actual.dtype == np.float32
  np.testing.assert_allclose(float(actual), expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------- triplets --


def test_triplet_given():
  r = rng(1)
  a, p, n = (r.normal(size=(7, 5)).astype(np.float32) for _ in range(3))
  for m in (0.2, 5.0):
    close(L.triplet(anchor=a, positive=p, negative=n, margin=m),
          np_triplet(a, p, n, m))
  # Single triplet with a known value: d_ap = 1, d_an = 4.
  one = L.triplet(anchor=np.zeros((1, 2)), positive=[[1.0, 0.0]],
                  negative=[[0.0, 2.0]], margin=3.5)
  close(one, 0.5)
  # normalize=True: the same on rows scaled to unit length (MHCLN code).
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  close(L.triplet(anchor=a, positive=p, negative=n, normalize=True),
        np_triplet(unit(a), unit(p), unit(n), 0.2))


def test_triplet_mined_normalize():
  r = rng(3)
  e = sigmoid_codes(r, 12, 6)
  labels = r.integers(0, 3, 12)
  u = e / np.linalg.norm(e, axis=1, keepdims=True)
  close(L.triplet_mined(embeddings=e, labels=labels, miner="semi_hard",
                        normalize=True),
        np_mined(np_sqdist(u, u), labels, 0.2, "semi_hard"))


@pytest.mark.parametrize("miner", MINERS)
@pytest.mark.parametrize("label_kind", ["int", "multi_hot"])
def test_triplet_mined_random(miner, label_kind):
  r = rng(2)
  e = sigmoid_codes(r, 12, 6)
  labels = (r.integers(0, 3, 12) if label_kind == "int"
            else multi_hot(r, 12, 5))
  for margin in (0.2, 1.0):
    got = L.triplet_mined(embeddings=e, labels=labels, margin=margin,
                          miner=miner)
    close(got, np_mined(np_sqdist(e, e), labels, margin, miner))


@pytest.mark.parametrize("miner", MINERS)
def test_triplet_mined_ties(miner):
  # Small-integer embeddings: distances are exact in float32 and many tie,
  # including d_an == d_ap on the semi-hard boundary.
  # Shapes as in test_triplet_mined_random so the compiled losses are reused.
  r = rng(3)
  e = r.integers(0, 2, (12, 6)).astype(np.float32)
  labels = r.integers(0, 3, 12)
  for margin in (1.0, 2.0):
    got = L.triplet_mined(embeddings=e, labels=labels, margin=margin,
                          miner=miner)
    close(got, np_mined(np_sqdist(e, e), labels, margin, miner))
  # Label ties for the Hamming miner: the first index wins.
  lab = multi_hot(r, 12, 5, p=0.5)
  got = L.triplet_mined(embeddings=e, labels=lab, margin=1.0, miner=miner)
  close(got, np_mined(np_sqdist(e, e), lab, 1.0, miner))


def test_triplet_mined_hand_computed():
  # 1-D embeddings 0, 1, 1.2, 0.5; only items 0 and 1 share a class.
  e = np.array([[0.0], [1.0], [1.2], [0.5]], np.float32)
  labels = np.array([0, 0, 1, 2])
  f = lambda miner: L.triplet_mined(embeddings=e, labels=labels,
                                    margin=0.5, miner=miner)
  # (0,1): semi-hard negative 2 (d=1.44) -> 0.06; (1,0): no semi-hard
  # negative -> hardest (d=0.04) -> 1.46.
  close(f("semi_hard"), (0.06 + 1.46) / 2)
  close(f("batch_hard"), (1.25 + 1.46) / 2)
  close(f("batch_all"), (0.06 + 1.25 + 1.46 + 1.25) / 4)


def test_label_hamming_miner_hand_computed():
  lab = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 0, 0]])
  e = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
  # Label Hamming distances (first index wins ties):
  #   anchor 0: to 1, 2, 3 = 1, 3, 0 -> p=3, n=2: d = 9, 4
  #   anchor 1: to 0, 2, 3 = 1, 2, 1 -> p=0, n=2: d = 1, 1
  #   anchor 2: to 0, 1, 3 = 3, 2, 3 -> p=1, n=0: d = 1, 4
  #   anchor 3: to 0, 1, 2 = 0, 1, 3 -> p=0, n=2: d = 9, 1
  m = 0.5
  expected = np.mean([max(0, 9 - 4 + m), max(0, 1 - 1 + m),
                      max(0, 1 - 4 + m), max(0, 9 - 1 + m)])
  got = L.triplet_mined(embeddings=e, labels=lab, margin=m,
                        miner="label_hamming")
  close(got, expected)


@pytest.mark.parametrize("miner", MINERS)
def test_triplet_mined_degenerate_batches(miner):
  e = np.array([[0.1, 0.9], [0.7, 0.2]], np.float32)
  cases = [
      (e[:1], np.array([0])),                  # batch of 1
      (e, np.array([3, 3])),                   # all equal: no negative
      (e, np.array([0, 1])),                   # no positive
      (e, np.array([[1, 0], [1, 0]])),         # multi-hot, all equal
      (e, np.array([[1, 0], [0, 1]])),         # multi-hot, no positive
  ]
  for emb, lab in cases:
    got = L.triplet_mined(embeddings=emb, labels=lab, margin=0.2, miner=miner)
    close(got, 0.0)
    assert np_mined(np_sqdist(emb, emb), lab, 0.2, miner) == 0.0


def test_triplet_mined_bad_miner():
  with pytest.raises(ValueError, match="batch_hard"):
    L.triplet_mined(embeddings=np.zeros((2, 2)), labels=[0, 1],
                    miner="hardest")


def test_cross_modal_triplet():
  r = rng(4)
  s1, s2 = sigmoid_codes(r, 10, 8), sigmoid_codes(r, 10, 8)
  lab = multi_hot(r, 10, 6)
  for margin in (0.2, 2.0):
    close(L.cross_modal_triplet(s1=s1, s2=s2, labels=lab, margin=margin),
          np_cross_modal(s1, s2, lab, margin))
  # Weights: w_intra=1, w_inter=0 is the intra-modal half only.
  intra = L.cross_modal_triplet(s1=s1, s2=s2, labels=lab, w_intra=1.0,
                                w_inter=0.0)
  close(intra, 0.5 * np_mined(np_sqdist(s1, s1), lab, 0.2, "label_hamming")
        + 0.5 * np_mined(np_sqdist(s2, s2), lab, 0.2, "label_hamming"))
  # All labels equal: no valid triplet anywhere.
  close(L.cross_modal_triplet(s1=s1, s2=s2, labels=np.ones_like(lab)), 0.0)


# ------------------------------------------------------------------- pairs --


def test_contrastive_cosine():
  r = rng(5)
  x1, x2 = r.normal(size=(9, 4)), r.normal(size=(9, 4))
  x2[0] = 3 * x1[0]  # s = 1
  x2[1] = -x1[1]     # s = -1
  sim = r.integers(0, 2, 9)
  sim[:2] = [1, 0]
  for m in (0.5, -0.3):
    close(L.contrastive_cosine(embeddings1=x1, embeddings2=x2,
                               similar=sim, margin=m),
          np_contrastive_cosine(x1, x2, sim, m))
  # Known values: parallel similar pair -> 0; parallel dissimilar -> 1 - m.
  one = np.array([[1.0, 2.0]])
  close(L.contrastive_cosine(embeddings1=one, embeddings2=one,
                             similar=[0]), 0.5)
  close(L.contrastive_cosine(embeddings1=one, embeddings2=2 * one,
                             similar=[True]), 0.0)


def test_contrastive_euclidean():
  r = rng(6)
  x1, x2 = r.normal(size=(9, 4)), r.normal(size=(9, 4)) * 0.3
  x2[0] = x1[0]  # d = 0
  sim = r.integers(0, 2, 9)
  sim[0] = 0
  for m in (1.0, 3.0):
    close(L.contrastive(embeddings1=x1, embeddings2=x2, similar=sim,
                        margin=m), np_contrastive(x1, x2, sim, m))
  # d = 2: similar -> 2; dissimilar with margin 3 -> 0.5.
  a, b = np.zeros((1, 2)), np.array([[0.0, 2.0]])
  close(L.contrastive(embeddings1=a, embeddings2=b, similar=[1]), 2.0)
  close(L.contrastive(embeddings1=a, embeddings2=b, similar=[0],
                      margin=3.0), 0.5)


@pytest.mark.parametrize("b", [1, 2, 7])
def test_ntxent(b):
  r = rng(7)
  x1, x2 = r.normal(size=(b, 5)), r.normal(size=(b, 5))
  for tau in (0.5, 0.1):
    close(L.ntxent(embeddings1=x1, embeddings2=x2, temperature=tau),
          np_ntxent(x1, x2, tau), tol=1e-4)
  v1, v2 = np_sigmoid(x1), np_sigmoid(x2)  # sigmoid outputs, centred
  close(L.ntxent(embeddings1=v1, embeddings2=v2, temperature=0.5, offset=0.5),
        np_ntxent(v1 - 0.5, v2 - 0.5, 0.5), tol=1e-4)


def test_ntxent_offset_half_is_hamming_on_binary_codes():
  # cos(b - 0.5, b' - 0.5) = 1 - 2 Hamming(b, b') / K for b, b' in {0, 1}^K.
  b = rng(9).integers(0, 2, (6, 8)).astype(np.float64)
  ham = (b[:, None] != b[None]).sum(-1)
  z = np.concatenate([b, b]) - 0.5
  k = b.shape[1]
  want = 1 - 2 * np.concatenate([np.concatenate([ham, ham], 1)] * 2) / k
  got = np.array([[np_cos(x, y) for y in z] for x in z])
  np.testing.assert_allclose(got, want, atol=1e-12)
  close(L.ntxent(embeddings1=b, embeddings2=b, temperature=0.5, offset=0.5),
        np_ntxent(b - 0.5, b - 0.5, 0.5), tol=1e-4)


def test_pair_bce_and_classification():
  r = rng(8)
  x = r.normal(size=9) * 3
  y = r.integers(0, 2, 9)
  close(L.pair_bce(pair_logits=x, similar=y), np_bce(x, y))
  close(L.pair_bce(pair_logits=x[:, None], similar=y), np_bce(x, y))
  logits = r.normal(size=(6, 4)) * 3
  labels = r.integers(0, 4, 6)
  close(L.cross_entropy(logits=logits, labels=labels),
        np_cross_entropy(logits, labels))
  mh = multi_hot(r, 6, 4)
  close(L.sigmoid_bce(logits=logits, labels=mh), np_bce(logits, mh))
  # Large logits stay finite (stable formulation).
  big = L.pair_bce(pair_logits=np.array([200.0, -200.0]), similar=[0, 1])
  close(big, 200.0)


# ----------------------------------------------------------------- hashing --


@pytest.mark.parametrize("form", ["paper", "code"])
def test_push(form):
  v = sigmoid_codes(rng(9), 6, 8)
  close(L.push(embeddings=v, form=form), np_push(v, form))
  # {0, 1} codes reach the minimum: -B/4 (paper), -1/4 (code).
  binary = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
  close(L.push(embeddings=binary, form=form),
        -0.5 if form == "paper" else -0.25)
  close(L.push(embeddings=np.full((3, 4), 0.5), form=form), 0.0)


@pytest.mark.parametrize("form", ["paper", "code", "per_bit"])
def test_bit_balance(form):
  v = sigmoid_codes(rng(10), 6, 8)
  close(L.bit_balance(embeddings=v, form=form), np_balance(v, form))
  # Per-sample balanced but every bit constant over the batch: only per_bit
  # penalises it.
  codes = np.array([[1.0, 1.0, 0.0, 0.0]] * 4)
  close(L.bit_balance(embeddings=codes, form=form),
        0.25 if form == "per_bit" else 0.0)


def test_bad_form():
  with pytest.raises(ValueError, match="form"):
    L.push(embeddings=np.zeros((2, 2)), form="per_bit")
  with pytest.raises(ValueError, match="form"):
    L.bit_balance(embeddings=np.zeros((2, 2)), form="mean")


def test_quantization():
  v = sigmoid_codes(rng(11), 6, 8)
  close(L.quantization(embeddings=v), np_quantization(v))
  t = np.tanh(rng(12).normal(size=(5, 4)))
  close(L.quantization(embeddings=t, low=-1.0, high=1.0),
        np_quantization(t, -1.0, 1.0))
  close(L.quantization(embeddings=np.array([[0.5, 0.25]])), 0.25 + 0.0625)


# ------------------------------------------------------ thesis MSE (3.1) --


@pytest.mark.parametrize("pairing", ["adjacent", "all"])
def test_mse_cosine_label(pairing):
  r = rng(13)
  s1, s2 = sigmoid_codes(r, 8, 6), sigmoid_codes(r, 8, 6)
  lab = multi_hot(r, 8, 5)
  close(L.mse_cosine_label(s1=s1, s2=s2, labels=lab, pairing=pairing),
        np_mse_cosine_label(s1, s2, lab, pairing))
  kw = dict(w_intra_s1=0.2, w_intra_s2=0.3, w_inter=0.5, w_same_label=0.9,
            w_different_label=0.1)
  close(L.mse_cosine_label(s1=s1, s2=s2, labels=lab, pairing=pairing,
                           **kw),
        np_mse_cosine_label(s1, s2, lab, pairing, (0.2, 0.3, 0.5), 0.9, 0.1))
  # All labels equal, and zero codes (cosine taken as 0).
  ones = np.ones_like(lab)
  close(L.mse_cosine_label(s1=s1, s2=s2, labels=ones, pairing=pairing),
        np_mse_cosine_label(s1, s2, ones, pairing))
  z = np.zeros((2, 6))
  close(L.mse_cosine_label(s1=z, s2=z, labels=lab[:2], pairing=pairing),
        np_mse_cosine_label(z, z, lab[:2], pairing))


def test_mse_cosine_label_perfect_codes_and_errors():
  # Codes equal to the labels, same in both modalities: every term is 0.
  lab = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [1, 0, 1]], np.float32)
  close(L.mse_cosine_label(s1=lab, s2=lab, labels=lab), 0.0)
  close(L.mse_cosine_label(s1=lab, s2=lab, labels=lab, pairing="all"),
        0.0)
  with pytest.raises(ValueError, match="even"):
    L.mse_cosine_label(s1=lab[:3], s2=lab[:3], labels=lab[:3])
  with pytest.raises(ValueError, match="multi-hot"):
    L.mse_cosine_label(s1=lab, s2=lab, labels=np.arange(4))
  with pytest.raises(ValueError, match="pairing"):
    L.mse_cosine_label(s1=lab, s2=lab, labels=lab, pairing="random")


# --------------------------------------------------------------- gradients --


def _grad_cases():
  """(name, fn of two [B, D] arrays) for every loss, B = 6, D = 4."""
  ints = np.array([0, 0, 1, 1, 2, 0])
  mh = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1],
                 [1, 0, 0]])
  sim = np.array([1, 0, 1, 0, 0, 1])
  cases = [
      ("triplet", lambda a, b: losses.triplet(
          anchor=a, positive=b, negative=a[::-1], margin=0.2)),
      ("contrastive_cosine", lambda a, b: losses.contrastive_cosine(
          embeddings1=a, embeddings2=b, similar=sim)),
      ("contrastive", lambda a, b: losses.contrastive(
          embeddings1=a, embeddings2=b, similar=sim)),
      ("ntxent", lambda a, b: losses.ntxent(embeddings1=a, embeddings2=b)),
      ("pair_bce", lambda a, b: losses.pair_bce(
          pair_logits=jnp.sum(a * b, -1), similar=sim)),
      ("cross_entropy", lambda a, b: losses.cross_entropy(
          logits=a - b, labels=ints % 4)),
      ("sigmoid_bce", lambda a, b: losses.sigmoid_bce(
          logits=(a - b)[:, :3], labels=mh)),
      ("push", lambda a, b: losses.push(embeddings=a)),
      ("push_code", lambda a, b: losses.push(embeddings=a, form="code")),
      ("bit_balance", lambda a, b: losses.bit_balance(embeddings=a)),
      ("bit_balance_per_bit", lambda a, b: losses.bit_balance(
          embeddings=a, form="per_bit")),
      ("quantization", lambda a, b: losses.quantization(embeddings=a)),
  ]
  for pairing in ("adjacent", "all"):
    cases.append((f"mse_cosine_label_{pairing}",
                  lambda a, b, p=pairing: losses.mse_cosine_label(
                      s1=a, s2=b, labels=mh, pairing=p)))
  for miner in MINERS:
    cases.append((f"triplet_mined_{miner}",
                  lambda a, b, m=miner: losses.triplet_mined(
                      embeddings=jnp.concatenate([a, b]),
                      labels=np.concatenate([ints, ints[::-1]]), miner=m,
                      margin=0.5)))
  # Same miners inside; the default one suffices.
  cases.append(("cross_modal_triplet", lambda a, b: losses.cross_modal_triplet(
      s1=a, s2=b, labels=mh, margin=0.5)))
  return cases


_GRAD_NAMES = [n for n, _ in _grad_cases()]


def _value_and_grad(name):
  fn = dict(_grad_cases())[name]
  return jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))


@pytest.mark.parametrize("name", _GRAD_NAMES)
def test_gradients_finite(name):
  r = rng(14)
  inputs = {
      "random": (sigmoid_codes(r, 6, 4), sigmoid_codes(r, 6, 4)),
      "all_equal": (np.full((6, 4), 0.5, np.float32),) * 2,
      "all_zero": (np.zeros((6, 4), np.float32),) * 2,
  }
  value_and_grad = _value_and_grad(name)  # one compile for all three kinds
  for kind, (a, b) in inputs.items():
    value, grads = value_and_grad(a, b)
    assert np.isfinite(value), (name, kind)
    for g in grads:
      assert np.all(np.isfinite(g)), (name, kind, g)
    if kind == "random":
      assert any(np.any(g != 0) for g in grads), (name, "zero gradient")


# -------------------------------------------------------------- combinator --


def test_combine_weighted_sum_and_terms():
  r = rng(16)
  e = sigmoid_codes(r, 10, 8)
  labels = r.integers(0, 3, 10)
  weights = {"triplet_mined": 1.0, "push": 0.001, "bit_balance": 1.0}
  loss_fn = jax.jit(losses.combine(weights))
  total, terms = loss_fn(embeddings=e, labels=labels)
  expected = {
      "triplet_mined": np_mined(np_sqdist(e, e), labels, 0.2, "batch_all"),
      "push": np_push(e, "paper"),
      "bit_balance": np_balance(e, "paper"),
  }
  assert set(terms) == set(expected)
  for k, v in expected.items():
    close(terms[k], v)
  close(total, sum(weights[k] * expected[k] for k in weights))


def test_eager():
  # Everything else runs under jit (see `L`); the plain eager path too.
  r = rng(19)
  e = sigmoid_codes(r, 4, 3)
  total, terms = losses.combine({"push": 2.0, "bit_balance": 0.5})(
      embeddings=e)
  close(terms["push"], np_push(e, "paper"))
  close(total, 2.0 * np_push(e, "paper") + 0.5 * np_balance(e, "paper"))
  close(losses.triplet(anchor=e, positive=e[::-1], negative=e[[1, 2, 3, 0]]),
        np_triplet(e, e[::-1], e[[1, 2, 3, 0]], 0.2))


def test_combine_options_and_zero_weight():
  r = rng(17)
  e = sigmoid_codes(r, 10, 8)
  labels = r.integers(0, 3, 10)
  loss_fn = losses.combine(
      {"triplet_mined": 2.0, "push": 0.0, "bit_balance": 0.5},
      options={"triplet_mined": {"margin": 0.7, "miner": "batch_hard"},
               "bit_balance": {"form": "per_bit"}})
  total, terms = jax.jit(loss_fn)(embeddings=e, labels=labels)
  assert set(terms) == {"triplet_mined", "bit_balance"}  # push skipped
  tm = np_mined(np_sqdist(e, e), labels, 0.7, "batch_hard")
  bb = np_balance(e, "per_bit")
  close(terms["triplet_mined"], tm)
  close(terms["bit_balance"], bb)
  close(total, 2.0 * tm + 0.5 * bb)


def test_combine_anneal_eq11():
  r = rng(18)
  x1, x2 = r.normal(size=(6, 4)), r.normal(size=(6, 4))
  sim, logits = r.integers(0, 2, 6), r.normal(size=6)
  gamma = 0.3
  loss_fn = losses.combine({"contrastive_cosine": 1 - gamma, "pair_bce": gamma})
  total, terms = jax.jit(loss_fn)(embeddings1=x1, embeddings2=x2, similar=sim,
                                  pair_logits=logits)
  close(total, (1 - gamma) * np_contrastive_cosine(x1, x2, sim, 0.5)
        + gamma * np_bce(logits, sim))
  close(terms["pair_bce"], np_bce(logits, sim))


def test_combine_errors():
  with pytest.raises(ValueError, match="triplett.*available.*triplet_mined"):
    losses.combine({"triplett": 1.0})
  with pytest.raises(ValueError, match="no option"):
    losses.combine({"push": 1.0}, options={"push": {"margin": 0.1}})
  with pytest.raises(ValueError, match="no weight"):
    losses.combine({"push": 1.0}, options={"bit_balance": {"form": "code"}})
  loss_fn = losses.combine({"triplet_mined": 1.0},
                           options={"triplet_mined": {"margin": 0.1}})
  with pytest.raises(TypeError, match="labels"):
    loss_fn(embeddings=np.zeros((2, 2)))
  with pytest.raises(TypeError, match="margin"):
    loss_fn(embeddings=np.zeros((2, 2)), labels=[0, 1], margin=0.3)


def test_registry():
  assert set(losses.LOSSES) >= {
      "triplet", "triplet_mined", "cross_modal_triplet", "contrastive",
      "contrastive_cosine", "ntxent", "pair_bce", "cross_entropy",
      "sigmoid_bce", "push", "bit_balance", "quantization",
      "mse_cosine_label"}
  for fn in losses.LOSSES.values():
    params = inspect.signature(fn).parameters.values()
    assert all(p.kind is p.KEYWORD_ONLY for p in params), fn.__name__
