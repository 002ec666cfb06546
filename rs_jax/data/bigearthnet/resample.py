"""Resampling BigEarthNet bands from their native grid to 120 x 120.

  nearest   pixel repetition, out[i, j] = band[i // f, j // f] with
            f = 120 / s (the patch grids nest exactly: a 60 m pixel covers
            6 x 6 10 m pixels). Default: every value is a measured
            reflectance, band means are kept, and it matches reBEN's default
            ("120_nearest"); it is what preparation stored before rs_jax
            kept native bands, bit for bit.
  bilinear  triangle kernel; bicubic: Keys' cubic kernel with a = -0.5.
            Both sample at pixel centres (input x = (i + 0.5) s / 120 - 0.5)
            and renormalise the weights of the taps inside the patch at its
            edges, as PIL's and jax.image.resize's upsampling do.
Interpolation is separable: out = W band W^T with W float64[120, s].
"""
import functools

import numpy as np

METHODS = ("nearest", "bilinear", "bicubic")


def _kernel(method, t):
  t = np.abs(t)
  if method == "bilinear":
    return np.maximum(0.0, 1.0 - t)
  a = -0.5
  return np.where(t < 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                  np.where(t < 2, ((t - 5) * t + 8) * t * a - 4 * a, 0.0))


@functools.lru_cache(maxsize=None)
def matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
  """float64[n_out, n_in]: row i holds the weights of output pixel i."""
  if method not in ("bilinear", "bicubic"):
    raise ValueError(f"resampling {method!r} has no matrix; use one of "
                     f"{METHODS}")
  x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
  w = _kernel(method, x[:, None] - np.arange(n_in)[None, :])
  w /= w.sum(1, keepdims=True)
  w.setflags(write=False)
  return w


def resize(x, size: int, method: str = "nearest") -> np.ndarray:
  """[s, s, C] (any real dtype) -> float32[size, size, C]; size % s == 0."""
  if method not in METHODS:
    raise ValueError(f"resampling must be one of {METHODS}, got {method!r}")
  x = np.asarray(x)
  s = x.shape[0]
  if x.ndim != 3 or x.shape[1] != s or size % s:
    raise ValueError(f"resize: expected [s, s, C] with {size} % s == 0, got "
                     f"{x.shape}")
  if s == size:
    return x.astype(np.float32)
  if method == "nearest":
    f = size // s
    return np.repeat(np.repeat(x.astype(np.float32), f, 0), f, 1)
  w = matrix(s, size, method)
  return np.einsum("ij,jkc,lk->ilc", w, x.astype(np.float64), w,
                   optimize=True).astype(np.float32)
