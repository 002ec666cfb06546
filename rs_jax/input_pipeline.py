"""Data for the trainer: `config.data` -> sources, host batches, device arrays.

Fields read (every config shares them):
  data.name, data.data_dir, data.manual_dir (relative paths: inside the
  workdir), data.options (preparation options, e.g. split ratios); a
  dataset missing from data_dir is prepared on first use.
  data.inputs: feature keys fed to one encoder each, e.g. ("s2",).
  data.label_key: 'label' (class ids) or a multi-hot key ('labels',
  'labels_19', 'labels_43').
  data.read_options (optional): how examples are read, e.g.
  {"resampling": "bilinear"} for BigEarthNet (default nearest).
  data.train_split; eval.{query,database,val_query,val_database}_split.
  train.batch_size (global), train.sampler (+ train.sampler_options),
  train.augment; eval.batch_size (global).
With model.frozen the inputs are cached backbone features (`features.py`).
"""
import dataclasses
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from rs_jax import console
from rs_jax import paths
from rs_jax import sharding as sharding_lib


def read_options(data_config) -> dict[str, Any]:
  """data.read_options (e.g. BigEarthNet's resampling) as a dict."""
  options = data_config.get("read_options") or {}
  return options.to_dict() if hasattr(options, "to_dict") else dict(options)


def prepare_once(data_config) -> None:
  """Prepares the dataset in data_dir when it is missing.

  With several processes, process 0 prepares and the others wait for it:
  data_dir must then be storage that every process sees.
  """
  from rs_jax import data  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0 and not data.is_prepared(data_config.name,
                                                       data_config.data_dir):
    with console.to_log(f"preparing {data_config.name} in "
                        f"{data_config.data_dir}"):
      data.prepare_config(data_config)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("rs_jax: dataset prepared")
    if not data.is_prepared(data_config.name, data_config.data_dir):
      raise FileNotFoundError(
          f"data.data_dir={data_config.data_dir}: process 0 prepared "
          f"{data_config.name} there, but process {jax.process_index()} does "
          "not see it; use storage that all processes share")


def split_names(config) -> list[str]:
  e = config.eval
  names = [config.data.train_split, e.query_split, e.database_split,
           e.get("val_query_split"), e.get("val_database_split")]
  return sorted({n for n in names if n})


@dataclasses.dataclass
class Data:
  """Sources of all splits a run uses, and how batches reach the devices.

  sources: what the encoders read (cached features when model.frozen);
  images: the dataset's own sources (for pictures).
  """
  sources: dict[str, Any]
  images: dict[str, Any]
  inputs: tuple[str, ...]
  label_key: str
  stats: dict[str, Any]
  train_config: Any
  eval_batch_size: int

  @property
  def input_shapes(self) -> dict[str, tuple[int, ...]]:
    example = self.sources[self.train_config.split][0]
    return {m: tuple(np.shape(example[m])) for m in self.inputs}

  @property
  def keys(self) -> list[str]:
    return [*self.inputs, self.label_key]

  def train_batches(self, *, seed: int) -> Iterator[dict]:
    """Infinite per-process batches (`data.pipeline.train_batches`)."""
    from rs_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    c = self.train_config
    options = dict(c.get("sampler_options", {}))
    if c.sampler != "random":
      options.setdefault("label_key", self.label_key)
    return pipeline.train_batches(
        self.sources[c.split], batch_size=c.batch_size,
        seed=seed, sampler=c.sampler, augment=c.augment, keys=self.keys,
        **options)

  def labels(self, split) -> np.ndarray:
    """Returns the label_key column of a split: int[N] or multi-hot [N, C]
    (from the label store; no image is decoded)."""
    from rs_jax.data import sources  # pylint: disable=g-import-not-at-top
    return sources.columns(self.sources[split],
                           [self.label_key])[self.label_key]

  def eval_batches(self, split) -> Iterator[dict]:
    """One pass in index order, padded last batch, 'mask' marks real rows."""
    from rs_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    return pipeline.eval_batches(self.sources[split],
                                 batch_size=self.eval_batch_size,
                                 keys=self.keys)

  def example(self, split, index):
    """Example `index` of a split as stored in the dataset (images)."""
    return self.images[split][int(index)]

  def to_global(self, batch, sharding):
    """This process's host batch -> global arrays sharded on the batch axis
    (the global batch is the processes' batches side by side)."""
    return sharding_lib.to_global(
        batch, sharding, (*self.keys, "pair_label", "index", "mask"))

  @staticmethod
  def iterator_state(iterator):
    """JSON-able iterator state for the checkpoint, or None."""
    get_state = getattr(iterator, "get_state", None)
    return get_state() if get_state is not None else None

  @staticmethod
  def restore_iterator(iterator, state, step: int) -> None:
    """Continues the stream where the checkpoint left it."""
    if state is not None and hasattr(iterator, "set_state"):
      iterator.set_state(state)
      return
    for _ in range(step):  # deterministic stream without a saved state
      next(iterator)


def resolve_dirs(data_config, workdir):
  """data_dir / manual_dir relative paths are taken inside the workdir."""
  out = data_config.copy_and_resolve_references()
  for key in ("data_dir", "manual_dir"):
    if out.get(key):
      out[key] = str(paths.resolve(out[key], workdir))
  return out


def load(config, workdir) -> Data:
  """The `Data` of a config: sources of every split, band statistics."""
  from rs_jax import data  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data = resolve_dirs(config.data, workdir)
  prepare_once(config.data)
  sources = {s: data.load(config.data.name, s, config.data.data_dir,
                          **read_options(config.data))
             for s in split_names(config)}
  all_stats = data.statistics(config.data.name, config.data.data_dir)
  stats = {m: {k: jnp.asarray(v, jnp.float32) for k, v in all_stats[m].items()}
           for m in config.data.inputs if m in all_stats}
  images = sources
  if config.model.frozen:
    from rs_jax import features  # pylint: disable=g-import-not-at-top
    sources = features.cached_sources(config, sources, stats)
    stats = {}  # the hash head takes the features as they are
  train_config = config.train.copy_and_resolve_references()
  with train_config.unlocked():
    train_config.split = config.data.train_split
  return Data(sources=sources, images=images,
              inputs=tuple(config.data.inputs),
              label_key=config.data.label_key, stats=stats,
              train_config=train_config,
              eval_batch_size=config.eval.batch_size)
