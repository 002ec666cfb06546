"""torch checkpoints (torchvision, timm) -> checked Flax variables, no torch.

  state = read_state_dict("resnet50-11ad3fa6.pth")
  variables = convert(state, "resnet50")      # {"params", "batch_stats"}
  weights.save_npz("resnet50.npz", variables)  # -> model.weights=...

Architectures (`ARCHITECTURES`): torchvision `resnet18/34/50` and timm's
models of the same names (same state-dict names), torchvision
`inception_v3` and timm's `inception_v3` (all its weight tags), and the
EfficientNet-Lite0 port (`efficientnet_lite0`). Layouts are
`weights.from_state_dict`'s (conv OIHW -> HWIO, Linear -> [in, out], BN ->
scale/bias + batch_stats mean/var); module names:

  resnet*       conv1 -> conv_init, bn1 -> bn_init, layer1.0 -> layer1_0,
                downsample.0 / .1 -> downsample_conv / downsample_bn
  inception_v3  unchanged (Mixed_5b.branch1x1.conv -> Mixed_5b/branch1x1/conv);
                AuxLogits.* (the training-only auxiliary classifier) dropped
  efficientnet  `efficientnet_lite.torch_module_path`

The result is checked against the Flax module's own variables
(`jax.eval_shape` of its init): every parameter present, none extra, shapes
equal, else one ValueError naming the first bad torch parameter.
"""
import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rs_jax.models import efficientnet_lite
from rs_jax.models import inception
from rs_jax.models import resnet
from rs_jax.models import torch_pickle
from rs_jax.models import weights

_RESNET_STEM = {"conv1": "conv_init", "bn1": "bn_init"}


def resnet_module_path(modules: Sequence[str]) -> list[str]:
  """torchvision ResNet module path -> `resnet.ResNet` module names."""
  if len(modules) == 1 and modules[0] in _RESNET_STEM:
    return [_RESNET_STEM[modules[0]]]
  names = []
  for m in modules:
    if names and names[-1] == "downsample" and m in ("0", "1"):
      names[-1] = ("downsample_conv", "downsample_bn")[int(m)]
    elif m.isdigit() and names:
      names[-1] += f"_{m}"
    else:
      names.append(m)
  return names


@dataclasses.dataclass(frozen=True)
class Architecture:
  """How one torch architecture maps onto its Flax module.

  build(num_classes) -> the Flax module; module_path: torch -> Flax module
  names; stem: Flax path of the first conv kernel (band adaptation);
  classifier: torch module of the classifier; dropped: torch name prefixes
  with no Flax counterpart; size: input side of the shape template.
  """
  build: Callable[[int | None], nn.Module]
  module_path: Callable[[Sequence[str]], Sequence[str]]
  stem: tuple[str, ...]
  classifier: str = "fc"
  dropped: tuple[str, ...] = ()
  size: int = 224


def _resnet(build):
  return Architecture(lambda n: build(num_classes=n), resnet_module_path,
                      ("conv_init", "kernel"))


ARCHITECTURES = {
    "resnet18": _resnet(resnet.resnet18),
    "resnet34": _resnet(resnet.resnet34),
    "resnet50": _resnet(resnet.resnet50),
    "inception_v3": Architecture(
        lambda n: inception.InceptionV3(num_classes=n), list,
        ("Conv2d_1a_3x3", "conv", "kernel"), dropped=("AuxLogits.",),
        size=inception.IMAGE_SIZE),
    "efficientnet_lite0": Architecture(
        lambda n: efficientnet_lite.EfficientNetLite0(num_classes=n),
        efficientnet_lite.torch_module_path, ("conv_stem", "kernel"),
        classifier="_fc"),
}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: array} from a torch.save file (no torch) or a .safetensors file.

  Unwraps training checkpoints that hold the state dict under "state_dict"
  or "model", and strips DistributedDataParallel's "module." prefix.
  """
  path = os.fspath(path)
  if path.endswith(".safetensors"):
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    obj = safetensors.numpy.load_file(path)
  else:
    obj = torch_pickle.read_torch_pickle(path)
  for key in ("state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: not a state dict (a dict of tensors), got "
                     f"{type(obj).__name__}")
  for k, v in obj.items():
    if not isinstance(v, np.ndarray):
      raise ValueError(f"{path}: not a state dict: entry {k!r} is "
                       f"{type(v).__name__}, not a tensor")
  if obj and all(k.startswith("module.") for k in obj):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return dict(obj)


def variables_template(arch: str, *, num_classes: int | None = None,
                       in_channels: int = 3) -> dict[str, Any]:
  """Shapes/dtypes of the Flax module's variables (no compute)."""
  spec = _architecture(arch)
  model = spec.build(num_classes)
  x = jax.ShapeDtypeStruct((1, spec.size, spec.size, in_channels),
                           jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)


def convert(state_dict: Mapping[str, Any], arch: str, *,
            classifier: bool = False, in_channels: int = 3,
            source: str = "state dict") -> dict[str, Any]:
  """torch state dict -> {"params", "batch_stats"} of float32 NumPy arrays.

  classifier=False drops the classifier `fc` (the variables of
  `create_backbone`'s module: pooled features); True keeps it (num_classes
  from `fc.weight`).
  in_channels != 3 adapts the stem with `weights.adapt_first_conv`.
  Raises ValueError naming `source` and the first mismatching parameter.
  """
  spec = _architecture(arch)
  fc = f"{spec.classifier}.weight"
  dropped = spec.dropped + (() if classifier else (f"{spec.classifier}.",))
  kept = {k: v for k, v in state_dict.items() if not k.startswith(dropped)}
  num_classes = None
  if classifier:
    if fc not in kept:
      raise ValueError(f"{source}: classifier=True but there is no {fc!r}")
    num_classes = int(np.shape(kept[fc])[0])
  variables, names = weights.from_state_dict(kept,
                                             module_path=spec.module_path)
  node = variables.get("params", {})
  for name in spec.stem[:-1]:
    node = node.get(name, {})
  if spec.stem[-1] in node:
    node[spec.stem[-1]] = weights.adapt_first_conv(node[spec.stem[-1]],
                                                   in_channels)
  template = variables_template(arch, num_classes=num_classes,
                                in_channels=in_channels)
  weights.check_variables(variables, template, names=names,
                          source=f"{source} as {arch}")
  return variables


def _architecture(arch: str) -> Architecture:
  if arch not in ARCHITECTURES:
    raise ValueError(f"unknown architecture {arch!r}; available: "
                     f"{sorted(ARCHITECTURES)}")
  return ARCHITECTURES[arch]
