"""Preparation of one dataset by name, with every preparation option of its
builder as a config field (default values; lists as "a,b", None as unset).

python -m rs_jax.data.prepare_cli --config configs/prepare.py:bigearthnet/mm \
    --config.data.manual_dir=/data/BigEarthNet --config.data.data_dir=/data/rs \
    --config.data.options.exclude_csvs=patches_with_seasonal_snow.csv

An experiment's own data section is prepared with --config configs/X.py.
"""
import ml_collections
from ml_collections import config_dict

import rs_jax.data
from rs_jax.data import base


def _field(value):
  if value is None:
    return config_dict.placeholder(str)
  if isinstance(value, (list, tuple)):
    return ",".join(map(str, value))
  if isinstance(value, dict):
    return ml_collections.ConfigDict(value) if value else ""
  return value


def get_config(name=None):
  if not name:
    raise ValueError("configs/prepare.py needs the dataset name: "
                     f"configs/prepare.py:NAME, NAME in {sorted(rs_jax.data.DATASETS)}")
  builder_cls, _ = rs_jax.data.builder_class(name)
  defaults = {**base.BASE_OPTIONS, **builder_cls.DEFAULT_OPTIONS}
  config = ml_collections.ConfigDict()
  config.data = ml_collections.ConfigDict()
  config.data.name = name
  config.data.manual_dir = ""
  config.data.data_dir = ""
  config.data.options = ml_collections.ConfigDict(
      {k: _field(v) for k, v in defaults.items()})
  return config
