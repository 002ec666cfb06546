"""RsBuilder: the TFDS builder base class of every rs_jax dataset.

A dataset is prepared once from a directory the user already has
(`manual_dir`; nothing is downloaded) into array_record files that are read
without TensorFlow (`rs_jax.data.load`).

A subclass implements:
  VERSION                  tfds.core.Version; BUILDER_CONFIGS if it has configs.
  DEFAULT_OPTIONS          dict: the preparation options it accepts, with
                           their defaults (merged over BASE_OPTIONS; unknown
                           names raise).
  _features(self)          -> dict[str, tfds.features.FeatureConnector].
  _splits(self, manual_dir: epath.Path) -> dict[str, Sequence[item]]
                           scans manual_dir and assigns items to splits; an
                           item must survive a JSON round trip (tuples become
                           lists, paths strings: Beam reads items from JSON);
                           split names are not "all"; empty splits are dropped.
  _example(self, item)     -> (key, example dict) or None when the item was
                           skipped; keys are unique and increase in the order
                           items are given (examples are stored in that order).
and may override:
  normalize_options(cls, options) -> options in one canonical form (what is
                           stored and compared when a preparation is reused).
  READ_OPTIONS             {name: (default, other allowed values...)} of
                           decode(self, example, **read_options) -> the
                           example as readers see it (`rs_jax.data.load`
                           applies it; BigEarthNet resamples native bands).
  _moments(self, example)  -> {feature: summary.ChannelMoments}, the band
                           statistics of one stored example (default: every
                           3-D [H, W, C] array, per channel).
Both _splits and _example report bad input with `self.invalid(path, problem)`:
it raises ValueError("{path}: {problem}"), or, with the option
skip_invalid=True, records the pair and returns None (the caller then skips
the item). `self.count(name)` counts events worth reporting.

Items are prepared one by one in this process (workers=1), in a pool of
local processes (workers=N; `parallel.Workers`), or on Apache Beam (a
DownloadConfig with beam_runner / beam_options): the same `_example` code,
the same files. TFDS writes into a temporary directory renamed on success, so
an interrupted preparation never reads as prepared.

After preparation the dataset's directory holds, next to the array_record
files: `metadata.json` with {"options", "counts", "skipped", "statistics"};
`labels-<split>.npz`, the label store: every non-image feature (labels,
names, metadata; [N] or [N, C] arrays in stored order, text as UTF-8 bytes)
so that samplers never decode an image for labels; and, when anything was
skipped, `skipped.txt` (one "path<TAB>problem" a line). Image features may be
given as uint8 arrays: they are PNG-encoded here. "statistics" has per split
(and "all") and per image feature the per-channel mean, std (population,
over all pixels) and pixel count.
"""
import abc
import io
import json
from typing import Any

from absl import logging
from etils import epath
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from rs_jax import paths
from rs_jax.data import parallel
from rs_jax.data import sources
from rs_jax.data import summary as summary_lib

BASE_OPTIONS = {"seed": 0, "skip_invalid": False}
_SCAN = "_scan"  # summary of what _splits reported


class RsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the rs_jax builders; see the module docstring for the contract."""

  VERSION = tfds.core.Version("1.0.0")
  DEFAULT_OPTIONS: dict[str, Any] = {}
  READ_OPTIONS: dict[str, tuple] = {}
  NEEDS_MANUAL_DIR = True  # False: generated data, manual_dir is not read
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Nothing is downloaded: pass manual_dir, the folder with the archive as "
      "its authors distribute it (see the builder's docstring).")

  def __init__(self, *, options: dict[str, Any] | None = None,
               workers: int = 1, **kwargs):
    defaults = {**BASE_OPTIONS, **self.DEFAULT_OPTIONS}
    unknown = sorted(set(options or {}) - set(defaults))
    if unknown:
      raise ValueError(
          f"{type(self).__name__}: unknown option(s) {unknown}; "
          f"known: {sorted(defaults)}")
    self.options = self.normalize_options({**defaults, **(options or {})})
    self.workers = int(workers)
    self._reading = options is None
    self._init_kwargs = dict(kwargs)
    self._summaries: dict[str, summary_lib.Summary] = {}
    self._labels: dict[str, list] = {}
    self._current: summary_lib.Summary | None = None
    self._beam = False
    super().__init__(file_format="array_record", **kwargs)

  # --- pickling: workers rebuild the builder with its options and scan state --
  def __getstate__(self):
    state = {k: v for k, v in self.__dict__.items()
             if k.startswith("_item_")}  # what _splits left for _example
    return {"kwargs": self._init_kwargs, "options": self.options,
            "item_state": state}

  def __setstate__(self, state):
    self.__init__(options=state["options"], **state["kwargs"])
    self.__dict__.update(state["item_state"])

  # --- what a subclass implements -------------------------------------------
  @abc.abstractmethod
  def _features(self) -> dict[str, tfds.features.FeatureConnector]:
    """The stored features."""

  @abc.abstractmethod
  def _splits(self, manual_dir: epath.Path) -> dict[str, Any]:
    """Split name -> sequence of items."""

  @abc.abstractmethod
  def _example(self, item) -> tuple[Any, dict[str, Any]] | None:
    """One item -> (key, example), or None when skipped."""

  @classmethod
  def normalize_options(cls, options: dict[str, Any]) -> dict[str, Any]:
    """Options in their canonical form (default: as given)."""
    return options

  def decode(self, example: dict[str, Any], **read_options) -> dict[str, Any]:
    """A stored example as readers see it (default: as stored)."""
    del read_options
    return example

  def _moments(self, example) -> dict[str, summary_lib.ChannelMoments]:
    return {name: summary_lib.ChannelMoments.of(value)
            for name, value in example.items()
            if isinstance(value, np.ndarray) and value.ndim == 3}

  # --- helpers for subclasses -------------------------------------------------
  def invalid(self, path, problem: str) -> None:
    """Reports bad input: raises ValueError, or records it (skip_invalid)."""
    if not self.options["skip_invalid"]:
      raise ValueError(f"{path}: {problem}")
    logging.warning("skipping %s: %s", path, problem)
    self._current.skipped.append((str(path), problem))
    self._current.counts["skipped"] += 1

  def count(self, name: str, n: int = 1) -> None:
    self._current.counts[name] += n

  def label_keys(self) -> list[str]:
    """The features kept in the label store: all but images and arrays of
    two or more dimensions."""
    return [k for k, f in self.info.features.items()
            if not isinstance(f, tfds.features.Image) and len(f.shape) <= 1]

  # --- preparing one item (here, in a worker process, or on Beam) -------------
  def process(self, item):
    """item -> (key, example or None, label row or None, Summary)."""
    self._current = summary_lib.Summary()
    try:
      result = self._example(item)
    finally:
      done, self._current = self._current, None
    if result is None:
      return None, None, None, done
    key, example = result
    done.moments = self._moments(example)
    for name, value in example.items():
      if (isinstance(value, np.ndarray) and
          isinstance(self.info.features[name], tfds.features.Image)):
        example[name] = _png(value)
    return key, example, {k: example[k] for k in self.label_keys()}, done

  # --- TFDS plumbing ----------------------------------------------------------
  def _info(self) -> tfds.core.DatasetInfo:
    # Reading (no options given): the features follow the stored options.
    stored = epath.Path(self.data_path) / "metadata.json"
    if self._reading and stored.exists():
      self.options.update(read_metadata(self.data_path)["options"])
    return tfds.core.DatasetInfo(
        builder=self,
        description=(type(self).__doc__ or "").strip(),
        features=tfds.features.FeaturesDict(self._features()),
        disable_shuffling=True,  # stored order = _splits order
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    manual_dir = None
    if self.NEEDS_MANUAL_DIR:
      manual_dir = epath.Path(dl_manager.manual_dir)
      if not manual_dir.is_dir():
        raise FileNotFoundError(f"{manual_dir}: manual_dir is not a directory")
    self._current = self._summaries[_SCAN] = summary_lib.Summary()
    try:
      splits = self._splits(manual_dir)
    finally:
      self._current = None
    if "all" in splits:
      raise ValueError(f"{type(self).__name__}: 'all' is not a split name")
    return {name: self._generate_examples(name, items)
            for name, items in splits.items() if len(items)}

  def _generate_examples(self, split, items):
    if self._beam:
      return parallel.beam_split(self, split, items,
                                 epath.Path(self.data_dir))
    return self._generate_locally(split, items)

  def _generate_locally(self, split, items):
    done = self._summaries[split] = summary_lib.Summary()
    rows = self._labels[split] = []
    for key, example, labels, part in self._pool.map(items):
      done.merge(part)
      if example is not None:
        rows.append(labels)
        yield key, example

  def _download_and_prepare(self, dl_manager, download_config):
    self._beam = bool(download_config.beam_runner or
                      download_config.beam_options)
    self._pool = parallel.Workers(self, self.workers)
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      self._pool.close()
    data_dir = epath.Path(self.data_dir)  # the temporary directory
    for split in self.info.splits:
      if self._beam:  # written by the pipeline
        self._summaries[split] = parallel.read_beam_summary(data_dir, split)
      else:
        sources.write_labels(data_dir / f"labels-{split}.npz",
                             self._labels.pop(split), self.label_keys())
    statistics, total = {}, summary_lib.Summary()
    everything = {}
    for name, part in self._summaries.items():
      total.merge(part)
      if name != _SCAN:
        statistics[name] = {k: m.as_dict() for k, m in part.moments.items()}
        for k, m in part.moments.items():
          everything.setdefault(k, summary_lib.ChannelMoments()).merge(m)
    statistics["all"] = {k: m.as_dict() for k, m in everything.items()}
    self.info.metadata.update(
        options=jsonable(self.options), counts=dict(total.counts),
        skipped=[list(s) for s in total.skipped], statistics=statistics)
    if total.skipped:
      paths.write_text(data_dir / "skipped.txt", "".join(
          f"{path}\t{problem}\n" for path, problem in total.skipped))


def _png(image: np.ndarray) -> bytes:
  """Lossless PNG bytes with PIL (TFDS would start TensorFlow per image)."""
  buffer = io.BytesIO()
  image = image[..., 0] if image.shape[-1] == 1 else image
  PIL.Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


def jsonable(value):
  """Options as JSON (tuples -> lists, other objects -> str)."""
  return json.loads(json.dumps(value, default=str))


def read_metadata(data_path) -> dict[str, Any]:
  """metadata.json of a prepared dataset directory (no TensorFlow needed)."""
  path = epath.Path(data_path) / "metadata.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: no rs_jax metadata (not prepared?)")
  return json.loads(path.read_text())
