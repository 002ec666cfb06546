"""Tests for the reBEN builder (rs_bigearthnet_v2): a tiny LMDB + safetensors
archive and a tiny v2 folder archive written here, read back value for value
(band order included), official splits, labels, the countries subset, bad
input."""
import json
import os

import lmdb
import numpy as np
import pytest

import rs_jax.data as data
from rs_jax.data.bigearthnet import fake
from rs_jax.data.bigearthnet import labels as labels_lib
from rs_jax.data.bigearthnet_v2 import reben
from tests.test_data_bigearthnet import S2_ORDER, _text, _to_120


def _examples(name, split, data_dir):
  source = data.load(name, split, data_dir)
  return [source[i] for i in range(len(source))]


def _check(example, row, config):
  if config != "s1":
    for c, band in enumerate(S2_ORDER):
      np.testing.assert_array_equal(example["s2"][..., c],
                                    _to_120(row["s2_bands"][band]))
  if config != "s2":
    vv_vh = np.stack([row["s1_bands"]["VV"], row["s1_bands"]["VH"]], -1)
    np.testing.assert_array_equal(example["s1"], vv_vh)
  np.testing.assert_array_equal(
      example["labels_19"], np.isin(labels_lib.LABELS_19, row["labels"]))
  assert _text(example["s2v1_name"]) == row["s2v1_name"]


@pytest.fixture(scope="module")
def lmdb_archive(tmp_path_factory):
  root = tmp_path_factory.mktemp("reben_raw")
  out = tmp_path_factory.mktemp("reben_prepared")
  rows = fake.write_v2(str(root), 6, seed=1, fmt="lmdb")
  for config in ("s2", "s1", "mm"):
    data.prepare(f"bigearthnet_v2/{config}", root, out)
  return root, out, rows


def test_lmdb_entries_are_safetensors_of_native_bands(lmdb_archive):
  root, _, rows = lmdb_archive
  env = lmdb.open(os.path.join(root, "BigEarthNet-V2-LMDB"), readonly=True,
                  lock=False)
  with env.begin() as txn:
    blob = txn.get(rows[0]["patch_id"].encode())
  env.close()
  # safetensors: 8-byte little-endian header length, JSON header, raw data.
  n = int.from_bytes(blob[:8], "little")
  header = json.loads(blob[8:8 + n])
  assert header["B01"]["dtype"] == "U16" and header["B01"]["shape"] == [20, 20]
  start, end = header["B8A"]["data_offsets"]
  b8a = np.frombuffer(blob[8 + n + start:8 + n + end], "<u2").reshape(60, 60)
  np.testing.assert_array_equal(b8a, rows[0]["s2_bands"]["B8A"])


@pytest.mark.parametrize("config", ["s2", "s1", "mm"])
def test_lmdb_values_and_official_splits(lmdb_archive, config):
  _, out, rows = lmdb_archive
  name = f"bigearthnet_v2/{config}"
  for split in ("train", "validation", "test"):
    want = [r for r in rows if r["split"] == split]
    got = _examples(name, split, out)
    assert len(got) == len(want) == 2
    for ex, row in zip(got, want):  # stored in metadata order
      key = "s1_name" if config == "s1" else "patch_id"
      assert _text(ex["patch_name"]) == row[key]
      _check(ex, row, config)
      if config == "mm":
        assert _text(ex["s1_patch_name"]) == row["s1_name"]


def test_folder_layout_and_snow_cloud(tmp_path):
  rows = fake.write_v2(str(tmp_path / "raw"), 3, seed=2, fmt="folder")
  extra = fake.write_v2(str(tmp_path / "extra"), 1, seed=3, fmt="folder")
  extra[0]["contains_seasonal_snow"] = True
  fake.write_metadata(str(tmp_path / "raw" / reben.SNOW_CLOUD_METADATA),
                      [{k: v for k, v in extra[0].items() if "bands" not in k}])
  for modality in ("S2", "S1"):
    src = tmp_path / "extra" / f"BigEarthNet-{modality}"
    dst = tmp_path / "raw" / f"BigEarthNet-{modality}"
    for group in os.listdir(src):
      os.makedirs(dst / group, exist_ok=True)
      for patch in os.listdir(src / group):
        os.rename(src / group / patch, dst / group / patch)
  data.prepare("bigearthnet_v2/mm", tmp_path / "raw", tmp_path / "out",
               include_snow_cloud=True)
  got = {_text(ex["patch_name"]): ex
         for ex in _examples("bigearthnet_v2/mm", "all", tmp_path / "out")}
  assert len(got) == 4
  for row in rows + extra:
    _check(got[row["patch_id"]], row, "mm")
  assert bool(got[extra[0]["patch_id"]]["contains_seasonal_snow"])


def test_bad_input(tmp_path):
  raw = tmp_path / "raw"
  rows = fake.write_v2(str(raw), 6, seed=4, fmt="lmdb")
  table = [{k: v for k, v in r.items() if "bands" not in k} for r in rows]
  table[1]["labels"] = ["Arable land", "Lava fields"]
  fake.write_metadata(str(raw / "metadata.parquet"), table)
  env = lmdb.open(str(raw / "BigEarthNet-V2-LMDB"), map_size=1 << 30)
  with env.begin(write=True) as txn:
    txn.delete(rows[2]["s1_name"].encode())
    txn.put(rows[3]["patch_id"].encode(), b"\x10\x00\x00\x00not safetensors")
  env.close()
  # Splits are written train (rows 0, 3), validation (1, 4), test (2, 5).
  with pytest.raises(ValueError, match=f"{rows[3]['patch_id']}.*unreadable"):
    data.prepare("bigearthnet_v2/mm", raw, tmp_path / "out")
  b = data.prepare("bigearthnet_v2/mm", raw, tmp_path / "skip",
                   skip_invalid=True)
  got = _examples("bigearthnet_v2/mm", "all", tmp_path / "skip")
  assert [_text(ex["patch_name"]) for ex in got] == [
      rows[i]["patch_id"] for i in (0, 4, 5)]
  lines = (b.data_path / "skipped.txt").read_text().splitlines()
  assert len(lines) == 3
  assert rows[3]["patch_id"] in lines[0] and "safetensors" in lines[0]
  assert rows[1]["patch_id"] in lines[1] and "'Lava fields'" in lines[1]
  assert rows[2]["s1_name"] in lines[2] and "no such entry" in lines[2]


def test_countries_subset(tmp_path):
  raw = tmp_path / "raw"
  rows = fake.write_v2(str(raw), 6, seed=5, fmt="lmdb")
  table = [{k: v for k, v in r.items() if "bands" not in k} for r in rows]
  for i in (1, 2, 4):
    table[i]["country"] = "Serbia"
  fake.write_metadata(str(raw / "metadata.parquet"), table)
  b = data.prepare("bigearthnet_v2/s2", raw, tmp_path / "out",
                   countries="Serbia")
  got = _examples("bigearthnet_v2/s2", "all", tmp_path / "out")
  assert [_text(ex["patch_name"]) for ex in got] == [
      rows[i]["patch_id"] for i in (1, 4, 2)]  # train, validation, test
  assert {_text(ex["country"]) for ex in got} == {"Serbia"}
  for ex, i in zip(got, (1, 4, 2)):
    _check(ex, rows[i], "s2")
  meta = json.loads((b.data_path / "metadata.json").read_text())
  assert meta["counts"]["other_country"] == 3
  assert meta["options"]["countries"] == ["Serbia"]
