"""ANNEAL models with the backbone fine-tuned (al.frozen_backbone=False).

The paper's setting (ANNEAL Sec. IV-B): the Siamese encoder is an ImageNet
backbone (`config.model.backbone`, weights from `config.model.weights`:
"imagenet" for EfficientNet-Lite0, an .npz file, or "" = random init) plus
the heads of `trainer.AnnealHeads`: the projection head g (512 -> 256, ReLU)
for the cosine contrastive loss (eq. 1, margin m), for BCGUE the pair
classifier phi on concat(f(x1), f(x2)) of the *backbone features* f with
(1 - gamma) L_CL + gamma L_BCE (eq. 11), for CAL a softmax class head on g
with cross-entropy. Adam over backbone and heads, batches of pairs (images
for CAL) from `trainer.schedule` (minority label oversampled), BatchNorm in
training mode with its running statistics updated. Every `fit` starts from
the same variables (the seeded initialisation), so a round's model depends
only on the labeled set, as in the frozen mode (`trainer.py`).

The same four operations as `trainer.py`, on images instead of features:
`fit`, `embed` (backbone features, projections, class probabilities),
`pair_probs` (trainer.pair_probs on the backbone features of all training
images, computed once per round) and `evaluate` (`trainer.retrieval_metrics`:
cosine retrieval on the backbone features, the paper's Sec. IV-B, or on the
projection head's output). No trainable top (`trainer.AnnealHeads.top`):
the backbone's own output is the backbone feature.

Images stay on the host (`Images`, uint8 or float [N, H, W, C]); one batch
at a time goes to the devices, sharded on its batch axis over a 1-D "data"
mesh of all devices with the variables replicated (as `rs_jax/train.py`),
and is preprocessed inside jit: uint8 RGB for EfficientNet-Lite0 as its
ImageNet input (centre crop, bicubic resize to 224, (x - 127) / 128, see
`efficientnet_lite.preprocess`), anything else normalised with the
dataset's per-channel statistics. Single process (multi-device).

Variables: {"params": {"backbone": ..., "heads": ...},
            "batch_stats": {"backbone": ...}}.
"""
import dataclasses
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rs_jax import sharding
from rs_jax.active_learning import trainer
from rs_jax.models import encoder as encoder_lib


class Images:
  """A split's images and labels on the host.

  images(source[i][key]) are read once here; kept as one array
  [N, H, W, C] when it takes at most `cache_bytes`, else read from the
  source batch by batch. labels: source[i][label_key] stacked ([N] or
  [N, C]). All images must have one shape (see anneal._Resized).
  """

  def __init__(self, source, key: str, label_key: str, *,
               cache_bytes: float = 4 * 2**30):
    self.source, self.key, n = source, key, len(source)
    first = np.asarray(source[0][key])
    self.shape, self.dtype = first.shape, first.dtype
    self._array = None
    if n * first.nbytes <= cache_bytes:
      self._array = np.empty((n, *self.shape), self.dtype)
    labels = []
    for i in range(n):
      example = source[i]
      labels.append(np.asarray(example[label_key]))
      if self._array is not None:
        self._array[i] = self._image(example, i)
    self.labels = np.stack(labels)

  def _image(self, example, i):
    image = np.asarray(example[self.key])
    if image.shape != self.shape:
      raise ValueError(f"image {i} has shape {image.shape}, image 0 "
                       f"{self.shape}: set data.image_size")
    return image

  def __len__(self):
    return len(self.labels)

  def take(self, indices) -> np.ndarray:
    """[len(indices), H, W, C] images, in the order of `indices`."""
    indices = np.asarray(indices, np.int64)
    if self._array is not None:
      return self._array[indices]
    out = np.empty((len(indices), *self.shape), self.dtype)
    for row, i in enumerate(indices):
      out[row] = self._image(self.source[int(i)], int(i))
    return out


@dataclasses.dataclass(frozen=True)
class Model:
  """Backbone + ANNEAL heads and the input preprocessing (hashable: a jit
  static argument). imagenet_rgb: uint8 RGB -> EfficientNet ImageNet input
  (crop_padding as `efficientnet_lite.preprocess`); else (x - mean) / std
  per channel (no statistics: cast only)."""
  backbone: nn.Module
  heads: trainer.AnnealHeads
  imagenet_rgb: bool = False
  crop_padding: int = 0
  mean: Optional[tuple[float, ...]] = None
  std: Optional[tuple[float, ...]] = None


def create_model(model_config, *, mode: str, num_classes: int = 0,
                 image_dtype=np.uint8, stats=None) -> Model:
  """mode: trainer.MODES. stats: {"mean", "std"} float[C] of the dataset's
  images (used unless the input is uint8 RGB for EfficientNet-Lite0)."""
  backbone = encoder_lib.create_backbone(model_config)
  if backbone is None:
    raise ValueError("al.frozen_backbone=False needs an image backbone, got "
                     "model.backbone='none'")
  imagenet_rgb = (np.dtype(image_dtype) == np.uint8
                  and model_config.backbone == "efficientnet_lite0")
  mean = std = None
  if stats is not None and not imagenet_rgb:
    mean = tuple(float(v) for v in np.ravel(stats["mean"]))
    std = tuple(float(v) for v in np.ravel(stats["std"]))
  return Model(backbone=backbone,
               heads=trainer.create_model(model_config, mode=mode,
                                          num_classes=num_classes),
               imagenet_rgb=imagenet_rgb,
               crop_padding=int(model_config.get("crop_padding", 0)),
               mean=mean, std=std)


def preprocess(model: Model, images):
  """[B, H, W, C] images -> float32 backbone input (in jit)."""
  if not model.imagenet_rgb:
    stats = None
    if model.mean is not None:
      stats = {"mean": jnp.asarray(model.mean, jnp.float32),
               "std": jnp.asarray(model.std, jnp.float32)}
    return encoder_lib.standardize(images, stats)
  from rs_jax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  size = efficientnet_lite.IMAGE_SIZE
  b, h, w, c = images.shape
  side = int(size / (size + model.crop_padding) * min(h, w))
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  x = jnp.asarray(images, jnp.float32)[:, top:top + side, left:left + side]
  if side != size:  # antialiased bicubic as PIL's, rounded to uint8 levels
    x = jax.image.resize(x, (b, size, size, c), "bicubic", antialias=True)
    x = jnp.clip(jnp.round(x), 0.0, 255.0)
  return (x - efficientnet_lite.MEAN_RGB) / efficientnet_lite.STDDEV_RGB


@functools.partial(jax.jit, static_argnames=("module",))
def _init(module, key, x):
  return module.init(key, x)  # compiled once per module (random init is slow)


def init_variables(model: Model, model_config, image_shape, image_dtype, *,
                   seed: int):
  """The seeded initialisation every round starts from (host arrays):
  backbone from model_config.weights when set (as
  `train.load_pretrained_backbones`), heads from `trainer.init_params`."""
  from rs_jax import features  # pylint: disable=g-import-not-at-top
  images = jax.ShapeDtypeStruct((1, *image_shape), image_dtype)
  x = jax.eval_shape(functools.partial(preprocess, model), images)
  if model_config.get("weights"):
    backbone = features.backbone_variables(model_config, x.shape[1:])
  else:
    backbone = _init(model.backbone, jax.random.fold_in(
        jax.random.key(seed), 1), jnp.zeros(x.shape))
  dim = jax.eval_shape(model.backbone.apply, backbone, x).shape[-1]
  heads = _init(model.heads, jax.random.key(seed),  # = trainer.init_params
                jnp.zeros((1, dim), jnp.float32))
  return jax.device_get({
      "params": {"backbone": backbone["params"], "heads": heads["params"]},
      "batch_stats": {"backbone": backbone.get("batch_stats", {})}})


def _shardings(mesh):
  return sharding.replicated(mesh), sharding.batch_sharded(mesh)


def _features(model, variables, images, *, train: bool):
  """Backbone features float32[B, D] (+ new batch_stats when training)."""
  x = preprocess(model, images)
  v = {"params": variables["params"]["backbone"],
       "batch_stats": variables["batch_stats"]["backbone"]}
  if not train:
    return model.backbone.apply(v, x, train=False), None
  f, updated = model.backbone.apply(v, x, train=True, mutable=["batch_stats"])
  return f, updated.get("batch_stats", {})


@functools.lru_cache(maxsize=None)
def _train_step(model, mode, mesh):
  """(state, images, targets, hparams) -> (state, loss), jitted over the
  mesh (compiled once per model, mode, mesh and batch shape).

  images: pairs [B, 2, H, W, C] (pair modes; rows 2i, 2i + 1 of the
  encoded batch are pair i) or [B, H, W, C] (classes); targets: float[B]
  similar or int[B] class ids; hparams: float32[3] (lr, margin, gamma).
  The loss is `trainer.loss_fn` on the backbone features of the batch;
  gradients reach the backbone. Adam (`optax.adam`, state from `_adam`).
  """
  replicated, batch = _shardings(mesh)

  def step(state, images, targets, hparams):
    lr, margin, gamma = hparams[0], hparams[1], hparams[2]
    x = images.reshape((-1, *images.shape[-3:]))
    rows = jnp.arange(x.shape[0])
    items = rows if mode == "classes" else rows.reshape(-1, 2)

    def objective(params):
      f, batch_stats = _features(
          model, {"params": params, "batch_stats": state["batch_stats"]}, x,
          train=True)
      loss = trainer.loss_fn({"params": params["heads"]}, f, items, targets,
                             model=model.heads, mode=mode, margin=margin,
                             gamma=gamma)
      return loss, batch_stats

    (loss, batch_stats), grads = jax.value_and_grad(
        objective, has_aux=True)(state["params"])
    updates, opt_state = _adam(lr).update(grads, state["opt_state"],
                                          state["params"])
    return {"params": optax.apply_updates(state["params"], updates),
            "batch_stats": {"backbone": batch_stats},
            "opt_state": opt_state}, loss

  return jax.jit(step, in_shardings=(replicated, batch, batch, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def _adam(lr):
  return optax.adam(lr)  # its state does not depend on lr


def _check_batch(batch_size, mesh):
  if batch_size % mesh.size:
    raise ValueError(f"batch size {batch_size} is not a multiple of the "
                     f"{mesh.size} devices")


def fit(model: Model, variables, images: Images, items, labels, *, mode: str,
        seed: int, epochs: int = 15, batch_size: int = 128, lr: float = 1e-4,
        margin: float = 0.5, gamma: float = 0.5, steps=None,
        min_batches: int = 0, mesh=None):
  """Fine-tunes backbone and heads from `variables` (`init_variables`).

  Args:
    items: pairs int[M, 2] of `images` rows with labels bool[M] similar
      (pair modes), or rows int[M] with class ids int[M] ("classes").
    epochs, batch_size, lr: 15, 128 pairs, 1e-4 (Sec. IV-B); margin: m of
      eq. 1; gamma: eq. 11; steps, min_batches: see `trainer.schedule`.
    mesh: `sharding.create_mesh()` (default all devices); batch_size must be a
      multiple of its size.
  Returns:
    (variables on the mesh, losses float32[S] of the S training batches).
  """
  mesh = sharding.create_mesh() if mesh is None else mesh
  _check_batch(batch_size, mesh)
  items, labels = np.asarray(items), np.asarray(labels)
  rows = trainer.schedule(labels, mode=mode, epochs=epochs,
                          batch_size=batch_size, seed=seed, steps=steps,
                          min_batches=min_batches)
  targets = (labels.astype(np.int32) if mode == "classes"
             else labels.astype(np.float32))
  step = _train_step(model, mode, mesh)
  replicated, batch = _shardings(mesh)
  variables = jax.device_get(variables)  # the state is donated, not these
  state = jax.device_put({"params": variables["params"],
                          "batch_stats": variables["batch_stats"],
                          "opt_state": _adam(lr).init(variables["params"])},
                         replicated)
  hparams = jax.device_put(np.array([lr, margin, gamma], np.float32),
                           replicated)
  losses = []
  for r in rows:  # the next batch is read while the devices run this one
    chosen = items[r]
    x = images.take(chosen.reshape(-1)).reshape(*chosen.shape, *images.shape)
    state, loss = step(state, jax.device_put(x, batch),
                       jax.device_put(targets[r], batch), hparams)
    losses.append(loss)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  return variables, np.asarray(jax.device_get(losses), np.float32)


@functools.lru_cache(maxsize=None)
def _forward(model, with_classes, mesh):
  replicated, batch = _shardings(mesh)

  def forward(variables, images):
    f, _ = _features(model, variables, images, train=False)
    heads = {"params": variables["params"]["heads"]}
    out = {"features": f,
           "embeddings": model.heads.apply(heads, f, method="embed")}
    if with_classes:
      out["class_probs"] = jax.nn.softmax(
          model.heads.apply(heads, f, method="class_logits"), -1)
    return out

  return jax.jit(forward, in_shardings=(replicated, batch),
                 out_shardings=batch)


def embed(model: Model, variables, images: Images, indices=None, *,
          batch_size: int = 64, with_classes: bool = False, mesh=None):
  """Host arrays of images[indices] (default all), in batches:
  {"features": backbone f(x) float32[N, D], "embeddings": g(f(x))
  float32[N, 256]} (+ "class_probs" float32[N, C] with_classes).
  batch_size is rounded up to a multiple of the mesh's devices."""
  mesh = sharding.create_mesh() if mesh is None else mesh
  indices = (np.arange(len(images)) if indices is None
             else np.asarray(indices, np.int64))
  size = -(-batch_size // mesh.size) * mesh.size
  forward = _forward(model, with_classes, mesh)
  replicated, batch = _shardings(mesh)
  variables = jax.device_put(variables, replicated)
  parts = []
  for start in range(0, len(indices), size):
    chunk = indices[start:start + size]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:],
                                              size - len(chunk))])
    out = forward(variables, jax.device_put(images.take(padded), batch))
    parts.append((out, len(chunk)))
  keys = ("features", "embeddings") + (("class_probs",) if with_classes
                                       else ())
  return {k: np.concatenate([np.asarray(o[k])[:n] for o, n in parts])
          for k in keys}


def pair_probs(variables, features, pairs, *, chunk: int = 32768):
  """P(similar) float32[P] of pairs int[P, 2] (eq. 9): the pair classifier
  on the backbone features float[N, D] (`embed(...)["features"]` of the
  training images), by `trainer.pair_probs`."""
  heads = {"params": jax.device_get(variables["params"]["heads"])}
  return np.asarray(trainer.pair_probs(heads, np.asarray(features), pairs,
                                       chunk=chunk))


def evaluate(model: Model, variables, query: Images, database: Images, *,
             features: str, ks=(5,), batch_size: int = 64,
             mesh=None) -> dict[str, Any]:
  """`trainer.retrieval_metrics` (cosine, mAP@k of ANNEAL eq. 12) of the
  queries against the database; features: "backbone" (the backbone output
  f, Sec. IV-B) or "projection" (g(f)) for the plain keys."""
  q, db = (embed(model, variables, s, batch_size=batch_size, mesh=mesh)
           for s in (query, database))
  return trainer.retrieval_metrics(q, query.labels, db, database.labels,
                                   features=features, ks=ks)
