"""Pictures: retrieval sheets (a query and its top k per row).

Rendering: S2 true colour = (B04, B03, B02), i.e. channels (3, 2, 1) of the
12-band layout; S1 false colour = (VV, VH, VV/VH) with the ratio in dB
(VV - VH); uint8 RGB images as they are. Float channels are stretched
between their 2nd and 98th percentiles.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from rs_jax import paths  # pylint: disable=g-bad-import-order

S2_TRUE_COLOUR = (3, 2, 1)


def _stretch(x):
  lo, hi = np.percentile(x, (2, 98), axis=(0, 1), keepdims=True)
  return np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def to_rgb(image, modality: str) -> np.ndarray:
  """[H, W, C] image of a modality -> float [H, W, 3] in [0, 1]."""
  image = np.asarray(image)
  if image.dtype == np.uint8 and image.shape[-1] == 3:
    return image.astype(np.float32) / 255.0
  image = image.astype(np.float32)
  c = image.shape[-1]
  if modality == "s2" and c == 12:
    return _stretch(image[..., S2_TRUE_COLOUR])
  if modality == "s1" and c == 2:
    vv, vh = image[..., 0], image[..., 1]
    return _stretch(np.stack([vv, vh, vv - vh], -1))
  if c >= 3:
    return _stretch(image[..., :3])
  return np.repeat(_stretch(image[..., :1]), 3, -1)


def _label_text(labels, names=None) -> str:
  labels = np.asarray(labels)
  ids = np.flatnonzero(labels) if labels.ndim else [int(labels)]
  if names is not None:
    return ", ".join(names[i] for i in ids)
  return ",".join(str(i) for i in ids)


def retrieval_sheet(path, *, query_images, result_images, query_labels,
                    result_labels, distances, modality, label_names=None,
                    result_modality=None):
  """Writes a PNG: row q = query q, then its results with distance/labels.

  query_images: Q images [H, W, C]; result_images: Q lists of k images;
  query_labels [Q] or [Q, C]; result_labels [Q, k] or [Q, k, C];
  distances [Q, k]. A result sharing a label with its query gets a green
  frame, otherwise red.
  """
  result_modality = result_modality or modality
  q, k = np.shape(distances)
  fig, axes = plt.subplots(q, k + 1, figsize=(1.6 * (k + 1), 1.9 * q),
                           squeeze=False)
  for row in range(q):
    ql = np.asarray(query_labels[row])
    ax = axes[row, 0]
    ax.imshow(to_rgb(query_images[row], modality))
    ax.set_title("query", fontsize=8)
    ax.set_xlabel(_label_text(ql, label_names), fontsize=6)
    for col in range(k):
      rl = np.asarray(result_labels[row][col])
      shared = (np.any((ql != 0) & (rl != 0)) if ql.ndim else ql == rl)
      ax = axes[row, col + 1]
      ax.imshow(to_rgb(result_images[row][col], result_modality))
      ax.set_title(f"d={int(distances[row][col])}", fontsize=8)
      ax.set_xlabel(_label_text(rl, label_names), fontsize=6)
      for spine in ax.spines.values():
        spine.set_edgecolor("green" if shared else "red")
        spine.set_linewidth(2)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  with paths.atomic_write(path) as f:
    fig.savefig(f, dpi=80, format="png")
  plt.close(fig)
