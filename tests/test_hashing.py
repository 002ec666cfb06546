"""rs_jax.hashing against plain-NumPy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import hashing


def np_pack(bits):
  """Reference packing: bit j -> word j // 32, position j % 32 (LSB first)."""
  n, k = bits.shape
  words = np.zeros((n, -(-k // 32)), np.uint64)
  for j in range(k):
    words[:, j // 32] |= bits[:, j].astype(np.uint64) << np.uint64(j % 32)
  return words.astype(np.uint32)


def np_hamming(a_bits, b_bits):
  return (a_bits[:, None, :] != b_bits[None, :, :]).sum(-1)


def test_binarize_threshold_maps_to_one():
  v = jnp.array([[0.0, 0.49999, 0.5, 0.50001, 1.0]])
  np.testing.assert_array_equal(hashing.binarize(v), [[0, 0, 1, 1, 1]])
  np.testing.assert_array_equal(
      hashing.binarize(jnp.array([-1.0, 0.0, 2.0]), threshold=0.0), [0, 1, 1])
  assert hashing.binarize(v).dtype == jnp.uint8


def test_binarize_matches_milan_eq5():
  v = np.random.default_rng(0).uniform(size=(50, 24)).astype(np.float32)
  v[0, :4] = 0.5
  sign = np.where(v - 0.5 >= 0, 1, -1)  # sign(0) := +1, documented rule
  np.testing.assert_array_equal(hashing.binarize(v), (sign + 1) // 2)


@pytest.mark.parametrize("k", [1, 8, 31, 32, 33, 64, 100, 128])
def test_pack_matches_reference_and_roundtrips(k):
  bits = np.random.default_rng(k).integers(0, 2, (17, k)).astype(np.uint8)
  words = hashing.pack_bits(bits)
  assert words.dtype == jnp.uint32 and words.shape == (17, -(-k // 32))
  np.testing.assert_array_equal(words, np_pack(bits))
  np.testing.assert_array_equal(hashing.unpack_bits(words, k), bits)


def test_pack_bit_positions():
  bits = np.zeros((1, 40), np.uint8)
  bits[0, [0, 5, 31, 32, 39]] = 1
  np.testing.assert_array_equal(
      hashing.pack_bits(bits), [[1 | 1 << 5 | 1 << 31, 1 | 1 << 7]])


def test_pack_leading_dims_and_bool():
  bits = np.random.default_rng(1).integers(0, 2, (2, 3, 40)).astype(bool)
  words = hashing.pack_bits(bits)
  assert words.shape == (2, 3, 2)
  np.testing.assert_array_equal(
      words.reshape(6, 2), np_pack(bits.reshape(6, 40)))


def test_unpack_errors_name_the_problem():
  with pytest.raises(ValueError, match="40-bit codes take 2 uint32 words"):
    hashing.unpack_bits(jnp.zeros((3, 1), jnp.uint32), 40)
  with pytest.raises(TypeError, match="uint32"):
    hashing.unpack_bits(jnp.zeros((3, 2), jnp.int32), 40)


@pytest.mark.parametrize("k", [7, 32, 70])
def test_hamming_distance_matches_reference(k):
  rng = np.random.default_rng(k)
  a = rng.integers(0, 2, (9, k)).astype(np.uint8)
  b = rng.integers(0, 2, (13, k)).astype(np.uint8)
  b[:3] = a[:3]  # zero distances
  d = hashing.hamming_distance(hashing.pack_bits(a), hashing.pack_bits(b))
  assert d.dtype == jnp.int32
  np.testing.assert_array_equal(d, np_hamming(a, b))
  np.testing.assert_array_equal(
      jax.jit(hashing.hamming_distance)(
          hashing.pack_bits(a), hashing.pack_bits(b)), np_hamming(a, b))


def test_hamming_distance_rejects_mismatched_widths():
  with pytest.raises(ValueError, match="code widths differ"):
    hashing.hamming_distance(jnp.zeros((2, 1), jnp.uint32),
                             jnp.zeros((2, 2), jnp.uint32))
  with pytest.raises(TypeError, match="uint32"):
    hashing.hamming_distance(jnp.zeros((2, 1), jnp.float32),
                             jnp.zeros((2, 1), jnp.uint32))
