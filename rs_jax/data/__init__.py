"""Datasets: TFDS builders (array_record, read without TensorFlow) and grain
pipelines.

  prepare(name, manual_dir, data_dir, workers=, beam=, **options)
                                builds a dataset once (local processes or Beam;
                                a gs:// data_dir is staged locally)
  prepare_config(config.data)   the same, from an experiment's data config
  load(name, split, data_dir, **read_options)
                                -> random-access source: len(), [i] -> dict,
                                   columns(keys) -> label-store arrays
  is_prepared(name, data_dir)   -> whether a complete preparation is there
  statistics(name, data_dir)    -> {feature: {"mean": f32[C], "std": f32[C]}}

NAME -> (module, builder class, builder config); modules import lazily, so
reading one dataset never imports the others. TFDS registers the classes under
their snake-case names (rs_ucmerced, rs_bigearthnet, ...), distinct from
TFDS's own `uc_merced` and `bigearthnet`.
"""
import functools
import importlib
import os
import tempfile
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

from rs_jax import paths
from rs_jax.data import sources

DATASETS = {
    "ucmerced": ("rs_jax.data.rgb_folders", "RsUcmerced", None),
    "aid": ("rs_jax.data.rgb_folders", "RsAid", None),
    "synthetic": ("rs_jax.data.synthetic_builder", "RsSynthetic", None),
    **{f"bigearthnet/{c}": ("rs_jax.data.bigearthnet", "RsBigearthnet", c)
       for c in ("s2", "s1", "mm")},
    **{f"bigearthnet_v2/{c}": ("rs_jax.data.bigearthnet_v2", "RsBigearthnetV2",
                               c) for c in ("s2", "s1", "mm")},
}


def builder_class(name: str):
  """(RsBuilder subclass, builder config name or None) of NAME."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
  module, cls, config = DATASETS[name]
  return getattr(importlib.import_module(module), cls), config


def builder(name: str, data_dir, options: Mapping[str, Any] | None = None,
            workers: int = 1):
  """The RsBuilder for NAME (see DATASETS) rooted at data_dir; options None
  means: read, with the options stored at preparation."""
  builder_cls, config = builder_class(name)
  kwargs = {"config": config} if config else {}
  return builder_cls(data_dir=os.fspath(data_dir),
                     options=None if options is None else dict(options),
                     workers=workers, **kwargs)


def prepare(name: str, manual_dir, data_dir, *, workers: int = 1,
            beam: Sequence[str] | None = None, **options):
  """Prepares NAME from the user's files in manual_dir into data_dir (once:
  an existing preparation with the same options is reused; with different
  options it is an error). workers: local processes; beam: Apache Beam
  pipeline arguments (e.g. ["--runner=DataflowRunner", ...]; [] is Beam's
  DirectRunner) to prepare on Beam instead. Returns the builder."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from rs_jax.data import base  # pylint: disable=g-import-not-at-top
  b = builder(name, data_dir, options, workers=workers)
  if b.NEEDS_MANUAL_DIR and not manual_dir:
    raise ValueError(f"{name}: no manual_dir; set it (data.manual_dir) to "
                     "the folder with the raw archive")
  if b.is_prepared():
    stored = base.read_metadata(b.data_path).get("options")
    if stored != base.jsonable(b.options):
      raise ValueError(
          f"{b.data_path}: already prepared with options {stored}, not "
          f"{base.jsonable(b.options)}; use another data_dir or delete it")
    return b
  if beam is None and not paths.is_local(data_dir):
    return _prepare_remote(name, manual_dir, data_dir, workers, options)
  stale = sorted(b.data_path.parent.glob(f"incomplete.*_{b.data_path.name}"))
  if stale:
    logging.warning("%s: left by interrupted preparations (never read; "
                    "delete them): %s", b.data_path.parent,
                    [p.name for p in stale])
  beam_options = None
  if beam is not None:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
    beam_options = pipeline_options.PipelineOptions(list(beam))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir) if manual_dir else None,
      beam_options=beam_options))
  return b


def prepare_config(data_config, *, workers: int = 1,
                   beam: Sequence[str] | None = None):
  """Prepares what an experiment reads from its `config.data` (name,
  manual_dir, data_dir, options), paths as given. Returns the builder."""
  options = data_config.get("options", {})
  options = options.to_dict() if hasattr(options, "to_dict") else dict(options)
  return prepare(data_config.name, data_config.get("manual_dir") or None,
                 data_config.data_dir, workers=workers, beam=beam, **options)


def _prepare_remote(name, manual_dir, data_dir, workers, options):
  """Prepares in a local temporary directory (array_record writes local
  files only), then copies the dataset into data_dir with its JSON files
  last: TFDS takes a directory as prepared once dataset_info.json and
  features.json are there, so an interrupted copy is redone by the next
  run. Needs local disk space for one copy of the dataset."""
  with tempfile.TemporaryDirectory(prefix="rs_jax-prepare-") as tmp:
    local = prepare(name, manual_dir, tmp, workers=workers, **options)
    src = paths.Path(local.data_path)
    dst = paths.Path(builder(name, data_dir, options, workers).data_path)
    logging.info("copying %s to %s", src, dst)
    files = sorted((d / f for d, _, names in src.walk() for f in names),
                   key=lambda f: (f.suffix == ".json",
                                  f.name == "dataset_info.json", str(f)))
    for f in files:
      paths.copy_file(f, dst / f.relative_to(src))
  return builder(name, data_dir, options, workers)


def is_prepared(name: str, data_dir) -> bool:
  """Returns whether NAME is prepared (complete) in data_dir."""
  return builder(name, data_dir).is_prepared()


def _prepared(name, data_dir):
  b = builder(name, data_dir)
  if not b.is_prepared():
    raise FileNotFoundError(
        f"{b.data_path}: dataset {name!r} is not prepared; run "
        f"python -m rs_jax.data.prepare_cli --config configs/prepare.py:{name} "
        f"--config.data.manual_dir=RAW --config.data.data_dir={data_dir}")
  return b


def load(name: str, split: str, data_dir, **read_options):
  """Random-access source of a prepared split: len(), [i] -> dict of NumPy
  arrays, columns(keys) -> label-store arrays. split "all" is every example
  (the splits in stored order); TFDS slicing like "train[:10%]" works too.
  read_options: the builder's READ_OPTIONS (BigEarthNet: resampling);
  unknown names raise."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  b = _prepared(name, data_dir)
  for key, value in read_options.items():
    if key not in b.READ_OPTIONS:
      raise ValueError(f"{name}: unknown read option {key!r}; known: "
                       f"{sorted(b.READ_OPTIONS)}")
    if value not in b.READ_OPTIONS[key]:
      raise ValueError(f"{name}: read option {key}={value!r}, expected one "
                       f"of {b.READ_OPTIONS[key]}")
  defaults = {k: choices[0] for k, choices in b.READ_OPTIONS.items()}
  decode = functools.partial(b.decode, **{**defaults, **read_options})
  if split == "all":
    return sources.ConcatSource(
        sources.DecodedSource(b.as_data_source(s), decode, b.data_path,
                              [(s, 0, info.num_examples)])
        for s, info in b.info.splits.items())
  try:
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(
        b.info.splits)
  except (KeyError, ValueError, AssertionError) as e:
    raise ValueError(f"{name}: no split {split!r} ({e}); have "
                     f"{sorted(b.info.splits)} and 'all'") from None
  parts = [(p.splitname, p.from_ or 0,
            b.info.splits[p.splitname].num_examples if p.to is None else p.to)
           for p in parts]
  return sources.DecodedSource(b.as_data_source(split), decode, b.data_path,
                               parts)


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
