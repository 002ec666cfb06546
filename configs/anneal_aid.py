"""ANNEAL on AID (Hoxha, Sumbul et al., Sec. IV): as configs/anneal_ucm.py
with h = 392 pairs per round and an initial 1% of the training images.

python launch.py --config configs/anneal_aid.py --workdir workdirs/anneal_aid \
    --config.data.manual_dir=/path/to/AID --config.al.strategy=mgue

AID has 10,000 images (8,000 for training, 32 M pairs): U is a seeded
sample of al.pool_size pairs.
"""
from configs import anneal_ucm
from configs import raw_data


def get_config(arg=None):
  config = anneal_ucm.get_config(arg)
  config.data.name = "aid"
  config.data.manual_dir = raw_data.raw_dir("aid")  # or set it
  config.al.h = 392
  config.al.initial_fraction = 0.01  # 80 images x log2 30 = 393 bits
  config.al.pool_size = 2_000_000
  return config
