"""rs_jax.workdir: the lock (real processes too), the config check on
resume, and one-line errors from launch.py."""
import json
import os
import socket
import subprocess
import sys
import time

import ml_collections
import pytest

from configs import demo
from rs_jax import workdir as workdir_lib
from tests import test_train


def config(**overrides):
  return test_train.override(demo.get_config(), overrides)


def test_claim_writes_config_and_releases_the_lock(tmp_path):
  with workdir_lib.claim(config(), tmp_path) as wd:
    holder = json.loads((tmp_path / "lock").read_text())
    assert holder == {"host": socket.gethostname(), "pid": os.getpid()}
    assert json.loads((wd / "config.json").read_text())["model"]["bits"] == 32
  assert not (tmp_path / "lock").exists()


def test_a_live_holder_refuses_the_second_run(tmp_path):
  (tmp_path / "lock").write_text(json.dumps(
      {"host": socket.gethostname(), "pid": os.getppid()}))
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f"locked by process {os.getppid()} on "
                           f"{socket.gethostname()}"):
    with workdir_lib.claim(config(), tmp_path):
      pass
  assert (tmp_path / "lock").exists()  # not ours to remove
  assert not (tmp_path / "config.json").exists()


def test_a_dead_holder_is_taken_over(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  (tmp_path / "lock").write_text(json.dumps(
      {"host": socket.gethostname(), "pid": int(dead.stdout)}))
  with workdir_lib.claim(config(), tmp_path):
    assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()


def test_resume_refuses_model_and_data_changes_and_records_the_rest(tmp_path):
  with workdir_lib.claim(config(), tmp_path):
    pass
  saved = (tmp_path / "config.json").read_text()
  for field, value in [("model.bits", 16), ("data.options.num_examples", 10),
                       ("optim.lr", 0.1), ("seed", 1)]:
    with pytest.raises(workdir_lib.WorkdirError, match=field.replace(".", r"\.")):
      with workdir_lib.claim(config(**{field: value}), tmp_path):
        pass
    assert (tmp_path / "config.json").read_text() == saved
    assert not (tmp_path / "lock").exists()
  with workdir_lib.claim(config(**{"train.steps": 300, "eval.every": 50,
                                   "data.manual_dir": "/moved/ucmerced"}),
                         tmp_path):
    pass
  log = (tmp_path / "config_changes.log").read_text()
  assert "train.steps: 150 -> 300" in log and "eval.every: 75 -> 50" in log
  assert "data.manual_dir: '' -> '/moved/ucmerced'" in log
  assert json.loads((tmp_path / "config.json").read_text())["train"][
      "steps"] == 300


def test_changes_lists_added_and_removed_fields():
  old = {"a": {"b": 1, "c": [1, 2]}, "gone": 1}
  new = ml_collections.ConfigDict({"a": {"b": 1, "c": (1, 3)}, "new": 2})
  assert workdir_lib.config_changes(old, new.to_dict()) == {
      "a.c": ([1, 2], [1, 3]), "gone": (1, None), "new": (None, 2)}


def launch(workdir, *flags, **kwargs):
  return subprocess.Popen(
      [sys.executable, "launch.py", "--config", "configs/demo.py",
       "--workdir", str(workdir), *flags], cwd=test_train.ROOT,
      env={**os.environ, "XLA_FLAGS": ""}, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, **kwargs)


def test_two_runs_on_one_workdir_the_second_is_refused(tmp_path):
  first = launch(tmp_path / "run", "--config.train.steps=100000")
  try:
    lock = tmp_path / "run" / "lock"
    deadline = time.monotonic() + 300
    while not lock.exists() and time.monotonic() < deadline:
      assert first.poll() is None, first.communicate()
      time.sleep(0.1)
    second = launch(tmp_path / "run", "--config.model.bits=16")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 1
    lines = err.strip().splitlines()
    assert lines[0] == (
        f"error: {tmp_path / 'run'} is locked by process {first.pid} on "
        f"{socket.gethostname()}: another run is using this workdir. Wait "
        f"for it, or use another --workdir (delete {lock} only if that "
        f"process is gone).")
    assert len(lines) == 2 and "traceback in" in lines[1]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["bits"] == 32  # the first run's config stays
  finally:
    first.kill()
    first.communicate()


def test_a_user_error_is_one_short_message(tmp_path):
  out = launch(tmp_path, "--config.model.bits=0")
  _, err = out.communicate(timeout=300)
  assert out.returncode == 1
  assert err.strip().splitlines() == [
      "error: model.bits = 0: must be a positive integer",
      f"(traceback in {tmp_path / 'log.txt'})"]
  assert "Traceback" in (tmp_path / "log.txt").read_text()


def test_readers_never_break_a_saving_trainer(tmp_path):
  """Restores a run again and again while it saves a checkpoint every step:
  readers open checkpoints read-only, so the trainer's in-flight temporary
  directories are never removed under it. (A reader itself may lose the
  race for a latest step that the trainer replaces while it is read; it
  retries, and the best state, kept for 10 steps here, is what it reads.)"""
  from rs_jax import trained  # pylint: disable=g-import-not-at-top
  flags = [f"--config.{k}={v}" for k, v in {
      **test_train.OVERRIDES, "train.steps": 40, "train.checkpoint_every": 1,
      "eval.every": 10}.items() if k != "data.options"]
  flags += [f"--config.data.options.{k}={v}"
            for k, v in test_train.OPTIONS.items() if k != "splits"]
  run = tmp_path / "run"
  trainer = launch(run, *flags)
  reads, deadline = 0, time.monotonic() + 600
  try:
    while trainer.poll() is None and time.monotonic() < deadline:
      if not (run / "checkpoints" / "best").is_dir():
        time.sleep(0.2)
        continue
      try:
        restored = trained.load_trained(run)
      except Exception:  # pylint: disable=broad-except
        continue  # lost the race for a replaced step: the reader's problem
      assert 1 <= restored.step <= 40
      reads += 1
    _, err = trainer.communicate(timeout=max(1, deadline - time.monotonic()))
  finally:
    trainer.kill()
  assert trainer.returncode == 0, err
  assert reads >= 2
  assert json.loads((run / "metrics.json").read_text())[
      "train/final_step"] == 40
