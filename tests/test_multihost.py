"""Multi-process training for real: 2 processes on localhost joined by
`jax.distributed` (gloo collectives on CPU), 4 fake CPU devices each, run
through `launch.py` as a user runs them, against one process with 8 devices.

For the random, triplet and pairs samplers (the demo, MiLaN and S1/S2
configs on generated data) the step-2 loss and every Hamming-code test
metric must equal the 1-process run; a 2-process run killed with SIGKILL
after its first checkpoint resumes to the uninterrupted result. The
processes read a config file written from the test's ConfigDict.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import demo
from configs import milan_ucm
from configs import s1s2_triplet
from rs_jax import data
from rs_jax import train
from tests import test_train

ROOT = test_train.ROOT
OPTIONS = dict(num_examples=192, size=16, num_labels=4, seed=0,
               splits=dict(train=0.5, validation=0.25, test=0.25))
TINY = {"data.options": OPTIONS, "model.backbone": "resnet18",
        "model.width": 4, "model.bits": 16, "model.head_hidden": (32,),
        "train.log_every": 1, "eval.batch_size": 16, "eval.ks": (5, 10)}


def milan_triplet():
  """MiLaN's loss and triplet batches, on a trained backbone."""
  config = milan_ucm.get_config()
  return test_train.override(config, {
      "data.name": "synthetic", "data.inputs": ("s2",),
      "data.label_key": "labels", "model.frozen": False,
      "model.weights": "", "model.small_inputs": True,
      "train.batch_size": 48, "eval.select": "map@10"})


def demo_pairs():
  """The demo with [firsts; seconds] batches and a pair loss."""
  return test_train.override(demo.get_config(), {
      "train.sampler": "pairs", "train.batch_size": 32,
      "loss.weights": {"contrastive_cosine": 1.0, "bit_balance": 1.0},
      "loss.options": {"bit_balance": {"form": "code"}},
      "eval.select": "map@10"})


def s1s2():
  return test_train.override(s1s2_triplet.get_config("synthetic"), {
      "train.batch_size": 32, "eval.select": "mean/map@10"})


def demo_random():
  return test_train.override(demo.get_config(), {
      "train.batch_size": 32, "eval.select": "map@10"})


CASES = {"random": demo_random, "triplet": milan_triplet, "pairs": demo_pairs,
         "s1s2": s1s2}


def make_config(case, data_dir, **overrides):
  config = test_train.override(CASES[case](), TINY)
  config.data.data_dir = str(data_dir)
  return test_train.override(config, overrides)


def write_config_file(config, directory) -> str:
  """A config file whose get_config() returns `config` (via JSON)."""
  json_path = os.path.join(directory, "config_in.json")
  with open(json_path, "w") as f:
    f.write(config.to_json())
  path = os.path.join(directory, "config_file.py")
  with open(path, "w") as f:
    f.write("import json\nimport ml_collections\n\n\ndef get_config():\n"
            f"  with open({json_path!r}) as f:\n"
            "    return ml_collections.ConfigDict(json.load(f))\n")
  return path


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_processes(config, workdir, *, cache_dir, num=2):
  """`launch.py` in `num` processes of one job; returns the Popen list."""
  config_file = write_config_file(config, workdir.parent)
  port = free_port()
  procs = []
  for i in range(num):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(num), JAX_PROCESS_ID=str(i),
               JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    log = open(os.path.join(workdir, f"process_{i}.log"), "ab")
    procs.append(subprocess.Popen(
        [sys.executable, "launch.py", "--config", config_file,
         "--workdir", str(workdir)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def wait(procs, workdir, timeout=600):
  deadline = time.monotonic() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(1, deadline - time.monotonic()))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, p in enumerate(procs):
    if p.returncode:
      with open(os.path.join(workdir, f"process_{i}.log")) as f:
        tail = f.read()[-3000:]
      pytest.fail(f"process {i} exited {p.returncode}:\n{tail}")


def run_two_processes(config, workdir, cache_dir):
  workdir.mkdir(parents=True, exist_ok=True)
  wait(start_processes(config, workdir, cache_dir=cache_dir), workdir)
  with open(workdir / "metrics.json") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  data.prepare("synthetic", None, path, **OPTIONS)
  return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("xla_cache")


def assert_same_run(one, two):
  np.testing.assert_allclose(two["train/loss"], one["train/loss"], rtol=1e-5)
  test_train.assert_same_code_metrics(one, two)


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_equal_one(case, data_dir, cache_dir, tmp_path):
  assert jax.device_count() == 8
  config = make_config(case, data_dir, **{"train.steps": 2, "eval.every": 2})
  one = train.train_and_evaluate(config, str(tmp_path / "one"))
  two = run_two_processes(config, tmp_path / "two", cache_dir)
  assert_same_run(one, two)


def test_killed_two_process_run_resumes(data_dir, cache_dir, tmp_path):
  config = make_config("random", data_dir, **{
      "train.steps": 40, "train.checkpoint_every": 2, "eval.every": 20})
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  workdir = tmp_path / "killed"
  workdir.mkdir()
  procs = start_processes(config, workdir, cache_dir=cache_dir)
  first = workdir / "checkpoints" / "latest" / "2"
  deadline = time.monotonic() + 600
  while not first.is_dir() and time.monotonic() < deadline:
    assert all(p.poll() is None for p in procs), "a process ended early"
    time.sleep(0.05)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert first.is_dir() and not (workdir / "metrics.json").exists()
  resumed = run_two_processes(config, workdir, cache_dir)
  assert resumed["train/final_step"] == 40
  assert_same_run(straight, resumed)
