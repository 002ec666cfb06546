"""Selection of the pairs (or, for CAL, images) to annotate in one AL round.

ANNEAL (Sec. III-B, III-C): the p = 4h most uncertain unlabeled pairs
(MGUE or BCGUE) are clustered by k-means into h clusters and the most
uncertain pair of each cluster is selected; "_nodiv" strategies take the h
most uncertain pairs directly; "random" draws h pairs uniformly. CAL (Sec.
IV-B, [42]): the same two steps on images scored by class-probability
uncertainty, labeled with a class (log2 C bits each).

The paper does not say on which representation of a pair k-means runs; we
use the order-free [(u_i + u_j) / 2, |u_i - u_j|] of the L2-normalised image
embeddings u (where the pair sits and how far apart its images are).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax import distances

from rs_jax.active_learning import kmeans as kmeans_lib
from rs_jax.active_learning import uncertainty

STRATEGIES = ("random", "mgue", "bcgue", "mgue_nodiv", "bcgue_nodiv", "cal")
PAIR_LABEL_BITS = 1.0  # similar / dissimilar: log2 2


def class_label_bits(num_classes: int) -> float:
  """Bits of one class label among C classes: log2 C."""
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  return math.log2(num_classes)


def images_for_bits(bits: float, num_classes: int) -> int:
  """How many class labels fit in `bits` (CAL images per round)."""
  return int(bits // class_label_bits(num_classes))


@jax.jit
def pair_features(embeddings, pairs) -> jax.Array:
  """Order-free pair representation for the diversity step -> [P, 2D]."""
  u = distances.l2_normalize(embeddings)
  a, b = u[pairs[:, 0]], u[pairs[:, 1]]
  return jnp.concatenate([(a + b) / 2.0, jnp.abs(a - b)], -1)


@jax.jit
def _image_features(embeddings, images):
  return distances.l2_normalize(embeddings)[images]


def _padded(x, chunk: int = 65536):
  """x [P, ...] zero-padded to a bucketed length (a power of two up to
  `chunk`, then a multiple of it), so jitted scoring compiles for few shapes
  while U shrinks and T grows. Returns (padded, mask bool[len])."""
  x = np.asarray(x)
  p = len(x)
  size = 1 << max(p - 1, 0).bit_length()
  if size > chunk:
    size = -(-p // chunk) * chunk
  out = np.zeros((size,) + x.shape[1:], x.dtype)
  out[:p] = x
  return out, np.arange(size) < p


def diverse_most_uncertain(scores, features_fn, *, h: int, p: int, key,
                           kmeans_iters: int = 50) -> np.ndarray:
  """Uncertainty then diversity (ANNEAL Sec. III-C).

  The p lowest scores (most uncertain; ties by index) are clustered by
  k-means into h clusters, and from each cluster its most uncertain member
  is kept. If k-means leaves clusters empty, the next most uncertain of the
  p fill up to h.

  Args:
    scores: float[P] (ascending = most uncertain first).
    features_fn: candidate indices int[p] -> features float[p, F].
    h: number to select; p: candidates (p = 4h in the paper).
  Returns:
    int64[h] indices into `scores`, most uncertain first.
  """
  scores = np.asarray(scores)
  _check_h(h, len(scores))
  p = min(max(p, h), len(scores))
  top = np.argsort(scores, kind="stable")[:p]
  _, assign = kmeans_lib.kmeans(features_fn(top), k=h, key=key,
                                iters=kmeans_iters)
  _, first = np.unique(np.asarray(assign), return_index=True)
  picked = np.zeros(p, bool)
  picked[first] = True  # `top` is sorted: first member = most uncertain
  picked[np.flatnonzero(~picked)[:h - picked.sum()]] = True
  return top[picked]


def _key(seed, round):
  return jax.random.fold_in(jax.random.key(seed), round)


def _check_h(h, available):
  if not 1 <= h <= available:
    raise ValueError(f"h must be in [1, {available}] (the unlabeled "
                     f"candidates), got {h}")


def pair_scores(*, strategy: str, pool, embeddings=None, labeled_pairs=None,
                labeled_similar=None, pair_probs=None, lam: float = 3.0):
  """Uncertainty of every pool pair (ascending = most uncertain).

  mgue*: |s - alpha_t| (eqs. 2-8), s = cosine of `embeddings` float[N, D],
  alpha_t from the labeled pairs. bcgue*: |P - 0.5| of pair_probs float[P].
  """
  if strategy.startswith("mgue"):
    if embeddings is None or labeled_pairs is None or labeled_similar is None:
      raise ValueError(f"strategy {strategy!r} needs embeddings, "
                       "labeled_pairs and labeled_similar")
    y = np.asarray(labeled_similar, bool)
    if y.all() or not y.any():
      raise ValueError(f"MGUE needs labeled similar and dissimilar pairs, got "
                       f"{y.sum()} similar of {len(y)}")
    labeled, mask = _padded(np.asarray(labeled_pairs, np.int32))
    alpha = uncertainty.mgue_threshold(
        similarities=uncertainty.pair_cosine(embeddings, labeled),
        similar=_padded(y)[0], mask=mask, lam=lam)
    pool_padded, _ = _padded(np.asarray(pool, np.int32))
    scores = uncertainty.mgue_uncertainty(
        similarities=uncertainty.pair_cosine(embeddings, pool_padded),
        alpha=alpha)
    return np.asarray(scores)[:len(pool)]
  if strategy.startswith("bcgue"):
    if pair_probs is None or len(pair_probs) != len(pool):
      raise ValueError(f"strategy {strategy!r} needs pair_probs "
                       f"float[{len(pool)}] (one per pool pair), got "
                       f"{None if pair_probs is None else len(pair_probs)}")
    probs = _padded(np.asarray(pair_probs, np.float32))[0]
    return np.asarray(uncertainty.bcgue_uncertainty(probs=probs))[:len(pool)]
  raise ValueError(f"no uncertainty for strategy {strategy!r}")


def select_pairs(*, strategy: str, pool, h: int, seed: int, round: int,
                 embeddings=None, labeled_pairs=None, labeled_similar=None,
                 pair_probs=None, lam: float = 3.0, p_factor: int = 4,
                 kmeans_iters: int = 50) -> np.ndarray:
  """Indices int64[h] into `pool` int[P, 2] of the pairs to annotate.

  Args:
    strategy: random, mgue, bcgue, mgue_nodiv or bcgue_nodiv.
    seed, round: the random draw / k-means seeding use (seed, round).
    embeddings: float[N, D] features of all training images (mgue*, and the
      diversity step of mgue / bcgue).
    labeled_pairs, labeled_similar: T and its labels (mgue*).
    pair_probs: float[P] pair-classifier P(similar) of the pool (bcgue*).
    lam: lambda of eq. 7. p_factor: p = p_factor * h.
  """
  if strategy not in STRATEGIES or strategy == "cal":
    raise ValueError(f"strategy must be one of {STRATEGIES[:-1]}, got "
                     f"{strategy!r} (cal selects images: select_images)")
  pool = np.asarray(pool, np.int64).reshape(-1, 2)
  _check_h(h, len(pool))
  if strategy == "random":
    rng = np.random.default_rng([seed, round])
    return np.sort(rng.choice(len(pool), h, replace=False))
  scores = pair_scores(strategy=strategy, pool=pool, embeddings=embeddings,
                       labeled_pairs=labeled_pairs,
                       labeled_similar=labeled_similar, pair_probs=pair_probs,
                       lam=lam)
  if strategy.endswith("_nodiv"):
    return np.argsort(scores, kind="stable")[:h]
  if embeddings is None:
    raise ValueError(f"strategy {strategy!r} needs embeddings for k-means")
  return diverse_most_uncertain(
      scores, lambda top: pair_features(embeddings, pool[top].astype(np.int32)),
      h=h, p=p_factor * h, key=_key(seed, round), kmeans_iters=kmeans_iters)


def select_images(*, class_probs, embeddings, unlabeled, n: int, seed: int,
                  round: int, kind: str = "least_confidence",
                  p_factor: int = 4, kmeans_iters: int = 50) -> np.ndarray:
  """CAL: image indices int64[n] (from `unlabeled`) to label with classes.

  Class-probability uncertainty (`uncertainty.class_confidence`) of the
  unlabeled images, then the same k-means diversity as ANNEAL on their
  L2-normalised embeddings.

  Args:
    class_probs: float[N, C] softmax outputs for all training images.
    embeddings: float[N, D] features of all training images.
    unlabeled: int[U] indices of the images without a class label.
  """
  unlabeled = np.asarray(unlabeled, np.int64)
  conf = np.asarray(uncertainty.class_confidence(probs=class_probs,
                                                 kind=kind))[unlabeled]
  picked = diverse_most_uncertain(
      conf, lambda top: _image_features(embeddings, unlabeled[top]), h=n,
      p=p_factor * n, key=_key(seed, round), kmeans_iters=kmeans_iters)
  return unlabeled[picked]
