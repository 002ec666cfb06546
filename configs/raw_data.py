"""Where the raw archives are: one environment variable, no paths in configs.

RS_JAX_DATA names a folder holding the raw archives by name (ucmerced/,
aid/, bigearthnet-mm/, ...). Without it, set --config.data.manual_dir.
"""
import os


def raw_dir(name: str) -> str:
  """Returns $RS_JAX_DATA/NAME, or "" when RS_JAX_DATA is not set."""
  root = os.environ.get("RS_JAX_DATA", "")
  return os.path.join(root, name) if root else ""
