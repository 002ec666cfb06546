"""Runs a `Service` over HTTP with uvicorn (one process, one event loop;
searches run in worker threads)."""
from absl import logging

from rs_jax.serving import app as app_lib
from rs_jax.serving import searcher
from rs_jax.serving import service as service_lib


def serve(index_paths, *, checkpoint=None, host="127.0.0.1", port=8000,
          k_max=100, buckets=searcher.BUCKETS, max_wait=0.002,
          max_upload=app_lib.MAX_UPLOAD):
  """Loads the indexes (and the run's encoders), compiles the searches and
  answers on host:port until interrupted."""
  import uvicorn  # pylint: disable=g-import-not-at-top
  service = service_lib.Service.load(
      index_paths, checkpoint, k_max=k_max, buckets=buckets,
      max_wait=max_wait)
  info = service.info()
  logging.warning(
      "serving %s on http://%s:%d/ (k <= %d, image queries: %s)",
      ", ".join(f"{m}: {i['num_codes']} codes of {i['num_bits']} bits"
                for m, i in info["indexes"].items()), host, port,
      info["k_max"], ", ".join(info["query_modalities"]) or "none")
  uvicorn.run(app_lib.create_app(service, max_upload=max_upload), host=host,
              port=port, log_level="warning", access_log=False)
