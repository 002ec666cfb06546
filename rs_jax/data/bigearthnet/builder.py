"""rs_bigearthnet: BigEarthNet v1 / BigEarthNet-MM from the original folders.

manual_dir holds the S2 root (BigEarthNet-v1.0/<patch>/<patch>_B01.tif ...,
<patch>_labels_metadata.json) and/or the S1 root (BigEarthNet-S1-v1.0/...
<patch>_VV.tif, _VH.tif, JSON with corresponding_s2_patch); the roots are
found by their contents (options s2_dir / s1_dir name them explicitly).

Configs and features (all: labels_43 uint8[43], labels_19 uint8[19],
patch_name, acquisition_date, coordinates float64[4] (ulx, uly, lrx, lry),
epsg int32):
  s2  s2: bands B01..B12 with B8A, no B10, stored at native size as uint16
      (patches.S2_GROUPS); read as float32[120, 120, 12] (read option
      resampling: nearest (default), bilinear, bicubic; resample.py);
      patch_name = S2 name.
  s1  s1 float32[120, 120, 2] (VV, VH in dB); patch_name = S1 name.
  mm  s2 and s1 of the same place (an S1 patch and the S2 patch its JSON
      names); patch_name = S2 name, s1_patch_name; labels, date and
      coordinates from the S2 JSON.
Band statistics (rs_jax.data.statistics) are those of the nearest-resampled
120 x 120 bands (equal to the native pixels' mean and std).
Splits: the official patch lists (option split_csvs, {split: csv} or
"train=a.csv,validation=b.csv,..."; a patch is in a split when its S2 or S1
name is listed; unlisted patches are counted and left out), else seeded
random ratios (option splits, see splits.py; default: everything in
"train"). include_csvs (e.g. a list of the Serbia patches) keeps only the
listed patches; exclude_csvs (e.g. the cloud/shadow and seasonal-snow lists)
leaves the listed ones out; both take a list or "a.csv,b.csv" ("" = none),
and what they drop is counted. Counted too: no_label_19, the patches whose
labels all lie outside BigEarthNet-19, and (mm) s2_without_s1, the S2
patches no S1 JSON names: bad input like a missing S2 partner (preparation
stops naming the first, or skip_invalid lists them in skipped.txt).
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from rs_jax.data import base
from rs_jax.data import splits as splits_lib
from rs_jax.data import summary
from rs_jax.data.bigearthnet import labels as labels_lib
from rs_jax.data.bigearthnet import patches
from rs_jax.data.bigearthnet import resample

_SIZE = patches.SIZE


def metadata_features():
  """The label and metadata features shared by BigEarthNet v1 configs."""
  return {
      "labels_43": tfds.features.Tensor(shape=(43,), dtype=np.uint8),
      "labels_19": tfds.features.Tensor(shape=(19,), dtype=np.uint8),
      "patch_name": tfds.features.Text(),
      "acquisition_date": tfds.features.Text(),
      "coordinates": tfds.features.Tensor(shape=(4,), dtype=np.float64),
      "epsg": tfds.features.Scalar(dtype=np.int32),
  }


def image_features(config):
  """The stored image features of config "s2", "s1" or "mm" (patches.py):
  raw bytes (Encoding.BYTES; TFDS's default, a tf.train list filled value
  by value, makes writing and reading ~100x slower)."""
  raw = tfds.features.Encoding.BYTES
  out = {}
  if config in ("s2", "mm"):
    for group, names in patches.S2_GROUPS.items():
      n = patches.NATIVE_SIZE[names[0]]
      out[group] = tfds.features.Tensor(shape=(n, n, len(names)),
                                        dtype=np.uint16, encoding=raw)
  if config in ("s1", "mm"):
    out["s1"] = tfds.features.Tensor(
        shape=(_SIZE, _SIZE, len(patches.S1_BANDS)), dtype=np.float32,
        encoding=raw)
  return out


def decode_images(example, resampling):
  """A stored example -> the same with s2 float32[120, 120, 12] in place of
  the native S2 arrays (s1 is stored as read)."""
  if example is None or "s2_10m" not in example:
    return example
  out = {k: v for k, v in example.items() if k not in patches.S2_GROUPS}
  out["s2"] = patches.to_grid(example, "s2", resampling)
  return out


def image_moments(example):
  """{"s2": ..., "s1": ...} ChannelMoments of a stored example, as of its
  nearest-resampled 120 x 120 bands (each native pixel counted f^2 times)."""
  out = {}
  if "s2_10m" in example:
    groups = [(names, summary.ChannelMoments.of(
        example[group], (_SIZE // example[group].shape[0]) ** 2))
              for group, names in patches.S2_GROUPS.items()]
    order = [n for names, _ in groups for n in names]
    both = summary.ChannelMoments.concat([m for _, m in groups])
    pick = [order.index(b) for b in patches.S2_BANDS]
    out["s2"] = summary.ChannelMoments(both.n, both.mean[pick], both.m2[pick])
  if "s1" in example:
    out["s1"] = summary.ChannelMoments.of(example["s1"])
  return out


def list_option(value, option):
  """A list option given as a list or "a,b" ("" or None: empty)."""
  if value is None or value == "":
    return []
  if isinstance(value, str):
    return [v.strip() for v in value.split(",") if v.strip()]
  if isinstance(value, (list, tuple)):
    return [str(v) for v in value]
  raise ValueError(f"option {option}: expected a list or 'a,b', got "
                   f"{value!r}")


def _split_csvs(value):
  if value is None or value == "":
    return {}
  if isinstance(value, str):
    out = {}
    for part in list_option(value, "split_csvs"):
      split, sep, csv = part.partition("=")
      if not sep or not split or not csv:
        raise ValueError(f"option split_csvs: expected 'split=file.csv,...', "
                         f"got {value!r}")
      out[split.strip()] = csv.strip()
    return out
  return {str(k): str(v) for k, v in dict(value).items()}


def _resolve(manual_dir, path):
  return path if os.path.isabs(path) else os.path.join(manual_dir, path)


class RsBigearthnet(base.RsBuilder):
  """BigEarthNet v1 (Sumbul et al. 2019) and BigEarthNet-MM (2021)."""

  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="s2", description="Sentinel-2, 12 bands"),
      tfds.core.BuilderConfig(name="s1", description="Sentinel-1, VV and VH"),
      tfds.core.BuilderConfig(name="mm", description="Sentinel-1 + -2 pairs"),
  ]
  DEFAULT_OPTIONS = {
      "s2_dir": None, "s1_dir": None,  # default: found under manual_dir
      "split_csvs": {},   # {split: patch list CSV}, e.g. the official ones
      "splits": None,     # ratios / preset when no split_csvs (None: train)
      "include_csvs": [],  # patch lists to keep, e.g. the Serbia patches
      "exclude_csvs": [],  # patch lists to leave out
  }
  READ_OPTIONS = {"resampling": resample.METHODS}
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"2.0.0": "S2 bands stored at native size as uint16; "
                            "label store; include_csvs."}

  @classmethod
  def normalize_options(cls, options):
    return {**options,
            "split_csvs": _split_csvs(options["split_csvs"]),
            "include_csvs": list_option(options["include_csvs"],
                                        "include_csvs"),
            "exclude_csvs": list_option(options["exclude_csvs"],
                                        "exclude_csvs")}

  def decode(self, example, resampling="nearest"):
    return decode_images(example, resampling)

  def _moments(self, example):
    return image_moments(example)

  def _features(self):
    features = {**image_features(self.builder_config.name),
                **metadata_features()}
    if self.builder_config.name == "mm":
      features["s1_patch_name"] = tfds.features.Text()
    return features

  def _root(self, manual_dir, option, band):
    if self.options[option]:
      root = _resolve(manual_dir, self.options[option])
      if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: {option} is not a directory")
      return root
    root = patches.find_root(manual_dir, band)
    if root is None:
      raise FileNotFoundError(
          f"{manual_dir}: no patch folders with {band} bands found; set the "
          f"option {option}")
    return root

  def _splits(self, manual_dir):
    manual_dir = os.fspath(manual_dir)
    config = self.builder_config.name
    self._item_s2_root = self._item_s1_root = None
    if config in ("s2", "mm"):
      self._item_s2_root = self._root(manual_dir, "s2_dir", "B02")
    if config == "s2":
      pairs = [(name, None) for name in patches.subfolders(self._item_s2_root)]
    else:
      self._item_s1_root = self._root(manual_dir, "s1_dir", "VV")
      pairs = []
      for s1_name in patches.subfolders(self._item_s1_root):
        try:
          meta = patches.read_metadata(os.path.join(self._item_s1_root,
                                                    s1_name))
        except patches.PatchError as e:
          self.invalid(e.path, e.problem)
          continue
        pairs.append((meta["corresponding_s2_patch"] or None, s1_name))
      if config == "mm":  # S2 patches no S1 JSON names, to be reported
        named = {s2 for s2, _ in pairs}
        pairs += [(n, None) for n in patches.subfolders(self._item_s2_root)
                  if n not in named]

    self.count("no_label_19", 0)  # reported even when there is none
    for option, keep in (("include_csvs", True), ("exclude_csvs", False)):
      if not self.options[option]:
        continue
      listed = set()
      for csv in self.options[option]:
        listed.update(patches.read_patch_list(_resolve(manual_dir, csv)))
      kept = [p for p in pairs if listed.isdisjoint(p) != keep]
      self.count("excluded" if not keep else "not_included",
                 len(pairs) - len(kept))
      pairs = kept

    if config == "mm":
      pairs = self._drop_unpaired_s2(pairs)
    items = list(enumerate(pairs))  # (key, (s2_name, s1_name))
    if not self.options["split_csvs"]:
      parts = splits_lib.random_split(len(items), self.options["splits"],
                                      seed=self.options["seed"])
      return {split: [items[i] for i in idx] for split, idx in parts.items()}
    split_of = {}
    for split, csv in self.options["split_csvs"].items():
      for name in patches.read_patch_list(_resolve(manual_dir, csv)):
        split_of[name] = split
    out = {split: [] for split in self.options["split_csvs"]}
    for item in items:
      split = next((split_of[n] for n in item[1] if n in split_of), None)
      if split is None:
        self.count("unlisted")
      else:
        out[split].append(item)
    return out

  def _drop_unpaired_s2(self, pairs):
    """Returns `pairs` without the S2 patches that no S1 patch names as its
    corresponding_s2_patch (s1_name None), each reported as invalid (stop,
    or skip and list) and counted as s2_without_s1."""
    unpaired = [s2 for s2, s1 in pairs if s1 is None]
    self.count("s2_without_s1", len(unpaired))
    for name in unpaired:
      self.invalid(os.path.join(self._item_s2_root, name),
                   "no S1 patch names it as its corresponding_s2_patch (its "
                   f"S1 partner is missing from {self._item_s1_root})")
    return [p for p in pairs if p[1] is not None]

  def _example(self, item):
    key, (s2_name, s1_name) = item
    config = self.builder_config.name
    s2_root, s1_root = self._item_s2_root, self._item_s1_root
    s2_folder = s2_root and s2_name and os.path.join(s2_root, s2_name)
    s1_folder = s1_name and os.path.join(s1_root, s1_name)
    meta_folder = s1_folder if config == "s1" else s2_folder
    example = {"patch_name": s1_name if config == "s1" else s2_name}
    try:
      if config == "mm":
        if not (s2_name and os.path.isdir(s2_folder)):
          raise patches.PatchError(s1_folder, f"its S2 partner {s2_name!r} is "
                                   f"missing from {s2_root}")
        example["s1_patch_name"] = s1_name
      meta = patches.read_metadata(meta_folder)
      if config != "s1":
        example.update(patches.to_stored(
            patches.read_bands(s2_folder, patches.S2_BANDS), "s2"))
      if config != "s2":
        example.update(patches.to_stored(
            patches.read_bands(s1_folder, patches.S1_BANDS), "s1"))
      try:
        example["labels_43"] = labels_lib.labels_43(meta["labels"])
      except ValueError as e:
        raise patches.PatchError(patches.metadata_path(meta_folder),
                                 str(e)) from None
    except patches.PatchError as e:
      self.invalid(e.path, e.problem)
      return None
    example["labels_19"] = labels_lib.to_19(example["labels_43"])
    if not example["labels_19"].any():
      self.count("no_label_19")
    example.update(acquisition_date=meta["acquisition_date"],
                   coordinates=meta["coordinates"], epsg=meta["epsg"])
    return key, example
