"""reBEN (BigEarthNet v2) sources: metadata.parquet, the v2 folder layout and
the LMDB + safetensors archive written by the reBEN tooling.

metadata.parquet columns (one row per S2 patch): patch_id (v2 S2 name),
labels (list of BigEarthNet-19 names), split ("train" / "validation" /
"test"), country, s1_name, s2v1_name, contains_seasonal_snow,
contains_cloud_or_shadow. The patches with snow, cloud or shadow are left
out of it and listed in metadata_for_patches_with_snow_cloud_or_shadow.parquet.

LMDB format: one entry per patch, key = the patch name (S2 patch_id or S1
s1_name) as UTF-8 bytes, value = a safetensors blob mapping band names
("B01" ... "B12" with "B8A", uint16 at native size; "VV", "VH", float32
120 x 120) to arrays.

Folder format: BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<band>.tif and
BigEarthNet-S1/<scene>/<s1_name>/<s1_name>_<band>.tif; the patch folders are
found by walking the two levels, so a flat <root>/<patch> layout works too.
"""
import os

import pyarrow.parquet as pq
import safetensors.numpy

from rs_jax.data.bigearthnet import patches

METADATA = "metadata.parquet"
SNOW_CLOUD_METADATA = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
_COLUMNS = ("patch_id", "labels", "split", "country", "s1_name", "s2v1_name",
            "contains_seasonal_snow", "contains_cloud_or_shadow")


def read_metadata(path):
  """metadata.parquet -> list of row dicts (columns above), file order."""
  try:
    table = pq.read_table(path)
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: metadata parquet is missing") from None
  missing = [c for c in _COLUMNS if c not in table.column_names]
  if missing:
    raise ValueError(f"{path}: metadata parquet lacks columns {missing}")
  return table.select(list(_COLUMNS)).to_pylist()


_OPEN = {}  # path -> lmdb.Environment: LMDB allows one per path and process


class LmdbPatches:
  """Read-only reBEN LMDB: `read(key, bands)` -> {band: native array}. The
  environment opens on the first read, is shared by every reader of that
  path in the process (Beam runs several in one) and `close()` closes it;
  a pickled copy opens its own in its process."""

  def __init__(self, path):
    if not os.path.exists(os.path.join(path, "data.mdb")):
      raise FileNotFoundError(f"{path}: no LMDB (data.mdb) there")
    self.path = os.path.abspath(path)

  def _env(self):
    if self.path not in _OPEN:
      import lmdb  # only this format needs it
      _OPEN[self.path] = lmdb.open(self.path, readonly=True, lock=False,
                                   readahead=False)
    return _OPEN[self.path]

  def read(self, key, bands):
    """Patch `key`'s `bands`, checked (patches.check_bands)."""
    where = f"{self.path}[{key!r}]"
    with self._env().begin() as txn:
      blob = txn.get(key.encode())
    if blob is None:
      raise patches.PatchError(where, "no such entry")
    try:
      arrays = safetensors.numpy.load(blob)
    except Exception as e:  # safetensors raises several types
      raise patches.PatchError(where, "unreadable safetensors blob "
                               f"({type(e).__name__}: {e})") from None
    return patches.check_bands(arrays, bands, where)

  def close(self):
    env = _OPEN.pop(self.path, None)
    if env is not None:
      env.close()


class FolderPatches:
  """v2 folder layout under `root`: `read(key, bands)` -> {band: native
  array} from <root>/<group>/<key>/<key>_<band>.tif (or <root>/<key>/...)."""

  def __init__(self, root):
    self.path = root
    self._folders = {}
    for top in patches.subfolders(root):
      group = os.path.join(root, top)
      children = patches.subfolders(group)
      if not children:  # flat layout: the patch folder itself
        self._folders[top] = group
      for name in children:
        self._folders[name] = os.path.join(group, name)

  def read(self, key, bands):
    if key not in self._folders:
      raise patches.PatchError(self.path, f"no patch folder {key!r}")
    return patches.read_bands(self._folders[key], bands)

  def close(self):
    pass


def find_lmdb(manual_dir):
  """The folder holding data.mdb: `manual_dir` itself or one child; None if
  there is none."""
  for root in [manual_dir] + [os.path.join(manual_dir, n)
                              for n in patches.subfolders(manual_dir)]:
    if os.path.exists(os.path.join(root, "data.mdb")):
      return root
  return None
