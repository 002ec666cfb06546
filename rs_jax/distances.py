"""Row-vector geometry shared by losses, rankings and clustering.

All functions take float[N, D] / float[M, D] rows and compute Gram matrices
at HIGHEST precision (no TF32 / bf16 passes), so a near-tie between two
distances is decided the same way by a loss, a ranking and k-means.
"""
import jax
import jax.numpy as jnp

_EPS = 1e-12
_HIGHEST = jax.lax.Precision.HIGHEST


def l2_normalize(x) -> jax.Array:
  """Returns x / max(||x||, eps) along the last axis (float32).

  Rows of zeros stay zero, with a finite gradient.
  """
  x = jnp.asarray(x, jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True),
                                       _EPS))


def squared_distances(x, y) -> jax.Array:
  """Returns ||x_i - y_j||^2 for x [N, D], y [M, D] as [N, M], clipped at 0."""
  xy = jnp.dot(x, y.T, precision=_HIGHEST)
  d = jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :] - 2.0 * xy
  return jnp.maximum(d, 0.0)


def cosine_similarities(x, y) -> jax.Array:
  """Returns the cosine similarity [N, M] of rows of x [N, D] and y [M, D];
  0 for zero rows."""
  return jnp.dot(l2_normalize(x), l2_normalize(y).T, precision=_HIGHEST)
