"""Entry point: python launch.py --config configs/NAME.py[:arg] --workdir DIR.

Any config field can be overridden: --config.model.bits=32. Unknown fields are
an error. The task module `rs_jax.<config.task>` (dotted: "train",
"active_learning.anneal", ...) runs with `run(config, workdir)`; a writing
task claims the workdir first (`rs_jax.workdir`: lock, config check, then
WORKDIR/config.json).

Several processes (a TPU pod slice, a SLURM or Open MPI job, or
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID): the same
command runs in every process (`rs_jax.distributed`); only process 0 writes
files.
"""
import importlib
import os
import sys
import tempfile

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rs_jax import console
from rs_jax import distributed
from rs_jax import paths

config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (get_config).", lock_config=True)
flags.DEFINE_string("workdir", None, "Logs, metrics and checkpoints go here.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def log_path(workdir) -> str:
  """WORKDIR/log.txt (log.N.txt for process N > 0); a local file in the
  temporary directory when the workdir is remote."""
  name = "log.txt" if jax.process_index() == 0 else f"log.{jax.process_index()}.txt"
  if paths.is_local(workdir):
    return os.path.join(workdir, name)
  return os.path.join(tempfile.gettempdir(),
                      f"rs_jax-{os.path.basename(workdir.rstrip('/'))}-{name}")


def load_config():
  """FLAGS.config; a config file that failed to load (ml_collections says
  so on first use) ends in one line naming the problem and exit 2."""
  try:
    config = FLAGS.config
    config.get("task")
  except Exception as e:  # pylint: disable=broad-except
    problem = str(e).strip().splitlines()[-1].strip()
    print(f"error: --config: {problem}", file=sys.stderr, flush=True)
    sys.exit(2)
  return config


def task_runner(task: str):
  """rs_jax.<task>.run; a task that names no task module ends in one line
  and exit 2."""
  module_name = f"rs_jax.{task}"
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if not module_name.startswith(str(e.name)):
      raise  # a missing dependency of the task, not the task itself
    module = None
  if not callable(getattr(module, "run", None)):
    print(f"error: --config.task={task!r}: {module_name} is not a task "
          "module with run(config, workdir)", file=sys.stderr, flush=True)
    sys.exit(2)
  return module.run


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    console.quiet()
  distributed.initialize()
  config, workdir = load_config(), FLAGS.workdir
  log = log_path(workdir)
  console.log_to(log)
  logging.info("process %d of %d, %d devices", jax.process_index(),
               jax.process_count(), jax.device_count())
  logging.info("task %s, workdir %s", config.task, workdir)
  with console.errors_in_one_line(log, verbose=FLAGS["verbosity"].present):
    task_runner(config.task)(config, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
