"""Binary codes: binarize, pack into uint32 words, unpack, Hamming distance.

Packed layout: bit j of a K-bit code lives in word j // 32 at bit position
j % 32 (least significant bit first); the last word is zero-padded when K is
not a multiple of 32. A code of K bits therefore takes ceil(K / 32) words.
"""
import jax
import jax.numpy as jnp

WORD_BITS = 32


def num_words(num_bits: int) -> int:
  """Number of uint32 words that hold a `num_bits`-bit code."""
  if num_bits < 1:
    raise ValueError(f"num_bits must be >= 1, got {num_bits}")
  return -(-num_bits // WORD_BITS)


def binarize(v: jax.Array, threshold: float = 0.5) -> jax.Array:
  """Codes in {0, 1} from hash-layer activations (MiLaN eq. 5).

  b = (sign(v - threshold) + 1) / 2 with sign(0) taken as +1, so a value
  exactly equal to the threshold maps to 1.

  Args:
    v: float[..., K] activations (sigmoid outputs for threshold 0.5).
  Returns:
    uint8[..., K] of zeros and ones.
  """
  return (v >= threshold).astype(jnp.uint8)


def pack_bits(bits: jax.Array) -> jax.Array:
  """Packs {0, 1} codes bool/int[..., K] into uint32[..., ceil(K / 32)]."""
  bits = jnp.asarray(bits)
  k = bits.shape[-1]
  w = num_words(k)
  bits = (bits != 0).astype(jnp.uint32)
  bits = jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, w * WORD_BITS - k)])
  bits = bits.reshape(*bits.shape[:-1], w, WORD_BITS)
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  # Bits are disjoint, so the sum over positions is their bitwise OR.
  return jnp.sum(bits << shifts, axis=-1, dtype=jnp.uint32)


def unpack_bits(words: jax.Array, num_bits: int) -> jax.Array:
  """Inverse of `pack_bits`: uint32[..., W] -> uint8[..., num_bits]."""
  words = jnp.asarray(words)
  if words.dtype != jnp.uint32:
    raise TypeError(f"packed codes must be uint32, got {words.dtype}")
  if words.shape[-1] != num_words(num_bits):
    raise ValueError(
        f"{num_bits}-bit codes take {num_words(num_bits)} uint32 words, "
        f"got {words.shape[-1]}")
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  bits = (words[..., None] >> shifts) & jnp.uint32(1)
  bits = bits.reshape(*words.shape[:-1], -1)[..., :num_bits]
  return bits.astype(jnp.uint8)


def check_packed(a: jax.Array, b: jax.Array, names=("a", "b")) -> None:
  """Raises unless `a` and `b` are uint32[..., W] codes of the same width W."""
  for x, name in zip((a, b), names):
    if x.dtype != jnp.uint32:
      raise TypeError(f"{name}: packed codes must be uint32, got {x.dtype}")
    if x.ndim != 2:
      raise ValueError(f"{name}: packed codes must be [N, W], got {x.shape}")
  if a.shape[-1] != b.shape[-1]:
    raise ValueError(
        f"code widths differ: {names[0]} has {a.shape[-1]} uint32 words, "
        f"{names[1]} has {b.shape[-1]}")


def hamming_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """All-pairs Hamming distance: uint32[Na, W], uint32[Nb, W] -> int32[Na, Nb].

  d(a, b) = sum_w popcount(a_w XOR b_w).
  """
  check_packed(a, b)
  x = a[:, None, :] ^ b[None, :, :]
  return jnp.sum(jax.lax.population_count(x), axis=-1, dtype=jnp.int32)
