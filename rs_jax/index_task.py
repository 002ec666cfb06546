"""launch.py task "index_task": WORKDIR/index_<modality>.rsidx for each
modality of a training run (`index_build.build_indexes`); config:
configs/index.py."""
import os

import jax

from rs_jax import index_build


def run(config, workdir):
  """Builds and saves the indexes; returns {modality: path}."""
  if not config.checkpoint:
    raise ValueError("config.checkpoint: name the training workdir")
  indexes = index_build.build_indexes(
      config.checkpoint, config.data.name or None,
      config.data.data_dir or None, config.data.split,
      modalities=[config.modality] if config.modality else None,
      batch_size=config.batch_size)
  paths = {}
  for m, index in indexes.items():
    paths[m] = os.path.join(workdir, f"index_{m}.rsidx")
    if jax.process_index() == 0:
      index.save(paths[m])
  return paths
