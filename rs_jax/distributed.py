"""Joins a multi-process JAX job described by the environment.

A job is several processes when one of these is set:
  JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and JAX_PROCESS_ID;
    e.g. several processes on one machine, or hosts of a cluster);
  TPU_WORKER_HOSTNAMES with more than one host, or
    MEGASCALE_COORDINATOR_ADDRESS (a TPU pod slice);
  SLURM_NTASKS or OMPI_COMM_WORLD_SIZE > 1 (SLURM, Open MPI).
JAX reads the TPU, SLURM and Open MPI variables itself; the JAX_* trio is
passed on here. On CPU, cross-process collectives use gloo.
"""
import os

import jax

_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_TRIO = (_COORDINATOR, "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_SIZE_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def is_multiprocess(environ=os.environ) -> bool:
  """Returns whether the environment describes a job of several processes."""
  if environ.get(_COORDINATOR) or environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
    return True
  return any(int(environ.get(k) or 1) > 1 for k in _SIZE_ENV)


def initialize(environ=os.environ) -> None:
  """Calls `jax.distributed.initialize` when the job has several processes.

  Raises ValueError naming the variable when JAX_COORDINATOR_ADDRESS is set
  without JAX_NUM_PROCESSES / JAX_PROCESS_ID, or one is not an integer.
  """
  if not is_multiprocess(environ):
    return
  kwargs = {}
  if environ.get(_COORDINATOR):
    for name in _TRIO[1:]:
      value = environ.get(name, "")
      if not value.strip().isdigit():
        raise ValueError(f"{name}={value!r}: with {_COORDINATOR} set, "
                         f"{' and '.join(_TRIO[1:])} must be integers")
    kwargs = dict(coordinator_address=environ[_COORDINATOR],
                  num_processes=int(environ[_TRIO[1]]),
                  process_id=int(environ[_TRIO[2]]))
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
