"""Inception-v3 (Szegedy et al. 2016; torchvision `Inception3` layout).

MiLaN's features are Inception-v3's 2048-d "pool3" output: the global mean of
`Mixed_7c`, which this module returns when num_classes is None (else logits
of a Dense `fc` on it). The auxiliary classifier (`AuxLogits`, a training aid)
and the dropout before `fc` are left out.

Input: NHWC float, any band count (the stem takes x.shape[-1]), at least
75x75; ImageNet weights were trained at 299x299 (8x8 at `Mixed_7c`).
Module names are torchvision's (`Mixed_5b/branch1x1/conv`, `.../bn`),
so converted weights keep their names (`rs_jax.models.torch_checkpoints`).

Input normalisation of ImageNet weights: every ImageNet Inception-v3 in
torchvision and timm (`inception_v3.tv_in1k`, `tf_in1k`, `tf_adv_in1k`)
expects (x / 255 - 0.5) / 0.5 at its first conv. torchvision feeds
ImageNet-normalised images ((x / 255 - mean) / std) and its pretrained model
maps them back with `transform_input=True`; this module does the same with
`transform_input=True` (3 bands only). `preprocess` gives that input: resize
to 299x299 and ImageNet mean/std. timm's `gluon_in1k` weights take the
ImageNet-normalised input as it is: `transform_input=False`.

Paddings are torchvision's (explicit; "VALID" max-pools, 3x3/1 average pools
padded by 1 with the padding counted, as `F.avg_pool2d`). Convs have no
bias. BatchNorm: eps 1e-3, momentum 0.9 (torch 0.1), running averages when
train=False; call with `mutable=["batch_stats"]` when train=True.
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from PIL import Image

from rs_jax.models import preprocessing

FEATURE_DIM = 2048
IMAGE_SIZE = 299
MIN_SIZE = 75

# torchvision: trunc_normal_(std=0.1, a=-2, b=2), i.e. practically N(0, 0.1).
_init = nn.initializers.normal(0.1)


class BasicConv2d(nn.Module):
  """conv (no bias) -> BN -> ReLU; kernel, padding as (h, w)."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  conv: Callable[..., Any] = nn.Conv
  norm: Callable[..., Any] = nn.BatchNorm

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, self.kernel, self.strides,
                  padding=tuple((p, p) for p in self.padding), name="conv")(x)
    return nn.relu(self.norm(name="bn")(x))


def _avg_pool(x):
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=True)


def _max_pool(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class _Mixed(nn.Module):
  """Shared field of the Inception blocks: the BasicConv2d factory."""
  block: Callable[..., Any] = BasicConv2d

  def c(self, name, features, kernel, strides=1, padding=(0, 0)):
    return self.block(features, kernel, strides, padding, name=name)


class InceptionA(_Mixed):
  """35x35: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x):
    b1 = self.c("branch1x1", 64, (1, 1))(x)
    b5 = self.c("branch5x5_1", 48, (1, 1))(x)
    b5 = self.c("branch5x5_2", 64, (5, 5), padding=(2, 2))(b5)
    b3 = self.c("branch3x3dbl_1", 64, (1, 1))(x)
    b3 = self.c("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(b3)
    b3 = self.c("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(b3)
    bp = self.c("branch_pool", self.pool_features, (1, 1))(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Mixed):
  """35 -> 17: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool/2."""

  @nn.compact
  def __call__(self, x):
    b3 = self.c("branch3x3", 384, (3, 3), 2)(x)
    bd = self.c("branch3x3dbl_1", 64, (1, 1))(x)
    bd = self.c("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(bd)
    bd = self.c("branch3x3dbl_3", 96, (3, 3), 2)(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(_Mixed):
  """17x17 with factorised 7x7 convs (1x7, 7x1) of c7 channels."""
  c7: int = 128

  @nn.compact
  def __call__(self, x):
    c7, row, col = self.c7, ((1, 7), (0, 3)), ((7, 1), (3, 0))
    b1 = self.c("branch1x1", 192, (1, 1))(x)
    b7 = self.c("branch7x7_1", c7, (1, 1))(x)
    b7 = self.c("branch7x7_2", c7, row[0], padding=row[1])(b7)
    b7 = self.c("branch7x7_3", 192, col[0], padding=col[1])(b7)
    bd = self.c("branch7x7dbl_1", c7, (1, 1))(x)
    for i, (kernel, pad) in enumerate([col, row, col, row], start=2):
      bd = self.c(f"branch7x7dbl_{i}", 192 if i == 5 else c7, kernel,
                  padding=pad)(bd)
    bp = self.c("branch_pool", 192, (1, 1))(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Mixed):
  """17 -> 8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool/2."""

  @nn.compact
  def __call__(self, x):
    b3 = self.c("branch3x3_1", 192, (1, 1))(x)
    b3 = self.c("branch3x3_2", 320, (3, 3), 2)(b3)
    b7 = self.c("branch7x7x3_1", 192, (1, 1))(x)
    b7 = self.c("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.c("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.c("branch7x7x3_4", 192, (3, 3), 2)(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(_Mixed):
  """8x8 with split 1x3 / 3x1 convs; 2048 channels out."""

  @nn.compact
  def __call__(self, x):
    def split(name, y):
      return jnp.concatenate([
          self.c(f"{name}a", 384, (1, 3), padding=(0, 1))(y),
          self.c(f"{name}b", 384, (3, 1), padding=(1, 0))(y)], axis=-1)
    b1 = self.c("branch1x1", 320, (1, 1))(x)
    b3 = split("branch3x3_2", self.c("branch3x3_1", 384, (1, 1))(x))
    bd = self.c("branch3x3dbl_1", 448, (1, 1))(x)
    bd = self.c("branch3x3dbl_2", 384, (3, 3), padding=(1, 1))(bd)
    bd = split("branch3x3dbl_3", bd)
    bp = self.c("branch_pool", 192, (1, 1))(_avg_pool(x))
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """Inception-v3 backbone (+ optional Dense `fc`); see the module doc.

  transform_input: map ImageNet-normalised RGB to (x / 255 - 0.5) / 0.5
  first (torchvision's pretrained setting). dtype: computation dtype; params
  stay float32, the output is float32[B, 2048] (or [B, num_classes]).
  """
  num_classes: int | None = None
  transform_input: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim != 4:
      raise ValueError(f"InceptionV3 expects NHWC input [B, H, W, C], got "
                       f"shape {x.shape}")
    if min(x.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"InceptionV3 needs inputs of at least "
                       f"{MIN_SIZE}x{MIN_SIZE}, got {x.shape[1:3]}")
    x = jnp.asarray(x, jnp.promote_types(self.dtype, jnp.float32))
    if self.transform_input:
      if x.shape[-1] != 3:
        raise ValueError(f"InceptionV3(transform_input=True) needs RGB input, "
                         f"got {x.shape[-1]} bands (model.transform_input)")
      std, mean = preprocessing.IMAGENET_STD, preprocessing.IMAGENET_MEAN
      x = x * (std / 0.5) + (mean - 0.5) / 0.5
    x = jnp.asarray(x, self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_init,
                             dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-3, dtype=self.dtype)
    block = functools.partial(BasicConv2d, conv=conv, norm=norm)
    x = block(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)
    x = block(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = block(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = block(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = block(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    for name, pool_features in [("5b", 32), ("5c", 64), ("5d", 64)]:
      x = InceptionA(block, pool_features, name=f"Mixed_{name}")(x)
    x = InceptionB(block, name="Mixed_6a")(x)
    for name, c7 in [("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)]:
      x = InceptionC(block, c7, name=f"Mixed_{name}")(x)
    x = InceptionD(block, name="Mixed_7a")(x)
    x = InceptionE(block, name="Mixed_7b")(x)
    x = InceptionE(block, name="Mixed_7c")(x)
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, kernel_init=_init, dtype=self.dtype,
                   name="fc")(x)
    return jnp.asarray(x, jnp.float32)


def preprocess(images, *, size: int = IMAGE_SIZE,
               crop_padding: int = 0) -> np.ndarray:
  """uint8 RGB [H, W, 3] or [B, H, W, 3] -> float32 [..., size, size, 3].

  The input of ImageNet weights with `transform_input=True`: centred square
  crop (crop_padding=0: the largest; 43: torchvision's eval crop 299 / 342),
  PIL bilinear resize to size x size (uint8), then ImageNet mean/std as
  torchvision's `Normalize` (a square image gives torchvision's
  `Resize((299, 299))` + `ToTensor` + `Normalize` bit for bit).
  torchvision's own eval transform resizes the short side to 342 before the
  299 crop; crop-then-resize differs from it by interpolation only.
  """
  images = preprocessing.crop_and_resize(images, size=size,
                                         crop_padding=crop_padding,
                                         resample=Image.BILINEAR)
  return preprocessing.imagenet_normalize(images)
