"""The real data the tests read in place: `shared/data` beside the checkout
(see its README), or the folder named by $RS_JAX_DATA. On a machine without
it, `real` skips the test and says where it looked."""
import os

import pytest

ROOT = os.environ.get("RS_JAX_DATA") or os.path.normpath(os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data"))


def real(name: str) -> str:
  """Returns ROOT/name; skips the calling test when that folder is absent."""
  path = os.path.join(ROOT, name)
  if not os.path.isdir(path):
    pytest.skip(f"{path} is absent (the real data; set RS_JAX_DATA)")
  return path
