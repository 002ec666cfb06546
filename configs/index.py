"""Archive index of a trained run: every example of a prepared dataset
split encoded with the run's encoders, one index file per modality.

python launch.py --config configs/index.py \
    --config.checkpoint=workdirs/demo --workdir workdirs/demo_index
writes WORKDIR/index_<modality>.rsidx (`rs_jax.index_task`).
"""
import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.task = "index_task"
  config.checkpoint = ""  # the training workdir (required)
  config.modality = ""  # one of the run's encoders; "" = all of them
  config.batch_size = 256  # global; rounded up to a multiple of the devices
  config.data = ml_collections.ConfigDict()
  config.data.name = ""  # "" = the run's training dataset
  config.data.data_dir = ""  # "" = the run's prepared data
  config.data.split = "all"  # a split name, "all", or a TFDS slice
  return config
