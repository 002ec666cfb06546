"""Archive index: packed codes with their ids, labels and model metadata,
saved to one checksummed file and searched exactly by Hamming distance.

File layout (all integers little-endian):

  b"RSJAXIDX" | version u32 | header_len u64 | payload_len u64
  | header: UTF-8 JSON {num_bits, num_codes, num_words, ids, labels, metadata}
  | payload: codes u32[N, W], ids (i64[N], or UTF-8 names joined by "\\n"),
             labels (i32[N] or u8[N, L]; absent without labels)
  | SHA-256 of every byte before it (32 bytes)

`save` writes through `paths.atomic_write` (temp file, fsync, rename), so a
crash never leaves a partial index under that name. `load` checks the magic,
version, size and checksum before parsing anything.

Search (`Index.topk`) is `ranking.hamming_topk` (exact; ascending distance,
ties by ascending row): on one device against a `ranking.prepare_codes`
layout kept by the index, or with `mesh=` against the codes sharded over the
mesh's data axis. A one-shot search of a few queries (a command-line query)
is `ranking_numpy.hamming_topk`, same rule: JAX is imported on first use
only, so such a process never pays its import. Leaving given rows out (a query's own row) searches k + 1
and drops the excluded row, else the last: the k best of the remaining rows
in the same order, so the result stays exact.

Building an index from a training run is `rs_jax.index_build`, the command
line `rs_jax.index_cli`, the launch task `rs_jax.index_task`.
"""
import dataclasses
import functools
import hashlib
import json
import os
import struct

import numpy as np

from rs_jax import paths
from rs_jax import ranking_numpy

MAGIC = b"RSJAXIDX"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQQ")  # magic, version, header_len, payload_len
_DIGEST = 32


class IndexFileError(ValueError):
  """An index file that is not, or no longer, a valid index."""

  def __init__(self, path, problem):
    super().__init__(f"index file {os.fspath(path)!r}: {problem}")


def _check_codes(codes, num_bits, name):
  """uint32[N, W] codes of `num_bits` bits, padding bits zero -> np.ndarray."""
  codes = np.asarray(codes)
  if codes.dtype != np.uint32:
    raise TypeError(f"{name}: packed codes must be uint32, got {codes.dtype}")
  w = -(-num_bits // 32)  # hashing.num_words, without importing JAX
  if codes.ndim != 2 or codes.shape[1] != w:
    raise ValueError(f"{name}: {num_bits}-bit codes must be uint32[N, {w}], "
                     f"got shape {codes.shape}")
  if num_bits % 32 and codes.size:
    pad = codes[:, -1] >> np.uint32(num_bits % 32)
    if pad.any():
      raise ValueError(
          f"{name}: row {int(np.argmax(pad != 0))} has bits set beyond "
          f"bit {num_bits} (codes of another length?)")
  return codes


def _check_ids(ids, n):
  """n ids, all str (non-empty, no newline) or all int -> a new array."""
  if not isinstance(ids, np.ndarray):
    ids = list(ids)
    if all(isinstance(i, str) for i in ids):
      ids = np.array(ids, dtype=str)
    elif all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
             for i in ids):
      ids = np.array(ids, dtype=np.int64)
    else:
      raise TypeError("ids: must be all str or all int, got types "
                      f"{sorted({type(i).__name__ for i in ids})}")
  if ids.shape != (n,):
    raise ValueError(f"ids: need {n} ids (one per code), got shape "
                     f"{ids.shape}")
  if ids.dtype.kind in "iu":
    return ids.astype(np.int64)
  if ids.dtype.kind != "U":
    raise TypeError(f"ids: must be str or int, got {ids.dtype}")
  bad = (np.strings.str_len(ids) == 0) | (np.strings.find(ids, "\n") >= 0)
  if bad.any():
    raise ValueError("ids: names must be non-empty without newlines, got "
                     f"{ids[np.argmax(bad)]!r}")
  return ids.copy()


def _kind(ids):
  return "str" if ids.dtype.kind == "U" else "int"


def _check_labels(labels, n):
  """int32[N] class ids or uint8[N, L] multi-hot -> np.ndarray, or None."""
  if labels is None:
    return None
  labels = np.asarray(labels)
  if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
    raise TypeError(f"labels: must be int or bool, got {labels.dtype}")
  if labels.ndim not in (1, 2) or labels.shape[0] != n:
    raise ValueError(f"labels: must be [{n}] class ids or [{n}, L] multi-hot, "
                     f"got shape {labels.shape}")
  if labels.ndim == 2:
    if labels.size and (labels.min() < 0 or labels.max() > 1):
      raise ValueError("labels: multi-hot labels must be 0 or 1")
    return labels.astype(np.uint8)
  if labels.size and (labels.min() < np.iinfo(np.int32).min or
                      labels.max() > np.iinfo(np.int32).max):
    raise ValueError("labels: class ids must fit in int32")
  return labels.astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class Index:
  """N packed K-bit codes with ids, optional labels and metadata.

  Build with `Index.from_codes` or `Index.load`; `add` returns a new index.
  Fields are read-only NumPy arrays: codes uint32[N, ceil(K / 32)], ids
  str[N] or int64[N], labels int32[N] / uint8[N, L] or None; metadata is a
  JSON-serialisable dict (model config, checkpoint checksum, "modality",
  "model_pair", ...).
  """
  codes: np.ndarray
  num_bits: int
  ids: np.ndarray
  labels: np.ndarray | None = None
  metadata: dict = dataclasses.field(default_factory=dict)
  # Device layouts (built on first search) and the ids in sorted order.
  _cache: dict = dataclasses.field(default_factory=dict, init=False,
                                    repr=False)

  def __post_init__(self):
    if not isinstance(self.num_bits, (int, np.integer)) or self.num_bits < 1:
      raise ValueError(f"num_bits must be a positive int, got "
                       f"{self.num_bits!r}")
    codes = np.array(_check_codes(self.codes, int(self.num_bits), "codes"))
    if not len(codes):
      raise ValueError("an index needs at least one code, got 0")
    try:
      metadata = json.loads(json.dumps(dict(self.metadata)))
    except (TypeError, ValueError) as e:
      raise TypeError(f"metadata must be a JSON-serialisable dict: {e}") from e
    fields = dict(codes=codes, num_bits=int(self.num_bits),
                  ids=_check_ids(self.ids, len(codes)),
                  labels=_check_labels(self.labels, len(codes)),
                  metadata=metadata)
    ids = fields["ids"]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if dup.size:
      raise ValueError(f"ids: duplicate ids, e.g. {dup[:3].tolist()}")
    self._cache["sorted_ids"] = order, sorted_ids  # for id -> row lookups
    for name, value in fields.items():
      if isinstance(value, np.ndarray):  # fresh arrays, made read-only
        value.flags.writeable = False
      object.__setattr__(self, name, value)

  @classmethod
  def from_codes(cls, codes, num_bits, ids, labels=None, metadata=None):
    """Index of packed uint32[N, W] codes; ids: N unique str or int."""
    return cls(codes, num_bits, ids, labels, metadata or {})

  def __len__(self):
    return len(self.codes)

  def __repr__(self):
    labels = None if self.labels is None else self.labels.shape
    return (f"Index(N={len(self)}, num_bits={self.num_bits}, "
            f"ids={self.ids.dtype}, labels={labels}, metadata={self.metadata})")

  # Search.

  def _check_k(self, k, extra=0):
    if not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"k must be a positive int, got {k!r}")
    if k + extra > len(self):
      raise ValueError(f"k = {k} exceeds the {len(self) - extra} codes "
                       "the index can return")

  def topk(self, query_codes, k, *, exclude=None, mesh=None, axis="data",
           one_shot=False):
    """k nearest rows of each query by Hamming distance.

    Args:
      query_codes: uint32[Q, W] codes of the index's length.
      k: 1 <= k <= len(self) (len(self) - 1 with `exclude`).
      exclude: optional int[Q], one row per query left out of its results
        (e.g. the query's own row); the other rows keep their order.
      mesh: optional mesh; the codes are sharded over its axis `axis`.
      one_shot: for a process that searches once (one device): no layout is
        kept; up to `ranking_numpy.MAX_PAIRS` query-code pairs are searched
        in NumPy, more by the program from `compile_cache.exported` (traced
        once per cache directory) instead of being traced again.
    Returns:
      (distances int32[Q, k], rows int32[Q, k]): ascending distance, ties by
      ascending row (the `ranking.hamming_topk` rule).
    """
    self._check_k(k, extra=int(exclude is not None))
    q = _check_codes(query_codes, self.num_bits, "query_codes")
    if exclude is not None:
      exclude = np.asarray(exclude)
      if exclude.shape != (len(q),):
        raise ValueError(f"exclude: need one row per query ({len(q)}), got "
                         f"shape {exclude.shape}")
    if not len(q):
      return np.zeros((0, k), np.int32), np.zeros((0, k), np.int32)
    kk = k + (exclude is not None)
    if one_shot and mesh is None and (
        len(q) * len(self) <= ranking_numpy.MAX_PAIRS):
      dist, rows = ranking_numpy.hamming_topk(q, self.codes, kk)
    else:
      dist, rows = self._compiled_topk(q, kk, mesh, axis, one_shot)
    if exclude is None:
      return dist, rows
    # Stable: the non-excluded entries first, in their ranked order.
    keep = np.argsort(rows == exclude[:, None], axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(dist, keep, 1),
            np.take_along_axis(rows, keep, 1))

  def _compiled_topk(self, q, k, mesh, axis, one_shot):
    """`ranking.hamming_topk` of checked queries -> NumPy (distances, rows):
    one-shot through `compile_cache.exported`, else against a cached
    `prepare_codes` layout (one device) or the codes sharded over `axis` of
    `mesh`. JAX is imported here, on the first compiled search."""
    # pylint: disable=g-import-not-at-top
    import jax
    from rs_jax import compile_cache
    from rs_jax import hashing
    from rs_jax import ranking
    if one_shot and mesh is None:
      dist, rows = compile_cache.exported(
          f"hamming_topk(k={k})", functools.partial(ranking.hamming_topk, k=k),
          q, self.codes, modules=(ranking, hashing))
      return np.asarray(dist), np.asarray(rows)
    if mesh is None:
      db = self._cache.get("prepared")
      if db is None or k > db.planes.shape[2]:
        db = self._cache["prepared"] = ranking.prepare_codes(
            jax.numpy.asarray(self.codes), k)
    else:
      db = self._cache.get(("mesh", mesh, axis))
      if db is None:
        even = len(self) % mesh.shape[axis] == 0
        # Uneven N: hamming_topk pads and shards the rows on each call.
        db = self._cache["mesh", mesh, axis] = jax.device_put(
            self.codes,
            jax.NamedSharding(mesh, jax.P(axis)) if even else None)
    dist, rows = ranking.hamming_topk(jax.numpy.asarray(q), db, k, mesh=mesh,
                                      axis=axis)
    return np.asarray(dist), np.asarray(rows)

  def search(self, query_codes, k, *, mesh=None, axis="data"):
    """k nearest codes of each query by Hamming distance.

    Args:
      query_codes: uint32[Q, W] codes of the index's length.
      k: 1 <= k <= len(self).
      mesh: optional mesh; the codes are sharded over its axis `axis`.
    Returns:
      (distances int32[Q, k], ids [Q, k]): ascending distance, ties by
      ascending row in the index (the `ranking.hamming_topk` rule).
    """
    dist, rows = self.topk(query_codes, k, mesh=mesh, axis=axis)
    return dist, self.ids[rows]

  def rows(self, ids):
    """int64 row of each of `ids`; KeyError naming the first unknown id."""
    ids = np.array(list(ids))
    if not ids.size:
      return np.zeros(0, np.int64)
    if ids.dtype.kind not in "Uiu" or _kind(ids) != _kind(self.ids):
      raise KeyError(f"id {ids[0].item()!r}: the index has "
                     f"{_kind(self.ids)} ids")
    rows, found = self._find(ids)
    if not found.all():
      raise KeyError(f"id {ids[~found][0].item()!r} is not in the index "
                     f"({np.sum(~found)} of {len(ids)} query ids unknown)")
    return rows

  def _find(self, ids):
    """(rows, found) of an array of ids of the index's kind."""
    order, sorted_ids = self._cache["sorted_ids"]
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(self) - 1)
    return order[pos], sorted_ids[pos] == ids

  def search_ids(self, query_ids, k, exclude_self=True, *, mesh=None,
                 axis="data"):
    """`search` with the codes of ids already in the index as queries.

    With exclude_self, each query's own row is left out of its results
    (other rows with the same code stay); the rest keep their order.
    """
    rows = self.rows(query_ids)
    dist, got = self.topk(self.codes[rows], k, mesh=mesh, axis=axis,
                          exclude=rows if exclude_self else None)
    return dist, self.ids[got]

  def check_compatible(self, query_bits, query_metadata=None):
    """Raises ValueError unless queries of `query_bits` bits, from the model
    described by `query_metadata`, can be searched in this index.

    Codes compare only within one model pair: query and index metadata must
    name the same "model_pair" (e.g. S1 queries from the S1 encoder of the
    pair whose S2 encoder built the index). Without a model pair on either
    side, only queries of the index's own "modality" are accepted.
    """
    if query_bits != self.num_bits:
      raise ValueError(f"query codes have {query_bits} bits, the index "
                       f"holds {self.num_bits}-bit codes")
    query_metadata = query_metadata or {}
    mine = self.metadata.get("model_pair")
    theirs = query_metadata.get("model_pair")
    if mine != theirs:
      raise ValueError(f"model pair mismatch: the index was built by model "
                       f"pair {mine!r}, the query encoded by {theirs!r}")
    modalities = (self.metadata.get("modality"),
                  query_metadata.get("modality"))
    if mine is None and modalities[0] != modalities[1]:
      raise ValueError(
          f"a {modalities[1]!r} query against a {modalities[0]!r} index needs "
          "the same 'model_pair' in both metadata")

  def add(self, codes, ids, labels=None):
    """New index with these rows appended (same length, id type, labels)."""
    codes = _check_codes(codes, self.num_bits, "codes")
    ids = _check_ids(ids, len(codes))
    if _kind(ids) != _kind(self.ids):
      raise TypeError(f"ids: the index has {_kind(self.ids)} ids, got "
                      f"{_kind(ids)} ids")
    if (labels is None) != (self.labels is None):
      raise ValueError("labels: must be given exactly when the index has "
                       f"labels (it has {'no ' * (self.labels is None)}labels)")
    known = self._find(ids)[1]
    if known.any():
      raise ValueError(f"ids: {ids[known][0].item()!r} is already in the "
                       f"index ({np.sum(known)} of {len(ids)} new ids are)")
    if labels is not None:
      labels = _check_labels(labels, len(codes))
      if labels.shape[1:] != self.labels.shape[1:]:
        raise ValueError(f"labels: shape {labels.shape[1:]} per row, the "
                         f"index has {self.labels.shape[1:]}")
      labels = np.concatenate([self.labels, labels])
    return Index(np.concatenate([self.codes, codes]), self.num_bits,
                 np.concatenate([self.ids, ids]), labels, self.metadata)

  # Files.

  def save(self, path):
    """Writes the index to `path` atomically (temp file, fsync, rename)."""
    path = os.fspath(path)
    if _kind(self.ids) == "str":
      ids = "\n".join(self.ids.tolist()).encode("utf-8")
    else:
      ids = self.ids.astype("<i8").tobytes()
    sections = [self.codes.astype("<u4").tobytes(), ids]
    if self.labels is not None:
      sections.append(self.labels.astype(
          "<i4" if self.labels.ndim == 1 else "u1").tobytes())
    header = json.dumps(dict(
        num_bits=self.num_bits, num_codes=len(self),
        num_words=self.codes.shape[1],
        ids=dict(kind=_kind(self.ids), nbytes=len(ids)),
        labels=None if self.labels is None else list(self.labels.shape),
        metadata=self.metadata)).encode("utf-8")
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header),
                          sum(map(len, sections)))
    digest = hashlib.sha256()
    with paths.atomic_write(path) as f:
      for chunk in (prefix, header, *sections):
        digest.update(chunk)
        f.write(chunk)
      f.write(digest.digest())

  @classmethod
  def load(cls, path):
    """Reads an index written by `save`; IndexFileError if it is not one
    (wrong magic or version, truncated, checksum mismatch)."""
    with open(path, "rb") as f:
      data = f.read()
    if len(data) < _PREFIX.size + _DIGEST:
      raise IndexFileError(path, f"truncated: {len(data)} bytes is shorter "
                           "than an empty index")
    magic, version, header_len, payload_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
      raise IndexFileError(path, f"not an rs_jax index (magic {magic!r})")
    if version != FORMAT_VERSION:
      raise IndexFileError(path, f"format version {version}, this code "
                           f"reads version {FORMAT_VERSION}")
    size = _PREFIX.size + header_len + payload_len + _DIGEST
    if len(data) != size:
      problem = "truncated" if len(data) < size else "trailing data"
      raise IndexFileError(path, f"{problem}: {len(data)} bytes, the header "
                           f"says {size}")
    if hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
      raise IndexFileError(path, "SHA-256 checksum mismatch: the file is "
                           "corrupt")
    start = _PREFIX.size + header_len
    header = json.loads(data[_PREFIX.size:start])
    n, w = header["num_codes"], header["num_words"]
    codes = np.frombuffer(data, "<u4", n * w, start).reshape(n, w)
    start += codes.nbytes
    ids_bytes = data[start:start + header["ids"]["nbytes"]]
    start += len(ids_bytes)
    if header["ids"]["kind"] == "str":
      ids = np.array(ids_bytes.decode("utf-8").split("\n"), dtype=str)
    else:
      ids = np.frombuffer(ids_bytes, "<i8")
    labels = None
    if header["labels"] is not None:
      shape = header["labels"]
      dtype = "<i4" if len(shape) == 1 else "u1"
      labels = np.frombuffer(data, dtype, int(np.prod(shape)),
                             start).reshape(shape)
    return cls(codes, header["num_bits"], ids, labels, header["metadata"])
