"""Device mesh and the two shardings the project uses.

Every jitted step runs on a 1-D mesh over axis "data": parameters and
states are `replicated`, batches `batch_sharded` along their first axis.
On several processes the mesh spans all of them, and `to_global` assembles
each process's rows into one global array.
"""
import jax
import numpy as np

AXIS = "data"


def create_mesh(devices=None) -> jax.sharding.Mesh:
  """Returns the devices (default: all, of all processes) on one axis."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> jax.NamedSharding:
  """Returns the sharding that keeps a full copy on every device."""
  return jax.NamedSharding(mesh, jax.P())


def batch_sharded(mesh) -> jax.NamedSharding:
  """Returns the sharding that splits the leading (batch) axis."""
  return jax.NamedSharding(mesh, jax.P(AXIS))


def to_global(batch: dict, sharding, keys=None) -> dict:
  """Turns this process's rows into global arrays sharded by `sharding`.

  batch: {key: [B_local, ...]}; process p's rows become rows
  [p * B_local, (p + 1) * B_local) of the global [B_local * processes, ...]
  array. keys: the keys to convert (default all).
  """
  keys = batch.keys() if keys is None else [k for k in keys if k in batch]
  return {k: jax.make_array_from_process_local_data(sharding,
                                                    np.asarray(batch[k]))
          for k in keys}
