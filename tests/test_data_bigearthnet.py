"""Tests for the BigEarthNet v1 builder (rs_bigearthnet: s2, s1, mm): values
read back equal the GeoTIFFs written (band order included; with nearest
resampling bit for bit the tensors preparation stored before native-size
storage), native uint16 storage no bigger than the GeoTIFF payload,
bilinear / bicubic resampling against PIL, the label store, labels equal the
JSON files, 43 -> 19 mapping, splits and patch lists, bad input, the real
sample."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import tifffile

import rs_jax.data as data
from rs_jax.data.bigearthnet import fake
from rs_jax.data.bigearthnet import labels as labels_lib
from rs_jax.data import pipeline
from rs_jax.data import sources
from rs_jax.data.bigearthnet import patches
from rs_jax.data.bigearthnet import resample
from tests import shared_data

SAMPLE = "bigearthnet-mm-sample"  # in tests/shared_data.ROOT
S2_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
            "B09", "B11", "B12")


def _to_120(band):
  """Reference resampling: Kronecker product with a block of ones (what
  preparation stored as float32 before S2 bands were kept native)."""
  f = 120 // band.shape[0]
  return np.kron(band.astype(np.float32), np.ones((f, f), np.float32))


def _assert_bits(got, want):
  assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
  assert got.tobytes() == want.tobytes()


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def _by_name(source, key="patch_name"):
  return {_text(source[i][key]): source[i] for i in range(len(source))}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
  """6 fake v1 patch pairs, prepared as s2, s1 and mm."""
  root = tmp_path_factory.mktemp("ben_raw")
  out = tmp_path_factory.mktemp("ben_prepared")
  written = fake.write_v1(str(root), 6, seed=1)
  for config in ("s2", "s1", "mm"):
    data.prepare(f"bigearthnet/{config}", root, out)
  return root, out, written


# --- nomenclature ------------------------------------------------------------
def test_43_to_19_mapping():
  assert len(labels_lib.LABELS_43) == 43 and len(labels_lib.LABELS_19) == 19
  kept = labels_lib.MAP_43_TO_19 >= 0
  assert kept.sum() == 32  # 11 CLC classes have no BigEarthNet-19 class
  assert set(labels_lib.MAP_43_TO_19[kept]) == set(range(19))
  name = lambda i: labels_lib.LABELS_19[labels_lib.MAP_43_TO_19[
      labels_lib.LABELS_43.index(i)]]
  assert name("Discontinuous urban fabric") == "Urban fabric"
  assert name("Rice fields") == "Arable land"
  assert name("Olive groves") == "Permanent crops"
  assert name("Peatbogs") == "Inland wetlands"
  assert name("Salines") == "Coastal wetlands"
  assert name("Sea and ocean") == "Marine waters"
  assert name("Transitional woodland/shrub") == "Transitional woodland, shrub"
  for dropped in ("Airports", "Bare rock", "Burnt areas", "Intertidal flats",
                  "Green urban areas", "Road and rail networks and associated "
                  "land"):
    assert labels_lib.MAP_43_TO_19[labels_lib.LABELS_43.index(dropped)] == -1


def test_to_19_matches_loop():
  y43 = np.random.default_rng(0).integers(0, 2, (50, 43)).astype(np.uint8)
  want = np.zeros((50, 19), np.uint8)
  for n in range(50):
    for i in np.flatnonzero(y43[n]):
      if labels_lib.MAP_43_TO_19[i] >= 0:
        want[n, labels_lib.MAP_43_TO_19[i]] = 1
  np.testing.assert_array_equal(labels_lib.to_19(y43), want)
  np.testing.assert_array_equal(labels_lib.to_19(y43[3]), want[3])
  with pytest.raises(ValueError, match="'Moon craters'"):
    labels_lib.labels_43(["Pastures", "Moon craters"])


def test_upsample_repeats_pixels():
  band = np.arange(400, dtype=np.float32).reshape(20, 20)
  up = patches.upsample(band)
  i, j = np.mgrid[:120, :120]
  np.testing.assert_array_equal(up, band[i // 6, j // 6])
  np.testing.assert_array_equal(up.reshape(20, 6, 20, 6).mean((1, 3)), band)


# --- builders on fake folders -------------------------------------------------
def test_s2_values_labels_metadata(archive):
  _, out, written = archive
  source = data.load("bigearthnet/s2", "all", out)
  assert len(source) == len(written)
  got = _by_name(source)
  for w in written:
    ex = got[w["s2_name"]]
    _assert_bits(ex["s2"], np.stack([_to_120(w["s2_bands"][b])
                                     for b in S2_ORDER], -1))
    want43 = np.isin(labels_lib.LABELS_43, w["labels"]).astype(np.uint8)
    np.testing.assert_array_equal(ex["labels_43"], want43)
    np.testing.assert_array_equal(ex["labels_19"], labels_lib.to_19(want43))
    c = w["coordinates"]
    np.testing.assert_array_equal(ex["coordinates"],
                                  [c["ulx"], c["uly"], c["lrx"], c["lry"]])
    assert int(ex["epsg"]) == 32633
    assert _text(ex["acquisition_date"]) == "2017-06-13 10:10:31"


def test_s1_and_mm_values(archive):
  _, out, written = archive
  s1 = _by_name(data.load("bigearthnet/s1", "all", out))
  mm = _by_name(data.load("bigearthnet/mm", "all", out))
  for w in written:
    vv_vh = np.stack([w["s1_bands"]["VV"], w["s1_bands"]["VH"]], -1)
    np.testing.assert_array_equal(s1[w["s1_name"]]["s1"], vv_vh)
    assert _text(s1[w["s1_name"]]["acquisition_date"]) == "2017-06-13 16:50:43"
    pair = mm[w["s2_name"]]
    assert _text(pair["s1_patch_name"]) == w["s1_name"]
    np.testing.assert_array_equal(pair["s1"], vv_vh)
    np.testing.assert_array_equal(pair["s2"][..., 8],
                                  _to_120(w["s2_bands"]["B8A"]))
    np.testing.assert_array_equal(pair["labels_43"],
                                  s1[w["s1_name"]]["labels_43"])


def test_counts_and_statistics(archive):
  _, out, written = archive
  meta = json.loads((data.builder("bigearthnet/s2", out).data_path
                     / "metadata.json").read_text())
  none = sum(not labels_lib.to_19(labels_lib.labels_43(w["labels"])).any()
             for w in written)
  assert none >= 1 and meta["counts"]["no_label_19"] == none
  stats = data.statistics("bigearthnet/mm", out)
  source = data.load("bigearthnet/mm", "all", out)
  for key in ("s2", "s1"):
    x = np.stack([source[i][key] for i in range(len(source))]).astype(float)
    np.testing.assert_allclose(stats[key]["mean"], x.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats[key]["std"], x.std((0, 1, 2)), rtol=1e-4)


def test_native_storage_no_bigger_than_geotiff_payload(archive):
  _, out, written = archive
  b = data.builder("bigearthnet/s2", out)
  stored = b.as_data_source("train")[0]  # as on disk, before decoding
  for group, names in patches.S2_GROUPS.items():
    n = patches.NATIVE_SIZE[names[0]]
    assert stored[group].dtype == np.uint16
    assert stored[group].shape == (n, n, len(names))
  assert "s2" not in stored
  payload = sum(a.nbytes for a in written[0]["s2_bands"].values())
  assert payload == 160_000
  on_disk = sum(os.path.getsize(f) for f in b.data_path.glob("*.array_record*"))
  # zstd-compressed records; the file is padded to a 64 KiB Riegeli block.
  assert on_disk <= payload * len(written) + 65536


def test_resample_matches_pil():
  rng = np.random.default_rng(0)
  for size in (20, 60):
    band = rng.uniform(0, 10000, (size, size)).astype(np.float32)
    for method, pil in (("bilinear", PIL.Image.BILINEAR),
                        ("bicubic", PIL.Image.BICUBIC)):
      want = np.asarray(PIL.Image.fromarray(band, mode="F").resize(
          (120, 120), pil))
      got = resample.resize(band[..., None], 120, method)[..., 0]
      np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
  with pytest.raises(ValueError, match="'lanczos'"):
    resample.resize(band[..., None], 120, "lanczos")


def test_read_option_resampling(archive):
  _, out, written = archive
  got = _by_name(data.load("bigearthnet/mm", "all", out,
                           resampling="bicubic"))
  w = written[0]
  ex = got[w["s2_name"]]
  for c, band in enumerate(S2_ORDER):
    native = w["s2_bands"][band].astype(np.float32)[..., None]
    np.testing.assert_allclose(
        ex["s2"][..., c], resample.resize(native, 120, "bicubic")[..., 0],
        rtol=1e-6)
  assert not np.array_equal(ex["s2"][..., 0], _to_120(w["s2_bands"]["B01"]))
  np.testing.assert_array_equal(ex["s1"], np.stack(
      [w["s1_bands"]["VV"], w["s1_bands"]["VH"]], -1))
  with pytest.raises(ValueError, match="resampling='area'"):
    data.load("bigearthnet/mm", "all", out, resampling="area")
  with pytest.raises(ValueError, match="'zoom'"):
    data.load("bigearthnet/mm", "all", out, zoom=2)


def test_label_store_never_decodes_images(archive, monkeypatch):
  _, out, _ = archive
  source = data.load("bigearthnet/mm", "all", out)
  keys = ["labels_19", "labels_43", "patch_name", "s1_patch_name", "epsg"]
  want = {k: np.stack([np.asarray(source[i][k]) for i in range(len(source))])
          for k in keys}
  part = data.load("bigearthnet/mm", "train[1:4]", out)
  want_part = [part[i]["patch_name"] for i in range(len(part))]

  def no_decoding(self, index):
    raise AssertionError("an image was decoded")

  monkeypatch.setattr(sources.DecodedSource, "__getitem__", no_decoding)
  got = sources.columns(source, keys)
  for k in keys:
    np.testing.assert_array_equal(got[k], want[k])
  assert list(part.columns(["patch_name"])["patch_name"]) == want_part
  classes = pipeline._Classes(source, "labels_19")  # pylint: disable=protected-access
  np.testing.assert_array_equal(classes.hot, want["labels_19"].astype(bool))
  with pytest.raises(KeyError, match="'s2'"):
    source.columns(["s2"])


def test_split_and_exclusion_lists(tmp_path):
  written = fake.write_v1(str(tmp_path / "raw"), 7, seed=2, modalities=("s1",))
  names = [w["s2_name"] for w in written]  # official lists name S2 patches
  (tmp_path / "train.csv").write_text("\n".join(names[:3]) + "\n")
  (tmp_path / "val.csv").write_text(names[3] + "\n")
  (tmp_path / "test.csv").write_text("\n".join(names[4:6]) + "\n")
  (tmp_path / "snow.csv").write_text(names[0] + "\n")
  b = data.prepare(
      "bigearthnet/s1", tmp_path / "raw", tmp_path / "out",
      split_csvs={"train": str(tmp_path / "train.csv"),
                  "validation": str(tmp_path / "val.csv"),
                  "test": str(tmp_path / "test.csv")},
      exclude_csvs=[str(tmp_path / "snow.csv")])
  split_names = {}
  for split in ("train", "validation", "test"):
    source = data.load("bigearthnet/s1", split, tmp_path / "out")
    split_names[split] = sorted(_by_name(source))
  s1 = [w["s1_name"] for w in written]
  assert split_names == {"train": sorted(s1[1:3]), "validation": [s1[3]],
                         "test": sorted(s1[4:6])}
  meta = json.loads((b.data_path / "metadata.json").read_text())
  assert meta["counts"]["excluded"] == 1 and meta["counts"]["unlisted"] == 1
  # A patch list to keep (e.g. the Serbia patches), given as "a.csv,b.csv";
  # "" means no list (the configs' default).
  (tmp_path / "serbia.csv").write_text("\n".join(names[2:5]) + "\n")
  b = data.prepare("bigearthnet/s1", tmp_path / "raw", tmp_path / "serbia",
                   include_csvs=f"{tmp_path / 'serbia.csv'}", exclude_csvs="",
                   split_csvs="")
  got = sorted(_by_name(data.load("bigearthnet/s1", "all", tmp_path /
                                  "serbia")))
  assert got == sorted(s1[2:5])
  meta = json.loads((b.data_path / "metadata.json").read_text())
  assert meta["counts"]["not_included"] == 4 and "excluded" not in meta["counts"]
  assert meta["options"]["exclude_csvs"] == []


# --- bad input ---------------------------------------------------------------
def _break(raw, written):
  """Damages patches 0-5 in six different ways; returns the expected
  (path fragment, problem fragment) of each."""
  s2 = [w["s2_name"] for w in written]
  s1 = [w["s1_name"] for w in written]
  s2_file = lambda i, suffix: os.path.join(raw, fake.S2_ROOT_V1, s2[i],
                                           f"{s2[i]}_{suffix}")
  with open(s2_file(0, "B03.tif"), "r+b") as f:  # truncated file
    f.truncate(100)
  tifffile.imwrite(s2_file(1, "B05.tif"), np.zeros((61, 60), np.uint16))
  tifffile.imwrite(os.path.join(raw, fake.S1_ROOT_V1, s1[2], f"{s1[2]}_VV.tif"),
                   np.full((120, 120), np.nan, np.float32))
  os.remove(s2_file(3, "labels_metadata.json"))
  shutil.rmtree(os.path.join(raw, fake.S2_ROOT_V1, s2[4]))  # S2 partner gone
  with open(s2_file(5, "labels_metadata.json")) as f:
    meta = json.load(f)
  meta["labels"] = ["Pastures", "Moon craters"]
  with open(s2_file(5, "labels_metadata.json"), "w") as f:
    json.dump(meta, f)
  return [(f"{s2[0]}_B03.tif", "unreadable GeoTIFF"),
          (s2[1], "band B05 has shape (61, 60)"),
          (s1[2], "band VV has 14400 NaN/inf"),
          (f"{s2[3]}_labels_metadata.json", "labels JSON is missing"),
          (s1[4], f"S2 partner '{s2[4]}' is missing"),
          (f"{s2[5]}_labels_metadata.json", "'Moon craters'")]


def test_bad_input_skipped_counted_listed(tmp_path):
  raw = str(tmp_path / "raw")
  written = fake.write_v1(raw, 8, seed=3)
  expected = _break(raw, written)
  b = data.prepare("bigearthnet/mm", raw, tmp_path / "out", skip_invalid=True)
  source = data.load("bigearthnet/mm", "all", tmp_path / "out")
  assert sorted(_text(source[i]["patch_name"]) for i in range(len(source))) == \
      sorted(w["s2_name"] for w in written[6:])
  meta = json.loads((b.data_path / "metadata.json").read_text())
  assert meta["counts"]["skipped"] == 6
  lines = (b.data_path / "skipped.txt").read_text().splitlines()
  assert len(lines) == 6
  for (path_part, problem_part), line in zip(expected, lines):
    path, problem = line.split("\t")
    assert path_part in path and problem_part in problem, (line, path_part)


@pytest.mark.parametrize("case", range(6))
def test_bad_input_raises(tmp_path, case):
  raw = str(tmp_path / "raw")
  written = fake.write_v1(raw, 7, seed=4)
  path_part, problem_part = _break(raw, written)[case]
  # mm reads the S1 patches and their partners: keep only the damaged pair
  # and an intact one (#6; the S2 root must hold one patch to be found).
  for i, w in enumerate(written):
    if i not in (case, 6):
      shutil.rmtree(os.path.join(raw, fake.S1_ROOT_V1, w["s1_name"]))
      shutil.rmtree(os.path.join(raw, fake.S2_ROOT_V1, w["s2_name"]),
                    ignore_errors=True)  # case 4 removed its own
  with pytest.raises(ValueError) as err:
    data.prepare("bigearthnet/mm", raw, tmp_path / "out")
  assert path_part in str(err.value) and problem_part in str(err.value)


def _unpaired_message(raw, s2_name):
  return (f"{os.path.join(raw, fake.S2_ROOT_V1, s2_name)}: no S1 patch names "
          "it as its corresponding_s2_patch (its S1 partner is missing from "
          f"{os.path.join(raw, fake.S1_ROOT_V1)})")


def test_mm_s2_without_s1_stops_naming_the_patch(tmp_path):
  raw = str(tmp_path / "raw")
  written = fake.write_v1(raw, 3, seed=5)
  shutil.rmtree(os.path.join(raw, fake.S1_ROOT_V1, written[1]["s1_name"]))
  with pytest.raises(ValueError) as err:
    data.prepare("bigearthnet/mm", raw, tmp_path / "out")
  assert str(err.value) == _unpaired_message(raw, written[1]["s2_name"])


def test_mm_s2_without_s1_skipped_counted_listed(tmp_path):
  raw = str(tmp_path / "raw")
  written = fake.write_v1(raw, 4, seed=6)
  for w in written[1:3]:
    shutil.rmtree(os.path.join(raw, fake.S1_ROOT_V1, w["s1_name"]))
  b = data.prepare("bigearthnet/mm", raw, tmp_path / "out", skip_invalid=True)
  got = sorted(_by_name(data.load("bigearthnet/mm", "all", tmp_path / "out")))
  assert got == sorted([written[0]["s2_name"], written[3]["s2_name"]])
  meta = json.loads((b.data_path / "metadata.json").read_text())
  assert meta["counts"]["s2_without_s1"] == 2
  assert meta["counts"]["skipped"] == 2
  lines = (b.data_path / "skipped.txt").read_text().splitlines()
  assert sorted(lines) == sorted(
      "\t".join(_unpaired_message(raw, w["s2_name"]).split(": ", 1))
      for w in written[1:3])


@pytest.mark.parametrize("labels, problem", [
    ([], '"labels" is an empty list: every patch needs at least one class '
         "name"),
    ("Forest", '"labels" is the string \'Forest\', expected a list of class '
               'names such as ["Mixed forest"]'),
    ([3], '"labels" holds 3, expected class names (strings)'),
])
def test_labels_json_not_a_list_of_names_is_refused(tmp_path, labels,
                                                    problem):
  raw = str(tmp_path / "raw")
  written = fake.write_v1(raw, 2, seed=7, modalities=("s2",))
  path = os.path.join(raw, fake.S2_ROOT_V1, written[1]["s2_name"],
                      f"{written[1]['s2_name']}_labels_metadata.json")
  with open(path) as f:
    meta = json.load(f)
  meta["labels"] = labels
  with open(path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(ValueError) as err:
    data.prepare("bigearthnet/s2", raw, tmp_path / "out")
  assert str(err.value) == f"{path}: {problem}"


def test_find_root_not_fooled_by_a_bad_first_patch(tmp_path):
  raw = str(tmp_path / "raw")
  written = fake.write_v1(raw, 4, seed=8)
  first_s2 = sorted(w["s2_name"] for w in written)[0]
  first_s1 = sorted(w["s1_name"] for w in written)[0]
  s2_root = os.path.join(raw, fake.S2_ROOT_V1)
  s1_root = os.path.join(raw, fake.S1_ROOT_V1)
  os.remove(os.path.join(s2_root, first_s2, f"{first_s2}_B02.tif"))
  os.remove(os.path.join(s1_root, first_s1, f"{first_s1}_VV.tif"))
  assert patches.find_root(raw, "B02") == s2_root
  assert patches.find_root(raw, "VV") == s1_root
  with pytest.raises(ValueError) as err:
    data.prepare("bigearthnet/s2", raw, tmp_path / "out")
  missing = os.path.join(s2_root, first_s2, f"{first_s2}_B02.tif")
  assert str(err.value) == f"{missing}: band file is missing"
  b = data.prepare("bigearthnet/s2", raw, tmp_path / "out", skip_invalid=True)
  assert len(data.load("bigearthnet/s2", "all", tmp_path / "out")) == 3
  lines = (b.data_path / "skipped.txt").read_text().splitlines()
  assert lines == [f"{missing}\tband file is missing"]
  empty = tmp_path / "empty"
  (empty / "BigEarthNet-v1.0" / "not_a_patch").mkdir(parents=True)
  assert patches.find_root(str(empty), "B02") is None


# --- the real sample ---------------------------------------------------------
def test_real_sample_against_tifffile(tmp_path):
  sample = shared_data.real(SAMPLE)
  s2_root = os.path.join(sample, "BigEarthNet-S2-Example")
  s1_root = os.path.join(sample, "BigEarthNet-S1-Example")
  for config in ("s2", "s1", "mm"):
    data.prepare(f"bigearthnet/{config}", sample, tmp_path)
  s2 = _by_name(data.load("bigearthnet/s2", "all", tmp_path))
  s1 = _by_name(data.load("bigearthnet/s1", "all", tmp_path))
  mm = _by_name(data.load("bigearthnet/mm", "all", tmp_path))
  assert len(s2) == len(s1) == len(mm) == 6
  for s1_name in sorted(os.listdir(s1_root)):
    folder = os.path.join(s1_root, s1_name)
    meta = json.load(open(patches.metadata_path(folder)))
    s2_name = meta["corresponding_s2_patch"]
    s2_meta = json.load(open(os.path.join(
        s2_root, s2_name, f"{s2_name}_labels_metadata.json")))
    vv_vh = np.stack([tifffile.imread(
        os.path.join(folder, f"{s1_name}_{b}.tif")) for b in ("VV", "VH")], -1)
    want_s2 = np.stack([_to_120(tifffile.imread(os.path.join(
        s2_root, s2_name, f"{s2_name}_{b}.tif"))) for b in S2_ORDER], -1)
    _assert_bits(s1[s1_name]["s1"], vv_vh)
    _assert_bits(s2[s2_name]["s2"], want_s2)
    _assert_bits(mm[s2_name]["s2"], want_s2)
    _assert_bits(mm[s2_name]["s1"], vv_vh)
    _assert_bits(patches.read_patch(os.path.join(s2_root, s2_name), S2_ORDER),
                 want_s2)
    assert _text(mm[s2_name]["s1_patch_name"]) == s1_name
    for ex, m in ((s2[s2_name], s2_meta), (s1[s1_name], meta)):
      got = [labels_lib.LABELS_43[i] for i in np.flatnonzero(ex["labels_43"])]
      assert sorted(got) == sorted(m["labels"])


def test_read_without_tensorflow(archive):
  _, out, written = archive
  code = ("import sys, rs_jax.data as d; s = d.load('bigearthnet/mm', 'all', "
          f"{str(out)!r}); x = s[0]; assert x['s2'].shape == (120, 120, 12); "
          "print(len(s), 'tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.stdout.split() == [str(len(written)), "False"]
