"""index_build from a trained S1+S2 run, queries by image file (also
through rs_jax.index_cli), cross-modal rules, the sheet and launch.py,
against direct encoding and NumPy references."""
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import PIL.Image
import pytest
import tifffile

from rs_jax import data, ranking, train, trained
from rs_jax import index_build
from rs_jax.data.query_images import read_image
from rs_jax.index import Index

from tests.test_train import OPTIONS, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 5
PNG = b"\x89PNG\r\n\x1a\n"


def train_two_modality_run(tmp_path_factory):
  """(workdir, data_dir) of a tiny two-modality run (2 steps), as launch.py
  leaves it (the trainer writes config.json)."""
  data_dir = tmp_path_factory.mktemp("data")
  data.prepare("synthetic", None, data_dir, **OPTIONS)
  config = tiny_config(data_dir, **{
      "train.steps": 2, "eval.every": 2, "data.inputs": ("s1", "s2"),
      "eval.select": "s1->s2/map@10"})
  config.loss = ml_collections.ConfigDict(dict(
      weights=dict(cross_modal_triplet=1.0, push=0.001, bit_balance=1.0),
      options=dict(bit_balance=dict(form="code"))))
  workdir = tmp_path_factory.mktemp("runs") / "run_a"
  train.train_and_evaluate(config, str(workdir))
  return workdir, data_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The tiny two-modality run and its indexes."""
  workdir, data_dir = train_two_modality_run(tmp_path_factory)
  indexes = index_build.build_indexes(workdir, batch_size=20)  # 160 rows: padded batch
  return dict(workdir=workdir, data_dir=data_dir, indexes=indexes,
              source=data.load("synthetic", "all", data_dir),
              restored=trained.load_trained(workdir))


def np_codes(outputs):
  """float[N, K] -> uint32[N, ceil(K / 32)], bit j of word j // 32 at
  position j % 32 (NumPy reference of binarize + pack_bits)."""
  bits = np.asarray(outputs) >= 0.5
  bits = np.pad(bits, [(0, 0), (0, -bits.shape[1] % 32)])
  return np.packbits(bits, axis=1, bitorder="little").view("<u4")


def test_build_save_load_search_equals_direct_encoding(run, tmp_path):
  restored, source = run["restored"], run["source"]
  assert restored.step == 2 and restored.checkpoint.endswith(
      os.path.join("checkpoints", "best", "2"))
  n = len(source)
  names = [source[i]["patch_name"].decode() for i in range(n)]
  labels = np.stack([source[i]["labels"] for i in range(n)])
  pairs = set()
  for m in ("s1", "s2"):
    index = run["indexes"][m]
    path = tmp_path / f"{m}.rsidx"
    index.save(path)
    loaded = Index.load(path)
    # Direct: the restored encoder applied to the normalised examples.
    x = np.stack([source[i][m] for i in range(n)])
    stats = restored.stats[m]
    variables = {"params": restored.state["params"][m],
                 "batch_stats": restored.state["batch_stats"][m]}
    outputs = jax.jit(restored.models[m].apply)(
        variables, (x - np.asarray(stats["mean"])) / np.asarray(stats["std"]))
    codes = np_codes(outputs)
    np.testing.assert_array_equal(loaded.codes, codes)
    np.testing.assert_array_equal(restored.encode(m, x[:7]), codes[:7])
    assert loaded.ids.tolist() == names
    np.testing.assert_array_equal(loaded.labels, labels)
    meta = loaded.metadata
    assert meta["modality"] == m and meta["num_bits"] == loaded.num_bits == 16
    assert meta["data"] == dict(name="synthetic", split="all",
                                data_dir=str(run["data_dir"]), num_rows=n,
                                id_key="patch_name")
    assert meta["checkpoint"]["sha256"] == trained.checkpoint_checksum(
        restored.checkpoint)
    assert meta["model"]["bits"] == 16
    pairs.add(meta["model_pair"])
    queries = codes[[0, 3, 50, 159]]
    want = ranking.hamming_topk(queries, codes, K)
    got = loaded.search(queries, K)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], np.array(names)[np.asarray(want[1])])
  assert pairs == {f"run_a:{restored.checksum}"}  # S1 and S2: one pair


def cli(tmp_path, *args):
  """`python -m rs_jax.index_cli search ARGS` -> the finished process."""
  return subprocess.run(
      [sys.executable, "-m", "rs_jax.index_cli", "search", *map(str, args)],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
      env={**os.environ, "RS_JAX_COMPILATION_CACHE": str(tmp_path / "c")})


def search_json(tmp_path, *args):
  out = tmp_path / "out.json"
  proc = cli(tmp_path, *args, "--k", K, "--json", out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(out.read_text())
  assert json.loads(proc.stdout) == got
  return got


def cli_error(tmp_path, *args):
  """stderr of a CLI search that must fail with a message, no traceback."""
  proc = cli(tmp_path, *args)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, (
      proc.stderr[-3000:])
  return proc.stderr


def test_query_by_npy_equals_query_by_code_cross_modal(run, tmp_path):
  s1, s2 = run["indexes"]["s1"], run["indexes"]["s2"]
  s2.save(tmp_path / "s2.rsidx")
  rows = [8, 100]
  files = []
  for r in rows:
    files += ["--image", tmp_path / f"q{r}.npy"]
    np.save(files[-1], run["source"][r]["s1"])
  # S1 images against the S2 index of the same run: accepted.
  got = search_json(tmp_path, "--index", tmp_path / "s2.rsidx", *files,
                    "--modality", "s1", "--checkpoint", run["workdir"],
                    "--sheet", tmp_path / "sheet.png")
  dist, ids = s2.search(s1.codes[rows], K)
  assert [g["query"] for g in got] == [str(f) for f in files[1::2]]
  assert [[(x["id"], x["distance"]) for x in g["results"]] for g in got] == [
      list(zip(i, d)) for i, d in zip(ids.tolist(), dist.tolist())]
  assert got[0]["results"][0]["labels"] == np.flatnonzero(
      s2.labels[s2.rows([ids[0, 0]])[0]]).tolist()
  assert (tmp_path / "sheet.png").read_bytes()[:8] == PNG


def test_search_by_id_with_sheet(run, tmp_path):
  index = run["indexes"]["s2"]
  index.save(tmp_path / "s2.rsidx")
  query = index.ids[:2].tolist()
  got = search_json(tmp_path, "--index", tmp_path / "s2.rsidx", "--ids",
                    ",".join(query), "--sheet", tmp_path / "ids.png")
  dist, ids = index.search_ids(query, K)
  assert [[x["id"] for x in g["results"]] for g in got] == ids.tolist()
  assert (tmp_path / "ids.png").read_bytes()[:8] == PNG


def test_other_run_is_refused_and_checksum_follows_files(run, tmp_path):
  other = tmp_path / "run_b"
  shutil.copytree(run["workdir"], other)
  run["indexes"]["s2"].save(tmp_path / "s2.rsidx")
  np.save(tmp_path / "q.npy", run["source"][0]["s2"])
  err = cli_error(tmp_path, "--index", tmp_path / "s2.rsidx", "--image",
                  tmp_path / "q.npy", "--checkpoint", other)
  assert re.search("model pair mismatch: the index was built by model pair "
                   "'run_a:.*'run_b:", err), err
  ckpt = run["restored"].checkpoint.replace(str(run["workdir"]), str(other))
  assert trained.checkpoint_checksum(ckpt) == run["restored"].checksum
  some_file = os.path.join(ckpt, "_CHECKPOINT_METADATA")
  with open(some_file, "ab") as f:
    f.write(b" ")
  assert trained.checkpoint_checksum(ckpt) != run["restored"].checksum


def test_bad_query_images(run, tmp_path):
  np.save(tmp_path / "s2.npy", run["source"][0]["s2"])
  PIL.Image.new("RGB", (20, 16)).save(tmp_path / "rgb.png")
  patch = tmp_path / "S1A_patch"  # a BigEarthNet S1 folder, 120 x 120 px
  patch.mkdir()
  for band in ("VV", "VH"):
    tifffile.imwrite(patch / f"S1A_patch_{band}.tif",
                     np.zeros((120, 120), np.float32))
  nan = run["source"][0]["s1"].copy()
  nan[3, 4, 1] = np.nan
  np.save(tmp_path / "nan.npy", nan)
  cases = [
      ("s2.npy", "s1", "s2.npy: has 12 bands, the s1 encoder expects 2"),
      ("rgb.png", "s1", "rgb.png: has 3 bands, the s1 encoder expects 2"),
      ("rgb.png", "rgb", "rgb.png: is 16x20 pixels, the rgb encoder expects "
       "16x16"),
      ("S1A_patch", "s1", "S1A_patch: is 120x120 pixels, the s1 encoder "
       "expects 16x16"),
      ("S1A_patch", "s2", "S1A_patch_B01.tif: band file is missing"),
      ("nan.npy", "s1", "nan.npy: has NaN/inf values"),
  ]
  for name, modality, message in cases:
    shape = (16, 16, 3 if modality == "rgb" else 2)
    with pytest.raises(ValueError, match=message):
      read_image(tmp_path / name, modality, shape)
  np.testing.assert_array_equal(
      read_image(patch, "s1", (120, 120, 2)), np.zeros((120, 120, 2)))
  # Through the CLI: the same errors, and a modality the run has not.
  run["indexes"]["s1"].save(tmp_path / "s1.rsidx")
  assert "s2.npy: has 12 bands" in cli_error(
      tmp_path, "--index", tmp_path / "s1.rsidx", "--image",
      tmp_path / "s2.npy")
  err = cli_error(tmp_path, "--index", tmp_path / "s1.rsidx", "--image",
                  tmp_path / "rgb.png", "--modality", "rgb")
  assert re.search(r"modality 'rgb': the run .* has encoders for "
                   r"\['s1', 's2'\]", err), err
  with pytest.raises(ValueError, match=r"the run has encoders for \['s1', "
                     r"'s2'\]; name a modality"):
    index_build.build_index(run["workdir"])


def test_launch_index_task(run, tmp_path):
  out = subprocess.run(
      [sys.executable, "launch.py", "--config", "configs/index.py",
       f"--config.checkpoint={run['workdir']}", "--config.modality=s2",
       "--config.data.split=test", "--workdir", str(tmp_path)],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "XLA_FLAGS": ""}, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert not os.path.exists(tmp_path / "index_s1.rsidx")
  index = Index.load(tmp_path / "index_s2.rsidx")
  full = run["indexes"]["s2"]
  test = data.load("synthetic", "test", run["data_dir"])
  assert index.metadata["data"]["split"] == "test"
  assert index.ids.tolist() == [test[i]["patch_name"].decode()
                                for i in range(len(test))]
  np.testing.assert_array_equal(index.codes,
                                full.codes[full.rows(index.ids)])
