"""A run's workdir: one writer at a time, and a config that cannot drift.

`claim(config, workdir)` is what every writing task (training, ANNEAL,
index builds) enters first:
  1. it takes WORKDIR/lock, a file holding the holder's host and pid. A
     second run on the workdir is refused with the holder named; a lock left
     by a dead process on this host is taken over, with a warning.
  2. it compares the config with WORKDIR/config.json of an earlier run.
     Changes to fields that define the model, the data or the optimisation
     are refused, naming each field; `RESUMABLE` fields (more steps, logging
     and checkpoint intervals, eval settings, the raw archive's location) may
     change, and each change is appended to WORKDIR/config_changes.log.
  3. only then it writes config.json.
Readers (index search, `trained.load_trained`) take no lock. With several
processes only process 0 claims the workdir. The lock is created only if
absent (`paths.create_new`): O_EXCL locally, a create-only upload on object
stores (gs://), so two runs cannot both take it.
"""
import contextlib
import datetime
import json
import os
import socket
from typing import Iterator

import jax
from absl import logging

from rs_jax import paths

LOCK = "lock"
CONFIG = "config.json"
CHANGES = "config_changes.log"
# Dotted field prefixes a resumed run may change (al.rounds: more active
# learning rounds, the AL loop's "more steps"; data.manual_dir: where the raw
# archive lies, read only to prepare data_dir, so a moved archive resumes).
RESUMABLE = ("train.steps", "train.log_every", "train.checkpoint_every",
             "eval.", "al.rounds", "data.manual_dir")


class WorkdirError(ValueError):
  """A workdir that this run must not write (locked, or another config)."""


def _flatten(tree, prefix="") -> dict:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  if isinstance(tree, tuple):
    tree = list(tree)
  return {prefix[:-1]: tree}


def config_changes(saved: dict, config: dict) -> dict:
  """Returns {dotted field: (saved value, new value)} for fields that differ
  (absent fields are None)."""
  old, new = _flatten(saved), _flatten(json.loads(json.dumps(config)))
  return {k: (old.get(k), new.get(k)) for k in sorted({*old, *new})
          if old.get(k) != new.get(k)}


def check_resume(saved: dict, config: dict, where) -> dict:
  """Raises WorkdirError if a change is not `RESUMABLE`; returns the
  resumable changes."""
  changes = config_changes(saved, config)
  refused = [k for k in changes if not k.startswith(RESUMABLE)]
  if refused:
    shown = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}"
                      for k in refused[:6])
    more = f" (and {len(refused) - 6} more)" if len(refused) > 6 else ""
    raise WorkdirError(
        f"{where} holds a run with another config: {shown}{more}. Resume "
        f"with the same model, data and optimiser settings, or use a new "
        f"workdir.")
  return changes


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _holder() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid()}


def _take_lock(path) -> None:
  """Creates the lock file, or raises WorkdirError naming its holder."""
  me = _holder()
  for _ in range(2):
    try:
      paths.create_new(path, json.dumps(me))
      return
    except FileExistsError:
      _refuse_or_clear(path, me)
  raise WorkdirError(f"{path}: could not take the lock")


def _refuse_or_clear(path, me) -> None:
  try:
    holder = json.loads(path.read_text())
  except (FileNotFoundError, ValueError):
    holder = {}
  host, pid = holder.get("host"), holder.get("pid")
  if host == me["host"] and isinstance(pid, int) and not _alive(pid):
    logging.warning("%s: taking over the lock of process %d on %s, which "
                    "is no longer running", path, pid, host)
    with contextlib.suppress(FileNotFoundError):
      path.unlink()
    return
  raise WorkdirError(
      f"{path.parent} is locked by process {pid} on {host}: another run "
      f"is using this workdir. Wait for it, or use another --workdir "
      f"(delete {path} only if that process is gone).")


@contextlib.contextmanager
def claim(config, workdir, *, checks=()) -> Iterator[paths.Path]:
  """Locks `workdir`, checks and writes its config; yields the workdir.

  checks: functions f(workdir) run after the config comparison and before
  config.json is written; they raise to refuse the run.
  """
  workdir = paths.resolve(workdir)
  if jax.process_index() != 0:
    yield workdir
    return
  workdir.mkdir(parents=True, exist_ok=True)
  lock = workdir / LOCK
  _take_lock(lock)
  try:
    config_path = workdir / CONFIG
    new = json.loads(config.to_json_best_effort())
    if config_path.exists():
      try:
        saved = json.loads(config_path.read_text())
      except ValueError as e:
        raise WorkdirError(f"{config_path}: not JSON ({e})") from None
      changes = check_resume(saved, new, workdir)
      if changes:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")
        log = (workdir / CHANGES)
        old = log.read_text() if log.exists() else ""
        paths.write_text(log, old + "".join(
            f"{now} {k}: {a!r} -> {b!r}\n" for k, (a, b) in changes.items()))
        logging.warning("resuming with changed %s (recorded in %s)",
                        ", ".join(changes), log)
    for check in checks:
      check(workdir)
    paths.write_text(config_path, config.to_json_best_effort(indent=2))
    yield workdir
  finally:
    with contextlib.suppress(FileNotFoundError):
      lock.unlink()
