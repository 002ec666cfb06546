"""Retrieval demo on a generated archive of binary codes (no data needed).

python launch.py --config configs/demo.py --workdir workdirs/demo
"""
import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.task = "demo"
  config.seed = 0
  # Archive: each class has a random prototype code; items flip its bits.
  config.data = ml_collections.ConfigDict(dict(
      num_items=50_000, num_classes=21, flip_prob=0.25))
  config.model = ml_collections.ConfigDict(dict(bits=64))
  # Queries are the first items of the archive, themselves excluded.
  config.eval = ml_collections.ConfigDict(dict(
      num_queries=1000, ks=(5, 20, 50)))
  return config
