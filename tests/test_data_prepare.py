"""Tests for how datasets are prepared: local worker processes and Beam's
DirectRunner write the same dataset as one process (examples, label store,
statistics, skipped list); a preparation killed midway never reads as
prepared and a rerun completes it; the CLI prepares an experiment config's
own data section (the real sample) and a dataset by name."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import rs_jax.data as data
from configs import prepare as prepare_config
from configs import s1s2_triplet
from rs_jax import input_pipeline
from rs_jax.data import sources
from rs_jax.data.bigearthnet import fake
from tests import shared_data
from tests.test_data_bigearthnet import SAMPLE, _break, _text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = {"train": 0.5, "test": 0.5}


def _everything(name, data_dir):
  """Examples, label stores, metadata and skipped.txt of a prepared dataset."""
  b = data.builder(name, data_dir)
  examples = {s: [data.load(name, s, data_dir)[i]
                  for i in range(b.info.splits[s].num_examples)]
              for s in b.info.splits}
  stores = {s: sources.read_labels(b.data_path / f"labels-{s}.npz")
            for s in b.info.splits}
  skipped = b.data_path / "skipped.txt"
  return (examples, stores, json.loads((b.data_path / "metadata.json")
                                       .read_text()),
          skipped.read_text() if skipped.exists() else None)


def test_workers_and_beam_write_the_same_dataset(tmp_path):
  raw = str(tmp_path / "raw")
  written = fake.write_v1(raw, 10, seed=6)
  _break(raw, written)  # patches 0-5 are bad in six ways: skipped, listed
  runs = {"one": dict(workers=1), "two": dict(workers=2),
          "beam": dict(beam=["--runner=DirectRunner"])}
  got = {}
  for run, how in runs.items():
    data.prepare("bigearthnet/mm", raw, tmp_path / run, skip_invalid=True,
                 splits=SPLITS, **how)
    got[run] = _everything("bigearthnet/mm", tmp_path / run)
  examples, stores, meta, skipped = got["one"]
  assert sum(len(v) for v in examples.values()) == 4
  assert meta["counts"]["skipped"] == 6 and len(skipped.splitlines()) == 6
  for run in ("two", "beam"):
    other_examples, other_stores, other_meta, other_skipped = got[run]
    assert other_skipped == skipped and other_meta["counts"] == meta["counts"]
    assert other_meta["skipped"] == meta["skipped"]
    for split, rows in examples.items():
      assert len(other_examples[split]) == len(rows)
      for a, b in zip(rows, other_examples[split]):
        assert sorted(a) == sorted(b)
        for key in a:
          np.testing.assert_array_equal(a[key], b[key])
      assert sorted(stores[split]) == sorted(other_stores[split])
      for key, value in stores[split].items():
        np.testing.assert_array_equal(value, other_stores[split][key])
    for split, stats in meta["statistics"].items():
      for key, s in stats.items():
        other = other_meta["statistics"][split][key]
        assert other["count"] == s["count"]
        np.testing.assert_allclose(other["mean"], s["mean"], rtol=1e-12)
        np.testing.assert_allclose(other["std"], s["std"], rtol=1e-9)


_SLOW_PREPARE = """
import sys, time
import rs_jax.data as data
from rs_jax.data.bigearthnet import patches
read = patches.read_bands
def slow(*args):
  print("read", flush=True)
  time.sleep(0.05)
  return read(*args)
patches.read_bands = slow
data.prepare("bigearthnet/s2", sys.argv[1], sys.argv[2],
             splits={"train": 0.5, "test": 0.5})
"""


def test_killed_preparation_is_not_prepared_and_rerun_completes(tmp_path,
                                                                caplog):
  raw, out = str(tmp_path / "raw"), tmp_path / "out"
  written = fake.write_v1(raw, 20, seed=7, modalities=("s2",))
  child = subprocess.Popen([sys.executable, "-c", _SLOW_PREPARE, raw,
                            str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
  reads = 0
  for line in child.stdout:  # train is 10 patches: kill inside test
    reads += line.strip() == "read"
    if reads == 15:
      child.kill()
      break
  child.wait()
  assert reads == 15, "the preparation ended before it could be killed"
  partial = list(out.glob("rs_bigearthnet/s2/incomplete.*"))
  assert len(partial) == 1 and list(partial[0].glob("*-train.array_record*"))
  assert not data.builder("bigearthnet/s2", out).is_prepared()
  with pytest.raises(FileNotFoundError, match="not prepared"):
    data.load("bigearthnet/s2", "all", out)

  data.prepare("bigearthnet/s2", raw, out, splits=SPLITS)
  assert partial[0].name in caplog.text  # named for deletion
  source = data.load("bigearthnet/s2", "all", out)
  assert sorted(_text(source[i]["patch_name"]) for i in range(len(source))) \
      == sorted(w["s2_name"] for w in written)
  assert len(source.columns(["labels_19"])["labels_19"]) == 20


def test_cli_prepares_a_configs_own_data_on_the_real_sample(tmp_path):
  sample = shared_data.real(SAMPLE)
  result = subprocess.run(
      [sys.executable, "-m", "rs_jax.data.prepare_cli", "--config",
       "configs/s1s2_triplet.py", f"--config.data.manual_dir={sample}",
       f"--config.data.data_dir={tmp_path}", "--workers=2"],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = result.stdout.strip().splitlines()[-1]
  assert summary.startswith("bigearthnet/mm: 6 examples"), result.stdout
  assert not re.search(r"^I\d{4} ", result.stderr, re.M)  # INFO: log file
  log = re.search(r"log: (\S+)\)", summary).group(1)
  assert "prepared bigearthnet/mm" in open(log).read()

  # Training reads exactly this preparation (same options: no new one).
  config = s1s2_triplet.get_config("labels_43")
  config.data.data_dir = str(tmp_path)
  config.data.manual_dir = "/nonexistent"  # would fail if it prepared again
  input_pipeline.prepare_once(config.data)
  source = data.load(config.data.name, "train", config.data.data_dir,
                     **input_pipeline.read_options(config.data))
  labels = source.columns([config.data.label_key])["labels_43"]
  assert labels.shape == (len(source), 43) and labels.any(1).all()
  assert source[0]["s2"].shape == (120, 120, 12)


def test_prepare_by_name_config(tmp_path):
  raw = str(tmp_path / "raw")
  written = fake.write_v1(raw, 4, seed=8, modalities=("s1",))
  (tmp_path / "skip.csv").write_text(written[0]["s1_name"] + "\n")
  config = prepare_config.get_config("bigearthnet/s1")
  assert config.data.options.s1_dir is None
  config.data.manual_dir, config.data.data_dir = raw, str(tmp_path / "out")
  config.data.options.splits = "train=0.5,test=0.5"
  config.data.options.exclude_csvs = str(tmp_path / "skip.csv")
  b = data.prepare_config(config.data)
  assert {s: v.num_examples for s, v in b.info.splits.items()} == {
      "train": 2, "test": 1}
  with pytest.raises(ValueError, match="'mm'"):
    prepare_config.get_config("mm")


def test_columns_of_a_dataset_without_label_store(tmp_path):
  data.prepare("synthetic", None, tmp_path, num_examples=10, size=4,
               splits={"train": 1.0})
  source = data.load("synthetic", "train", tmp_path)
  want = np.stack([source[i]["labels"] for i in range(len(source))])
  np.testing.assert_array_equal(source.columns(["labels"])["labels"], want)
  for path in data.builder("synthetic", tmp_path).data_path.glob("labels-*"):
    path.unlink()  # as prepared before the label store existed
  got = data.load("synthetic", "train", tmp_path).columns(["labels"])
  np.testing.assert_array_equal(got["labels"], want)
