"""Prepares a dataset from the user's files (nothing is downloaded).

An experiment's data section (prepares exactly what it trains on):
  python -m rs_jax.data.prepare_cli --config configs/s1s2_triplet.py \\
      --config.data.manual_dir=RAW --config.data.data_dir=OUT
A dataset by name, any preparation option as a config field:
  python -m rs_jax.data.prepare_cli --config configs/prepare.py:bigearthnet/mm \\
      --config.data.manual_dir=RAW --config.data.data_dir=OUT \\
      --config.data.options.splits=train=0.5,validation=0.25,test=0.25
--workers N local processes (default: every core); --beam runs on Apache
Beam with --beam_options (e.g. "--runner=DataflowRunner --project=P
--region=R --temp_location=gs://B/tmp"; empty: the DirectRunner).

The console shows TFDS's progress bars and a one-line summary, or one line
`error: MESSAGE` naming the file or option at fault (the traceback goes to
the log; --verbosity shows it on the console); INFO records
and TFDS's notices go to DATA_DIR/logs/prepare-<time>.log (a local
data_dir) or the temp dir (rs_jax.console); --verbosity=0 shows them too.
"""
import contextlib
import io
import os
import shlex
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rs_jax import console
from rs_jax import paths
import rs_jax.data
from rs_jax.data import base

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  config_flags.DEFINE_config_file(
      "config", None, "A config whose `data` section (name, manual_dir, "
      "data_dir, options) says what to prepare: an experiment's config, or "
      "configs/prepare.py:NAME.", lock_config=True)
  flags.DEFINE_integer("workers", os.cpu_count() or 1,
                       "Local worker processes.")
  flags.DEFINE_bool("beam", False, "Prepare on Apache Beam.")
  flags.DEFINE_string(
      "beam_options", "", "Beam pipeline options, e.g. '--runner=FlinkRunner "
      "--flink_master=HOST:8081 --environment_type=LOOPBACK'.")


FLAGS = flags.FLAGS


def _log_path(data_dir) -> str:
  """DATA_DIR/logs/prepare-<time>.log, or in the temp dir for a URL."""
  folder = (os.path.join(os.fspath(data_dir), "logs")
            if paths.is_local(data_dir) else tempfile.gettempdir())
  return os.path.join(folder, time.strftime("prepare-%Y%m%d-%H%M%S.log"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  data_config = FLAGS.config.data
  if not data_config.get("data_dir"):
    raise app.UsageError("set --config.data.data_dir")
  log_path = _log_path(data_config.data_dir)
  if not FLAGS["verbosity"].present:
    console.quiet()
  console.log_to(log_path)  # after quiet(): its filter is for the console
  beam = shlex.split(FLAGS.beam_options) if FLAGS.beam else None
  start = time.perf_counter()
  captured = io.StringIO()
  with console.errors_in_one_line(log_path,
                                  verbose=FLAGS["verbosity"].present):
    with contextlib.redirect_stdout(captured):  # TFDS's notices; bars stay
      builder = rs_jax.data.prepare_config(
          data_config, workers=FLAGS.workers, beam=beam)
  logging.info("%s", captured.getvalue().strip())
  seconds = time.perf_counter() - start
  counts = {s: v.num_examples for s, v in builder.info.splits.items()}
  meta = base.read_metadata(builder.data_path)
  total = sum(counts.values())
  logging.info("prepared %s in %s: %s, counts %s", data_config.name,
               builder.data_path, counts, meta["counts"])
  console.show(
      f"{data_config.name}: {total} examples {counts}, skipped "
      f"{meta['counts'].get('skipped', 0)}, {seconds:.1f} s "
      f"({total / max(seconds, 1e-9):.1f}/s) -> {builder.data_path} "
      f"(log: {log_path})")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
