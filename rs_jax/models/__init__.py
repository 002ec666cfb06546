"""Linen modules used as pure functions: `model.apply(variables, x, train=...)`.

resnet.py  ResNet-18/34/50, any input band count (`BACKBONES`)
heads.py   MiLaN hash head; ANNEAL projection head, pair classifier; class head
weights.py flat .npz weights files (`save_npz` / `load_npz`), `adapt_first_conv`
"""
from rs_jax.models.heads import (ClassHead, HashHead, PairClassifier,
                                 ProjectionHead)
from rs_jax.models.resnet import (BACKBONES, FEATURE_DIMS, BasicBlock,
                                  Bottleneck, ResNet, resnet18, resnet34,
                                  resnet50)
from rs_jax.models.weights import adapt_first_conv, load_npz, save_npz
