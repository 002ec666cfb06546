"""Losses for deep hashing and deep metric learning, and a weighted combinator.

Every loss is a keyword-only pure function of arrays that returns a float32
scalar and can be traced by `jax.jit` (options such as `miner` or `form` are
static Python values). Inputs shared between losses use the same names, so one
dict of inputs can feed several terms through `combine`:

  embeddings      float[B, D]  (sigmoid hash-layer outputs for hashing losses)
  labels          int[B] class ids, or {0, 1}[B, C] multi-hot vectors
  embeddings1/2   float[B, D]  the two sides of B pairs (or two SimCLR views)
  similar         {0, 1}[B]    1 = the pair is similar
  s1, s2          float[B, K]  Sentinel-1 / Sentinel-2 codes, row i = same place

Relevance between two items: same class id (int labels) or at least one
shared label (multi-hot). Distances in the metric losses are squared
Euclidean (MiLaN eq. 1). Papers: MiLaN = Roy et al., IEEE GRSL 2021; ANNEAL =
Hoxha, Sumbul et al.; thesis = H. Bank, M.Sc. thesis, TU Berlin 2020.
"""
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from rs_jax import distances
from rs_jax import metrics

_EPS = 1e-12
_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32 / bf16 passes in Gram matrices


# ----------------------------------------------------------------- helpers --


def _f32(x) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def _safe_sqrt(x: jax.Array) -> jax.Array:
  """sqrt with gradient 0 (not inf/NaN) at x = 0 (double-where)."""
  pos = x > 0.0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _label_matrix(labels) -> jax.Array:
  """int[B] class ids -> [B, 1]; multi-hot [B, C] unchanged."""
  labels = jnp.asarray(labels)
  if labels.ndim == 1:
    return labels[:, None]
  if labels.ndim == 2:
    return labels
  raise ValueError(
      f"labels must be int[B] class ids or multi-hot [B, C], got shape "
      f"{labels.shape}")


def _label_hamming(labels) -> jax.Array:
  """int32[B, B]: number of differing label entries (one entry for int ids)."""
  m = _label_matrix(labels)
  return jnp.sum(m[:, None, :] != m[None, :, :], -1, dtype=jnp.int32)


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x over mask; 0 when the mask is empty."""
  mask = mask.astype(bool)
  total = jnp.sum(jnp.where(mask, x, 0.0))
  return total / jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)


def _masked_max(x, mask, axis):
  return jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis)


def _masked_min(x, mask, axis):
  return jnp.min(jnp.where(mask, x, jnp.inf), axis=axis)


def _check_form(form: str, forms: tuple[str, ...]) -> None:
  if form not in forms:
    raise ValueError(f"form must be one of {forms}, got {form!r}")


# ---------------------------------------------------------------- triplets --


def triplet(*, anchor, positive, negative, margin: float = 0.2,
            normalize: bool = False) -> jax.Array:
  """Triplet loss on given triplets (MiLaN eq. 1; thesis eq. 2.4).

  mean_i max(0, ||a_i - p_i||^2 - ||a_i - n_i||^2 + margin). The papers sum
  over the M triplets; the mean is that sum / M.

  Args:
    anchor, positive, negative: float[M, D].
    margin: alpha (0.2 in MiLaN).
    normalize: L2-normalise the rows first, as MiLaN's code (MHCLN
      trainer.py) does; eq. 1 as printed does not.
  """
  a, p, n = _f32(anchor), _f32(positive), _f32(negative)
  if normalize:
    a, p, n = distances.l2_normalize(a), distances.l2_normalize(p), distances.l2_normalize(n)
  d_ap = jnp.sum((a - p) ** 2, -1)
  d_an = jnp.sum((a - n) ** 2, -1)
  return jnp.mean(jax.nn.relu(d_ap - d_an + margin))


MINERS = ("batch_all", "batch_hard", "semi_hard", "label_hamming")


def _mined_triplet(d, labels, margin, miner):
  """Mined triplet loss from distances d[a, j] (anchor rows, candidate cols).

  Candidate j = a (the anchor itself, or its own pair in the other modality)
  is never used as positive or negative.
  """
  if miner not in MINERS:
    raise ValueError(f"miner must be one of {MINERS}, got {miner!r}")
  b = d.shape[0]
  not_self = ~jnp.eye(b, dtype=bool)
  if miner == "label_hamming":
    ham = _label_hamming(labels)
    big = jnp.iinfo(jnp.int32).max
    p = jnp.argmin(jnp.where(not_self, ham, big), axis=1)  # first on ties
    n = jnp.argmax(jnp.where(not_self, ham, -1), axis=1)
    rows = jnp.arange(b)
    valid = ham[rows, n] > ham[rows, p]  # also False when b == 1
    loss = jax.nn.relu(d[rows, p] - d[rows, n] + margin)
    return _masked_mean(loss, valid)

  rel = metrics.relevance(labels, labels)
  pos = rel & not_self
  neg = ~rel
  if miner == "batch_all":
    # [a, p, n]; averaged over the valid triplets whose loss is > 0.
    loss = jax.nn.relu(d[:, :, None] - d[:, None, :] + margin)
    valid = pos[:, :, None] & neg[:, None, :]
    return _masked_mean(loss, valid & (loss > 0.0))
  if miner == "batch_hard":
    valid = jnp.any(pos, 1) & jnp.any(neg, 1)
    hardest_pos = jnp.where(valid, _masked_max(d, pos, 1), 0.0)
    hardest_neg = jnp.where(valid, _masked_min(d, neg, 1), 0.0)
    return _masked_mean(jax.nn.relu(hardest_pos - hardest_neg + margin), valid)
  # semi_hard: per (a, p) the closest negative with d_ap < d_an < d_ap + m,
  # else the hardest (closest) negative of the anchor.
  d_ap = d[:, :, None]
  d_an = d[:, None, :]
  semi = neg[:, None, :] & (d_an > d_ap) & (d_an < d_ap + margin)
  has_semi = jnp.any(semi, -1)
  has_neg = jnp.any(neg, 1)
  closest_semi = jnp.where(has_semi, _masked_min(d_an, semi, -1), 0.0)
  hardest = jnp.where(has_neg, _masked_min(d, neg, 1), 0.0)[:, None]
  d_sel = jnp.where(has_semi, closest_semi, hardest)
  valid = pos & has_neg[:, None]
  return _masked_mean(jax.nn.relu(d - d_sel + margin), valid)


def triplet_mined(*, embeddings, labels, margin: float = 0.2,
                  miner: str = "batch_all",
                  normalize: bool = False) -> jax.Array:
  """Triplet loss (MiLaN eq. 1) over triplets mined in the batch.

  Miners (a triplet needs p != a):
    batch_all: all (a, p, n) with p relevant, n not; mean over the triplets
      with loss > 0 ("BA!=0" of Hermans et al. 2017), 0 if there are none.
    batch_hard: per anchor the farthest positive and closest negative; mean
      over anchors having both.
    semi_hard: per (a, p) the closest negative n with d_ap < d_an < d_ap +
      margin (FaceNet); if none, the anchor's closest negative. Mean over
      (a, p) pairs whose anchor has a negative.
    label_hamming: thesis sec. 3.2: positive = item with the smallest label
      Hamming distance to the anchor, negative = the largest (anchor
      excluded, first index on ties); anchors whose negative is not strictly
      farther in label space than the positive are skipped. Mean over anchors.

  Args:
    embeddings: float[B, D].
    labels: int[B] class ids or multi-hot [B, C].
    margin: alpha. miner: one of MINERS.
    normalize: L2-normalise the rows first (see `triplet`).
  """
  e = _f32(embeddings)
  if normalize:
    e = distances.l2_normalize(e)
  return _mined_triplet(distances.squared_distances(e, e), labels, margin, miner)


def cross_modal_triplet(*, s1, s2, labels, margin: float = 0.2,
                        miner: str = "label_hamming", w_intra: float = 0.5,
                        w_inter: float = 0.5) -> jax.Array:
  """Intra- and inter-modal triplet loss (thesis eqs. 3.14-3.16).

  L = w_intra (0.5 L_S1 + 0.5 L_S2) + w_inter (0.5 L_S1->S2 + 0.5 L_S2->S1).
  L_S1, L_S2: anchor, positive, negative all from one modality. L_S1->S2:
  anchor from S1, positive / negative from S2 (and the reverse). The same
  positive / negative indices (chosen by `miner`, thesis: label Hamming
  distance, see `triplet_mined`) serve all four terms; index i itself,
  including its own pair in the other modality, is never a candidate.

  Args:
    s1, s2: float[B, K] codes; row i of both is the same place.
    labels: multi-hot [B, C] (or int[B]).
    margin: alpha (not given in the thesis; MiLaN's 0.2).
  """
  s1, s2 = _f32(s1), _f32(s2)
  d12 = distances.squared_distances(s1, s2)
  intra = (0.5 * _mined_triplet(distances.squared_distances(s1, s1), labels, margin,
                                miner)
           + 0.5 * _mined_triplet(distances.squared_distances(s2, s2), labels, margin,
                                  miner))
  inter = (0.5 * _mined_triplet(d12, labels, margin, miner)
           + 0.5 * _mined_triplet(d12.T, labels, margin, miner))
  return w_intra * intra + w_inter * inter


# ------------------------------------------------------------------- pairs --


def contrastive_cosine(*, embeddings1, embeddings2, similar,
                       margin: float = 0.5) -> jax.Array:
  """Cosine contrastive loss (ANNEAL eq. 1), mean over pairs.

  1 - s if similar else max(0, s - margin), s = cosine(e1_i, e2_i).

  Args:
    embeddings1, embeddings2: float[B, D]. similar: {0, 1}[B]. margin: m.
  """
  a, b = distances.l2_normalize(_f32(embeddings1)), distances.l2_normalize(_f32(embeddings2))
  s = jnp.sum(a * b, -1)
  sim = jnp.asarray(similar).astype(bool)
  return jnp.mean(jnp.where(sim, 1.0 - s, jax.nn.relu(s - margin)))


def contrastive(*, embeddings1, embeddings2, similar,
                margin: float = 1.0) -> jax.Array:
  """Euclidean contrastive loss (Hadsell et al. 2006, eq. 4), mean over pairs.

  1/2 d^2 if similar else 1/2 max(0, margin - d)^2, d = ||e1_i - e2_i||
  (the 1/2 factor is Hadsell's; Hadsell's Y = 0 means similar).

  Args:
    embeddings1, embeddings2: float[B, D]. similar: {0, 1}[B]. margin: m.
  """
  d2 = jnp.sum((_f32(embeddings1) - _f32(embeddings2)) ** 2, -1)
  dis = jax.nn.relu(margin - _safe_sqrt(d2)) ** 2
  sim = jnp.asarray(similar).astype(bool)
  return 0.5 * jnp.mean(jnp.where(sim, d2, dis))


def ntxent(*, embeddings1, embeddings2, temperature: float = 0.5,
           offset: float = 0.0) -> jax.Array:
  """NT-Xent (SimCLR, Chen et al. 2020, eq. 1) on two views, mean over the
  2B anchors (SimCLR's L = 1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)]).

  l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau), where j is
  the other view of i, k runs over the other 2B - 1 embeddings (the positive
  included) and s = cosine similarity of z = e - offset. offset = 0.5 for
  sigmoid hash outputs v: cos(v - 0.5, v' - 0.5) on binary codes is
  1 - 2 Hamming / K, so the loss ranks as the Hamming search does.

  Args:
    embeddings1, embeddings2: float[B, D], row i of both = two views of i.
    temperature: tau (SimCLR: 0.5 in its CIFAR-10 runs, 0.1 on ImageNet).
  """
  z = jnp.concatenate([_f32(embeddings1), _f32(embeddings2)], 0) - offset
  n = z.shape[0]
  b = n // 2
  logits = distances.cosine_similarities(z, z) / temperature
  logits = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, logits)
  pos = (jnp.arange(n) + b) % n
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(logp[jnp.arange(n), pos])


def pair_bce(*, pair_logits, similar) -> jax.Array:
  """Pair-classifier BCE (ANNEAL eqs. 9-10), mean over pairs.

  -[y log P + (1 - y) log(1 - P)], P = sigmoid(pair_logits). Eq. 10 is printed
  without the minus sign; this is the (minimised) negative log-likelihood.
  ANNEAL eq. 11, (1 - gamma) L_CL + gamma L_BCE, is
  `combine({"contrastive_cosine": 1 - gamma, "pair_bce": gamma})`.

  Args:
    pair_logits: float[B] (or [B, 1]) classifier logits. similar: {0, 1}[B].
  """
  x = _f32(pair_logits).reshape(-1)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(
      x, _f32(similar).reshape(-1)))


# --------------------------------------------------------- classification --


def cross_entropy(*, logits, labels) -> jax.Array:
  """Softmax cross-entropy, mean over the batch. logits [B, C], int[B]."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      _f32(logits), jnp.asarray(labels)))


def sigmoid_bce(*, logits, labels) -> jax.Array:
  """Multi-label sigmoid BCE (thesis eq. 2.3), mean over B * C entries.

  Args:
    logits: float[B, C]. labels: multi-hot {0, 1}[B, C].
  """
  return jnp.mean(optax.sigmoid_binary_cross_entropy(_f32(logits),
                                                     _f32(labels)))


# ---------------------------------------------------------------- hashing --


def push(*, embeddings, form: str = "paper") -> jax.Array:
  """Push (representation penalty) loss (MiLaN eq. 2; thesis eq. 2.5).

  paper: -(1/K) sum_i ||v_i - 0.5||^2 (sum over the batch, as printed).
  code:  -(1/K) mean_i ||v_i - 0.5||^2 = -mean(v - 0.5)^2, i.e. paper / B.
  Minimising it pushes sigmoid outputs v towards 0 or 1.

  Args:
    embeddings: float[B, K] sigmoid outputs.
  """
  _check_form(form, ("paper", "code"))
  v = _f32(embeddings)
  per_sample = jnp.mean((v - 0.5) ** 2, -1)
  return -(jnp.sum(per_sample) if form == "paper" else jnp.mean(per_sample))


def bit_balance(*, embeddings, form: str = "paper") -> jax.Array:
  """Bit-balancing loss (MiLaN eq. 3; thesis eq. 2.6).

  paper:   sum_i (mean_k v_ik - 0.5)^2: each code has mean 0.5 (as printed).
  code:    mean_i (mean_k v_ik - 0.5)^2, i.e. paper / B.
  per_bit: mean_k (mean_i v_ik - 0.5)^2: each bit is on for half the batch
           (the prose of MiLaN: "each output neuron fires with 50% chance").

  Args:
    embeddings: float[B, K] sigmoid outputs.
  """
  _check_form(form, ("paper", "code", "per_bit"))
  v = _f32(embeddings)
  if form == "per_bit":
    return jnp.mean((jnp.mean(v, 0) - 0.5) ** 2)
  per_sample = (jnp.mean(v, -1) - 0.5) ** 2
  return jnp.sum(per_sample) if form == "paper" else jnp.mean(per_sample)


def quantization(*, embeddings, low: float = 0.0,
                 high: float = 1.0) -> jax.Array:
  """Quantization loss mean_i ||v_i - b_i||^2, b = binarized v (constant).

  b = high where v >= (low + high) / 2 else low: {0, 1} codes of sigmoid
  outputs by default (MiLaN eq. 5); low=-1, high=1 for tanh outputs.

  Args:
    embeddings: float[B, K].
  """
  v = _f32(embeddings)
  b = jnp.where(v >= 0.5 * (low + high), high, low)
  return jnp.mean(jnp.sum((v - jax.lax.stop_gradient(b)) ** 2, -1))


# ------------------------------------------------------ thesis MSE (3.1) --


def mse_cosine_label(*, s1, s2, labels, pairing: str = "adjacent",
                     w_intra_s1: float = 0.33, w_intra_s2: float = 0.33,
                     w_inter: float = 0.33, w_same_label: float = 0.5,
                     w_different_label: float = 0.5) -> jax.Array:
  """MSE between code and label cosine similarities (thesis eqs. 3.4-3.13).

  With C(x, y) the cosine similarity and L(i, j) = C(label_i, label_j):
    intra_S1  = MSE(C(s1_i, s1_j), L(i, j))          (3.4)
    intra_S2  = MSE(C(s2_i, s2_j), L(i, j))          (3.5)
    same      = MSE(C(s1_i, s2_i), 1)                (3.6, 3.7, 3.12)
    different = MSE(C(s1_i, s2_j), L(i, j)), both orders (3.8, 3.9, 3.13)
  L = w_intra_s1 intra_S1 + w_intra_s2 intra_S2
      + w_inter (w_same_label same + w_different_label different)  (3.10-3.11)
  The halves of eqs. 3.12 / 3.13 (0.5 each) are the mean over both rows /
  both orders. Pairs (i, j): pairing="adjacent" is the thesis' mini-batch
  (Fig. 3.1): rows (0, 1), (2, 3), ... (B must be even); pairing="all" uses
  every i != j of the batch.

  Args:
    s1, s2: float[B, K] codes; row i of both is the same place.
    labels: multi-hot [B, C].
  """
  if pairing not in ("adjacent", "all"):
    raise ValueError(f"pairing must be 'adjacent' or 'all', got {pairing!r}")
  labels = jnp.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(
        f"labels must be multi-hot [B, C], got shape {labels.shape}")
  s1, s2, lab = _f32(s1), _f32(s2), _f32(labels)
  b = s1.shape[0]
  idx = jnp.arange(b)
  if pairing == "adjacent":
    if b % 2:
      raise ValueError(f"pairing='adjacent' needs an even batch, got B={b}")
    pairs = idx[:, None] == (idx ^ 1)[None, :]  # partner of 2p is 2p + 1
  else:
    pairs = idx[:, None] != idx[None, :]
  target = distances.cosine_similarities(lab, lab)
  c12 = distances.cosine_similarities(s1, s2)
  intra_s1 = _masked_mean((distances.cosine_similarities(s1, s1) - target) ** 2, pairs)
  intra_s2 = _masked_mean((distances.cosine_similarities(s2, s2) - target) ** 2, pairs)
  same = jnp.mean((jnp.diagonal(c12) - 1.0) ** 2)
  different = _masked_mean((c12 - target) ** 2, pairs)
  inter = w_same_label * same + w_different_label * different
  return w_intra_s1 * intra_s1 + w_intra_s2 * intra_s2 + w_inter * inter


# ------------------------------------------------- two networks (S1 / S2) --
# The thesis' objective (eq. 3.2), L_Main + lambda1 L_Push + lambda2
# L_Balancing with lambda1 = 0.001, lambda2 = 1, puts the push (eq. 2.5) and
# balancing (eq. 2.6) terms on the output of each network. In "paper" form
# (sums over the batch) `s1s2_push` equals `push` on the concatenated codes;
# in the mean forms each network keeps its own mean, which the
# concatenation would mix.


def s1s2_push(*, s1, s2, form: str = "paper") -> jax.Array:
  """Push loss of both networks: push(s1) + push(s2) (thesis eqs. 2.5, 3.2).

  Args:
    s1, s2: float[B, K] sigmoid outputs of the S1 and S2 networks.
    form: `push` form, "paper" (sum over the batch) or "code" (mean).
  """
  return push(embeddings=s1, form=form) + push(embeddings=s2, form=form)


def s1s2_balance(*, s1, s2, form: str = "paper") -> jax.Array:
  """Balancing loss of both networks (thesis eqs. 2.6, 3.2):
  bit_balance(s1) + bit_balance(s2).

  Args:
    s1, s2: float[B, K] sigmoid outputs of the S1 and S2 networks.
    form: `bit_balance` form, "paper", "code" or "per_bit".
  """
  return (bit_balance(embeddings=s1, form=form)
          + bit_balance(embeddings=s2, form=form))


# -------------------------------------------------------------- combinator --

LOSSES: dict[str, Callable[..., jax.Array]] = {
    "triplet": triplet,
    "triplet_mined": triplet_mined,
    "cross_modal_triplet": cross_modal_triplet,
    "contrastive_cosine": contrastive_cosine,
    "contrastive": contrastive,
    "ntxent": ntxent,
    "pair_bce": pair_bce,
    "cross_entropy": cross_entropy,
    "sigmoid_bce": sigmoid_bce,
    "push": push,
    "bit_balance": bit_balance,
    "quantization": quantization,
    "mse_cosine_label": mse_cosine_label,
    "s1s2_push": s1s2_push,
    "s1s2_balance": s1s2_balance,
}


def combine(
    weights: Mapping[str, float],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
  """Weighted sum of registered losses: {name: weight} -> loss_fn.

  `total, terms = loss_fn(**inputs)`: each term receives the inputs its
  signature names, plus its fixed `options`; `terms` maps name -> unweighted
  value and total = sum_name weight * term. Zero-weight terms are skipped.
  E.g. MiLaN eq. 4:
    combine({"triplet_mined": 1.0, "push": 0.001, "bit_balance": 1.0},
            options={"triplet_mined": {"miner": "semi_hard"}})
  For the thesis' two networks pass embeddings=concatenate([s1, s2]) next to
  s1, s2 and labels: push / bit_balance (paper form) then sum over both.
  """
  options = dict(options or {})
  unknown = sorted((set(weights) | set(options)) - set(LOSSES))
  if unknown:
    raise ValueError(
        f"unknown loss name(s) {unknown}; available: {sorted(LOSSES)}")
  stray = sorted(set(options) - set(weights))
  if stray:
    raise ValueError(f"options given for {stray}, which have no weight")
  terms_spec = []
  for name, weight in weights.items():
    if weight == 0:
      continue
    params = inspect.signature(LOSSES[name]).parameters
    opts = dict(options.get(name, {}))
    bad = sorted(set(opts) - set(params))
    if bad:
      raise ValueError(f"loss {name!r} has no option(s) {bad}; its keyword "
                       f"arguments are {sorted(params)}")
    required = {k for k, p in params.items()
                if p.default is inspect.Parameter.empty and k not in opts}
    terms_spec.append((name, float(weight), set(params), required, opts))

  def loss_fn(**inputs):
    total = jnp.zeros((), jnp.float32)
    terms = {}
    for name, weight, accepted, required, opts in terms_spec:
      missing = sorted(required - set(inputs))
      if missing:
        raise TypeError(f"loss {name!r} needs input(s) {missing}")
      clash = sorted(set(opts) & set(inputs))
      if clash:
        raise TypeError(
            f"loss {name!r}: {clash} given both as options and as inputs")
      kwargs = {k: v for k, v in inputs.items() if k in accepted}
      value = LOSSES[name](**kwargs, **opts)
      terms[name] = value
      total = total + weight * value
    return total, terms

  return loss_fn
