"""Command line of the search server (rs_jax.serving):

  python -m rs_jax.serve --index PATH [--index PATH2 ...] [--host 127.0.0.1]
      [--port 8000] [--checkpoint TRAIN_WORKDIR] [--k_max 100]

serves the page on http://HOST:PORT/ and the JSON API under /api/ until
interrupted. Programs compiled at start-up are kept in the persistent
compilation cache (`compile_cache`).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging

from rs_jax import compile_cache
from rs_jax.serving import app as app_lib
from rs_jax.serving import searcher
from rs_jax.serving import server

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_multi_string("index", None, "Index file; repeat for the other "
                            "modalities of the same run.")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
  flags.DEFINE_integer("port", 8000, "Port to listen on.")
  flags.DEFINE_string("checkpoint", None, "Training workdir whose encoders "
                      "answer image queries (default: the indexes' run).")
  flags.DEFINE_integer("k_max", 100, "Largest k a query may ask for.")
  flags.DEFINE_list("buckets", [str(b) for b in searcher.BUCKETS],
                    "Query-batch sizes compiled at start-up.")
  flags.DEFINE_float("max_wait_ms", 2.0, "Longest wait to fill a batch.")
  flags.DEFINE_integer("max_upload_mb", app_lib.MAX_UPLOAD >> 20,
                       "Largest upload accepted.")
  flags.mark_flag_as_required("index")


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # library INFO records stay quiet
    logging.set_verbosity(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  compile_cache.enable()
  try:
    server.serve(FLAGS.index, checkpoint=FLAGS.checkpoint, host=FLAGS.host,
                 port=FLAGS.port, k_max=FLAGS.k_max,
                 buckets=tuple(int(b) for b in FLAGS.buckets),
                 max_wait=FLAGS.max_wait_ms / 1e3,
                 max_upload=FLAGS.max_upload_mb << 20)
  except (ValueError, KeyError, TypeError, OSError) as e:
    sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
