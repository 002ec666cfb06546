"""Weights files: Flax variables <-> flat .npz, and stem adaptation.

A weights file is an `np.savez` archive with one array per leaf of the Flax
variables dict, keyed by the "/"-joined path. For `resnet.ResNet` the keys
are (torchvision state-dict name on the right; conv kernels are stored HWIO,
i.e. torch OIHW `.permute(2, 3, 1, 0)`, Dense kernels [in, out], i.e. torch
`.T`):

  params/conv_init/kernel                 conv1.weight
  params/bn_init/{scale,bias}             bn1.{weight,bias}
  batch_stats/bn_init/{mean,var}          bn1.{running_mean,running_var}
  params/layer{s}_{b}/conv{n}/kernel      layer{s}.{b}.conv{n}.weight
  params/layer{s}_{b}/bn{n}/{scale,bias}  layer{s}.{b}.bn{n}.{weight,bias}
  batch_stats/layer{s}_{b}/bn{n}/{mean,var}
                                          layer{s}.{b}.bn{n}.running_{mean,var}
  params/layer{s}_{b}/downsample_conv/kernel
                                          layer{s}.{b}.downsample.0.weight
  params/layer{s}_{b}/downsample_bn/...   layer{s}.{b}.downsample.1.*
  params/fc/{kernel,bias}                 fc.{weight,bias} (num_classes only)

s = 1..4, b = block index from 0, n = 1, 2 (and 3 for Bottleneck); torch's
`num_batches_tracked` is dropped. Heads use `dense{i}` / `out` names. A
pretrained 3-channel stem is adapted to other band counts with
`adapt_first_conv` before saving. `load_npz` checks the file against a
template (real variables or `jax.eval_shape(model.init, ...)`): the same keys
and shapes, else a ValueError naming the file and the keys.

`from_state_dict` applies these layout rules to any torch state dict, given
the architecture's rule for module names (`rs_jax.models.torch_checkpoints`
has them for ResNet and Inception-v3, `efficientnet_lite` for its port);
`check_variables` compares the result with the Flax module's template.
"""
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from flax import traverse_util


def _flatten(variables: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.flatten_dict(dict(variables), sep="/")


def save_npz(path: str | os.PathLike, variables: Mapping[str, Any]) -> None:
  """Write variables (nested dict of arrays) as a flat "/"-keyed .npz file."""
  flat = {k: np.asarray(v) for k, v in _flatten(variables).items()}
  with open(path, "wb") as f:  # np.savez(str) would append ".npz"
    np.savez(f, **flat)


def load_npz(path: str | os.PathLike,
             variables_template: Mapping[str, Any]) -> dict[str, Any]:
  """Read a .npz from `save_npz` (or a converter) into the template's tree.

  The template's leaves need only `.shape` and `.dtype` (arrays or
  `jax.ShapeDtypeStruct`). Arrays are cast to the template dtype. Raises
  ValueError on missing keys, unexpected keys, or a shape mismatch.
  """
  template = _flatten(variables_template)
  with np.load(path, allow_pickle=False) as f:
    found = {k: f[k] for k in f.files}
  missing = sorted(set(template) - set(found))
  unexpected = sorted(set(found) - set(template))
  if missing or unexpected:
    msg = [f"weights file {os.fspath(path)!r} does not match the model:"]
    if missing:
      msg.append(f"missing keys {missing}")
    if unexpected:
      msg.append(f"unexpected keys {unexpected}")
    raise ValueError(" ".join(msg))
  out = {}
  for key, t in template.items():
    v = found[key]
    if tuple(v.shape) != tuple(t.shape):
      raise ValueError(
          f"weights file {os.fspath(path)!r}: key {key!r} has shape "
          f"{tuple(v.shape)}, expected {tuple(t.shape)}")
    out[key] = v.astype(t.dtype)
  return traverse_util.unflatten_dict(out, sep="/")


def adapt_first_conv(kernel, in_channels: int) -> np.ndarray:
  """Adapt a pretrained stem kernel [kh, kw, c, out] to in_channels inputs.

  Rule: every new input channel gets the mean of the c pretrained channels,
  scaled by c / in_channels (3 / in_channels for RGB), so the kernel's sum
  over input channels is unchanged: an image whose bands all equal one grey
  value gives the same first-layer response as the RGB image of that grey.
  in_channels == c returns the kernel unchanged (as float32 copy).
  """
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim != 4:
    raise ValueError(f"kernel must be [kh, kw, in, out], got shape "
                     f"{kernel.shape}")
  if in_channels < 1:
    raise ValueError(f"in_channels must be >= 1, got {in_channels}")
  c = kernel.shape[2]
  if in_channels == c:
    return kernel.copy()
  mean = kernel.mean(axis=2, keepdims=True) * (c / in_channels)
  return np.repeat(mean, in_channels, axis=2)


# torch BatchNorm entries -> (Flax collection, leaf).
_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"),
              "running_var": ("batch_stats", "var")}


def from_state_dict(
    state_dict: Mapping[str, Any], *,
    module_path: Callable[[Sequence[str]], Sequence[str]],
) -> tuple[dict[str, Any], dict[str, str]]:
  """torch state dict -> (Flax variables, {"/"-joined Flax key: torch name}).

  module_path maps a torch module path ("layer1.0.bn1".split(".")) to Flax
  module names. A module with a `running_mean` entry is a BatchNorm
  (weight/bias -> params scale/bias, running_mean/var -> batch_stats
  mean/var, num_batches_tracked dropped); otherwise 4-d `weight` is a conv
  kernel (OIHW -> HWIO), 2-d `weight` a Dense kernel ([out, in] -> [in,
  out]), `bias` a bias. Values become float32; anything else is a ValueError
  naming the entry.
  """
  flat, names = {}, {}
  for name, value in state_dict.items():
    prefix, _, leaf = name.rpartition(".")
    value = np.asarray(value)
    if f"{prefix}.running_mean" in state_dict:  # a BatchNorm
      if leaf == "num_batches_tracked":
        continue
      if leaf not in _BN_LEAVES:
        raise ValueError(f"unexpected BatchNorm entry {name!r}")
      collection, leaf = _BN_LEAVES[leaf]
    elif leaf == "weight" and value.ndim == 4:
      collection, leaf, value = "params", "kernel", value.transpose(2, 3, 1, 0)
    elif leaf == "weight" and value.ndim == 2:
      collection, leaf, value = "params", "kernel", value.T
    elif leaf == "bias" and value.ndim == 1:
      collection = "params"
    else:
      raise ValueError(f"unexpected state-dict entry {name!r} with shape "
                       f"{value.shape}")
    key = "/".join((collection, *module_path(prefix.split(".")), leaf))
    if key in flat:
      raise ValueError(f"state-dict entries {names[key]!r} and {name!r} both "
                       f"map to {key}")
    flat[key] = np.ascontiguousarray(value, np.float32)
    names[key] = name
  return traverse_util.unflatten_dict(flat, sep="/"), names


def check_variables(variables: Mapping[str, Any],
                    template: Mapping[str, Any], *, source: str,
                    names: Mapping[str, str] | None = None) -> None:
  """Raise one short ValueError naming the first parameter of `variables`
  (by its torch name where `names` has it) whose key or shape does not match
  `template`, and how many more do not."""
  got, want, names = _flatten(variables), _flatten(template), names or {}
  problems = []
  for key in sorted(got.keys() | want.keys()):
    label = f"{names[key]!r} ({key})" if key in names else key
    if key not in want:
      problems.append(f"parameter {label} is not in the model")
    elif key not in got:
      problems.append(f"the model's {key} has no parameter in the file")
    elif tuple(got[key].shape) != tuple(want[key].shape):
      problems.append(f"parameter {label} has shape {tuple(got[key].shape)},"
                      f" the model expects {tuple(want[key].shape)}")
  if problems:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise ValueError(f"{source}: {problems[0]}{more}")
