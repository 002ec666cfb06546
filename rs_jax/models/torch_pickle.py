"""Read a `torch.save` file (a state dict) into NumPy arrays without torch.

`read_torch_pickle(path)` handles both formats torch writes: the zip archive
of torch >= 1.6 (`<dir>/data.pkl` + one `<dir>/data/<key>` per storage) and
the legacy stream of torch < 1.6 (magic number, protocol, system info,
pickle, storage keys, raw storages). Tensors come back as C-contiguous NumPy
arrays of their dtype (float32/64/16, bfloat16 via ml_dtypes, int8..64,
uint8, bool), honouring strides and storage offsets. Only the globals a
state dict needs are resolved (OrderedDict, the tensor / parameter rebuild
functions, storage types): anything else, which could run code, is an
error naming it.
"""
import collections
import os
import pickle
import zipfile
from typing import Any, BinaryIO, Mapping

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class _Tensor:
  """A tensor view into a storage that may not be read yet."""

  def __init__(self, storage_key, offset, size, stride):
    self.storage_key, self.offset = storage_key, offset
    self.size, self.stride = tuple(size), tuple(stride)

  def materialize(self, storages: Mapping[str, np.ndarray], path: str):
    data = storages[self.storage_key]
    extent = 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if 0 not in self.size and self.offset + extent > data.size:
      raise ValueError(f"{path}: tensor of size {self.size}, stride "
                       f"{self.stride}, offset {self.offset} exceeds its "
                       f"storage of {data.size} elements")
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], self.size,
        [s * data.itemsize for s in self.stride], writeable=False)
    return np.array(view, order="C")  # own, C-contiguous copy


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a torch.save stream; tensors become `_Tensor` placeholders.

  Only the globals a state dict needs are resolved; anything else (which
  could run code) is an error naming it.
  """

  def __init__(self, file, path):
    super().__init__(file)
    self.path = path
    self.storages = {}  # key -> (dtype, numel)

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict  # has a __dict__ for `_metadata`
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return lambda storage, offset, size, stride, *_: _Tensor(
          storage, offset, size, stride)
    if module == "torch._utils" and name == "_rebuild_parameter":
      return lambda data, *_: data
    if module == "torch" and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]
    raise pickle.UnpicklingError(
        f"{self.path}: unsupported global {module}.{name} in torch pickle")

  def persistent_load(self, pid):
    if pid[0] != "storage" or len(pid) < 5:
      raise pickle.UnpicklingError(f"{self.path}: unknown persistent id {pid}")
    _, dtype, key, _, numel = pid[:5]
    if len(pid) > 5 and pid[5] is not None:
      raise pickle.UnpicklingError(f"{self.path}: storage views unsupported")
    self.storages[str(key)] = (np.dtype(dtype), int(numel))
    return str(key)


def _read_legacy(f: BinaryIO, path: str):
  """torch < 1.6 format: magic, version, sys info, object, keys, storages."""
  unpickler = _TorchUnpickler(f, path)  # also for the headers: no code runs
  try:
    magic = unpickler.load()
  except (pickle.UnpicklingError, EOFError, ValueError) as e:
    raise ValueError(f"{path}: not a torch.save file ({e})") from e
  if magic != _LEGACY_MAGIC:
    raise ValueError(f"{path}: not a torch.save file (bad magic number)")
  unpickler.load()  # protocol version
  if not unpickler.load().get("little_endian", True):
    raise ValueError(f"{path}: big-endian torch files are not supported")
  obj = unpickler.load()
  storages = {}
  for key in unpickler.load():
    dtype, numel = unpickler.storages[key]
    head = f.read(8)
    data = np.frombuffer(f.read(numel * dtype.itemsize), dtype)
    if len(head) < 8 or data.size != numel:
      raise ValueError(f"{path}: file ends inside storage {key}")
    if np.frombuffer(head, "<i8")[0] != numel:
      raise ValueError(f"{path}: storage {key} size {head!r} does not match "
                       f"the pickle's {numel} elements")
    storages[key] = data
  return obj, storages


def _read_zip(zf: zipfile.ZipFile, path: str):
  """torch >= 1.6 format: <dir>/data.pkl + one <dir>/data/<key> per storage."""
  pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
  if len(pkl) != 1:
    raise ValueError(f"{path}: zip without exactly one data.pkl: {pkl}")
  root = pkl[0][:-len("data.pkl")]
  with zf.open(pkl[0]) as f:
    unpickler = _TorchUnpickler(f, path)
    obj = unpickler.load()
  storages = {
      key: np.frombuffer(zf.read(f"{root}data/{key}"), dtype)[:numel]
      for key, (dtype, numel) in unpickler.storages.items()}
  return obj, storages


def read_torch_pickle(path: str | os.PathLike) -> Any:
  """Read a `torch.save` file (legacy or zip format) without torch.

  Returns the saved object (e.g. a state dict, as a plain dict) with every
  tensor replaced by a NumPy array of its dtype, shape and values (strides
  and storage offsets honoured). Raises ValueError / pickle.UnpicklingError
  naming the file on anything else.
  """
  path = os.fspath(path)
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as zf:
      obj, storages = _read_zip(zf, path)
  else:
    with open(path, "rb") as f:
      obj, storages = _read_legacy(f, path)

  def materialize(x, where):
    if isinstance(x, _Tensor):
      return x.materialize(storages, f"{path}:{where}")
    if isinstance(x, dict):
      return {k: materialize(v, f"{where}/{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return type(x)(materialize(v, f"{where}/{i}") for i, v in enumerate(x))
    return x
  return materialize(obj, "")
