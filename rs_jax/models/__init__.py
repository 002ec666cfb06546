"""Linen modules used as pure functions: `model.apply(variables, x, train=...)`.

resnet.py             ResNet-18/34/50, any input band count (`BACKBONES`)
inception.py          Inception-v3 (MiLaN's 2048-d pool3 features)
efficientnet_lite.py  EfficientNet-Lite0 + its ImageNet weights
heads.py              MiLaN hash head; ANNEAL projection head, pair
                      classifier; class head
encoder.py            backbone + hash head from `config.model`
weights.py            flat .npz weights files (`save_npz` / `load_npz`),
                      `adapt_first_conv`, torch state-dict layouts
torch_pickle.py       torch.save files read without torch
torch_checkpoints.py  torchvision / timm state dicts -> checked variables
convert.py            CLI: `python -m rs_jax.models.convert`
preprocessing.py      ImageNet eval crop / resize / normalisation
"""
from rs_jax.models.heads import (ClassHead, HashHead, PairClassifier,
                                 ProjectionHead)
from rs_jax.models.resnet import (BACKBONES, FEATURE_DIMS, BasicBlock,
                                  Bottleneck, ResNet, resnet18, resnet34,
                                  resnet50)
from rs_jax.models.weights import adapt_first_conv, load_npz, save_npz
