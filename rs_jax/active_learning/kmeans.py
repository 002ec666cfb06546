"""k-means (Lloyd's algorithm, Jain & Dubes 1988; ANNEAL Sec. III-C diversity).

Jitted, fixed number of iterations, deterministic for a given key. Ties in
the nearest-centroid assignment go to the lowest centroid index; a centroid
whose cluster becomes empty keeps its position.
"""
import functools

import jax
import jax.numpy as jnp

from rs_jax import distances

INITS = ("kmeans++", "random")
_HIGHEST = jax.lax.Precision.HIGHEST


@functools.partial(jax.jit, static_argnames=("shape",))
def _gumbel(key, shape):
  return jax.random.gumbel(key, shape)


@jax.jit
def _plusplus(x, g):
  """k-means++ seeding (Arthur & Vassilvitskii 2007): centroid i is drawn
  with probability proportional to D(x)^2, the squared distance to the
  nearest centroid so far (uniformly while all are 0), by the Gumbel-max
  trick with g float[K, N] Gumbel noise."""
  cent = jnp.zeros((g.shape[0], x.shape[1]), x.dtype)

  def body(i, carry):
    cent, d2 = carry
    uniform = (i == 0) | (jnp.sum(d2) == 0)
    pick = x[jnp.argmax(jnp.where(uniform, 0.0, jnp.log(d2)) + g[i])]
    dist = jnp.sum((x - pick) ** 2, -1)
    return cent.at[i].set(pick), jnp.where(i == 0, dist, jnp.minimum(d2, dist))

  return jax.lax.fori_loop(0, g.shape[0], body,
                           (cent, jnp.zeros(x.shape[0], x.dtype)))[0]


@functools.partial(jax.jit, static_argnames=("k",))
def _random_init(x, g, *, k):
  """k distinct points, uniformly: the top k of one row of Gumbel noise."""
  return x[jax.lax.top_k(g[0], k)[1]]


@functools.partial(jax.jit, static_argnames=("iters",))
def lloyd(x, centroids, *, iters: int):
  """`iters` Lloyd steps from `centroids` float[K, D] on x float[N, D].

  Returns (centroids float32[K, D], assignments int32[N]) where the
  assignments are to the returned centroids.
  """
  x = jnp.asarray(x, jnp.float32)
  k = centroids.shape[0]

  def step(_, cent):
    onehot = jax.nn.one_hot(jnp.argmin(distances.squared_distances(x, cent), 1), k,
                            dtype=jnp.float32)
    counts = jnp.sum(onehot, 0)[:, None]
    sums = jnp.dot(onehot.T, x, precision=_HIGHEST)
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), cent)

  cent = jax.lax.fori_loop(0, iters, step, jnp.asarray(centroids, jnp.float32))
  return cent, jnp.argmin(distances.squared_distances(x, cent), 1).astype(jnp.int32)


def kmeans(x, *, k: int, key, iters: int = 50, init: str = "kmeans++"):
  """k-means of x float[N, D] into k clusters.

  Jitted in three parts (Gumbel noise, seeding, Lloyd) that compile once per
  shape and are shared by both inits.

  Args:
    k: number of clusters (1 <= k <= N).
    key: jax.random key for the seeding.
    iters: Lloyd iterations (fixed, no early stop).
    init: "kmeans++" (D^2 seeding) or "random" (k distinct points drawn
      uniformly: the top k of Gumbel noise).
  Returns:
    (centroids float32[K, D], assignments int32[N]).
  """
  x = jnp.asarray(x, jnp.float32)
  if not 1 <= k <= x.shape[0]:
    raise ValueError(f"k must be in [1, {x.shape[0]}] (the number of points), "
                     f"got {k}")
  g = _gumbel(key, (k, x.shape[0]))
  if init == "kmeans++":
    cent = _plusplus(x, g)
  elif init == "random":
    cent = _random_init(x, g, k=k)
  else:
    raise ValueError(f"init must be one of {INITS}, got {init!r}")
  return lloyd(x, cent, iters=iters)
