"""The engine end to end on a tiny generated archive: device-count
invariance, kill-and-resume, launch.py overrides and outputs."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from clu import periodic_actions

from configs import demo
from rs_jax import train
from rs_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = dict(num_examples=160, size=16, num_labels=4, seed=0,
               splits=dict(train=0.5, validation=0.25, test=0.25))
# Small enough to compile in seconds; 16 = 2 per device on 8 devices.
OVERRIDES = {
    "data.options": OPTIONS, "model.width": 4, "model.bits": 16,
    "model.head_hidden": (32,), "train.batch_size": 16,
    "train.log_every": 1, "eval.batch_size": 16, "eval.ks": (5, 10),
    "eval.select": "map@10",
}


def override(config, overrides):
  """Sets config fields named by dotted keys ("train.steps": 2)."""
  for key, value in overrides.items():
    *path, last = key.split(".")
    node = config
    for name in path:
      node = node[name]
    node[last] = value
  return config


def tiny_config(data_dir, **overrides):
  config = demo.get_config()
  config.data.data_dir = str(data_dir)
  return override(config, {**OVERRIDES, **overrides})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from rs_jax import data
  path = tmp_path_factory.mktemp("data")
  data.prepare("synthetic", None, path, **OPTIONS)
  return path


def test_same_loss_on_1_and_8_devices(data_dir, tmp_path):
  assert jax.device_count() == 8
  config = tiny_config(data_dir, **{"train.steps": 2, "eval.every": 2})
  one = train.train_and_evaluate(config, str(tmp_path / "one"),
                                 devices=jax.devices()[:1])
  eight = train.train_and_evaluate(config, str(tmp_path / "eight"))
  # Step 2's loss depends on step 1's update: both steps agree.
  np.testing.assert_allclose(eight["train/loss"], one["train/loss"],
                             rtol=1e-5)
  assert_same_code_metrics(one, eight)


def assert_same_code_metrics(one, eight):
  """Hamming-code metrics of two runs agree.

  Float-distance rankings flip at near-ties when the reduction order
  changes (1 vs 8 devices), so `float/` metrics are not compared. Hamming
  distances are integers with ties broken by index: they change only if a
  hash output lies within a few ulps of the 0.5 threshold (odds of about
  1e-3 for these ~1,000 outputs).
  """
  keys = sorted(k for k in one if k.startswith("test/") and "/float/" not in k)
  assert keys and keys == sorted(
      k for k in eight if k.startswith("test/") and "/float/" not in k)
  for key in keys:
    np.testing.assert_allclose(eight[key], one[key], rtol=1e-6, err_msg=key)


class Killed(Exception):
  pass


def test_kill_and_resume_equals_uninterrupted(data_dir, tmp_path,
                                              monkeypatch):
  config = tiny_config(data_dir, **{
      "train.steps": 4, "train.checkpoint_every": 2, "eval.every": 2})
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))

  workdir = str(tmp_path / "killed")
  original = periodic_actions.ReportProgress.__call__

  def die_at_step_3(self, step, **kwargs):
    if step == 3:  # after step 3 ran, before it was checkpointed
      raise Killed
    return original(self, step, **kwargs)

  monkeypatch.setattr(periodic_actions.ReportProgress, "__call__",
                      die_at_step_3)
  with pytest.raises(Killed):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "metrics.json"))
  monkeypatch.setattr(periodic_actions.ReportProgress, "__call__", original)
  resumed = train.train_and_evaluate(config, workdir)
  assert resumed.pop("train/steps_per_sec") > 0
  straight.pop("train/steps_per_sec")
  assert resumed == straight

  # The finished run, tested again, keeps its training numbers.
  again = train.train_and_evaluate(config, workdir)
  assert again["train/loss"] == resumed["train/loss"]
  assert again["train/steps_per_sec"] > 0
  saved = open(os.path.join(workdir, "config.json")).read()
  fewer = tiny_config(data_dir, **{
      "train.steps": 2, "train.checkpoint_every": 2, "eval.every": 2})
  with pytest.raises(workdir_lib.WorkdirError,
                     match="train.steps=2: .* checkpoint of step 4"):
    train.train_and_evaluate(fewer, workdir)
  other = tiny_config(data_dir, **{
      "train.steps": 4, "train.checkpoint_every": 2, "eval.every": 2,
      "model.bits": 24})
  with pytest.raises(workdir_lib.WorkdirError, match="model.bits: 16 -> 24"):
    train.train_and_evaluate(other, workdir)
  assert open(os.path.join(workdir, "config.json")).read() == saved


def run_launch(workdir, *overrides):
  return subprocess.run(
      [sys.executable, "launch.py", "--config", "configs/demo.py",
       "--workdir", str(workdir), *overrides],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "XLA_FLAGS": ""})


def test_launch_unknown_field_is_an_error(tmp_path):
  out = run_launch(tmp_path, "--config.model.no_such_field=1")
  assert out.returncode != 0
  assert "no_such_field" in out.stderr
  assert not os.path.exists(tmp_path / "metrics.json")


def test_launch_writes_metrics_events_and_sheet(tmp_path):
  options = [f"--config.data.options.{k}={v}" for k, v in OPTIONS.items()
             if k != "splits"]
  overrides = [f"--config.{k}={v}" for k, v in OVERRIDES.items()
               if k != "data.options"]
  out = run_launch(tmp_path, *options, *overrides, "--config.train.steps=2",
                   "--config.eval.every=2", "--config.model.bits=24")
  assert out.returncode == 0, out.stderr[-3000:]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["bits"] == 24 and saved["train"]["steps"] == 2
  results = json.loads((tmp_path / "metrics.json").read_text())
  assert 0 <= results["test/map@10"] <= 1
  assert results["train/final_step"] == 2
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
  png = (tmp_path / "retrieval.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_errors_before_training(data_dir, tmp_path):
  two = tiny_config(data_dir, **{"data.inputs": ("s1", "s2")})
  with pytest.raises(ValueError, match="eval.select"):
    train.check_config(two, 8)  # metrics are "s1->s2/map@10" etc.
  two.eval.select = "s1->s2/map@10"
  with pytest.raises(ValueError, match="cross_modal_triplet"):
    train.check_config(two, 8)
  train.check_config(tiny_config(data_dir), 8)
  for field, value, message in [
      ("model.bits", 0, "model.bits = 0: must be a positive integer"),
      ("model.bits", -3, "model.bits = -3: must be a positive integer"),
      ("train.batch_size", 0, "train.batch_size = 0: must be a positive"),
      ("train.batch_size", 12, "train.batch_size = 12 is not a multiple of "
                               "the 8 devices"),
      ("eval.batch_size", 20, "eval.batch_size = 20 is not a multiple of "
                              "the 8 devices")]:
    with pytest.raises(ValueError, match=message):
      train.check_config(tiny_config(data_dir, **{field: value}), 8)
  # Refused before the workdir is touched.
  with pytest.raises(ValueError, match="train.batch_size = 12"):
    train.train_and_evaluate(tiny_config(data_dir, **{"train.batch_size": 12}),
                             str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
