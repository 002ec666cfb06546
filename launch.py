"""Entry point: python launch.py --config configs/NAME.py[:arg] --workdir DIR.

Any config field can be overridden: --config.model.bits=32. Unknown fields are
an error. The resolved config is saved as WORKDIR/config.json and the task
module `rs_jax.<config.task>` runs with `run(config, workdir)`.
"""
import importlib
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (get_config).", lock_config=True)
flags.DEFINE_string("workdir", None, "Logs, metrics and checkpoints go here.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config, workdir = FLAGS.config, FLAGS.workdir
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  logging.info("task %s, workdir %s", config.task, workdir)
  importlib.import_module(f"rs_jax.{config.task}").run(config, workdir)


if __name__ == "__main__":
  app.run(main)
