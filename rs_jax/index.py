"""Archive index: packed codes with their ids, labels and model metadata,
saved to one checksummed file and searched exactly by Hamming distance.

File layout (all integers little-endian):

  b"RSJAXIDX" | version u32 | header_len u64 | payload_len u64
  | header: UTF-8 JSON {num_bits, num_codes, num_words, ids, labels, metadata}
  | payload: codes u32[N, W], ids (i64[N], or UTF-8 names joined by "\\n"),
             labels (i32[N] or u8[N, L]; absent without labels)
  | SHA-256 of every byte before it (32 bytes)

`save` writes a temporary file in the target directory, fsyncs it and renames
it over the target, so a crash never leaves a partial index under that name.
`load` checks the magic, version, size and checksum before parsing anything.

Search is `ranking.hamming_topk` (exact; ascending distance, ties by ascending
row): on one device against a `ranking.prepare_codes` layout kept by the
index, or with `mesh=` against the codes sharded over the mesh's data axis.

`build_indexes` / `Index.build` encode every example of a prepared dataset
split with the encoders of a training run (`trained.load_trained`; one index
per modality) and record in the metadata where the rows came from: row r of
a built index is example r of metadata["data"] (name, data_dir, split).

  python -m rs_jax.index build --checkpoint TRAIN_WORKDIR --out PATH
      [--data_name N --data_dir D --split all --modality s2]
  python launch.py --config configs/index.py --config.checkpoint=TRAIN_WORKDIR
      --workdir OUT                       (writes OUT/index_<modality>.rsidx)
  python -m rs_jax.index search --index PATH --ids ID1,ID2 --k 10 [--json F]
  python -m rs_jax.index search --index PATH --codes Q.npy --k 10
  python -m rs_jax.index search --index PATH --image FILE [--image FILE ...]
      [--checkpoint TRAIN_WORKDIR --modality s1] --k 10 --json F --sheet P.png

Query images: a .npy array [H, W, C]; a BigEarthNet patch folder of GeoTIFF
bands (NAME_B01.tif ... or NAME_VV.tif, NAME_VH.tif); any other file is read
by PIL as RGB. Sizes are never changed: the encoder's H x W x C is required.
"""
import argparse
import dataclasses
import hashlib
import json
import os
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax import hashing
from rs_jax import input_pipeline
from rs_jax import paths
from rs_jax import ranking
from rs_jax import sharding

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
  w = hashing.num_words(num_bits)
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

  @classmethod
  def build(cls, checkpoint_dir, data_name=None, data_dir=None, split="all",
            *, modality=None, batch_size=256):
    """The index of one modality (default: the run's only one) of a
    prepared dataset split; see `build_indexes`."""
    from rs_jax import trained  # pylint: disable=g-import-not-at-top
    if modality is None:
      modality = _only_modality(trained.load_config(checkpoint_dir))
    indexes = build_indexes(checkpoint_dir, data_name, data_dir, split,
                            modalities=(modality,), batch_size=batch_size)
    return indexes[modality]

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

  def _topk(self, query_codes, k, mesh=None, axis="data", exclude=None):
    """(int32[Q, k] distances, int[Q, k] rows) of `hamming_topk`; rows
    `exclude` int[Q] (one per query) are left out of the results."""
    self._check_k(k, extra=int(exclude is not None))
    q = _check_codes(query_codes, self.num_bits, "query_codes")
    if not len(q):
      return np.zeros((0, k), np.int32), np.zeros((0, k), np.int32)
    kk = k + (exclude is not None)
    if mesh is None:
      prepared = self._cache.get("prepared")
      if prepared is None or kk > prepared.planes.shape[2]:
        prepared = self._cache["prepared"] = ranking.prepare_codes(
            jnp.asarray(self.codes), kk)
      db = prepared
    else:
      db = self._cache.get(("mesh", mesh, axis))
      if db is None:
        even = len(self) % mesh.shape[axis] == 0
        # Uneven N: hamming_topk pads and shards the rows on each call.
        db = self._cache["mesh", mesh, axis] = jax.device_put(
            self.codes, jax.NamedSharding(mesh, jax.P(axis)) if even else None)
    dist, rows = ranking.hamming_topk(jnp.asarray(q), db, kk, mesh=mesh,
                                      axis=axis)
    dist, rows = np.asarray(dist), np.asarray(rows)
    if exclude is None:
      return dist, rows
    # Stable: the non-excluded entries first, in their ranked order.
    keep = np.argsort(rows == exclude[:, None], axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(dist, keep, 1),
            np.take_along_axis(rows, keep, 1))

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
    dist, rows = self._topk(query_codes, k, mesh, axis)
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
    dist, got = self._topk(self.codes[rows], k, mesh, axis,
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


# Building from a trained run.

ID_KEYS = ("patch_name", "filename")  # the first one an example has is its id


def _only_modality(config):
  inputs = list(config.data.inputs)
  if len(inputs) != 1:
    raise ValueError(f"the run has encoders for {inputs}; name a modality")
  return inputs[0]


@dataclasses.dataclass
class _Archive(input_pipeline.Data):
  """`Data` of the split to index: its one eval pass (`Evaluator.
  encode_split`) also collects each row's id (`id_key`, else its index)."""
  id_key: str | None = None
  ids: np.ndarray | None = None

  def eval_batches(self, split):
    from rs_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    n = len(self.sources[split])
    self.ids = np.arange(n) if self.id_key is None else np.empty(n, object)
    keys = self.keys + [self.id_key] * (self.id_key is not None)
    for batch in pipeline.eval_batches(self.sources[split], keys=keys,
                                       batch_size=self.eval_batch_size):
      if self.id_key is not None:
        mask = batch["mask"]
        self.ids[batch["index"][mask]] = [
            i.decode("utf-8") if isinstance(i, bytes) else str(i)
            for i in batch[self.id_key][mask]]
      yield batch


def build_indexes(checkpoint_dir, data_name=None, data_dir=None, split="all",
                  *, modalities=None, batch_size=256):
  """{modality: Index} of every example of a prepared dataset split.

  Encodes the split once with the run's encoders (restored best state;
  `trained.load_trained`) in batches sharded over all local devices
  (`evaluate.Evaluator.encode_split`), then binarizes and packs (MiLaN
  eq. 5). data_name / data_dir default to the run's training data; the
  split must have the run's label key and its images the encoder's shape.
  Ids: the examples' patch_name or filename, else their position. Metadata:
  modality, model_pair, num_bits, checkpoint (workdir, step directory,
  sha256), the model config, label_key and data (name, data_dir, split,
  num_rows: row r < num_rows is example r of that split).
  """
  from rs_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from rs_jax import evaluate  # pylint: disable=g-import-not-at-top
  from rs_jax import trained  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    raise NotImplementedError(
        "building an index runs in one process (all its local devices); "
        f"this job has {jax.process_count()} processes")
  restored = trained.load_trained(checkpoint_dir)
  modalities = list(modalities or restored.config.data.inputs)
  for m in modalities:
    restored.check_modality(m)
  train_data = input_pipeline.resolve_dirs(restored.config.data,
                                           restored.workdir)
  name = data_name or train_data.name
  data_dir = os.path.abspath(data_dir or train_data.data_dir)
  source = data_lib.load(name, split, data_dir)
  if not len(source):
    raise ValueError(f"{name} split {split!r} in {data_dir} is empty")
  example = source[0]
  label_key = restored.config.data.label_key
  for key, want in [(label_key, None),
                    *((m, restored.input_shapes[m]) for m in modalities)]:
    if key not in example:
      raise ValueError(f"{name} split {split!r}: examples have no {key!r}"
                       f" (they have {sorted(example)})")
    if want is not None and np.shape(example[key]) != want:
      raise ValueError(f"{name} split {split!r}: {key!r} images are "
                       f"{np.shape(example[key])}, the encoder expects "
                       f"{want}")
  id_key = next((k for k in ID_KEYS if k in example), None)
  mesh = sharding.create_mesh(jax.local_devices())
  devices = mesh.shape["data"]
  archive = _Archive(
      sources={split: source}, images={split: source},
      inputs=tuple(modalities),
      label_key=label_key, stats=restored.stats, train_config=None,
      eval_batch_size=-(-batch_size // devices) * devices, id_key=id_key)
  evaluator = evaluate.Evaluator({m: restored.models[m] for m in modalities},
                                 archive, mesh, ks=())
  outputs, labels = evaluator.encode_split(restored.state, split)
  metadata = dict(
      model_pair=restored.model_pair, num_bits=restored.bits,
      checkpoint=dict(workdir=restored.workdir, path=restored.checkpoint,
                      step=restored.step, sha256=restored.checksum),
      model=restored.config.model.to_dict(), label_key=label_key,
      data=dict(name=name, data_dir=data_dir, split=split,
                num_rows=len(source), id_key=id_key))
  ids, labels = archive.ids.tolist(), np.asarray(labels)
  return {m: Index(np.asarray(evaluate.packed_codes(outputs[m])),
                   restored.bits, ids, labels, dict(metadata, modality=m))
          for m in modalities}


def index_path(out, modality, several):
  """`out`, or with several modalities out's stem + '_<modality>'."""
  if not several:
    return out
  stem, ext = os.path.splitext(out)
  return f"{stem}_{modality}{ext}"


def run(config, workdir):
  """launch.py task: WORKDIR/index_<modality>.rsidx for each modality."""
  if not config.checkpoint:
    raise ValueError("config.checkpoint: name the training workdir")
  indexes = build_indexes(
      config.checkpoint, config.data.name or None,
      config.data.data_dir or None, config.data.split,
      modalities=[config.modality] if config.modality else None,
      batch_size=config.batch_size)
  paths = {}
  for m, index in indexes.items():
    paths[m] = os.path.join(workdir, f"index_{m}.rsidx")
    if jax.process_index() == 0:
      index.save(paths[m])
  return paths


# Query images.


def read_image(path, modality, shape):
  """One query image file -> array [H, W, C] of the encoder's `shape`.

  A folder is a BigEarthNet patch (its S2 bands for modality "s2", VV/VH for
  "s1"; `bigearthnet.patches.read_patch`), a .npy file an array [H, W, C],
  any other file an image PIL reads (as uint8 RGB). ValueError naming the
  file when its size or band count differs from `shape`.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    # pylint: disable-next=g-import-not-at-top
    from rs_jax.data.bigearthnet import patches
    bands = {"s2": patches.S2_BANDS, "s1": patches.S1_BANDS}.get(modality)
    if bands is None:
      raise ValueError(f"{path}: a folder is read as a BigEarthNet patch, "
                       f"which needs modality s1 or s2, not {modality!r}")
    image = patches.read_patch(path, bands)
  elif path.endswith(".npy"):
    image = np.load(path)
    if not np.issubdtype(image.dtype, np.number):
      raise ValueError(f"{path}: expected a numeric array, got {image.dtype}")
    if image.ndim == 3 and not np.isfinite(image).all():
      raise ValueError(f"{path}: has NaN/inf values")
  else:
    import PIL.Image  # pylint: disable=g-import-not-at-top
    try:
      with PIL.Image.open(path) as im:
        image = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
      raise ValueError(f"{path}: not a readable image ({e})") from None
  if image.ndim != 3:
    raise ValueError(f"{path}: expected an image [H, W, C], got shape "
                     f"{image.shape}")
  if image.shape[-1] != shape[-1]:
    raise ValueError(f"{path}: has {image.shape[-1]} bands, the {modality} "
                     f"encoder expects {shape[-1]}")
  if image.shape[:2] != tuple(shape[:2]):
    raise ValueError(f"{path}: is {image.shape[0]}x{image.shape[1]} pixels, "
                     f"the {modality} encoder expects {shape[0]}x{shape[1]} "
                     "(resize or crop it first)")
  return image


def archive_images(index, rows):
  """Images [..., H, W, C] of index rows, read back from the prepared
  dataset recorded at build time (metadata["data"])."""
  from rs_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  info = index.metadata.get("data")
  rows = np.asarray(rows)
  if info is None:
    raise ValueError("the index records no dataset (not built by "
                     "build_indexes): no images to show")
  if rows.size and rows.max() >= info["num_rows"]:
    raise ValueError(f"row {int(rows.max())} was added after the index was "
                     f"built from {info['name']} ({info['num_rows']} rows): "
                     "no image")
  source = data_lib.load(info["name"], info["split"], info["data_dir"])
  key = index.metadata["modality"]
  images = [np.asarray(source[int(r)][key]) for r in rows.ravel()]
  return np.stack(images).reshape(*rows.shape, *images[0].shape)


# Command line.


def _result_labels(labels, row):
  """JSON labels of one row: a class id, or the list of active labels."""
  if labels.ndim == 1:
    return int(labels[row])
  return np.flatnonzero(labels[row]).tolist()


def _queries(args, index):
  """-> (names, codes or None, query rows or None, images or None,
  modality) of the query given by --ids, --codes or --image."""
  modality = index.metadata.get("modality")
  if args.ids is not None:
    names = [s for s in args.ids.split(",") if s]
    if not names:
      raise ValueError("--ids: no ids given")
    if _kind(index.ids) == "int":
      try:
        names = [int(s) for s in names]
      except ValueError as e:
        raise ValueError(f"--ids: the index has int ids: {e}") from None
    rows = index.rows(names)
    images = archive_images(index, rows) if args.sheet else None
    return names, index.codes[rows], rows, images, modality
  if args.codes is not None:
    if args.sheet:
      raise ValueError("--sheet needs --ids or --image queries (codes have "
                       "no picture)")
    codes = np.load(args.codes)
    if args.query_metadata:
      with open(args.query_metadata) as f:
        meta = json.load(f)
      index.check_compatible(meta.get("num_bits", index.num_bits), meta)
    return ([f"{args.codes}[{i}]" for i in range(len(codes))], codes, None,
            None, modality)
  from rs_jax import trained  # pylint: disable=g-import-not-at-top
  modality = args.modality or modality
  workdir = args.checkpoint or index.metadata.get("checkpoint", {}).get(
      "workdir")
  if not workdir:
    raise ValueError("--image needs --checkpoint (the index names no run)")
  if modality is None:
    raise ValueError("--image needs --modality (the index names none)")
  restored = trained.load_trained(workdir)
  restored.check_modality(modality)
  index.check_compatible(restored.bits, {"modality": modality,
                                         "model_pair": restored.model_pair})
  shape = restored.input_shapes[modality]
  images = np.stack([read_image(p, modality, shape) for p in args.image])
  return (list(args.image), restored.encode(modality, images), None, images,
          modality)


def _search_command(args):
  index = Index.load(args.index)
  names, codes, rows, images, modality = _queries(args, index)
  dist, got = index._topk(codes, args.k, exclude=None
                          if rows is None or args.include_self else rows)
  out = []
  for query, d_row, r_row in zip(names, dist.tolist(), got.tolist()):
    results = []
    for d, r in zip(d_row, r_row):
      item = {"id": index.ids[r].item(), "distance": d}
      if index.labels is not None:
        item["labels"] = _result_labels(index.labels, r)
      results.append(item)
    out.append({"query": query, "results": results})
  text = json.dumps(out, indent=1)
  if args.json:
    with open(args.json, "w") as f:
      f.write(text + "\n")
  print(text)
  if args.sheet:
    from rs_jax import viz  # pylint: disable=g-import-not-at-top
    labels = index.labels
    if labels is None:
      labels = np.zeros(len(index), np.int32)
    # Image queries have no known labels: all-zero (no label shared).
    query_labels = (labels[rows] if rows is not None else
                    np.zeros((len(names), *labels.shape[1:]), labels.dtype))
    viz.retrieval_sheet(
        args.sheet, query_images=images, query_labels=query_labels,
        result_images=archive_images(index, got), result_labels=labels[got],
        distances=dist, modality=modality,
        result_modality=index.metadata["modality"])


def _build_command(args):
  modalities = [args.modality] if args.modality else None
  indexes = build_indexes(args.checkpoint, args.data_name, args.data_dir,
                          args.split, modalities=modalities,
                          batch_size=args.batch_size)
  for m, index in indexes.items():
    path = index_path(args.out, m, len(indexes) > 1)
    index.save(path)
    print(f"{path}: {len(index)} {m} codes of {index.num_bits} bits")


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m rs_jax.index",
      description="Build an archive index from a trained run, or search one.")
  commands = parser.add_subparsers(dest="command", required=True)
  build = commands.add_parser(
      "build", help="encode a prepared dataset split with a trained run")
  build.add_argument("--checkpoint", required=True,
                     help="training workdir (with config.json, checkpoints/)")
  build.add_argument("--out", required=True, help="index file to write; "
                     "with several modalities, one per modality: "
                     "STEM_<modality>.EXT")
  build.add_argument("--data_name", help="dataset (default: the run's)")
  build.add_argument("--data_dir", help="prepared data (default: the run's)")
  build.add_argument("--split", default="all", help="split, or 'all'")
  build.add_argument("--modality", help="one encoder (default: all)")
  build.add_argument("--batch_size", type=int, default=256)
  search = commands.add_parser(
      "search", help="top-k by Hamming distance, as JSON")
  search.add_argument("--index", required=True, help="index file")
  query = search.add_mutually_exclusive_group(required=True)
  query.add_argument("--ids", help="comma-separated ids in the index")
  query.add_argument("--codes", help=".npy of uint32[Q, W] packed codes")
  query.add_argument("--image", action="append", help="query image: a .npy "
                     "[H, W, C], a BigEarthNet patch folder, or an image "
                     "file PIL reads (repeat for several)")
  search.add_argument("--query_metadata", help="JSON metadata of the "
                      "--codes encoder (num_bits, modality, model_pair)")
  search.add_argument("--checkpoint", help="with --image: training workdir "
                      "whose encoder encodes it (default: the index's run)")
  search.add_argument("--modality", help="with --image: the query's "
                      "modality (default: the index's)")
  search.add_argument("--k", type=int, default=10)
  search.add_argument("--include_self", action="store_true",
                      help="with --ids, keep the query itself in results")
  search.add_argument("--json", help="also write the results here")
  search.add_argument("--sheet", help="PNG of each query and its top k")
  args = parser.parse_args(argv)
  try:
    {"build": _build_command, "search": _search_command}[args.command](args)
  except (ValueError, KeyError, TypeError, OSError) as e:
    sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")


if __name__ == "__main__":
  main()
