"""Small torch.save files (zip and legacy format) for the torch-free reader.

Runs ONLY in a separate torch venv (see tools/make_torchvision_reference.py):

  /work/venv-torch/bin/python tools/make_torch_pickle_fixture.py \
      --out_dir tests/fixtures

Writes torch_small.pt (torch >= 1.6 zip format) and torch_small_legacy.pt
(`_use_new_zipfile_serialization=False`), each {"state_dict": ..., "epoch":
3} as a training script saves it. The values are arange-based, so
tests/test_torch_pickle.py knows them without torch: views of one shared
storage (a transposed slice, an offset slice), float64 / float16 / bfloat16
/ int8 / uint8 / int32 / bool tensors, a 0-d int64 (`num_batches_tracked`),
an empty tensor, an nn.Parameter, and a real nn.Module state dict
(Conv2d 2->3 3x3 + BatchNorm2d, `_metadata` attached) with weights set to
arange / 10.
"""
import collections
import os

from absl import app
from absl import flags

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_string("out_dir", "tests/fixtures", "Fixture folder.")


FLAGS = flags.FLAGS


def state_dict(torch):
  """The saved object."""
  base = torch.arange(24, dtype=torch.float32)
  module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3),
                               torch.nn.BatchNorm2d(3))
  with torch.no_grad():
    for p in module.state_dict().values():
      if p.is_floating_point():
        p.copy_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) / 10)
  state = collections.OrderedDict([
      ("view.transposed", base[:12].reshape(3, 4).t()),
      ("view.offset", base[12:16]),
      ("float64", torch.arange(4, dtype=torch.float64) / 8),
      ("float16", torch.arange(6, dtype=torch.float16).reshape(2, 3) / 4),
      ("bfloat16", torch.tensor([1.5, -2.0, 0.25], dtype=torch.bfloat16)),
      ("int8", torch.tensor([-3, 7], dtype=torch.int8)),
      ("uint8", torch.arange(5, dtype=torch.uint8) * 50),
      ("int32", torch.tensor([[-1, 2**31 - 1]], dtype=torch.int32)),
      ("bool", torch.tensor([True, False, True])),
      ("num_batches_tracked", torch.tensor(7)),
      ("empty", torch.zeros(0, 3)),
      ("parameter", torch.nn.Parameter(torch.full((2, 2), 0.5))),
  ])
  for k, v in module.state_dict().items():
    state[f"net.{k}"] = v
  return {"state_dict": state, "epoch": 3}


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  obj = state_dict(torch)
  for name, zip_format in [("torch_small.pt", True),
                           ("torch_small_legacy.pt", False)]:
    path = os.path.join(FLAGS.out_dir, name)
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    print(f"wrote {path}: {os.path.getsize(path)} bytes, torch "
          f"{torch.__version__}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
