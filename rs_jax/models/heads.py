"""Heads on top of backbone features: hashing, projection, pair and class.

All take float[B, D] features and return float32. Papers: MiLaN = Roy et al.,
IEEE GRSL 2021; ANNEAL = Hoxha, Sumbul et al. (active learning for DML CBIR).
Dense layers use Flax defaults (LeCun-normal kernels, zero biases); the
papers state random initialisation for these heads, nothing more.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class HashHead(nn.Module):
  """MiLaN hash network f (Sec. II): [B, D] -> float32[B, bits] in (0, 1).

  Dense 1024 -> LeakyReLU -> Dense 512 -> LeakyReLU -> Dense K -> sigmoid
  ("3 fully-connected layers with 1024, 512 and K neurons", LeakyReLU in the
  hidden layers, sigmoid output). The LeakyReLU slope is not stated in the
  paper; 0.2 is our default. Binary codes: `hashing.binarize` (eq. 5).
  """
  bits: int
  hidden: Sequence[int] = (1024, 512)
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x, jnp.float32)
    for i, h in enumerate(self.hidden):
      x = nn.leaky_relu(nn.Dense(h, name=f"dense{i}")(x), self.negative_slope)
    return jax.nn.sigmoid(nn.Dense(self.bits, name="out")(x))


class ProjectionHead(nn.Module):
  """ANNEAL projection head (Sec. IV-B): [B, D] -> float32[B, 256].

  "Two fully connected layers with hidden dimension of 512 and 256 units and
  ReLU activation": Dense 512 -> ReLU -> Dense 256, no activation on the
  output (the cosine contrastive loss, eq. 1, normalises it). Discarded for
  retrieval as in the paper, unless eval.retrieval_features="projection"
  (rs_jax/active_learning/trainer.retrieval_metrics).
  """
  hidden: int = 512
  features: int = 256

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x, jnp.float32)
    x = nn.relu(nn.Dense(self.hidden, name="dense0")(x))
    return nn.Dense(self.features, name="out")(x)


class PairClassifier(nn.Module):
  """ANNEAL BCGUE binary pair classifier phi (Sec. III-B.2, eq. 9).

  (x1, x2) float[B, D] each -> float32[B] logits; P(similar) = sigmoid(logit)
  (eq. 9), trained with BCE (eq. 10). Input = concat(x1, x2) of the backbone
  (ResNet-18) outputs. The paper gives "three fully connected layers, the
  last a single neuron" but not the hidden sizes or activation: we use
  Dense 512 -> ReLU -> Dense 256 -> ReLU -> Dense 1 (fields). Not symmetric
  in (x1, x2), as in the paper.
  """
  hidden: Sequence[int] = (512, 256)

  @nn.compact
  def __call__(self, x1, x2):
    x = jnp.concatenate([jnp.asarray(x1, jnp.float32),
                         jnp.asarray(x2, jnp.float32)], axis=-1)
    for i, h in enumerate(self.hidden):
      x = nn.relu(nn.Dense(h, name=f"dense{i}")(x))
    return nn.Dense(1, name="out")(x)[..., 0]


class ClassHead(nn.Module):
  """Linear classifier: [B, D] -> float32[B, num_classes] logits.

  ANNEAL's CAL baseline (Sec. IV-B: "a fully-connected layer ... on top of
  the projection head with softmax activation", cross-entropy loss); softmax
  is left to the loss (`losses.cross_entropy`).
  """
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes, name="out")(jnp.asarray(x, jnp.float32))
