"""JAX's persistent compilation cache, for processes that start often (the
index command line, the server): a program compiled once is read back from
disk by the next process instead of compiled again; `exported` also skips
tracing and lowering a program in a one-shot process. JAX is imported on
first use, not by importing this module.
"""
import hashlib
import inspect
import os
import sys

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
  settings = {"jax_compilation_cache_dir": directory,
              "jax_persistent_cache_min_compile_time_secs": 0.0,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  if "jax" in sys.modules:
    for name, value in settings.items():
      sys.modules["jax"].config.update(name, value)
  else:  # read by the first `import jax`: a search in NumPy never imports it
    os.environ.update({k.upper(): str(v) for k, v in settings.items()})
  return directory


def _fingerprint(name, args, modules):
  import jax  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256(f"{name}|{jax.__version__}|{jax.default_backend()}"
                          .encode())
  for a in args:
    digest.update(f"|{a.shape}:{a.dtype}".encode())
  for module in modules:  # the code that traced the program
    with open(inspect.getfile(module), "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()[:32]


def exported(name, fn, *args, modules=()):
  """Returns `jax.jit(fn)(*args)`, traced at most once per cache directory.

  The program is kept as a `jax.export` artifact under the cache directory
  (enabled: `enable()`), keyed by `name` (which must fix every static
  argument of fn), the shapes and dtypes of args, the JAX version, the
  backend and the source files of `modules`; a later process reads it back
  instead of tracing and lowering fn (its compiled code then comes from the
  compilation cache). Without a cache directory it is a plain jit call.
  """
  import jax  # pylint: disable=g-import-not-at-top
  directory = jax.config.jax_compilation_cache_dir
  if not directory:
    return jax.jit(fn)(*args)
  path = os.path.join(directory, "exported",
                      _fingerprint(name, args, modules) + ".jaxexport")
  try:
    with open(path, "rb") as f:
      program = jax.export.deserialize(bytearray(f.read()))
  except (OSError, ValueError):
    program = jax.export.export(jax.jit(fn))(
        *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args))
    from rs_jax import paths  # pylint: disable=g-import-not-at-top
    paths.write_bytes(path, bytes(program.serialize()))
  return program.call(*args)
