"""Query images: one file (or uploaded bytes) -> an array [H, W, C] of the
shape an encoder takes, checked for size, band count and NaN.

Formats, by name:
  .npy            an array [H, W, C] of numbers;
  .tif / .tiff    a GeoTIFF band stack [H, W, C] (or [C, H, W]);
  .zip            a BigEarthNet patch folder (NAME_B01.tif ... for "s2",
                  NAME_VV.tif, NAME_VH.tif for "s1"), resampled to 120 x 120
                  as at preparation (`bigearthnet.patches.stack_bands`);
  a folder        the same patch folder, unzipped (`read_image` only);
  anything else   an image PIL reads (PNG, JPEG, ...), as uint8 RGB.
Sizes are never changed: the encoder's H x W x C is required. Every error is
a ValueError that starts with the file's name.
"""
import io
import os
import zipfile

import numpy as np

# Uncompressed bytes a zip upload may expand to (a patch is ~0.5 MB).
MAX_UNZIPPED = 64 << 20


def _patch_bands(modality, name):
  from rs_jax.data.bigearthnet import patches  # pylint: disable=g-import-not-at-top
  bands = {"s2": patches.S2_BANDS, "s1": patches.S1_BANDS}.get(modality)
  if bands is None:
    raise ValueError(f"{name}: a BigEarthNet patch needs modality s1 or s2, "
                     f"not {modality!r}")
  return bands


def _read_zip(name, data, modality):
  """Bands of the one BigEarthNet patch in a zip -> float32[120, 120, C]."""
  from rs_jax.data.bigearthnet import patches  # pylint: disable=g-import-not-at-top
  import tifffile  # pylint: disable=g-import-not-at-top
  names = _patch_bands(modality, name)
  try:
    archive = zipfile.ZipFile(io.BytesIO(data))
  except zipfile.BadZipFile as e:
    raise ValueError(f"{name}: not a zip file ({e})") from None
  with archive:
    members = {os.path.basename(i.filename): i for i in archive.infolist()
               if not i.is_dir()}
    if sum(i.file_size for i in members.values()) > MAX_UNZIPPED:
      raise ValueError(f"{name}: unzips to more than {MAX_UNZIPPED >> 20} MB")
    suffix = f"_{names[0]}.tif"
    first = sorted(m for m in members if m.endswith(suffix))
    if len(first) != 1:
      raise ValueError(f"{name}: expected one BigEarthNet {modality} patch "
                       f"(one *{suffix}), found {len(first)}")
    patch = first[0][:-len(suffix)]
    bands = {}
    for band in names:
      member = f"{patch}_{band}.tif"
      if member not in members:
        raise ValueError(f"{name}: {member}: band file is missing")
      try:
        bands[band] = tifffile.imread(io.BytesIO(archive.read(
            members[member])))
      except Exception as e:  # tifffile raises many types on corrupt input
        raise ValueError(f"{name}: {member}: unreadable GeoTIFF "
                         f"({type(e).__name__}: {e})") from None
  return patches.stack_bands(bands, names, f"{name}: {patch}")


def _read_tiff(name, data, channels):
  import tifffile  # pylint: disable=g-import-not-at-top
  try:
    image = tifffile.imread(io.BytesIO(data))
  except Exception as e:  # tifffile raises many types on corrupt input
    raise ValueError(f"{name}: unreadable GeoTIFF ({type(e).__name__}: {e})"
                     ) from None
  if not image.size:
    raise ValueError(f"{name}: unreadable GeoTIFF (no image data)")
  if image.ndim == 2:
    image = image[..., None]
  if (image.ndim == 3 and image.shape[-1] != channels and
      image.shape[0] == channels):  # band-first stack
    image = np.moveaxis(image, 0, -1)
  return image


def _read_pil(name, data):
  import PIL.Image  # pylint: disable=g-import-not-at-top
  try:
    with PIL.Image.open(io.BytesIO(data)) as im:
      return np.asarray(im.convert("RGB"))
  except (OSError, ValueError, PIL.Image.DecompressionBombError) as e:
    raise ValueError(f"{name}: not a readable image ({e})") from None


def decode_image(name, data, modality, shape):
  """Bytes of a query file called `name` -> array `shape` [H, W, C].

  The format follows the name's extension (module docstring); ValueError
  naming `name` when it is unreadable or its size, band count or values
  (NaN/inf) do not fit the `modality` encoder's `shape`.
  """
  name = os.fspath(name)
  lower = name.lower()
  if lower.endswith(".npy"):
    try:
      image = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise ValueError(f"{name}: not a .npy array ({e})") from None
    if not np.issubdtype(image.dtype, np.number):
      raise ValueError(f"{name}: expected a numeric array, got {image.dtype}")
  elif lower.endswith((".tif", ".tiff")):
    image = _read_tiff(name, data, shape[-1])
  elif lower.endswith(".zip"):
    image = _read_zip(name, data, modality)
  else:
    image = _read_pil(name, data)
  return check_image(image, name, modality, shape)


def read_image(path, modality, shape):
  """One query file or BigEarthNet patch folder -> array `shape` [H, W, C]
  (`decode_image`; a folder holds the patch's band files)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    from rs_jax.data.bigearthnet import patches  # pylint: disable=g-import-not-at-top
    image = patches.read_patch(path, _patch_bands(modality, path))
    return check_image(image, path, modality, shape)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f"{path}: cannot read ({e.strerror})") from None
  return decode_image(path, data, modality, shape)


def check_image(image, name, modality, shape):
  """Returns `image` if it is a finite [H, W, C] array of `shape`, else a
  ValueError naming `name` and what the `modality` encoder expects."""
  if image.ndim != 3:
    raise ValueError(f"{name}: expected an image [H, W, C], got shape "
                     f"{image.shape}")
  if image.shape[-1] != shape[-1]:
    raise ValueError(f"{name}: has {image.shape[-1]} bands, the {modality} "
                     f"encoder expects {shape[-1]}")
  if image.shape[:2] != tuple(shape[:2]):
    raise ValueError(f"{name}: is {image.shape[0]}x{image.shape[1]} pixels, "
                     f"the {modality} encoder expects {shape[0]}x{shape[1]} "
                     "(resize or crop it first)")
  if np.issubdtype(image.dtype, np.inexact) and not np.isfinite(image).all():
    raise ValueError(f"{name}: has NaN/inf values")
  return image
