"""launch.py task "serving.task": serves the indexes of configs/serve.py
until interrupted (`server.serve`)."""
from rs_jax import compile_cache
from rs_jax.serving import server


def run(config, workdir):
  """Serves config.index (index files, comma-separated) on
  config.host:config.port."""
  del workdir
  paths = [p for p in str(config.index).split(",") if p]
  if not paths:
    raise ValueError("config.index: give one or more index files, "
                     "comma-separated")
  compile_cache.enable()
  server.serve(paths, checkpoint=config.checkpoint or None, host=config.host,
               port=config.port, k_max=config.k_max,
               buckets=tuple(config.buckets), max_wait=config.max_wait_ms / 1e3,
               max_upload=config.max_upload_mb << 20)
