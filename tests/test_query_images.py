"""rs_jax.data.query_images: every upload format against the arrays it was
made from, and the errors a bad file gets."""
import io
import zipfile

import numpy as np
import PIL.Image
import pytest
import tifffile

from rs_jax.data import query_images
from rs_jax.data.bigearthnet import patches

S2 = (120, 120, 12)


def npy_bytes(array):
  buf = io.BytesIO()
  np.save(buf, array)
  return buf.getvalue()


def tif_bytes(array):
  buf = io.BytesIO()
  tifffile.imwrite(buf, array)
  return buf.getvalue()


def patch_zip(name, bands, folder=True, skip=()):
  """A zip of a BigEarthNet patch folder NAME/NAME_<band>.tif."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    for band, array in bands.items():
      if band not in skip:
        prefix = f"{name}/" if folder else ""
        z.writestr(f"{prefix}{name}_{band}.tif", tif_bytes(array))
  return buf.getvalue()


def s2_bands(rng):
  return {b: rng.integers(0, 3000, (n, n)).astype(np.uint16)
          for b, n in patches.NATIVE_SIZE.items() if b in patches.S2_BANDS}


def test_formats_decode_to_the_same_arrays(tmp_path):
  rng = np.random.default_rng(0)
  bands = s2_bands(rng)
  want = patches.stack_bands(bands, patches.S2_BANDS, "want")
  decode = query_images.decode_image
  name = "S2A_MSIL2A_20170613T101031_0_45"
  for folder in (True, False):
    np.testing.assert_array_equal(
        decode("p.zip", patch_zip(name, bands, folder), "s2", S2), want)
  np.testing.assert_array_equal(decode("q.npy", npy_bytes(want), "s2", S2),
                                want)
  np.testing.assert_array_equal(decode("q.tif", tif_bytes(want), "s2", S2),
                                want)
  np.testing.assert_array_equal(  # band-first stacks are turned around
      decode("q.TIFF", tif_bytes(np.moveaxis(want, -1, 0)), "s2", S2), want)
  rgb = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
  buf = io.BytesIO()
  PIL.Image.fromarray(rgb).save(buf, "PNG")
  np.testing.assert_array_equal(
      decode("a.png", buf.getvalue(), "rgb", (16, 16, 3)), rgb)
  (tmp_path / "a.png").write_bytes(buf.getvalue())
  np.testing.assert_array_equal(
      query_images.read_image(tmp_path / "a.png", "rgb", (16, 16, 3)), rgb)


def test_bad_uploads_name_the_file():
  rng = np.random.default_rng(1)
  bands = s2_bands(rng)
  nan = np.zeros(S2, np.float32)
  nan[1, 2, 3] = np.nan
  name = "S2B_patch"
  cases = [
      ("x.npy", b"junk", "s2", "x.npy: not a .npy array"),
      ("x.npy", npy_bytes(np.array(["a"])), "s2", "expected a numeric"),
      ("x.npy", npy_bytes(nan), "s2", "x.npy: has NaN/inf values"),
      ("x.npy", npy_bytes(np.zeros((120, 120, 2))), "s2",
       "x.npy: has 2 bands, the s2 encoder expects 12"),
      ("x.tif", b"II*\0junk", "s2", "x.tif: unreadable GeoTIFF"),
      ("x.zip", b"junk", "s2", "x.zip: not a zip file"),
      ("x.zip", patch_zip(name, bands), "s1",
       r"x.zip: expected one BigEarthNet s1 patch \(one \*_VV.tif\), found 0"),
      ("x.zip", patch_zip(name, bands, skip=("B8A",)), "s2",
       "x.zip: S2B_patch_B8A.tif: band file is missing"),
      ("x.zip", patch_zip(name, bands), "rgb",
       "x.zip: a BigEarthNet patch needs modality s1 or s2"),
      ("x.png", b"\x89PNG junk", "rgb", "x.png: not a readable image"),
  ]
  for file_name, data, modality, message in cases:
    with pytest.raises(ValueError, match=message):
      query_images.decode_image(file_name, data, modality, S2)
  with pytest.raises(ValueError, match="missing.npy: cannot read"):
    query_images.read_image("missing.npy", "s2", S2)
