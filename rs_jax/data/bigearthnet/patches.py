"""BigEarthNet patch I/O without GDAL: GeoTIFF bands via tifffile, the
labels_metadata.json files, the v1 folder layout and S1 <-> S2 pairing, and
the stored layout of a patch.

Storage. S2 bands are stored at their native size as uint16, one array per
resolution (S2_GROUPS): s2_10m uint16[120, 120, 4] (B02, B03, B04, B08),
s2_20m uint16[60, 60, 6] (B05, B06, B07, B8A, B11, B12), s2_60m uint16[20,
20, 2] (B01, B09): 160,000 bytes, the GeoTIFF payload. S1 is stored as
delivered, s1 float32[120, 120, 2] (VV, VH in dB). Readers get s2
float32[120, 120, 12] in S2_BANDS order (`to_grid`), resampled on reading
(resample.py; nearest by default).
"""
import json
import os
import re

import numpy as np
import tifffile

from rs_jax.data.bigearthnet import resample

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
            "B09", "B11", "B12")
S1_BANDS = ("VV", "VH")
SIZE = 120  # pixels of a patch on the 10 m grid
# Native side length of each band in a patch (10 m: 120, 20 m: 60, 60 m: 20).
NATIVE_SIZE = {"B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60,
               "B06": 60, "B07": 60, "B08": 120, "B8A": 60, "B09": 20,
               "B11": 60, "B12": 60, "VV": 120, "VH": 120}


class PatchError(ValueError):
  """A patch that cannot be used: `path` (file or folder) and `problem`."""

  def __init__(self, path, problem):
    super().__init__(f"{path}: {problem}")
    self.path, self.problem = str(path), problem


def read_band(path):
  """One GeoTIFF band -> 2-D array (its stored dtype); PatchError if the file
  is missing, unreadable or not a single-band image."""
  try:
    band = tifffile.imread(path)
  except FileNotFoundError:
    raise PatchError(path, "band file is missing") from None
  except Exception as e:  # tifffile raises many types on corrupt input
    raise PatchError(path, f"unreadable GeoTIFF ({type(e).__name__}: {e})"
                     ) from None
  if band.ndim != 2:
    raise PatchError(path, "expected a single-band 2-D image, got shape "
                     f"{band.shape}")
  return band


S2_GROUPS = {"s2_10m": ("B02", "B03", "B04", "B08"),
             "s2_20m": ("B05", "B06", "B07", "B8A", "B11", "B12"),
             "s2_60m": ("B01", "B09")}


def upsample(band, size=SIZE):
  """[s, s] -> float32[size, size] by pixel repetition (size % s == 0):
  out[i, j] = band[i // f, j // f], f = size // s."""
  return resample.resize(np.asarray(band)[..., None], size)[..., 0]


def check_bands(bands, names, where):
  """{band name: 2-D array} -> the same for `names`, each checked for its
  native shape and type: S2 bands uint16 (uint8 is widened), S1 bands finite
  float32. `where` names the source (file or key) in errors."""
  out = {}
  for name in names:
    if name not in bands:
      raise PatchError(where, f"band {name} is missing")
    band = np.asarray(bands[name])
    n = NATIVE_SIZE[name]
    if band.shape != (n, n):
      raise PatchError(where, f"band {name} has shape {band.shape}, "
                       f"expected ({n}, {n})")
    if name in S1_BANDS:
      band = band.astype(np.float32)
      if not np.isfinite(band).all():
        raise PatchError(where, f"band {name} has "
                         f"{np.size(band) - np.isfinite(band).sum()} NaN/inf "
                         "pixels")
    elif band.dtype in (np.uint8, np.uint16):
      band = band.astype(np.uint16)
    else:
      raise PatchError(where, f"band {name} has dtype {band.dtype}, expected "
                       "uint16 reflectances")
    out[name] = band
  return out


def read_bands(folder, names):
  """Patch folder <.../NAME> with NAME_<band>.tif files -> {band: native
  array} (see check_bands)."""
  patch = os.path.basename(os.path.normpath(folder))
  bands = {name: read_band(os.path.join(folder, f"{patch}_{name}.tif"))
           for name in names}
  return check_bands(bands, names, folder)


def to_stored(bands, modality):
  """Checked bands -> the stored arrays of "s2" (S2_GROUPS) or "s1"."""
  if modality == "s1":
    return {"s1": np.stack([bands[b] for b in S1_BANDS], -1)}
  return {group: np.stack([bands[b] for b in names], -1)
          for group, names in S2_GROUPS.items()}


def to_grid(stored, modality, method="nearest"):
  """Stored arrays (to_stored) -> float32[120, 120, C] of `modality` in
  S2_BANDS / S1_BANDS order, resampled with `method`."""
  if modality == "s1":
    return np.asarray(stored["s1"], np.float32)
  out = np.empty((SIZE, SIZE, len(S2_BANDS)), np.float32)
  for group, names in S2_GROUPS.items():
    grid = resample.resize(stored[group], SIZE, method)
    for c, name in enumerate(names):
      out[..., S2_BANDS.index(name)] = grid[..., c]
  return out


def stack_bands(bands, names, where, method="nearest"):
  """{band: native array} -> float32[120, 120, len(names)] on the 10 m grid
  (names: S2_BANDS or S1_BANDS; checked, errors name `where`)."""
  if tuple(names) not in (S1_BANDS, S2_BANDS):
    raise ValueError(f"{where}: bands must be S2_BANDS or S1_BANDS, got "
                     f"{names}")
  modality = "s1" if tuple(names) == S1_BANDS else "s2"
  return to_grid(to_stored(check_bands(bands, names, where), modality),
                 modality, method)


def read_patch(folder, names, method="nearest"):
  """Patch folder -> float32[120, 120, len(names)] on the 10 m grid (names:
  S2_BANDS or S1_BANDS)."""
  if tuple(names) not in (S1_BANDS, S2_BANDS):
    raise ValueError(f"read_patch: names must be S2_BANDS or S1_BANDS, got "
                     f"{names}")
  return stack_bands(read_bands(folder, names), names, folder, method)


def check_labels(labels, path):
  """A labels JSON's "labels" value -> the list of class names; PatchError
  (naming `path`) unless it is a non-empty list of strings."""
  if isinstance(labels, str):
    raise PatchError(path, f'"labels" is the string {labels!r}, expected a '
                     'list of class names such as ["Mixed forest"]')
  if not isinstance(labels, list):
    raise PatchError(path, '"labels" is missing or not a list of class names'
                     f" (got {labels!r})")
  if not labels:
    raise PatchError(path, '"labels" is an empty list: every patch needs at '
                     "least one class name")
  for name in labels:
    if not isinstance(name, str):
      raise PatchError(path, f'"labels" holds {name!r}, expected class names '
                       "(strings)")
  return labels


def metadata_path(folder):
  """<folder>/<NAME>_labels_metadata.json for patch folder <.../NAME>."""
  patch = os.path.basename(os.path.normpath(folder))
  return os.path.join(folder, f"{patch}_labels_metadata.json")


def read_metadata(folder):
  """A patch's NAME_labels_metadata.json -> dict with
    labels: list of CLC-43 names,
    coordinates: float64[4] (ulx, uly, lrx, lry) in the patch's UTM zone,
    epsg: int (0 when the projection names none),
    acquisition_date: str ("YYYY-MM-DD hh:mm:ss"; S1 files' ISO
      acquisition_time is rewritten to that form),
    corresponding_s2_patch: str ("" in S2 files).
  The S1 files of v1 spell the lower-right y "lly"; both spellings are read.
  """
  path = metadata_path(folder)
  try:
    with open(path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise PatchError(path, "labels JSON is missing") from None
  except (OSError, ValueError) as e:
    raise PatchError(path, f"unreadable labels JSON ({e})") from None
  labels = check_labels(meta.get("labels") if isinstance(meta, dict)
                        else None, path)
  try:
    c = meta["coordinates"]
    coordinates = np.array(
        [c["ulx"], c["uly"], c["lrx"], c.get("lry", c.get("lly"))],
        np.float64)
  except (KeyError, TypeError, ValueError) as e:
    raise PatchError(path, f"malformed labels JSON ({e!r})") from None
  epsg = re.findall(r'AUTHORITY\["EPSG","(\d+)"\]', meta.get("projection", ""))
  date = meta.get("acquisition_date") or meta.get("acquisition_time", "")
  return {
      "labels": labels,
      "coordinates": coordinates,
      "epsg": int(epsg[-1]) if epsg else 0,
      "acquisition_date": date.replace("T", " "),
      "corresponding_s2_patch": meta.get("corresponding_s2_patch", ""),
  }


def subfolders(root):
  """Sorted names of the folders directly under `root` (in a root: the
  patch folders)."""
  with os.scandir(root) as it:
    return sorted(e.name for e in it if e.is_dir())


SAMPLE = 64  # patch folders looked at when telling which root is which


def holds_band(root, band, sample=SAMPLE):
  """True when one of the first `sample` folders under `root` (in sorted
  order) is a patch folder NAME holding NAME_<band>.tif, so a few damaged
  patches do not hide a root."""
  try:
    names = subfolders(root)
  except OSError:
    return False
  return any(os.path.exists(os.path.join(root, n, f"{n}_{band}.tif"))
             for n in names[:sample])


def find_root(manual_dir, band):
  """The folder under `manual_dir` (itself or one child) whose patch folders
  hold NAME_<band>.tif: the S2 root for band "B02", the S1 root for "VV".
  None when there is none; ValueError when there are several."""
  candidates = [manual_dir] + [os.path.join(manual_dir, n)
                               for n in subfolders(manual_dir)]
  found = [root for root in candidates if holds_band(root, band)]
  if len(found) > 1:
    raise ValueError(f"{manual_dir}: several folders hold patches with "
                     f"{band} bands: {found}; name one in the options")
  return found[0] if found else None


def read_patch_list(path):
  """Patch names in a list file (official split CSV, exclusion list): the
  first comma-separated field of every line that starts with S1 or S2
  (headers and blank lines are skipped)."""
  names = []
  with open(path) as f:
    for line in f:
      name = line.split(",")[0].strip()
      if name and (name.startswith("S1") or name.startswith("S2")):
        names.append(name)
  return names
