"""Random-access sources of prepared datasets and their label stores.

A source has len() and [i] -> {feature: NumPy array}. Sources made by
`rs_jax.data.load` also have `columns(keys)` -> {key: [N, ...] array}: the
label-store features (labels, names, metadata) of every example, read from
`labels-<split>.npz` without decoding an image (datasets prepared before
the label store existed are read example by example, with a warning).
`columns(source, keys)` works on any source.
"""
from typing import Callable, Sequence

from absl import logging
from etils import epath
import numpy as np

from rs_jax import paths


def write_labels(path, rows: Sequence[dict], keys: Sequence[str]) -> None:
  """Writes the label store: {key: [N, ...]} of `rows` (one dict per stored
  example, in order) as an .npz; text becomes UTF-8 bytes."""
  arrays = {}
  for key in keys:
    values = [row[key] for row in rows]
    if values and isinstance(values[0], (str, bytes)):
      arrays[key] = np.array([v.encode() if isinstance(v, str) else v
                              for v in values], dtype=np.bytes_)
    else:
      arrays[key] = np.asarray(values)
  with paths.atomic_write(path) as f:
    np.savez(f, **arrays)


def read_labels(path) -> dict[str, np.ndarray]:
  """{key: array} of a label store written by write_labels."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no label store (prepared by an older "
                            "rs_jax? prepare the dataset again)")
  with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def columns(source, keys: Sequence[str]) -> dict[str, np.ndarray]:
  """{key: [N, ...]} of `keys` over all examples: from the label store when
  the source has one, else by reading every example."""
  if hasattr(source, "columns"):
    return source.columns(keys)
  if not len(source):
    raise ValueError("columns: the source is empty")
  examples = [source[i] for i in range(len(source))]
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in keys}


class DecodedSource:
  """A TFDS data source whose examples pass through `decode`, with the label
  store rows [start, stop) of each of its parts (`parts`: [(split, start,
  stop)] in order, as TFDS slicing resolves them)."""

  def __init__(self, source, decode: Callable[[dict], dict], data_path,
               parts: Sequence[tuple[str, int, int]]):
    self._source, self._decode = source, decode
    self._data_path = epath.Path(data_path)
    self._parts = list(parts)

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    return self._decode(self._source[index])

  def columns(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
    if not all((self._data_path / f"labels-{split}.npz").exists()
               for split, _, _ in self._parts):
      logging.warning("%s: no label store (prepared by an older rs_jax); "
                      "reading every example for %s", self._data_path, keys)
      examples = [self[i] for i in range(len(self))]
      return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in keys}
    out = {k: [] for k in keys}
    for split, start, stop in self._parts:
      store = read_labels(self._data_path / f"labels-{split}.npz")
      for k in keys:
        if k not in store:
          raise KeyError(f"{self._data_path}: {k!r} is not in the label "
                         f"store; it has {sorted(store)}")
        out[k].append(store[k][start:stop])
    return {k: np.concatenate(v) for k, v in out.items()}


class ConcatSource:
  """Random access over several sources one after another."""

  def __init__(self, parts):
    self._sources = list(parts)
    self._ends = np.cumsum([len(s) for s in self._sources])

  def __len__(self):
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getitem__(self, index):
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for length {len(self)}")
    part = int(np.searchsorted(self._ends, index, side="right"))
    start = int(self._ends[part - 1]) if part else 0
    return self._sources[part][index - start]

  def columns(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
    parts = [columns(s, keys) for s in self._sources]
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}
