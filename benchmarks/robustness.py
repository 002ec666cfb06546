"""Robustness: bad inputs and faults that a hostile but honest user meets,
each run as a real command on generated data in a temporary directory, and
what the user sees, classified.

python -m benchmarks.robustness [--cases=bits,kill] [--timeout=300]
writes benchmarks/results/robustness.{json,md} (case, command, what the
user sees, verdict). --cases keeps the cases whose name contains one of the
comma-separated words; --list prints the case names.

Verdicts come from what each command printed and left on disk, never from
the case's name:
  CLEAR    it stopped with a short message (at most 3 lines on stderr, no
           traceback) naming the file or field at fault
  OK       a fault recovered exactly, or a refusal kept the state as it was
  SILENT   bad input accepted without a word (exit 0, or nothing reported)
  UNCLEAR  it stopped, but with a traceback, a long output, without naming
           the file or field, or not within the time bound
  LOSS     a run's state (config, checkpoints, metrics, labels) was lost,
           mixed or not resumed exactly
Commands run from the repository root with one CPU device (XLA_FLAGS
empty); $TMP stands for the temporary directory, $TINY for the flags of the
tiny training run (TINY below).
"""
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import report

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_string("cases", "", "Comma-separated words: run the cases "
                      "whose name contains one ('' = all).")
  flags.DEFINE_integer("timeout", 300, "Seconds a command may run.")
  flags.DEFINE_string("out", "robustness", "Results file stem in "
                      "benchmarks/results/ ('' = write nothing).")
  flags.DEFINE_bool("list", False, "Print the case names and stop.")
  flags.DEFINE_bool("keep", False, "Keep the temporary directory.")
  flags.DEFINE_bool(
      "merge", False, "Replace only the rows of the cases run in the existing "
      "results; the table then lists every command that produced it.")


ROOT = os.fspath(report.ROOT)
VERDICTS = ("CLEAR", "OK", "SILENT", "UNCLEAR", "LOSS")
# The tiny training run (tests/test_train.py's sizes): 160 16 px patches.
DATA_OPTIONS = {"num_examples": 160, "size": 16, "num_labels": 4, "seed": 0}
TINY = ["--config.data.options.num_examples=160",
        "--config.data.options.size=16", "--config.data.options.num_labels=4",
        "--config.model.width=4", "--config.model.bits=16",
        "--config.model.head_hidden=(32,)", "--config.train.batch_size=16",
        "--config.eval.batch_size=16", "--config.eval.ks=(5,10)",
        "--config.eval.select=map@10", "--config.train.steps=6",
        "--config.train.checkpoint_every=3", "--config.eval.every=6",
        "--config.train.log_every=3"]
ANNEAL = ["--config.data.image_size=32", "--config.al.h=8",
          "--config.al.rounds=2", "--config.al.kmeans_iters=5",
          "--config.train.epochs=1", "--config.train.batch_size=16",
          "--config.model.projection_hidden=32",
          "--config.model.projection_features=16",
          "--config.model.pair_hidden=(16,8)"]
_PROGRESS = re.compile(r"\d+%\||it/s\]|examples/s\]|s/it\]|\r")


@dataclasses.dataclass
class Seen:
  """What one command did: exit status (None: killed at the time bound) and
  its console output."""
  argv: list
  rc: int | None
  stdout: str
  stderr: str
  seconds: float


@dataclasses.dataclass
class Result:
  """One case's row: the command, what the user saw, the verdict, a note."""
  name: str
  command: str
  seen: str
  verdict: str
  note: str = ""


class Context:
  """The temporary directory and the generated inputs the cases share
  (made on first use)."""

  def __init__(self, tmp, timeout):
    self.tmp, self.timeout = tmp, timeout
    self._made = {}

  def path(self, *parts) -> str:
    """Returns $TMP/parts..."""
    return os.path.join(self.tmp, *parts)

  def once(self, key, make):
    """Returns make()'s result, computed the first time `key` is asked."""
    if key not in self._made:
      self._made[key] = make()
    return self._made[key]

  def data_dir(self) -> str:
    """The prepared synthetic archive of the tiny runs."""
    def make():
      path = self.path("data")
      seen = python(self, "from rs_jax import data; data.prepare('synthetic',"
                    f" None, {path!r}, **{DATA_OPTIONS!r})")
      _check_setup(seen, "preparing the synthetic archive")
      return path
    return self.once("data", make)

  def tiny(self) -> list:
    """$TINY with the shared prepared data."""
    return TINY + [f"--config.data.data_dir={self.data_dir()}"]

  def finished_run(self) -> str:
    """A finished 6-step tiny run (checkpoints at steps 3 and 6); cases copy
    it before changing anything."""
    def make():
      workdir = self.path("finished")
      _check_setup(launch(self, workdir), "the tiny training run")
      return workdir
    return self.once("finished", make)

  def copy_of_finished(self, name) -> str:
    """A copy of the finished run at $TMP/name."""
    dest = self.path(name)
    shutil.copytree(self.finished_run(), dest)
    return dest

  def index_workdir(self) -> str:
    """An index build of the finished run (launch.py configs/index.py)."""
    def make():
      workdir = self.path("index")
      _check_setup(run(self, [
          sys.executable, "launch.py", "--config", "configs/index.py",
          f"--config.checkpoint={self.finished_run()}", "--workdir",
          workdir]), "the index build")
      return workdir
    return self.once("index", make)

  def ucmerced(self) -> str:
    """A fake UC Merced folder: 21 classes x 10 random 32 px PNGs."""
    def make():
      root = self.path("ucm_raw")
      write_ucmerced(root)
      return root
    return self.once("ucm", make)


class SetupError(RuntimeError):
  """Generated input that could not be made: the case cannot be judged."""


def _check_setup(seen, what):
  if seen.rc != 0:
    raise SetupError(f"{what} failed (exit {seen.rc}): "
                     f"{_tail(seen.stderr or seen.stdout, 3)}")


def _env(devices=1):
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def start(argv, devices=1) -> subprocess.Popen:
  """Starts argv from the repository root in its own process group."""
  return subprocess.Popen(argv, cwd=ROOT, env=_env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)


def finish(proc, argv, started, timeout) -> Seen:
  """Waits for `proc` at most `timeout` s (then kills its group: rc None)."""
  try:
    out, err = proc.communicate(timeout=max(1.0, timeout))
    rc = proc.returncode
  except subprocess.TimeoutExpired:
    kill(proc)
    out, err = proc.communicate()
    rc = None
  return Seen(argv, rc, out, err, time.monotonic() - started)


def kill(proc) -> None:
  """Kills `proc`'s process group with SIGKILL (kill -9)."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def run(ctx, argv, devices=1) -> Seen:
  """Runs argv to its end, bounded by ctx.timeout."""
  started = time.monotonic()
  return finish(start(argv, devices), argv, started, ctx.timeout)


def python(ctx, code) -> Seen:
  """Runs `python -c code` (a library call) to its end."""
  return run(ctx, [sys.executable, "-c", code])


def launch(ctx, workdir, *extra, config="configs/demo.py", tiny=True,
           devices=1) -> Seen:
  """Runs launch.py on `workdir` (with $TINY unless tiny=False)."""
  return run(ctx, launch_argv(ctx, workdir, *extra, config=config,
                              tiny=tiny), devices)


def launch_argv(ctx, workdir, *extra, config="configs/demo.py", tiny=True):
  """The argv of launch.py on `workdir`."""
  return [sys.executable, "launch.py", "--config", config, "--workdir",
          workdir, *(ctx.tiny() if tiny else []), *extra]


def prepare_argv(name, manual_dir, data_dir, *options):
  """The argv of the preparation CLI for dataset `name`."""
  return [sys.executable, "-m", "rs_jax.data.prepare_cli", "--config",
          f"configs/prepare.py:{name}", f"--config.data.manual_dir={manual_dir}",
          f"--config.data.data_dir={data_dir}", "--workers=1",
          *[f"--config.data.options.{o}" for o in options]]


def wait_until(predicate, proc, seconds) -> bool:
  """Polls predicate() every 0.1 s while proc runs, at most `seconds`."""
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    if predicate():
      return True
    if proc.poll() is not None:
      return predicate()
    time.sleep(0.1)
  return False


# --- what the user sees, and the verdicts ------------------------------------
def _tail(text, n):
  lines = [l for l in text.strip().splitlines() if l.strip()]
  return " / ".join(lines[-n:])


def message_lines(text) -> list:
  """The lines of `text` a person reads (progress bars left out)."""
  return [l for l in text.strip().splitlines()
          if l.strip() and not _PROGRESS.search(l)]


def shown(seen, n=2) -> str:
  """The last n lines the user saw (stderr, else stdout), for the table."""
  if seen.rc is None:
    return f"(nothing within {seen.seconds:.0f} s; killed)"
  lines = message_lines(seen.stderr) or message_lines(seen.stdout)
  text = " / ".join(lines[-n:]) or "(nothing)"
  return f"exit {seen.rc}: {text}"


def refused(seen, *names) -> tuple:
  """Verdict of a command that must refuse bad input, naming each of
  `names` (file, field, value) in a short message without a traceback."""
  if seen.rc is None:
    return "UNCLEAR", f"no answer within {seen.seconds:.0f} s"
  if seen.rc == 0:
    return "SILENT", "exit 0: the bad input was accepted"
  text = seen.stderr + seen.stdout
  if "Traceback" in text:
    return "UNCLEAR", "a traceback on the console"
  lines = message_lines(seen.stderr)
  if len(lines) > 3:
    return "UNCLEAR", f"{len(lines)} lines on stderr"
  missing = [n for n in names if n not in text]
  if missing:
    return "UNCLEAR", f"the message does not name {missing}"
  return "CLEAR", ""


def kept(seen, problems, *, rc=0) -> tuple:
  """Verdict of a fault that must be survived: OK when the command ended
  with exit status `rc` (None: any) and `problems` (what the state check
  found wrong) is empty; LOSS otherwise."""
  if seen.rc is None:
    return "LOSS", f"not done within {seen.seconds:.0f} s"
  if rc is not None and seen.rc != rc:
    return "LOSS", f"exit {seen.rc}"
  if problems:
    return "LOSS", "; ".join(problems)
  return "OK", ""


def read_json(path):
  """The JSON in `path`, or None when it is absent or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def display(ctx, argv) -> str:
  """argv as a shell command, with python, $TMP and $TINY abbreviated."""
  tiny = ctx.tiny() if "data" in ctx._made else TINY  # pylint: disable=protected-access
  argv = list(argv)
  if all(f in argv for f in TINY):
    argv = [a for a in argv if a not in tiny]
    argv.insert(argv.index("--workdir") + 2, "$TINY")
  text = shlex.join(["python" if a == sys.executable else a for a in argv])
  return text.replace(ctx.tmp, "$TMP").replace("'$TINY'", "$TINY")


def result(ctx, name, seen, verdict_note) -> Result:
  """The row of a case that ran one command."""
  verdict, note = verdict_note
  return Result(name, display(ctx, seen.argv),
                shown(seen).replace(ctx.tmp, "$TMP"), verdict,
                note.replace(ctx.tmp, "$TMP"))


# --- generated inputs ----------------------------------------------------------
def write_ucmerced(root, per_class=10):
  """UC Merced's layout: root/Images/<class>/<class>NN.png, random RGB."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from rs_jax.data import rgb_folders  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for c in rgb_folders.UCMERCED_CLASSES:
    os.makedirs(os.path.join(root, "Images", c))
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
          os.path.join(root, "Images", c, f"{c}{i:02d}.png"))


def bigearthnet(ctx, name, n=3, **kwargs):
  """A fake BigEarthNet v1 archive at $TMP/name; returns (root, written)."""
  from rs_jax.data.bigearthnet import fake  # pylint: disable=g-import-not-at-top
  root = ctx.path(name)
  return root, fake.write_v1(root, n, seed=0, **kwargs)


def s2_file(root, patch, suffix):
  """The file <S2 root>/<patch>/<patch>_<suffix> of a fake archive."""
  from rs_jax.data.bigearthnet import fake  # pylint: disable=g-import-not-at-top
  return os.path.join(root, fake.S2_ROOT_V1, patch, f"{patch}_{suffix}")


def s1_folder(root, patch):
  from rs_jax.data.bigearthnet import fake  # pylint: disable=g-import-not-at-top
  return os.path.join(root, fake.S1_ROOT_V1, patch)


def edit_json(path, **fields):
  """Sets `fields` in the JSON object in `path`."""
  with open(path) as f:
    obj = json.load(f)
  obj.update(fields)
  with open(path, "w") as f:
    json.dump(obj, f)


# --- cases: training and launch -------------------------------------------------
def launch_refusal(*extra, names, devices=1, tiny=True, config=None):
  """A case: launch.py with `extra` flags must be refused naming `names`."""
  def case(ctx, name):
    kwargs = {"config": config} if config else {}
    seen = launch(ctx, ctx.path(name), *extra, devices=devices, tiny=tiny,
                  **kwargs)
    return result(ctx, name, seen, refused(seen, *names))
  return case


def case_missing_manual_dir(ctx, name):
  missing = ctx.path("no_such_folder")
  seen = launch(ctx, ctx.path(name), f"--config.data.manual_dir={missing}",
                config="configs/anneal_ucm.py", tiny=False)
  return result(ctx, name, seen, refused(seen, missing))


def case_empty_manual_dir(ctx, name):
  empty = ctx.path("empty_folder")
  os.makedirs(empty)
  seen = launch(ctx, ctx.path(name), f"--config.data.manual_dir={empty}",
                config="configs/anneal_ucm.py", tiny=False)
  return result(ctx, name, seen, refused(seen, empty))


def case_two_runs_one_workdir(ctx, name):
  workdir = ctx.path(name)
  first = start(launch_argv(ctx, workdir, "--config.train.steps=100000"))
  try:
    wait_until(lambda: os.path.exists(os.path.join(workdir, "lock")), first,
               ctx.timeout)
    seen = launch(ctx, workdir, "--config.model.bits=24")
  finally:
    kill(first)
    first.communicate()
  saved = read_json(os.path.join(workdir, "config.json")) or {}
  problems = [] if saved.get("model", {}).get("bits") == 16 else [
      "config.json is not the first run's"]
  verdict = refused(seen, "locked", str(first.pid))
  if problems:
    verdict = ("LOSS", problems[0])
  elif verdict[0] == "CLEAR":
    verdict = ("OK", "refused naming the holder; the first run's config kept")
  return result(ctx, name, seen, verdict)


def _metrics_problems(workdir, want, keys=("train/final_step",
                                           "test/map@10")):
  got = read_json(os.path.join(workdir, "metrics.json")) or {}
  return [f"{k} {got.get(k)} != {want.get(k)}" for k in keys
          if got.get(k) != want.get(k)]


def _kill_then_resume(ctx, name, killed_when, *extra):
  """Starts the tiny run, kills it (-9) once killed_when(workdir) holds,
  reruns the same command; compares metrics with the uninterrupted run."""
  want = read_json(os.path.join(ctx.finished_run(), "metrics.json"))
  workdir = ctx.path(name)
  proc = start(launch_argv(ctx, workdir, *extra))
  hit = wait_until(lambda: killed_when(workdir), proc, ctx.timeout)
  kill(proc)
  proc.communicate()
  if not hit:
    raise SetupError("the run ended before the moment to kill it")
  seen = launch(ctx, workdir, *extra)
  return result(ctx, name, seen, kept(seen, _metrics_problems(workdir, want)))


def _steps_saved(workdir):
  folder = os.path.join(workdir, "checkpoints", "latest")
  try:
    return [int(n) for n in os.listdir(folder) if n.isdigit()]
  except OSError:
    return []


def _saving(workdir):
  """True while a checkpoint is being written (orbax's temporary folder)."""
  for sub in ("latest", "best"):
    try:
      names = os.listdir(os.path.join(workdir, "checkpoints", sub))
    except OSError:
      continue
    if any("tmp" in n for n in names):
      return True
  return False


def case_kill9_resume(ctx, name):
  return _kill_then_resume(ctx, name, lambda w: 3 in _steps_saved(w))


def case_kill_during_save(ctx, name):
  return _kill_then_resume(ctx, name, _saving,
                           "--config.train.checkpoint_every=1")


def case_rerun_finished(ctx, name):
  workdir = ctx.copy_of_finished(name)
  want = read_json(os.path.join(workdir, "metrics.json"))
  seen = launch(ctx, workdir)
  got = read_json(os.path.join(workdir, "metrics.json")) or {}
  problems = [f"metrics.json lost {k}" for k in want if k not in got]
  return result(ctx, name, seen, kept(seen, problems))


def case_steps_below_checkpoint(ctx, name):
  workdir = ctx.copy_of_finished(name)
  seen = launch(ctx, workdir, "--config.train.steps=3")
  got = read_json(os.path.join(workdir, "metrics.json")) or {}
  saved = read_json(os.path.join(workdir, "config.json")) or {}
  problems = []
  if got.get("train/final_step") != 6:
    problems.append(f"metrics.json says final_step "
                    f"{got.get('train/final_step')} of a 6-step model")
  if saved.get("train", {}).get("steps") == 3 and seen.rc == 0:
    problems.append("config.json says 3 steps over a 6-step model")
  if seen.rc not in (0, None):
    verdict = refused(seen, "train.steps")
    return result(ctx, name, seen, ("LOSS", problems[0]) if problems
                  else verdict)
  return result(ctx, name, seen, kept(seen, problems))


def case_changed_model_on_resume(ctx, name):
  workdir = ctx.copy_of_finished(name)
  before = open(os.path.join(workdir, "config.json")).read()
  seen = launch(ctx, workdir, "--config.model.bits=24")
  after = open(os.path.join(workdir, "config.json")).read()
  verdict = refused(seen, "model.bits")
  if after != before:
    verdict = ("LOSS", "config.json was replaced")
  return result(ctx, name, seen, verdict)


def case_corrupt_config_json(ctx, name):
  workdir = ctx.copy_of_finished(name)
  path = os.path.join(workdir, "config.json")
  with open(path, "w") as f:
    f.write('{"task": "train", "model": {"bits": 1')
  seen = launch(ctx, workdir)
  return result(ctx, name, seen, refused(seen, "config.json"))


def _largest_file(folder):
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
  return max(files, key=os.path.getsize)


def case_truncated_checkpoint(ctx, name):
  workdir = ctx.copy_of_finished(name)
  for sub in ("latest", "best"):
    victim = _largest_file(os.path.join(workdir, "checkpoints", sub))
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 2)
  seen = launch(ctx, workdir, "--config.train.steps=9")
  return result(ctx, name, seen, refused(seen, "checkpoint"))


def case_reader_races_saver(ctx, name):
  workdir = ctx.path(name)
  extra = ["--config.train.steps=30", "--config.train.checkpoint_every=1",
           "--config.eval.every=10"]
  trainer = start(launch_argv(ctx, workdir, *extra))
  reader_code = (
      "import os, time, sys\nfrom rs_jax import trained\nreads = 0\n"
      f"w = {workdir!r}\nwhile os.path.exists(os.path.join(w, 'lock')) or "
      "reads == 0:\n  if os.path.isdir(os.path.join(w, 'checkpoints', "
      "'best')):\n    try:\n      trained.load_trained(w); reads += 1\n"
      "    except Exception:\n      pass\n  time.sleep(0.2)\n"
      "  if not os.path.exists(os.path.join(w, 'lock')) and reads: break\n"
      "print('reads', reads)")
  started = time.monotonic()
  wait_until(lambda: os.path.exists(os.path.join(workdir, "lock")), trainer,
             ctx.timeout)
  reader = start([sys.executable, "-c", reader_code])
  seen = finish(trainer, trainer.args, started, ctx.timeout)
  read = finish(reader, reader.args, time.monotonic(), 60)
  got = read_json(os.path.join(workdir, "metrics.json")) or {}
  problems = [] if got.get("train/final_step") == 30 else [
      "the trainer did not finish its 30 steps"]
  if "reads 0" in read.stdout or read.rc != 0:
    problems.append(f"the reader did not read (exit {read.rc}: "
                    f"{_tail(read.stderr or read.stdout, 1)})")
  return result(ctx, name, seen, kept(seen, problems))


def case_full_disk(ctx, name):
  full = ctx.path("full_disk")
  os.makedirs(full)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs",
                            full], capture_output=True, text=True)
  if mounted.returncode != 0:
    raise SetupError(f"cannot make a full disk here (mount tmpfs: "
                     f"{mounted.stderr.strip()})")
  try:
    seen = launch(ctx, os.path.join(full, "run"))
  finally:
    subprocess.run(["umount", "-l", full], capture_output=True)
  return result(ctx, name, seen, refused(seen, "no space left"))


# --- cases: index build and search ---------------------------------------------
def index_argv(*args):
  return [sys.executable, "-m", "rs_jax.index_cli", *args]


def case_index_of_index_workdir(ctx, name):
  seen = launch(ctx, ctx.path(name),
                f"--config.checkpoint={ctx.index_workdir()}", tiny=False,
                config="configs/index.py")
  return result(ctx, name, seen, refused(seen, ctx.index_workdir()))


def case_index_of_anneal_workdir(ctx, name):
  anneal_dir, _ = anneal_waiting(ctx)
  seen = launch(ctx, ctx.path(name), f"--config.checkpoint={anneal_dir}",
                tiny=False, config="configs/index.py")
  return result(ctx, name, seen, refused(seen, anneal_dir))


def case_index_missing_checkpoint(ctx, name):
  missing = ctx.path("no_such_run")
  seen = launch(ctx, ctx.path(name), f"--config.checkpoint={missing}",
                tiny=False, config="configs/index.py")
  return result(ctx, name, seen, refused(seen, missing))


def _index_file(ctx):
  files = [f for f in os.listdir(ctx.index_workdir()) if f.endswith(".rsidx")]
  return os.path.join(ctx.index_workdir(), files[0])


def case_search_wrong_bands(ctx, name):
  import numpy as np  # pylint: disable=g-import-not-at-top
  query = ctx.path("query_3_bands.npy")
  np.save(query, np.zeros((16, 16, 3), np.float32))
  seen = run(ctx, index_argv("search", "--index", _index_file(ctx),
                             "--image", query))
  return result(ctx, name, seen, refused(seen, "query_3_bands.npy"))


def case_search_unknown_id(ctx, name):
  seen = run(ctx, index_argv("search", "--index", _index_file(ctx),
                             "--ids", "99999"))
  return result(ctx, name, seen, refused(seen, "99999"))


def case_search_truncated_index(ctx, name):
  damaged = ctx.path("truncated.rsidx")
  shutil.copy(_index_file(ctx), damaged)
  with open(damaged, "r+b") as f:
    f.truncate(os.path.getsize(damaged) // 2)
  seen = run(ctx, index_argv("search", "--index", damaged, "--ids", "0"))
  return result(ctx, name, seen, refused(seen, "truncated.rsidx"))


# --- cases: ANNEAL -------------------------------------------------------------
def anneal_argv(ctx, workdir, *extra):
  return launch_argv(ctx, workdir, f"--config.data.manual_dir="
                     f"{ctx.ucmerced()}", *ANNEAL, *extra,
                     config="configs/anneal_ucm.py", tiny=False)


def anneal_waiting(ctx) -> tuple:
  """(workdir, Seen) of ANNEAL with the file oracle, run once: it stops
  waiting for the answers of round 1. Cases copy the workdir."""
  def make():
    workdir = ctx.path("anneal_waiting")
    return workdir, run(ctx, anneal_argv(ctx, workdir,
                                         "--config.al.oracle=file"))
  return ctx.once("anneal_waiting", make)


def query_csv(workdir) -> str:
  return os.path.join(workdir, "queries", "query_round001.csv")


def copy_of_waiting(ctx, name) -> str:
  """A copy of the waiting ANNEAL workdir at $TMP/name."""
  source, _ = anneal_waiting(ctx)
  if not os.path.exists(query_csv(source)):
    raise SetupError("ANNEAL with the file oracle wrote no query CSV")
  shutil.copytree(source, ctx.path(name))
  return ctx.path(name)


def case_anneal_file_oracle_waits(ctx, name):
  workdir, seen = anneal_waiting(ctx)
  csv = query_csv(workdir)
  if seen.rc is None:
    return result(ctx, name, seen, ("UNCLEAR", "no answer in time"))
  missing = [n for n in (csv, "similar") if n not in seen.stdout + seen.stderr]
  verdict = ("CLEAR", "") if not missing and os.path.exists(csv) else (
      "UNCLEAR", f"the stop does not name {missing or [csv]}")
  return result(ctx, name, seen, verdict)


def _fill(csv_path, answer):
  """Fills the 'similar' column of a query CSV with answer(line number)."""
  import csv  # pylint: disable=g-import-not-at-top
  with open(csv_path, newline="") as f:
    rows = list(csv.reader(f))
  for n, row in enumerate(rows[1:], start=2):
    row[5] = answer(n)
  with open(csv_path, "w", newline="") as f:
    csv.writer(f).writerows(rows)


def case_anneal_bad_answer(ctx, name):
  workdir = copy_of_waiting(ctx, name)
  csv = query_csv(workdir)
  _fill(csv, lambda n: "yes" if n == 4 else "1")
  seen = run(ctx, anneal_argv(ctx, workdir, "--config.al.oracle=file"))
  return result(ctx, name, seen, refused(seen, csv, "line 4"))


def _labelled(workdir):
  """The (pair, similar) labels in ANNEAL's state file, as a set."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  with np.load(os.path.join(workdir, "al_state.npz")) as z:
    return {(min(int(i), int(j)), max(int(i), int(j)), bool(s))
            for (i, j), s in zip(z["pairs"], z["similar"])}


def _answers(csv_path):
  """The (pair, similar) answers of a filled query CSV, as a set."""
  import csv  # pylint: disable=g-import-not-at-top
  with open(csv_path, newline="") as f:
    rows = list(csv.reader(f))[1:]
  return {(min(int(r[1]), int(r[2])), max(int(r[1]), int(r[2])),
           r[5].strip() == "1") for r in rows if r}


def case_anneal_answers_kept(ctx, name):
  workdir = copy_of_waiting(ctx, name)
  _fill(query_csv(workdir), lambda n: str(n % 2))
  before = _labelled(workdir)
  seen = run(ctx, anneal_argv(ctx, workdir, "--config.al.oracle=file"))
  curve = read_json(os.path.join(workdir, "al_curve.json")) or []
  after = _labelled(workdir)
  problems = []
  if not before <= after:
    problems.append(f"{len(before - after)} labels lost")
  answers = _answers(query_csv(workdir))
  if not answers <= after:
    problems.append(f"{len(answers - after)} of {len(answers)} answers not "
                    "in the state")
  if [r["round"] for r in curve] != [0, 1]:
    problems.append(f"curve rounds {[r['round'] for r in curve]}, expected "
                    "[0, 1]")
  return result(ctx, name, seen, kept(seen, problems))


def case_anneal_kill9_resume(ctx, name):
  workdir = ctx.path(name)
  argv = anneal_argv(ctx, workdir)
  proc = start(argv)
  curve = os.path.join(workdir, "al_curve.json")
  hit = wait_until(lambda: len(read_json(curve) or []) >= 2, proc,
                   ctx.timeout)
  kill(proc)
  proc.communicate()
  if not hit:
    raise SetupError("ANNEAL ended before round 1 was recorded")
  before = _labelled(workdir)
  seen = run(ctx, argv)
  rounds = [r["round"] for r in read_json(curve) or []]
  after = _labelled(workdir)
  problems = [f"{len(before - after)} labels lost"] if not before <= after \
      else []
  if rounds != [0, 1, 2]:
    problems.append(f"curve rounds {rounds}, expected [0, 1, 2]")
  return result(ctx, name, seen, kept(seen, problems))


# --- cases: data preparation ----------------------------------------------------
def prepare_refusal(damage, names, *options, config="bigearthnet/mm"):
  """A case: damage(root, written) -> the file to be named; preparing the
  damaged fake archive must stop naming it (and `names`)."""
  def case(ctx, name):
    root, written = bigearthnet(ctx, name + "_raw")
    named = damage(root, written)
    seen = run(ctx, prepare_argv(config, root, ctx.path(name), *options))
    return result(ctx, name, seen, refused(seen, named, *names))
  return case


def _truncate_tif(root, w):
  path = s2_file(root, w[0]["s2_name"], "B03.tif")
  with open(path, "r+b") as f:
    f.truncate(100)
  return path


def _wrong_shape(root, w):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tifffile  # pylint: disable=g-import-not-at-top
  tifffile.imwrite(s2_file(root, w[1]["s2_name"], "B05.tif"),
                   np.zeros((61, 60), np.uint16))
  return os.path.join(os.path.dirname(s2_file(root, w[1]["s2_name"], "x")))


def _nan_s1(root, w):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tifffile  # pylint: disable=g-import-not-at-top
  folder = s1_folder(root, w[0]["s1_name"])
  tifffile.imwrite(os.path.join(folder, f"{w[0]['s1_name']}_VV.tif"),
                   np.full((120, 120), np.nan, np.float32))
  return folder


def _missing_json(root, w):
  path = s2_file(root, w[2]["s2_name"], "labels_metadata.json")
  os.remove(path)
  return path


def _s2_partner_gone(root, w):
  shutil.rmtree(os.path.dirname(s2_file(root, w[1]["s2_name"], "x")))
  return w[1]["s2_name"]


def _s1_partner_gone(root, w):
  shutil.rmtree(s1_folder(root, w[1]["s1_name"]))
  return w[1]["s2_name"]


def _labels(value):
  def damage(root, w):
    path = s2_file(root, w[0]["s2_name"], "labels_metadata.json")
    edit_json(path, labels=value)
    return path
  return damage


def _garbled_json(root, w):
  path = s2_file(root, w[0]["s2_name"], "labels_metadata.json")
  with open(path, "w") as f:
    f.write('{"labels": ["Pastures"')
  return path


def _missing_split_csv(root, w):
  del w
  return os.path.join(root, "no_such_split.csv")


def case_s1_partner_gone_skip(ctx, name):
  """skip_invalid: the S2 patch without S1 is skipped, counted, listed."""
  root, written = bigearthnet(ctx, name + "_raw")
  s2 = _s1_partner_gone(root, written)
  seen = run(ctx, prepare_argv("bigearthnet/mm", root, ctx.path(name),
                               "skip_invalid=True"))
  return result(ctx, name, seen, kept(seen, _skipped_problems(
      ctx.path(name), "mm", s2)))


def _skipped_problems(data_dir, config, patch):
  """What is wrong with a skip_invalid preparation that should have skipped
  exactly `patch`, listing it in skipped.txt."""
  base = os.path.join(data_dir, "rs_bigearthnet", config)
  versions = os.listdir(base) if os.path.isdir(base) else []
  if not versions:
    return ["nothing prepared"]
  folder = os.path.join(base, versions[0])
  counts = (read_json(os.path.join(folder, "metadata.json")) or {}).get(
      "counts", {})
  try:
    with open(os.path.join(folder, "skipped.txt")) as f:
      skipped = f.read()
  except OSError:
    skipped = ""
  problems = [] if patch in skipped else [
      f"skipped.txt does not list {patch}"]
  if counts.get("skipped") != 1:
    problems.append(f"counts {counts}, expected 1 skipped")
  return problems


def case_first_patch_bad_skip(ctx, name):
  """One bad first patch folder must not hide the archive (find_root)."""
  root, written = bigearthnet(ctx, name + "_raw", modalities=("s2",))
  first = sorted(w["s2_name"] for w in written)[0]
  os.remove(s2_file(root, first, "B02.tif"))
  seen = run(ctx, prepare_argv("bigearthnet/s2", root, ctx.path(name),
                               "skip_invalid=True"))
  return result(ctx, name, seen, kept(seen, _skipped_problems(
      ctx.path(name), "s2", first)))


def case_exclude_csvs_empty(ctx, name):
  root, _ = bigearthnet(ctx, name + "_raw")
  seen = run(ctx, prepare_argv("bigearthnet/mm", root, ctx.path(name),
                               "exclude_csvs="))
  return result(ctx, name, seen, kept(seen, [] if "3 examples" in
                                      seen.stdout else ["not 3 examples"]))


def case_unknown_dataset(ctx, name):
  seen = launch(ctx, ctx.path(name), "--config.data.name=no_such_dataset")
  return result(ctx, name, seen, refused(seen, "no_such_dataset"))


def case_ucm_corrupt_image(ctx, name):
  root = ctx.path(name + "_raw")
  write_ucmerced(root, per_class=2)
  bad = os.path.join(root, "Images", "forest", "forest01.png")
  with open(bad, "r+b") as f:
    f.truncate(40)
  seen = run(ctx, prepare_argv("ucmerced", root, ctx.path(name)))
  return result(ctx, name, seen, refused(seen, bad))


def case_ucm_stray_file(ctx, name):
  root = ctx.path(name + "_raw")
  write_ucmerced(root, per_class=2)
  stray = os.path.join(root, "Images", "beach", "notes.txt")
  with open(stray, "w") as f:
    f.write("not an image")
  seen = run(ctx, prepare_argv("ucmerced", root, ctx.path(name)))
  return result(ctx, name, seen, refused(seen, stray))


def case_prepare_unknown_option(ctx, name):
  root = ctx.path(name + "_raw")
  os.makedirs(root)
  seen = run(ctx, prepare_argv("ucmerced", root, ctx.path(name),
                               "resolution=2"))
  return result(ctx, name, seen, refused(seen, "resolution"))


def case_prepare_config_typo(ctx, name):
  seen = run(ctx, prepare_argv("ucmerced", ctx.ucmerced(), ctx.path(name)) +
             ["--config.data.optoins.splits=anneal"])
  return result(ctx, name, seen, refused(seen, "optoins"))


def case_reprepare_other_options(ctx, name):
  seen = python(ctx, (
      "from rs_jax import data\nfrom rs_jax import console\n"
      "import sys\ntry:\n"
      f"  data.prepare('synthetic', None, {ctx.data_dir()!r}, "
      f"**{dict(DATA_OPTIONS, num_examples=200)!r})\n"
      "except ValueError as e:\n  sys.exit(f'error: {e}')\n"))
  return result(ctx, name, seen, refused(seen, "num_examples"))


CASES = {
    # launch.py: config values and typos (issue 15: 9-11, 14)
    "bits_zero": launch_refusal("--config.model.bits=0", names=["model.bits"]),
    "bits_negative": launch_refusal("--config.model.bits=-4",
                                    names=["model.bits"]),
    "batch_size_zero": launch_refusal("--config.train.batch_size=0",
                                      names=["train.batch_size"]),
    "batch_size_not_device_multiple": launch_refusal(
        "--config.train.batch_size=15", names=["train.batch_size"], devices=2),
    "config_field_typo": launch_refusal("--config.train.stpes=10",
                                        names=["stpes"]),
    "config_file_missing": launch_refusal(
        names=["configs/no_such.py"], config="configs/no_such.py", tiny=False),
    "unknown_dataset": case_unknown_dataset,
    "missing_manual_dir": case_missing_manual_dir,
    "empty_manual_dir": case_empty_manual_dir,
    "full_disk": case_full_disk,
    # the workdir (issue 15: 1-4)
    "two_runs_one_workdir": case_two_runs_one_workdir,
    "changed_model_on_resume": case_changed_model_on_resume,
    "steps_below_checkpoint": case_steps_below_checkpoint,
    "rerun_finished_run": case_rerun_finished,
    "corrupt_config_json": case_corrupt_config_json,
    "truncated_checkpoint": case_truncated_checkpoint,
    "kill9_during_training_resume": case_kill9_resume,
    "kill9_during_save_resume": case_kill_during_save,
    "reader_races_saving_trainer": case_reader_races_saver,
    # index build and search (issue 15: 12)
    "index_of_index_workdir": case_index_of_index_workdir,
    "index_of_anneal_workdir": case_index_of_anneal_workdir,
    "index_missing_checkpoint": case_index_missing_checkpoint,
    "search_wrong_band_count_npy": case_search_wrong_bands,
    "search_unknown_id": case_search_unknown_id,
    "search_truncated_index": case_search_truncated_index,
    # ANNEAL (issue 15: 7)
    "anneal_file_oracle_waits": case_anneal_file_oracle_waits,
    "anneal_bad_answer": case_anneal_bad_answer,
    "anneal_answers_kept": case_anneal_answers_kept,
    "anneal_kill9_resume": case_anneal_kill9_resume,
    # preparation (issue 15: 5, 6, 8, exclude_csvs)
    "ben_truncated_tif": prepare_refusal(_truncate_tif, ["unreadable"]),
    "ben_wrong_band_shape": prepare_refusal(_wrong_shape, ["(61, 60)"]),
    "ben_nan_s1": prepare_refusal(_nan_s1, ["NaN"]),
    "ben_missing_labels_json": prepare_refusal(_missing_json, ["missing"]),
    "ben_garbled_labels_json": prepare_refusal(_garbled_json, ["unreadable"]),
    "ben_unknown_label": prepare_refusal(_labels(["Pastures", "Moon craters"]),
                                         ["Moon craters"]),
    "ben_labels_empty_list": prepare_refusal(_labels([]), ["empty"]),
    "ben_labels_a_string": prepare_refusal(_labels("Forest"), ["'Forest'"]),
    "ben_s2_partner_missing": prepare_refusal(_s2_partner_gone, ["S2 partner"]),
    "ben_s1_partner_missing": prepare_refusal(_s1_partner_gone, ["S1"]),
    "ben_s1_partner_missing_skip": case_s1_partner_gone_skip,
    "ben_first_patch_bad_skip": case_first_patch_bad_skip,
    "ben_missing_split_csv": prepare_refusal(
        _missing_split_csv, [], "split_csvs=train=no_such_split.csv"),
    "ben_exclude_csvs_empty": case_exclude_csvs_empty,
    "ucm_truncated_image": case_ucm_corrupt_image,
    "ucm_stray_file": case_ucm_stray_file,
    "prepare_unknown_option": case_prepare_unknown_option,
    "prepare_config_field_typo": case_prepare_config_typo,
    "reprepare_other_options": case_reprepare_other_options,
}
_NEEDS_INDEX_CLI = ("search_",)


def selected(words) -> list:
  """The case names that contain one of `words` (all when empty)."""
  return [n for n in CASES if not words or any(w in n for w in words)]


def run_case(ctx, name) -> Result:
  """Runs case `name`; a case that cannot be set up gets verdict SKIPPED."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if name.startswith(_NEEDS_INDEX_CLI) and importlib.util.find_spec(
      "rs_jax.index_cli") is None:
    return Result(name, "", "", "SKIPPED", "no index CLI on this branch")
  try:
    return CASES[name](ctx, name)
  except SetupError as e:
    return Result(name, "", "", "SKIPPED", str(e))


def run_cases(names, tmp, timeout, progress=print) -> list:
  """Runs the named cases in `tmp`; returns their Results."""
  ctx = Context(tmp, timeout)
  results = []
  for name in names:
    started = time.monotonic()
    r = run_case(ctx, name)
    progress(f"{name}: {r.verdict} ({time.monotonic() - started:.0f} s) "
             f"{r.note}".rstrip())
    results.append(r)
  return results


def _cell(text) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def markdown(results, commands, seconds) -> str:
  """The results table, verdict counts first."""
  counts = {v: sum(r.verdict == v for r in results)
            for v in VERDICTS + ("SKIPPED",)}
  rows = [[f"`{r.name}`", f"`{_cell(r.command)}`" if r.command else "",
           _cell(r.seen), r.verdict, _cell(r.note)] for r in results]
  doc = __doc__.split("\n\n", 2)[2].split("Commands run", 1)[0]
  runs = "; then, rows of the cases it names replaced: ".join(
      f"`{c}`" for c in commands)
  return "\n".join([
      "# Robustness: bad inputs and faults", "",
      f"{runs} ({len(results)} cases, {seconds / 60:.1f} min on this "
      "machine)", "",
      ", ".join(f"{v} {n}" for v, n in counts.items() if n), "",
      doc.strip(), "",
      "`$TMP` is the temporary directory; `$TINY` = `" + " ".join(TINY) +
      " --config.data.data_dir=$TMP/data`.", "",
      report.markdown_table(["case", "command", "what the user sees",
                             "verdict", "note"], rows)])


def merged(path, results, command, seconds) -> tuple:
  """(results, commands, seconds): the stored results at `path` with the
  rows of `results` replaced (in CASES order), and this command added."""
  old = report.read_json(path)
  rows = {r["name"]: Result(**r) for r in old["results"]}
  rows.update({r.name: r for r in results})
  return ([rows[n] for n in CASES if n in rows],
          old.get("commands", [old.get("command")]) + [command],
          old["seconds"] + seconds)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  words = [w for w in FLAGS.cases.split(",") if w]
  names = selected(words)
  if FLAGS.list:
    print("\n".join(names))
    return
  tmp = tempfile.mkdtemp(prefix="rs_jax_robustness_")
  started = time.monotonic()
  try:
    results = run_cases(names, tmp, FLAGS.timeout)
  finally:
    if not FLAGS.keep:
      shutil.rmtree(tmp, ignore_errors=True)
  seconds = time.monotonic() - started
  commands = [report.command("benchmarks.robustness")]
  if FLAGS.out:
    path = report.RESULTS / f"{FLAGS.out}.json"
    if FLAGS.merge and path.exists():
      results, commands, seconds = merged(path, results, commands[0], seconds)
    report.write_json(path, {
        "commands": commands, "seconds": seconds,
        "results": [dataclasses.asdict(r) for r in results]})
    report.write_markdown(report.RESULTS / f"{FLAGS.out}.md",
                          markdown(results, commands, seconds),
                          keep_notes=True)
  counts = {v: sum(r.verdict == v for r in results)
            for v in VERDICTS + ("SKIPPED",)}
  print(f"{len(results)} cases in {seconds / 60:.1f} min: " + ", ".join(
      f"{v} {n}" for v, n in counts.items() if n))


if __name__ == "__main__":
  define_flags()
  app.run(main)
