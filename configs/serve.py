"""Archive search server over the indexes of a run (rs_jax.serving).

python launch.py --config configs/serve.py --workdir workdirs/serve \
    --config.index=workdirs/demo_index/index_s2.rsidx
serves the page and API on http://127.0.0.1:8000/ until interrupted; the
same as `python -m rs_jax.serve --index PATH`.
"""
import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.task = "serving.task"
  config.index = ""  # index files, comma-separated (one per modality)
  config.checkpoint = ""  # "" = the run the indexes record (image queries)
  config.host = "127.0.0.1"
  config.port = 8000
  config.k_max = 100  # largest k a query may ask for
  config.buckets = (1, 4, 16, 32, 64)  # query-batch sizes compiled at start-up
  config.max_wait_ms = 2.0  # longest wait to fill a batch
  config.max_upload_mb = 32
  return config
