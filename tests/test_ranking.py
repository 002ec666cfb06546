"""rs_jax.ranking: exact top-k against NumPy and faiss, single and 8 devices."""
import faiss
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import hashing, ranking, ranking_numpy

CASES = [  # (Q, N, K bits, k)
    (5, 100, 16, 3),
    (7, 1000, 40, 20),  # K not a multiple of 32
    (3, 20, 8, 20),  # k = N, many ties
    (4, 50, 64, 1),  # k = 1
    (9, 3000, 3, 10),  # 8 distinct distances: ties everywhere
    (1, 1, 128, 1),
    (3, 200, 300, 5),  # > 224 bits: uint16 block minima
]


def np_topk(dist):
  """Reference: full stable sort by (distance, index)."""
  order = np.argsort(dist, axis=1, kind="stable")
  return np.take_along_axis(dist, order, 1), order


def random_codes(rng, n, bits, dup=0):
  b = rng.integers(0, 2, (n, bits)).astype(np.uint8)
  if dup:  # exact duplicates -> equal distances at different indices
    b[rng.integers(0, n, dup)] = b[0]
  return b


@pytest.fixture(scope="module", params=["explicit", "auto"])
def mesh(request):
  assert jax.device_count() == 8, "tests expect 8 fake CPU devices"
  kind = {"explicit": jax.sharding.AxisType.Explicit,
          "auto": jax.sharding.AxisType.Auto}[request.param]
  return jax.make_mesh((8,), ("data",), axis_types=(kind,))


@pytest.mark.parametrize("q,n,bits,k", CASES)
def test_hamming_topk_matches_numpy(q, n, bits, k):
  rng = np.random.default_rng(n + bits)
  qb, db = random_codes(rng, q, bits), random_codes(rng, n, bits, dup=n // 4)
  ref_d, ref_i = np_topk((qb[:, None] != db[None]).sum(-1))
  args = hashing.pack_bits(qb), hashing.pack_bits(db)
  for kw in [{}, {"max_elements": n}, {"block_size": 1}, {"block_size": 7}]:
    d, i = ranking.hamming_topk(*args, k, **kw)
    assert d.dtype == jnp.int32 and i.dtype == jnp.int32
    np.testing.assert_array_equal(d, ref_d[:, :k], err_msg=str(kw))
    np.testing.assert_array_equal(i, ref_i[:, :k], err_msg=str(kw))


@pytest.mark.parametrize("q,n,bits,k", CASES)
def test_hamming_topk_sharded_equals_single_device(mesh, q, n, bits, k):
  rng = np.random.default_rng(n)
  qc = hashing.pack_bits(random_codes(rng, q, bits))
  dbc = hashing.pack_bits(random_codes(rng, n, bits, dup=n // 3))
  want = ranking.hamming_topk(qc, dbc, k)
  got = ranking.hamming_topk(qc, dbc, k, mesh=mesh, max_elements=64)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])


def test_hamming_topk_inside_jit_on_sharded_database(mesh):
  rng = np.random.default_rng(0)
  qc = hashing.pack_bits(random_codes(rng, 6, 48))
  dbc = hashing.pack_bits(random_codes(rng, 800, 48, dup=100))
  sharded = jax.device_put(dbc, jax.NamedSharding(mesh, jax.P("data")))
  search = jax.jit(lambda a, b: ranking.hamming_topk(a, b, 15, mesh=mesh))
  want = ranking.hamming_topk(qc, dbc, 15)
  got = search(qc, sharded)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("bits", [32, 64, 128])
def test_hamming_distances_equal_faiss(bits):
  rng = np.random.default_rng(bits)
  qc = rng.integers(0, 2**32, (20, bits // 32), dtype=np.uint32)
  dbc = rng.integers(0, 2**32, (5000, bits // 32), dtype=np.uint32)
  index = faiss.IndexBinaryFlat(bits)
  index.add(dbc.view(np.uint8))
  faiss_d, _ = index.search(qc.view(np.uint8), 20)
  d, i = ranking.hamming_topk(jnp.asarray(qc), jnp.asarray(dbc), 20)
  np.testing.assert_array_equal(d, faiss_d)
  # Our indices are the lowest-index choice among ties; check they realise d.
  full = hashing.hamming_distance(jnp.asarray(qc), jnp.asarray(dbc))
  np.testing.assert_array_equal(np.take_along_axis(np.asarray(full), i, 1), d)


def test_hamming_topk_errors():
  a = jnp.zeros((2, 2), jnp.uint32)
  with pytest.raises(ValueError, match="k = 5 exceeds the database size 3"):
    ranking.hamming_topk(a, jnp.zeros((3, 2), jnp.uint32), 5)
  with pytest.raises(ValueError, match="code widths differ"):
    ranking.hamming_topk(a, jnp.zeros((3, 1), jnp.uint32), 1)
  with pytest.raises(ValueError, match="positive int"):
    ranking.hamming_topk(a, a, 0)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("q,n,k", [(4, 60, 5), (3, 9, 9), (2, 30, 1)])
def test_float_topk_matches_numpy(mesh, metric, q, n, k):
  rng = np.random.default_rng(n)
  if metric == "euclidean":
    # Small integers keep every distance exact in float32: ties are real.
    x = rng.integers(-2, 3, (n, 5)).astype(np.float32)
    y = rng.integers(-2, 3, (q, 5)).astype(np.float32)
  else:  # Random directions; ties only between duplicated rows.
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = rng.normal(size=(q, 5)).astype(np.float32)
  x[n // 2:] = x[:n - n // 2]  # duplicates
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  if metric == "euclidean":
    dist = np.linalg.norm(y64[:, None] - x64[None], axis=-1)
  else:
    nrm = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    dist = 1.0 - nrm(y64) @ nrm(x64).T
  for kw in [{}, {"mesh": mesh}, {"max_elements": 1}]:
    d, i = ranking.float_topk(y, x, k, metric=metric, **kw)
    np.testing.assert_allclose(d, np.sort(dist, 1)[:, :k], atol=1e-5)
    # Tie rule: among (numerically) equal distances, ascending index.
    key = np.round(dist, 4)
    want = np.lexsort((np.broadcast_to(np.arange(n), key.shape), key))
    np.testing.assert_array_equal(i, want[:, :k], err_msg=str(kw))


def test_float_topk_errors():
  with pytest.raises(ValueError, match="metric"):
    ranking.float_topk(jnp.zeros((2, 3)), jnp.zeros((4, 3)), 1, metric="l1")
  with pytest.raises(ValueError, match="feature sizes differ"):
    ranking.float_topk(jnp.zeros((2, 3)), jnp.zeros((4, 2)), 1)
  with pytest.raises(ValueError, match="k = 5 exceeds"):
    ranking.float_topk(jnp.zeros((2, 3)), jnp.zeros((4, 3)), 5)


@pytest.mark.parametrize("m", [50, 40_000])  # packed and plain prefix sums
def test_smallest_k_matches_stable_sort(m):
  values = np.random.default_rng(m).integers(0, 9, (3, m)).astype(np.int32)
  vals, pos = jax.jit(ranking._smallest_k, static_argnums=(1, 2))(
      jnp.asarray(values), 17, 9)
  order = np.argsort(values, axis=1, kind="stable")[:, :17]
  np.testing.assert_array_equal(pos, order)
  np.testing.assert_array_equal(vals, np.take_along_axis(values, order, 1))


@pytest.mark.parametrize("q,n,bits,k", [(5, 1000, 64, 20), (3, 77, 40, 7)])
def test_prepared_codes_equal_plain_search(q, n, bits, k):
  rng = np.random.default_rng(n)
  qc = hashing.pack_bits(random_codes(rng, q, bits))
  dbc = hashing.pack_bits(random_codes(rng, n, bits, dup=n // 5))
  prepared = ranking.prepare_codes(dbc, k)
  want = ranking.hamming_topk(qc, dbc, k)
  for kk in (k, 1):  # any k up to the number of blocks
    got = ranking.hamming_topk(qc, prepared, kk)
    np.testing.assert_array_equal(got[0], want[0][:, :kk])
    np.testing.assert_array_equal(got[1], want[1][:, :kk])


def test_prepared_codes_errors(mesh):
  dbc = jnp.zeros((64, 1), jnp.uint32)
  prepared = ranking.prepare_codes(dbc, 4)  # 16 blocks of 4 rows
  with pytest.raises(ValueError, match="prepared with; call prepare_codes"):
    ranking.hamming_topk(dbc[:2], prepared, 17)
  with pytest.raises(ValueError, match="one device"):
    ranking.hamming_topk(dbc[:2], prepared, 2, mesh=mesh)
  with pytest.raises(ValueError, match="code widths differ"):
    ranking.hamming_topk(jnp.zeros((2, 2), jnp.uint32), prepared, 2)


@pytest.mark.parametrize("q, n, bits, k", [(5, 1000, 8, 20), (3, 4000, 64, 50),
                                           (2, 300, 8, 300), (7, 64, 100, 1)])
def test_numpy_topk_equals_compiled(q, n, bits, k):
  """Few bits: many ties, broken by index alike in both engines."""
  rng = np.random.default_rng(n)
  db = hashing.pack_bits(rng.random((n, bits)) < 0.5)
  queries = np.asarray(db)[rng.integers(0, n, q)]
  got = ranking_numpy.hamming_topk(queries, np.asarray(db), k)
  want = ranking.hamming_topk(jnp.asarray(queries), db, k)
  for g, w in zip(got, want):
    assert g.dtype == np.int32
    np.testing.assert_array_equal(g, np.asarray(w))
  with pytest.raises(ValueError, match=rf"k = {n + 1} must be in \[1, {n}\]"):
    ranking_numpy.hamming_topk(queries, np.asarray(db), n + 1)
