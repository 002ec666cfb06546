"""Builders rs_ucmerced / rs_aid on tiny generated class folders, bad input,
splits, statistics, the CLI, TF-free reading, and the real UC Merced."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import rs_jax.data
from rs_jax.data import rgb_folders
from rs_jax.data import splits
from tests import shared_data

FORMATS = ("png", "tif", "webp")  # lossless: values read back must be equal


def _write_archive(root, classes, per_class, seed=0):
  """Class folders of random RGB images; returns {filename: pixels}."""
  rng = np.random.default_rng(seed)
  written = {}
  for c in classes:
    os.makedirs(root / "Images" / c)
    for i in range(per_class):
      ext = FORMATS[i % len(FORMATS)]
      pixels = rng.integers(0, 256, (6 + i % 2, 7, 3), dtype=np.uint8)
      name = f"{c}{i:02d}.{ext}"
      kwargs = {"lossless": True} if ext == "webp" else {}
      Image.fromarray(pixels).save(root / "Images" / c / name, **kwargs)
      written[f"{c}/{name}"] = pixels
  return written


@pytest.fixture(scope="module")
def ucm_tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("ucm_raw")
  written = _write_archive(root, rgb_folders.UCMERCED_CLASSES, 10)
  data_dir = tmp_path_factory.mktemp("ucm_data")
  rs_jax.data.prepare("ucmerced", root, data_dir, splits="anneal", seed=3)
  return root, written, data_dir


def test_values_labels_filenames(ucm_tiny):
  _, written, data_dir = ucm_tiny
  src = rs_jax.data.load("ucmerced", "all", data_dir)
  assert len(src) == 21 * 10
  seen = set()
  for i in range(len(src)):
    ex = src[i]
    name = ex["filename"].decode()
    np.testing.assert_array_equal(ex["image"], written[name])
    assert rgb_folders.UCMERCED_CLASSES[ex["label"]] == name.split("/")[0]
    seen.add(name)
  assert seen == set(written)


def test_splits_stratified_seeded(ucm_tiny):
  _, _, data_dir = ucm_tiny
  per_split = {s: rs_jax.data.load("ucmerced", s, data_dir)
               for s in ("train", "validation", "test")}
  names = {s: {src[i]["filename"] for i in range(len(src))}
           for s, src in per_split.items()}
  assert {s: len(n) for s, n in names.items()} == {
      "train": 21 * 8, "validation": 21, "test": 21}
  assert not (names["train"] & names["test"]) and not (
      names["train"] & names["validation"])
  labels = np.arange(210) // 10
  ref = splits.stratified_split(labels, "anneal", seed=3)
  for s, idx in ref.items():  # the builder's split is this reference split
    assert names[s] == {f"{rgb_folders.UCMERCED_CLASSES[i // 10]}/"
                        f"{rgb_folders.UCMERCED_CLASSES[i // 10]}{i % 10:02d}."
                        f"{FORMATS[i % 10 % 3]}".encode() for i in idx}
  again = splits.stratified_split(labels, "anneal", seed=3)
  other = splits.stratified_split(labels, "anneal", seed=4)
  assert all(np.array_equal(ref[s], again[s]) for s in ref)
  assert not all(np.array_equal(ref[s], other[s]) for s in ref)


def test_milan_preset_counts():
  labels = np.repeat(np.arange(3), 100)
  parts = splits.stratified_split(labels, "milan", seed=0)
  assert {k: len(v) for k, v in parts.items()} == {
      "train": 3 * 40, "test": 3 * 40, "validation": 3 * 20}
  assert len(np.unique(np.concatenate(list(parts.values())))) == 300


def test_statistics_match_numpy(ucm_tiny):
  _, written, data_dir = ucm_tiny
  src = rs_jax.data.load("ucmerced", "train", data_dir)
  pixels = np.concatenate([src[i]["image"].reshape(-1, 3).astype(np.float64)
                           for i in range(len(src))])
  stats = rs_jax.data.statistics("ucmerced", data_dir)
  np.testing.assert_allclose(stats["image"]["mean"], pixels.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats["image"]["std"], pixels.std(0), rtol=1e-5)


def test_reprepare_with_other_options_is_an_error(ucm_tiny):
  root, _, data_dir = ucm_tiny
  rs_jax.data.prepare("ucmerced", root, data_dir, splits="anneal", seed=3)
  with pytest.raises(ValueError, match="already prepared"):
    rs_jax.data.prepare("ucmerced", root, data_dir, splits="anneal", seed=4)
  with pytest.raises(ValueError, match="unknown option"):
    rs_jax.data.prepare("ucmerced", root, data_dir, nope=1)


def test_bad_input_errors_and_skip(tmp_path):
  root = tmp_path / "raw"
  _write_archive(root, rgb_folders.AID_CLASSES, 2)
  bad = root / "Images" / "Beach" / "Beach00.png"
  bad.write_bytes(bad.read_bytes()[:40])  # truncated
  with pytest.raises(ValueError, match="Beach00.png: unreadable image"):
    rs_jax.data.prepare("aid", root, tmp_path / "a")
  b = rs_jax.data.prepare("aid", root, tmp_path / "b", skip_invalid=True)
  assert b.info.splits["train"].num_examples == 30 * 2 - 1
  skipped = (b.data_path / "skipped.txt").read_text()
  assert "Beach00.png\tunreadable image" in skipped
  for f in (root / "Images" / "Desert").iterdir():
    f.unlink()
  with pytest.raises(ValueError, match="Desert: empty class folder"):
    rs_jax.data.prepare("aid", root, tmp_path / "c")
  os.makedirs(root / "Images" / "Lake")
  with pytest.raises(ValueError, match="Lake: unknown class folder"):
    rs_jax.data.prepare("aid", root, tmp_path / "d")


def test_cli_and_reading_without_tensorflow(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.getcwd()}
  subprocess.run(
      [sys.executable, "-m", "rs_jax.data.prepare_cli", "--config",
       os.path.join(os.path.dirname(__file__), "..", "configs",
                    "prepare.py:synthetic"),
       f"--config.data.data_dir={tmp_path / 'out'}",
       "--config.data.options.num_examples=12", "--config.data.options.size=8",
       "--config.data.options.splits.train=0.5",
       "--config.data.options.splits.validation=0.0",
       "--config.data.options.splits.test=0.5", "--workers=1"],
      check=True, env=env, capture_output=True)
  read = (
      "import sys, numpy as np, rs_jax.data as d\n"
      "from rs_jax.data import synthetic\n"
      f"src = d.load('synthetic', 'all', {str(tmp_path / 'out')!r})\n"
      "assert len(src) == 12, len(src)\n"
      "for i in range(12):\n"
      "  ex = src[i]; j = int(ex['patch_name'].decode().split('_')[-1])\n"
      "  ref = synthetic.example(j, size=8)\n"
      "  assert all(np.array_equal(ex[k], ref[k]) for k in ('s2', 's1', 'labels'))\n"
      "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
  subprocess.run([sys.executable, "-c", read], check=True, env=env)


def test_real_ucmerced(tmp_path):
  ucm = shared_data.real("ucmerced")
  data_dir = tmp_path / "ucm"
  rs_jax.data.prepare("ucmerced", ucm, data_dir, splits="milan")
  src = rs_jax.data.load("ucmerced", "all", data_dir)
  labels = np.array([src[i]["label"] for i in range(len(src))])
  assert len(src) == 2100
  assert (np.bincount(labels) == 100).all() and len(np.bincount(labels)) == 21
  ex = src[1234]
  np.testing.assert_array_equal(
      ex["image"], rgb_folders.read_rgb(f"{ucm}/Images/{ex['filename'].decode()}"))
  counts = {s: len(rs_jax.data.load("ucmerced", s, data_dir))
            for s in ("train", "validation", "test")}
  assert counts == {"train": 840, "validation": 420, "test": 840}
