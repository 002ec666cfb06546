"""Every module of rs_jax/ and benchmarks/ imports in one process, as pytest
imports them: command-line flags are defined only by the program that runs
(`define_flags()` under `__main__`), so no two modules' flags collide."""
import importlib
import pkgutil

from absl import flags

import benchmarks
import rs_jax


def test_all_modules_import_together_without_defining_flags():
  names = [m.name for package in (rs_jax, benchmarks)
           for m in pkgutil.walk_packages(package.__path__,
                                          package.__name__ + ".")]
  assert len(names) > 50, names
  for name in names:
    importlib.import_module(name)
  defined = {module: [f.name for f in module_flags] for module, module_flags
             in flags.FLAGS.flags_by_module_dict().items()
             if module.startswith(("rs_jax", "benchmarks"))}
  assert not defined
