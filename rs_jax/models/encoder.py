"""Hash encoder = backbone + MiLaN hash head, built from `config.model`.

`create_encoder(model_config)` reads:
  backbone: a name in `rs_jax.models.BACKBONES` (resnet18/34/50), or
    "efficientnet_lite0", "inception_v3", or "none": the inputs already are
    features.
  transform_input: Inception-v3 only (default True, torchvision's pretrained
    setting): map ImageNet-normalised RGB to (x / 255 - 0.5) / 0.5 first;
    False for other band counts or timm's gluon weights.
  frozen: train the hash head on cached features of the pretrained backbone
    (`rs_jax/features.py`; MiLaN's setting).
  bits: K, the code length.
  head_hidden: hidden sizes of the hash MLP (MiLaN: (1024, 512)).
  num_classes: C > 0 adds a linear class head on the relaxed (sigmoid) hash
    layer, the FC layer of classification-based deep hashing (survey of
    Sumbul, Kang, Demir, Sec. 11.3: DHCNN, Song et al. 2019); 0 or absent:
    none. Its logits feed `losses.cross_entropy` / `losses.sigmoid_bce` in
    training; retrieval reads the codes only.
  width: first-stage filters of a ResNet (64 = the standard network).
  small_inputs: ResNet 3x3 stem without max-pool (32..120 px patches).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rs_jax.models.heads import ClassHead
from rs_jax.models.heads import HashHead
from rs_jax.models.resnet import BACKBONES


class HashEncoder(nn.Module):
  """[B, H, W, C] images (or [B, D] features) -> float32[B, bits] in (0, 1).

  backbone -> HashHead (MiLaN Sec. II); `backbone=None` hashes its inputs
  directly. Binary codes: `hashing.binarize` of the output (MiLaN eq. 5).
  With num_classes > 0, ClassHead maps the hash outputs v to logits
  float32[B, num_classes] = v W + b ("a FC layer is connected to the hash
  layer", DHCNN in the survey, Sec. 11.3); `with_logits=True` returns
  (v, logits).
  """
  backbone: Any
  bits: int
  head_hidden: Sequence[int] = (1024, 512)
  num_classes: int = 0

  @nn.compact
  def __call__(self, x, train: bool = False, with_logits: bool = False):
    if self.backbone is not None:
      x = self.backbone(x, train=train)
    v = HashHead(self.bits, hidden=tuple(self.head_hidden), name="head")(x)
    if not self.num_classes:
      if with_logits:
        raise ValueError("with_logits=True: this encoder has no class head "
                         "(model.num_classes = 0)")
      return v
    logits = ClassHead(self.num_classes, name="class_head")(v)
    return (v, logits) if with_logits else v


def create_backbone(model_config):
  """The backbone module named by `model_config.backbone` (None for 'none');
  any input band count (the first layer takes x.shape[-1])."""
  name = model_config.backbone
  if name == "none":
    return None
  if name in BACKBONES:
    return BACKBONES[name](
        num_filters=model_config.get("width", 64),
        small_inputs=model_config.get("small_inputs", False),
        dtype=jnp.dtype(model_config.get("dtype", "float32")))
  if name == "efficientnet_lite0":
    from rs_jax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
    # No dropout / drop-connect: the train step carries no dropout rng.
    return efficientnet_lite.EfficientNetLite0(dropout_rate=0.0,
                                               drop_connect_rate=0.0)
  if name == "inception_v3":
    from rs_jax.models import inception  # pylint: disable=g-import-not-at-top
    return inception.InceptionV3(
        transform_input=model_config.get("transform_input", True),
        dtype=jnp.dtype(model_config.get("dtype", "float32")))
  names = sorted(BACKBONES) + ["efficientnet_lite0", "inception_v3", "none"]
  raise ValueError(f"unknown backbone {name!r}; available: {names}")


def create_encoder(model_config, *, frozen: bool = False) -> HashEncoder:
  """frozen: the inputs are cached backbone features (hash head only)."""
  return HashEncoder(
      backbone=None if frozen else create_backbone(model_config),
      bits=model_config.bits,
      head_hidden=tuple(model_config.get("head_hidden", (1024, 512))),
      num_classes=int(num_classes_of(model_config)))


def num_classes_of(model_config) -> int:
  """Returns model.num_classes: 0 (no class head) where absent, as in the
  configs of runs made before the class head existed."""
  return model_config.get("num_classes", 0)


def standardize(x, stats):
  """(x - mean) / std per channel (last axis), float32; stats None: cast."""
  x = jnp.asarray(x, jnp.float32)
  if stats is None:
    return x
  return (x - stats["mean"]) / stats["std"]


def encode(models, params, batch_stats, batch, stats, *, train: bool,
           with_logits: bool = False):
  """-> ({modality: float32[B, K]}, new batch_stats); with_logits (encoders
  with a class head): ({modality: [B, K]}, {modality: logits [B, C]},
  new batch_stats)."""
  outputs, logits, new_stats = {}, {}, {}
  for m, model in models.items():
    x = standardize(batch[m], stats.get(m))
    variables = {"params": params[m], "batch_stats": batch_stats[m]}
    if train:
      y, updated = model.apply(variables, x, train=True,
                               with_logits=with_logits,
                               mutable=["batch_stats"])
      new_stats[m] = updated.get("batch_stats", {})
    else:
      y = model.apply(variables, x, train=False, with_logits=with_logits)
      new_stats[m] = batch_stats[m]
    if with_logits:
      y, logits[m] = y
    outputs[m] = y
  if with_logits:
    return outputs, logits, new_stats
  return outputs, new_stats
