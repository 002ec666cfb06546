"""Datasets: TFDS builders (array_record, read without TensorFlow) and grain
pipelines.

  prepare(name, manual_dir, data_dir, **options)  builds a dataset once
  load(name, split, data_dir)   -> random-access source: len(), [i] -> dict
  statistics(name, data_dir)    -> {feature: {"mean": f32[C], "std": f32[C]}}

NAME -> (module, builder class, builder config); modules import lazily, so
reading one dataset never imports the others. TFDS registers the classes under
their snake-case names (rs_ucmerced, rs_bigearthnet, ...), distinct from
TFDS's own `uc_merced` and `bigearthnet`.
"""
import importlib
from typing import Any, Mapping

import numpy as np

DATASETS = {
    "ucmerced": ("rs_jax.data.rgb_folders", "RsUcmerced", None),
    "aid": ("rs_jax.data.rgb_folders", "RsAid", None),
    "synthetic": ("rs_jax.data.synthetic_builder", "RsSynthetic", None),
    **{f"bigearthnet/{c}": ("rs_jax.data.bigearthnet", "RsBigearthnet", c)
       for c in ("s2", "s1", "mm")},
    **{f"bigearthnet_v2/{c}": ("rs_jax.data.bigearthnet_v2", "RsBigearthnetV2",
                               c) for c in ("s2", "s1", "mm")},
}


def builder(name: str, data_dir, options: Mapping[str, Any] | None = None):
  """The RsBuilder for NAME (see DATASETS) rooted at data_dir; options None
  means: read, with the options stored at preparation."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
  module, cls, config = DATASETS[name]
  builder_cls = getattr(importlib.import_module(module), cls)
  kwargs = {"config": config} if config else {}
  return builder_cls(data_dir=str(data_dir),
                     options=None if options is None else dict(options),
                     **kwargs)


def prepare(name: str, manual_dir, data_dir, **options):
  """Prepares NAME from the user's files in manual_dir into data_dir (once:
  an existing preparation with the same options is reused; with different
  options it is an error). Returns the builder."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from rs_jax.data import base  # pylint: disable=g-import-not-at-top
  b = builder(name, data_dir, options)
  if b.is_prepared():
    stored = base.read_metadata(b.data_path).get("options")
    if stored != base.jsonable(b.options):
      raise ValueError(
          f"{b.data_path}: already prepared with options {stored}, not "
          f"{base.jsonable(b.options)}; use another data_dir or delete it")
    return b
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir) if manual_dir else None))
  return b


def is_prepared(name: str, data_dir) -> bool:
  """Returns whether NAME is prepared (complete) in data_dir."""
  return builder(name, data_dir).is_prepared()


def _prepared(name, data_dir):
  b = builder(name, data_dir)
  if not b.is_prepared():
    raise FileNotFoundError(
        f"{b.data_path}: dataset {name!r} is not prepared; run "
        f"python -m rs_jax.data.prepare --dataset {name} --manual_dir RAW "
        f"--data_dir {data_dir}")
  return b


class ConcatSource:
  """Random access over several sources one after another."""

  def __init__(self, sources):
    self._sources = list(sources)
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


def load(name: str, split: str, data_dir):
  """Random-access source of a prepared split: len(), [i] -> dict of NumPy
  arrays. split "all" is every example (the splits in stored order); TFDS
  slicing like "train[:10%]" works too."""
  b = _prepared(name, data_dir)
  if split == "all":
    return ConcatSource(b.as_data_source(s) for s in b.info.splits)
  if split.split("[")[0] not in b.info.splits:
    raise ValueError(f"{name}: no split {split!r}; have "
                     f"{sorted(b.info.splits)} and 'all'")
  return b.as_data_source(split)


def statistics(name: str, data_dir, split: str | None = None):
  """Per-channel {"mean", "std"} float32[C] of each image feature, computed
  at preparation time on `split` (default "train" when it exists, else all
  examples)."""
  from rs_jax.data import base  # pylint: disable=g-import-not-at-top
  stats = base.read_metadata(_prepared(name, data_dir).data_path)["statistics"]
  if split is None:
    split = "train" if "train" in stats else "all"
  if split not in stats:
    raise ValueError(f"{name}: no statistics for split {split!r}; have "
                     f"{sorted(stats)}")
  return {k: {"mean": np.asarray(v["mean"], np.float32),
              "std": np.asarray(v["std"], np.float32)}
          for k, v in stats[split].items()}
