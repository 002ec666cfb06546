"""ResNet-18/34/50 (He et al. 2016; torchvision v1.5 layout), any band count.

Input NHWC float, any number of channels (2 = Sentinel-1 VV/VH, 12 =
Sentinel-2, 3 = RGB): the stem conv takes its input width from x.shape[-1].

  small_inputs=False  stem = 7x7/2 conv + 3x3/2 max-pool  (ImageNet, UC Merced)
  small_inputs=True   stem = 3x3/1 conv, no pool          (120x120 BigEarthNet)

Output: float32[B, 512] (18/34) or [B, 2048] (50) globally average-pooled
features when num_classes is None, else float32[B, num_classes] logits.

Paddings are explicit and equal to torchvision's (7x7 pad 3, 3x3 pad 1, pool
pad 1, 1x1 pad 0), Bottleneck strides on its 3x3 conv (v1.5), convs have no
bias, so converted torchvision weights give the same function. Module names
follow torchvision (`layer1_0/conv1` = `layer1.0.conv1`); the full key map
is in `rs_jax.models.weights`. BatchNorm: momentum 0.9 (torch 0.1), eps 1e-5,
running averages when train=False; call with `mutable=["batch_stats"]` when
train=True.
"""
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class _Block(nn.Module):
  """Fields and shared parts of the residual blocks."""
  filters: int
  strides: int = 1
  conv: Callable[..., Any] = nn.Conv
  norm: Callable[..., Any] = nn.BatchNorm
  zero_init_residual: bool = False

  def last_norm(self, y, name):
    """The block's last BN; its scale starts at 0 with zero_init_residual."""
    scale = (nn.initializers.zeros if self.zero_init_residual
             else nn.initializers.ones)
    return self.norm(scale_init=scale, name=name)(y)

  def shortcut(self, x, out_features):
    """Identity, or torchvision's `downsample` (1x1 conv stride s + BN)."""
    if x.shape[-1] == out_features and self.strides == 1:
      return x
    x = self.conv(out_features, (1, 1), self.strides,
                  name="downsample_conv")(x)
    return self.norm(name="downsample_bn")(x)


class BasicBlock(_Block):
  """Two 3x3 convs + identity (or 1x1/stride projection) shortcut."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), self.strides, padding=((1, 1),) * 2,
                  name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), padding=((1, 1),) * 2,
                  name="conv2")(y)
    y = self.last_norm(y, "bn2")
    return nn.relu(y + self.shortcut(x, self.filters))


class Bottleneck(_Block):
  """1x1 reduce -> 3x3 (has the stride, v1.5) -> 1x1 expand x4 + shortcut."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (1, 1), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), self.strides, padding=((1, 1),) * 2,
                  name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.filters * 4, (1, 1), name="conv3")(y)
    y = self.last_norm(y, "bn3")
    return nn.relu(y + self.shortcut(x, self.filters * 4))


class ResNet(nn.Module):
  """ResNet backbone (+ optional Dense classifier `fc`); see module doc.

  zero_init_residual: start each block's last BN scale at 0 (torchvision's
  option of the same name, default off as there). dtype: computation dtype;
  params stay float32, the output is cast to float32.
  """
  stage_sizes: Sequence[int]
  block: Any
  num_filters: int = 64
  small_inputs: bool = False
  num_classes: int | None = None
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False, padding="VALID",
                             kernel_init=_conv_init, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    x = jnp.asarray(x, self.dtype)
    if x.ndim != 4:
      raise ValueError(f"ResNet expects NHWC input [B, H, W, C], got shape "
                       f"{x.shape}")
    if self.small_inputs:
      x = conv(self.num_filters, (3, 3), padding=((1, 1),) * 2,
               name="conv_init")(x)
    else:
      x = conv(self.num_filters, (7, 7), (2, 2), padding=((3, 3),) * 2,
               name="conv_init")(x)
    x = nn.relu(norm(name="bn_init")(x))
    if not self.small_inputs:
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1),) * 2)
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        x = self.block(self.num_filters * 2**i,
                       strides=2 if i > 0 and j == 0 else 1,
                       conv=conv, norm=norm,
                       zero_init_residual=self.zero_init_residual,
                       name=f"layer{i + 1}_{j}")(x)
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return jnp.asarray(x, jnp.float32)


def resnet18(**kw) -> ResNet:
  return ResNet(stage_sizes=(2, 2, 2, 2), block=BasicBlock, **kw)


def resnet34(**kw) -> ResNet:
  return ResNet(stage_sizes=(3, 4, 6, 3), block=BasicBlock, **kw)


def resnet50(**kw) -> ResNet:
  return ResNet(stage_sizes=(3, 4, 6, 3), block=Bottleneck, **kw)


BACKBONES = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
