"""JAX's persistent compilation cache, for processes that start often (the
index command line, the server): a program compiled once is read back from
disk by the next process instead of compiled again.
"""
import os

import jax

ENV = "RS_JAX_COMPILATION_CACHE"  # the cache directory; "0" turns it off


def default_dir() -> str:
  """Returns $RS_JAX_COMPILATION_CACHE, else ~/.cache/rs_jax/jax."""
  return os.environ.get(ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "rs_jax", "jax")


def enable(directory=None) -> str | None:
  """Caches every compiled program (however quick to compile) in
  `directory` (default `default_dir()`); JAX_COMPILATION_CACHE_DIR, when
  set, wins. Returns the directory, or None when turned off."""
  directory = (os.environ.get("JAX_COMPILATION_CACHE_DIR") or directory or
               default_dir())
  if directory == "0":
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
