"""ImageNet eval input: centred square crop + PIL resize, normalisation."""
import numpy as np
from PIL import Image

# torchvision's ImageNet normalisation (`transforms.Normalize`).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def crop_and_resize(images, *, size: int, crop_padding: int,
                    resample: int) -> np.ndarray:
  """uint8 RGB [H, W, 3] or [B, H, W, 3] -> uint8 [..., size, size, 3].

  Crops the centred square of side int(size / (size + crop_padding) *
  min(H, W)) (offsets (H - side + 1) // 2, (W - side + 1) // 2) and resizes
  it to size x size with PIL (`resample`, e.g. Image.BICUBIC; PIL's filters
  are antialiased). crop_padding=0 takes the largest centred square.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f"preprocess expects uint8 images, got {images.dtype}")
  if images.ndim not in (3, 4) or images.shape[-1] != 3:
    raise ValueError(f"preprocess expects RGB [H, W, 3] or [B, H, W, 3], "
                     f"got shape {images.shape}")
  h, w = images.shape[-3:-1]
  side = int(size / (size + crop_padding) * min(h, w))
  if side < 1:
    raise ValueError(f"preprocess: image {h}x{w} too small to crop")
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  crops = images.reshape((-1, h, w, 3))[:, top:top + side, left:left + side]
  out = np.stack([
      np.asarray(Image.fromarray(c).resize((size, size), resample))
      for c in crops])
  return out.reshape(images.shape[:-3] + (size, size, 3))


def imagenet_normalize(images) -> np.ndarray:
  """uint8 RGB [..., 3] -> float32 (x / 255 - mean) / std, as torchvision's
  `ToTensor` + `Normalize(IMAGENET_MEAN, IMAGENET_STD)`."""
  x = np.asarray(images).astype(np.float32) / np.float32(255)
  return (x - IMAGENET_MEAN) / IMAGENET_STD
