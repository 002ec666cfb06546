"""Pair and image uncertainty (ANNEAL Sec. III-B; CAL baseline Sec. IV-B).

Every score follows the paper's ordering: sorted ascending, the most
uncertain item comes first (eq. 8: Unc = |s - alpha_t|, small = uncertain).
"""
import functools

import jax
import jax.numpy as jnp

from rs_jax import distances

_EPS = 1e-12


@functools.partial(jax.jit, static_argnames=("chunk",))
def pair_cosine(embeddings, pairs, *, chunk: int = 65536) -> jax.Array:
  """Cosine similarity s(f_i, f_j) of each pair -> float32[P].

  Args:
    embeddings: float[N, D] image features.
    pairs: int[P, 2] image indices. Computed in chunks of `chunk` pairs
      (lax.map) so a pool of millions of pairs never gathers [P, D].
  """
  unit = distances.l2_normalize(embeddings)
  p = pairs.shape[0]
  if p == 0:
    return jnp.zeros((0,), jnp.float32)
  size = min(chunk, p)
  n = -(-p // size)
  padded = jnp.pad(jnp.asarray(pairs, jnp.int32), ((0, n * size - p), (0, 0)))
  out = jax.lax.map(lambda c: jnp.sum(unit[c[:, 0]] * unit[c[:, 1]], -1),
                    padded.reshape(n, size, 2))
  return out.reshape(-1)[:p]


@jax.jit
def mgue_threshold(*, similarities, similar, lam=3.0, mask=None) -> jax.Array:
  """alpha_t of MGUE (ANNEAL eqs. 3-7) -> float32 scalar.

  alpha_t = (mu_sim + mu_dis - lam (sigma_sim - sigma_dis)) / 2 with means and
  (population, 1/S and 1/D) standard deviations of the cosine similarities of
  the labeled similar / dissimilar pairs. NaN if either group is empty.

  Args:
    similarities: float[M] cosine similarities of the labeled pairs.
    similar: bool[M] their labels. lam: lambda (3 in the paper).
    mask: optional bool[M], the entries to use (for inputs padded to a fixed
      size, which avoids a recompile whenever M grows).
  """
  s = jnp.asarray(similarities, jnp.float32)
  y = jnp.asarray(similar, bool)
  valid = jnp.ones_like(y) if mask is None else jnp.asarray(mask, bool)

  def stats(group):
    n = jnp.sum(group)
    mu = jnp.sum(jnp.where(group, s, 0.0)) / n
    sd = jnp.sqrt(jnp.sum(jnp.where(group, (s - mu) ** 2, 0.0)) / n)
    return mu, sd

  mu_sim, sd_sim = stats(y & valid)
  mu_dis, sd_dis = stats(~y & valid)
  return (mu_sim + mu_dis - lam * (sd_sim - sd_dis)) / 2.0


@jax.jit
def mgue_uncertainty(*, similarities, alpha) -> jax.Array:
  """Unc = |s - alpha_t| (ANNEAL eq. 8); float[P] -> float32[P]."""
  return jnp.abs(jnp.asarray(similarities, jnp.float32) - alpha)


@jax.jit
def bcgue_uncertainty(*, probs) -> jax.Array:
  """Unc = |P - 0.5| of pair-classifier posteriors (ANNEAL eq. 9 in eq. 8
  with alpha_t = 0.5); float[P] -> float32[P]."""
  return jnp.abs(jnp.asarray(probs, jnp.float32) - 0.5)


CLASS_SCORES = ("least_confidence", "margin", "entropy")


@functools.partial(jax.jit, static_argnames=("kind",))
def class_confidence(*, probs, kind: str = "least_confidence") -> jax.Array:
  """Confidence of a softmax classifier per image (CAL, Wang & Shang 2014).

  least_confidence: max_c P_c; margin: P_(1) - P_(2); entropy: sum P log P
  (= minus the entropy). Small = uncertain. float[N, C] -> float32[N].
  """
  p = jnp.asarray(probs, jnp.float32)
  if kind == "least_confidence":
    return jnp.max(p, -1)
  if kind == "margin":
    top2 = jax.lax.top_k(p, 2)[0]
    return top2[:, 0] - top2[:, 1]
  if kind == "entropy":
    return jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, _EPS)), 0.0),
                   -1)
  raise ValueError(f"kind must be one of {CLASS_SCORES}, got {kind!r}")
