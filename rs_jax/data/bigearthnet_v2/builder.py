"""rs_bigearthnet_v2: reBEN (BigEarthNet v2.0, Clasen et al. 2024).

manual_dir holds metadata.parquet (and, to include the patches with snow,
cloud or shadow, metadata_for_patches_with_snow_cloud_or_shadow.parquet)
plus the patches in one of two formats (option format, default "auto": the
LMDB when manual_dir or one child holds data.mdb, else the folders):
  "lmdb"    the LMDB + safetensors archive of the reBEN tooling (lmdb_dir);
  "folder"  BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<band>.tif and
            BigEarthNet-S1/<scene>/<s1_name>/... (s2_dir, s1_dir).
See reben.py for both formats.

Configs as in rs_bigearthnet (s2, s1, mm; same storage, band order, read
option resampling and band statistics).
Features: s2 and/or s1, labels_19 uint8[19] (reBEN labels only the 19
classes; there is no 43-class vector), patch_name (v2 S2 patch_id; the S1
name for s1), s1_patch_name (mm), s2v1_name (the v1 S2 name), country,
contains_seasonal_snow, contains_cloud_or_shadow. Splits: the metadata's
official train / validation / test. Option countries (a list or "A,B"; ""
= all) keeps the patches of those countries (the thesis: "Serbia"); the
others are counted as other_country.
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from rs_jax.data import base
from rs_jax.data.bigearthnet import builder as v1
from rs_jax.data.bigearthnet import labels as labels_lib
from rs_jax.data.bigearthnet import patches
from rs_jax.data.bigearthnet_v2 import reben

_SPLITS = ("train", "validation", "test")


class RsBigearthnetV2(base.RsBuilder):
  """reBEN: refined BigEarthNet labels, official splits, S1 + S2."""

  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=c.name, description=c.description)
      for c in v1.RsBigearthnet.BUILDER_CONFIGS]
  DEFAULT_OPTIONS = {
      "format": "auto",  # "auto", "lmdb" or "folder"
      "lmdb_dir": None, "s2_dir": "BigEarthNet-S2", "s1_dir": "BigEarthNet-S1",
      "metadata": reben.METADATA,
      "include_snow_cloud": False,  # also the patches of SNOW_CLOUD_METADATA
      "countries": [],  # keep only these countries' patches ([]: all)
  }
  READ_OPTIONS = v1.RsBigearthnet.READ_OPTIONS
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"2.0.0": "S2 bands stored at native size as uint16; "
                            "label store; countries."}

  @classmethod
  def normalize_options(cls, options):
    return {**options,
            "countries": v1.list_option(options["countries"], "countries")}

  def decode(self, example, resampling="nearest"):
    return v1.decode_images(example, resampling)

  def _moments(self, example):
    return v1.image_moments(example)

  def _features(self):
    features = v1.image_features(self.builder_config.name)
    features.update(
        labels_19=tfds.features.Tensor(shape=(19,), dtype=np.uint8),
        patch_name=tfds.features.Text(),
        s2v1_name=tfds.features.Text(),
        country=tfds.features.Text(),
        contains_seasonal_snow=tfds.features.Scalar(dtype=np.bool_),
        contains_cloud_or_shadow=tfds.features.Scalar(dtype=np.bool_))
    if self.builder_config.name == "mm":
      features["s1_patch_name"] = tfds.features.Text()
    return features

  def _open_sources(self, manual_dir):
    """Sets self._item_s2 / _item_s1: objects with read(key, bands)."""
    fmt = self.options["format"]
    lmdb_dir = self.options["lmdb_dir"]
    if lmdb_dir:
      lmdb_dir = os.path.join(manual_dir, lmdb_dir)
    elif fmt in ("auto", "lmdb"):
      lmdb_dir = reben.find_lmdb(manual_dir)
    if fmt == "auto":
      fmt = "lmdb" if lmdb_dir else "folder"
    if fmt == "lmdb":
      if not lmdb_dir:
        raise FileNotFoundError(f"{manual_dir}: no LMDB (data.mdb) found; "
                                "set the option lmdb_dir")
      self._item_s2 = self._item_s1 = reben.LmdbPatches(lmdb_dir)
    elif fmt == "folder":
      config = self.builder_config.name
      self._item_s2 = self._item_s1 = None
      for modality, option in (("s2", "s2_dir"), ("s1", "s1_dir")):
        if config in (modality, "mm"):
          root = os.path.join(manual_dir, self.options[option])
          if not os.path.isdir(root):
            raise FileNotFoundError(f"{root}: {option} is not a directory")
          setattr(self, f"_item_{modality}", reben.FolderPatches(root))
    else:
      raise ValueError(f"option format must be 'auto', 'lmdb' or 'folder', "
                       f"got {fmt!r}")

  def _splits(self, manual_dir):
    manual_dir = os.fspath(manual_dir)
    self._item_metadata_path = os.path.join(manual_dir,
                                            self.options["metadata"])
    rows = reben.read_metadata(self._item_metadata_path)
    if self.options["include_snow_cloud"]:
      rows += reben.read_metadata(
          os.path.join(manual_dir, reben.SNOW_CLOUD_METADATA))
    self._open_sources(manual_dir)
    countries = self.options["countries"]
    if countries:
      kept = [r for r in rows if r["country"] in countries]
      self.count("other_country", len(rows) - len(kept))
      rows = kept
    out = {split: [] for split in _SPLITS}
    for key, row in enumerate(rows):
      if row["split"] not in out:
        raise ValueError(f"{self._item_metadata_path}: patch {row['patch_id']} "
                         f"has split {row['split']!r}, not one of {_SPLITS}")
      out[row["split"]].append((key, row))
    return out

  def _example(self, item):
    key, row = item
    config = self.builder_config.name
    example = {
        "patch_name": row["s1_name"] if config == "s1" else row["patch_id"],
        "s2v1_name": row["s2v1_name"] or "",
        "country": row["country"] or "",
        "contains_seasonal_snow": bool(row["contains_seasonal_snow"]),
        "contains_cloud_or_shadow": bool(row["contains_cloud_or_shadow"]),
    }
    where = f"{self._item_metadata_path}[{row['patch_id']}]"
    try:
      try:
        example["labels_19"] = labels_lib.labels_19(row["labels"])
      except ValueError as e:
        raise patches.PatchError(where, str(e)) from None
      if config != "s2" and not row["s1_name"]:
        raise patches.PatchError(where, "no S1 partner (s1_name is empty)")
      if config != "s1":
        example.update(patches.to_stored(
            self._item_s2.read(row["patch_id"], patches.S2_BANDS), "s2"))
      if config != "s2":
        example.update(patches.to_stored(
            self._item_s1.read(row["s1_name"], patches.S1_BANDS), "s1"))
    except patches.PatchError as e:
      self.invalid(e.path, e.problem)
      return None
    if config == "mm":
      example["s1_patch_name"] = row["s1_name"]
    return key, example

  def _download_and_prepare(self, dl_manager, download_config):
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:  # one environment per path and process: free it for the next
      for source in (getattr(self, "_item_s2", None),
                     getattr(self, "_item_s1", None)):
        if source is not None:
          source.close()
