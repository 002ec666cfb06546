"""Exact top-k search: packed binary codes by Hamming distance, float features
by Euclidean or cosine distance.

Every search returns the k nearest database items in ascending distance, ties
broken by ascending database index, so metrics never depend on a hidden sort
order. The database may be sharded over a mesh axis: each device searches its
rows, the per-device lists are all-gathered and merged exactly.

Hamming selection (`_hamming_local`) never sorts a full [Q, N] row. The
database is cut into blocks of B rows; one fused pass computes the minimum
distance of each block, the k blocks with the smallest (minimum, block index)
are kept and only their k * B rows are ranked. This is exact: a row in a
dropped block is preceded in (distance, index) order by the best row of each
of the k kept blocks. Both selections (`_smallest_k`) use that distances are
small integers: a binary search over [0, K] and one prefix sum, no sort.
"""
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from rs_jax import distances
from rs_jax import hashing

# Bound on the number of intermediate values held at once per device.
MAX_ELEMENTS = 1 << 24
# Upper bound on rows per block of the Hamming block-minimum pass.
BLOCK_SIZE = 4096


def _check_k(k, n):
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}")
  if k > n:
    raise ValueError(f"k = {k} exceeds the database size {n}")


def _merge(dist, idx, k):
  """Keeps the k smallest (distance, index) pairs of [Q, M] lists, sorted."""
  dist, idx = jax.lax.sort((dist, idx), dimension=1, num_keys=2)
  return dist[:, :k], idx[:, :k]


def _block_size(n, k, block_size):
  """Rows per block: about sqrt(n / k) (balances the two passes), a power of
  two, at most `block_size`, and small enough that there are >= k blocks."""
  b = 1 << max(0, round(math.log2(max(n / k, 1)) / 2))
  return max(1, min(b, block_size, n // k))


def _smallest_k(values, k, num_values):
  """Exact k smallest entries per row, ordered by (value, position).

  Never sorts a row: a binary search over the value range finds the k-th
  smallest value t, then one prefix sum ranks the entries below t and the ties
  at t (lowest positions first), and a scatter compacts the k chosen ones.

  Args:
    values: int[R, M] with entries in [0, num_values).
  Returns:
    (int32[R, k] values, int32[R, k] positions).
  """
  rows, m = values.shape
  lo = jnp.zeros((rows, 1), jnp.int32)
  hi = jnp.full((rows, 1), num_values - 1, jnp.int32)
  for _ in range((num_values - 1).bit_length()):
    mid = (lo + hi) // 2
    enough = jnp.sum(values <= mid.astype(values.dtype), axis=1,
                     keepdims=True) >= k
    hi, lo = jnp.where(enough, mid, hi), jnp.where(enough, lo, mid + 1)
  t = hi.astype(values.dtype)
  below, ties = values < t, values == t
  need = k - jnp.sum(below, axis=1, keepdims=True, dtype=jnp.int32)
  if m < 1 << 15:  # One prefix sum: below in the low 16 bits, ties above.
    packed = below.astype(jnp.int32) + (ties.astype(jnp.int32) << 16)
    counts = jnp.cumsum(packed, axis=1)
    below_before, ties_before = counts & 0xFFFF, counts >> 16
  else:
    below_before = jnp.cumsum(below, axis=1, dtype=jnp.int32)
    ties_before = jnp.cumsum(ties, axis=1, dtype=jnp.int32)
  chosen = below | (ties & (ties_before <= need))
  slot = jnp.where(chosen, below_before + jnp.minimum(ties_before, need) - 1, k)
  pos = jnp.zeros((rows, k), jnp.int32).at[
      jnp.arange(rows)[:, None], slot].set(
          jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (rows, m)),
          mode="drop")
  vals = jnp.take_along_axis(values, pos, axis=1).astype(jnp.int32)
  return jax.lax.sort((vals, pos), dimension=1, num_keys=2)


def _byte_planes(codes, b):
  """uint32[N, W] -> uint8[4W, b, ceil(N / b)]: byte p of row i * b + j at
  [p, j, i] (zero rows pad the last block). The block-minimum layout."""
  num_blocks = -(-codes.shape[0] // b)
  codes = jnp.pad(codes, ((0, num_blocks * b - codes.shape[0]), (0, 0)))
  return jax.lax.bitcast_convert_type(codes, jnp.uint8).reshape(
      num_blocks, b, -1).transpose(2, 1, 0)


def _block_minima(q, planes, unroll_planes=64):
  """Min Hamming distance of each query to each block of b consecutive rows.

  q: uint32[Q, W]; planes: uint8[4W, b, num_blocks] (`_byte_planes`) ->
  uint8[Q, num_blocks] (uint16 for codes over 224 bits). The loop runs over
  the position inside a block, so each step is a contiguous [Q, num_blocks]
  XOR / popcount / min in narrow integer lanes, and no [Q, N] distance matrix
  is ever stored.
  """
  num_planes, b, num_blocks = planes.shape
  dtype = jnp.uint8 if 8 * num_planes < 255 else jnp.uint16
  qb = jax.lax.bitcast_convert_type(q, jnp.uint8).reshape(q.shape[0], -1)
  # Unroll the loop to about `unroll_planes` plane XORs per step.
  unroll = math.gcd(
      b, 1 << max(0, (unroll_planes // num_planes).bit_length() - 1))

  def body(step, best):
    rows = jax.lax.dynamic_slice_in_dim(planes, step * unroll, unroll, axis=1)
    for u in range(unroll):
      d = sum(jax.lax.population_count(qb[:, p, None] ^ rows[p, u][None])
              .astype(dtype) for p in range(num_planes))
      best = jnp.minimum(best, d)
    return best

  init = jnp.full((q.shape[0], num_blocks), jnp.iinfo(dtype).max, dtype)
  return jax.lax.fori_loop(0, b // unroll, body, init)


def _hamming_local(q, db, num_valid, *, k, block_size, planes=None):
  """Exact top-k of uint32[Q, W] against uint32[n, W], in two passes.

  Pass 1 finds the k blocks of b consecutive rows with the smallest (minimum
  distance, block index); pass 2 ranks their k * b rows. Rows at index >=
  num_valid (a traced scalar) are padding and rank last. `planes` is the
  database's `_byte_planes` when prepared ahead (its b wins over block_size).
  Returns (int32[Q, k], int32[Q, k]) with local row indices.
  """
  n, w = db.shape
  sentinel = 32 * w + 1
  if planes is None:
    planes = _byte_planes(db, _block_size(n, k, block_size))
  b, num_blocks = planes.shape[1:]
  num_valid = jnp.clip(num_valid, 0, n)
  rows_of = lambda idx: jnp.take(db, idx, axis=0, mode="clip")
  minima = _block_minima(q, planes).astype(jnp.int32)
  # Padding is a suffix of the rows: blocks past it rank last, and the block
  # it starts in is recomputed without it.
  start = jnp.arange(num_blocks, dtype=jnp.int32) * b
  minima = jnp.where(start < num_valid, minima, sentinel)
  rows = num_valid // b * b + jnp.arange(b, dtype=jnp.int32)
  d = _popcount_xor(q.T[:, :, None], rows_of(rows).T[:, None, :])
  minima = minima.at[:, num_valid // b].set(
      jnp.min(jnp.where(rows < num_valid, d, sentinel), axis=1), mode="drop")
  _, blocks = _smallest_k(minima, k, sentinel + 1)
  blocks = jnp.sort(blocks, axis=1)  # candidates in ascending row order

  cand = (blocks[:, :, None] * b + jnp.arange(b, dtype=jnp.int32)).reshape(
      q.shape[0], k * b)
  d = _popcount_xor(q.T[:, :, None], rows_of(cand).transpose(2, 0, 1))
  dist, pos = _smallest_k(jnp.where(cand < num_valid, d, sentinel), k,
                          sentinel + 1)
  return dist, jnp.take_along_axis(cand, pos, axis=1)


def _popcount_xor(a, b):
  """sum_w popcount(a[w] ^ b[w]) as int32, for per-word broadcastable arrays."""
  return sum(jax.lax.population_count(x ^ y).astype(jnp.int32)
             for x, y in zip(a, b))


def _float_local(q, db, num_valid, *, k, metric):
  """Exact top-k of float[Q, D] against float[n, D]; padding ranks last."""
  if metric == "euclidean":
    d = jnp.sqrt(distances.squared_distances(q, db))
  else:
    d = 1.0 - distances.cosine_similarities(q, db)
  valid = jnp.arange(db.shape[0]) < num_valid
  d = jnp.where(valid[None, :], d, jnp.inf)
  neg, idx = jax.lax.top_k(-d, k)
  return -neg, idx.astype(jnp.int32)


def _place(x, mesh, axis, spec):
  """Puts x on the mesh with `spec`, whether `axis` is Explicit or Auto."""
  sharding = NamedSharding(mesh, spec)
  axis_type = mesh.axis_types[mesh.axis_names.index(axis)]
  if axis_type == jax.sharding.AxisType.Explicit:
    return jax.reshard(x, sharding)
  return jax.lax.with_sharding_constraint(x, sharding)


def _chunked(local, queries, per_query, k, max_elements):
  """Runs `local(q_chunk) -> ([c, k], [c, k])` over query chunks of c rows,
  c chosen so that c * per_query <= max_elements (at least one query)."""
  num_q = queries.shape[0]
  c = max(1, min(num_q, max_elements // max(per_query, 1)))
  if c >= num_q:
    return local(queries)
  chunks = -(-num_q // c)
  q = jnp.pad(queries, ((0, chunks * c - num_q), (0, 0)))
  dist, idx = jax.lax.map(local, q.reshape(chunks, c, -1))
  return dist.reshape(-1, k)[:num_q], idx.reshape(-1, k)[:num_q]


def _search(local, cost, queries, database, k, mesh, axis, max_elements):
  """Single-device or sharded exact top-k with `local(q, db, num_valid, k=)`
  on a database [N, D] (rows sharded over `axis` of `mesh` if given);
  `cost(n, k)` is the number of elements one query holds against n rows."""
  n_total = database.shape[0]
  _check_k(k, n_total)

  if mesh is None:
    fn = lambda q: local(q, database, n_total, k=k)
    return _chunked(fn, queries, cost(n_total, k), k, max_elements)

  shards = mesh.shape[axis]
  n_shard = -(-n_total // shards)
  kk = min(k, n_shard)
  database = jnp.pad(database, ((0, n_shard * shards - n_total), (0, 0)))
  database = _place(database, mesh, axis, P(axis))
  queries = _place(queries, mesh, axis, P())

  def per_shard(q, db):
    offset = jax.lax.axis_index(axis) * n_shard
    fn = lambda qc: local(qc, db, n_total - offset, k=kk)
    dist, idx = _chunked(fn, q, cost(n_shard, kk), kk, max_elements)
    dist = jax.lax.all_gather(dist, axis, axis=1, tiled=True)
    idx = jax.lax.all_gather(idx + offset, axis, axis=1, tiled=True)
    return _merge(dist, idx, k)

  return jax.shard_map(
      per_shard, mesh=mesh, in_specs=(P(), P(axis)), out_specs=(P(), P()),
      check_vma=False)(queries, database)


def _cost(num_blocks, b, k, w):
  """Values one query holds: block minima, candidate codes and distances."""
  return num_blocks + k * b * (w + 2)


class PreparedCodes(NamedTuple):
  """A database laid out once for repeated single-device `hamming_topk`.

  codes: uint32[N, W]; planes: uint8[4W, b, ceil(N / b)], the byte-plane
  layout of the block-minimum pass, which `hamming_topk` otherwise rebuilds
  on every call (the dominant cost of a single query). Build with
  `prepare_codes`.
  """
  codes: jax.Array
  planes: jax.Array


def exclude_rows(indices, rows, *aligned):
  """Drops each query's own row from its ranked results, order kept.

  indices: int[Q, k + 1] ranked rows of Q queries; rows: int[Q], the row to
  leave out of query q's results (its own archive item). Where rows[q] is
  not among them, the last entry is dropped instead. aligned: arrays
  [Q, k + 1] ranked with indices (e.g. the distances), cut the same way.
  Returns the [Q, k] arrays (indices, *aligned). Works under jit.
  """
  indices = jnp.asarray(indices)
  is_row = indices == jnp.asarray(rows)[:, None]
  pos = jnp.where(jnp.any(is_row, axis=1), jnp.argmax(is_row, axis=1),
                  indices.shape[1] - 1)
  j = jnp.arange(indices.shape[1] - 1)
  take = j + (j >= pos[:, None])
  return tuple(jnp.take_along_axis(jnp.asarray(a), take, axis=1)
               for a in (indices, *aligned))


@functools.partial(jax.jit, static_argnames=("k", "block_size"))
def prepare_codes(codes, k, *, block_size=BLOCK_SIZE):
  """Lays out uint32[N, W] codes for fast repeated searches.

  The block size is chosen for `k` (as `hamming_topk` would); searches with
  any k up to the number of blocks are exact, those near `k` fastest.
  """
  hashing.check_packed(codes, codes, names=("codes", "codes"))
  _check_k(k, codes.shape[0])
  return PreparedCodes(
      codes, _byte_planes(codes, _block_size(codes.shape[0], k, block_size)))


@functools.partial(
    jax.jit,
    static_argnames=("k", "mesh", "axis", "block_size", "max_elements"))
def hamming_topk(queries, database, k, *, mesh=None, axis="data",
                 block_size=BLOCK_SIZE, max_elements=MAX_ELEMENTS):
  """Exact k nearest packed codes by Hamming distance.

  Args:
    queries: uint32[Q, W] packed codes (see `hashing.pack_bits`).
    database: uint32[N, W] packed codes, N >= k; with `mesh`, rows are
      sharded over the mesh axis `axis` (any N: padding is handled here).
      Or a `PreparedCodes` (single device), which skips the per-call layout.
    k: number of neighbours (static).
    mesh: optional `jax.sharding.Mesh` over which the database is sharded.
    axis: mesh axis name of the database rows.
    block_size: rows per block of the block-minimum selection.
    max_elements: bound on the number of intermediate values (block minima,
      candidate codes and distances) held at once per device; queries are
      processed in chunks to respect it.
  Returns:
    (distances int32[Q, k], indices int32[Q, k]): ascending distance, ties by
    ascending database index.
  """
  codes = database.codes if isinstance(database, PreparedCodes) else database
  hashing.check_packed(queries, codes, names=("queries", "database"))
  w = queries.shape[1]
  if isinstance(database, PreparedCodes):
    if mesh is not None:
      raise ValueError("a PreparedCodes database is searched on one device; "
                       "pass the codes array itself with mesh=")
    _check_k(k, codes.shape[0])
    b, num_blocks = database.planes.shape[1:]
    if k > num_blocks:
      raise ValueError(
          f"k = {k} exceeds the {num_blocks} blocks the database was "
          f"prepared with; call prepare_codes(codes, k={k})")
    local = functools.partial(_hamming_local, db=codes, num_valid=len(codes),
                              k=k, block_size=b, planes=database.planes)
    return _chunked(local, queries, _cost(num_blocks, b, k, w), k,
                    max_elements)

  def cost(n, k):
    b = _block_size(n, k, block_size)
    return _cost(-(-n // b), b, k, w)

  local = functools.partial(_hamming_local, block_size=block_size)
  return _search(local, cost, queries, database, k, mesh, axis, max_elements)


@functools.partial(
    jax.jit, static_argnames=("k", "metric", "mesh", "axis", "max_elements"))
def float_topk(queries, database, k, *, metric="euclidean", mesh=None,
               axis="data", max_elements=MAX_ELEMENTS):
  """Exact k nearest float features, for baselines on real-valued features.

  Args:
    queries: float[Q, D]; database: float[N, D], N >= k.
    metric: 'euclidean' (distance ||q - x||_2) or 'cosine' (1 - cos(q, x)).
    Other arguments as `hamming_topk`.
  Returns:
    (distances float32[Q, k], indices int32[Q, k]): ascending distance, ties
    by ascending database index.
  """
  if metric not in ("euclidean", "cosine"):
    raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
  if queries.ndim != 2 or database.ndim != 2:
    raise ValueError(f"features must be [N, D]; got queries {queries.shape}, "
                     f"database {database.shape}")
  if queries.shape[1] != database.shape[1]:
    raise ValueError(f"feature sizes differ: queries {queries.shape[1]}, "
                     f"database {database.shape[1]}")
  queries = queries.astype(jnp.float32)
  database = database.astype(jnp.float32)
  local = functools.partial(_float_local, metric=metric)
  return _search(local, lambda n, k: n, queries, database, k, mesh, axis,
                 max_elements)
