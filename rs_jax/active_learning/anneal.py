"""ANNEAL active learning end to end (task "anneal"; configs/anneal_ucm.py).

run(config, workdir): prepares the dataset, then runs or resumes
`loop.run_active_learning`, training on the labeled set every round from
the same seeded initialisation, in one of two modes (`al.frozen_backbone`):

  True (CPU mode): the backbone is frozen; its features of the train /
    query / archive splits are cached once (`features.cached_sources`) and
    the layers of `active_learning.trainer` are trained on them: a
    trainable backbone top (config.model.frozen_top) and the heads.
  False (the paper's setting, for GPUs): backbone and heads are fine-tuned
    on the images (`active_learning.finetune`), the backbone starting from
    config.model.weights ("imagenet" for EfficientNet-Lite0, an .npz file,
    or "" = random init), batches data-parallel over all devices.

Writes WORKDIR/al_curve.json (one entry per round: round, bits,
labeled_pairs, free_pairs, labeled_images, map@5) and WORKDIR/al_state.npz
after every step; rerunning the same command resumes. With al.upper_bound
the model is trained once on all training pairs (a one-entry curve).

Retrieval (both modes, `trainer.retrieval_metrics`): cosine similarity of
the backbone features (eval.retrieval_features="backbone", the paper's
Sec. IV-B; in the CPU mode the output of the trainable top) or of the
projection head's output ("projection"), queries from eval.query_split
(validation) against eval.database_split (test), mAP@5; the curve records
the other kind too ("projection_map@5" / "backbone_map@5").
"""
import json
import os
import time
from typing import Any, Callable, NamedTuple

import numpy as np
from absl import logging

from rs_jax import console
from rs_jax import data
from rs_jax import paths
from rs_jax import input_pipeline
from rs_jax import sharding
from rs_jax import workdir as workdir_lib
from rs_jax.active_learning import acquisition
from rs_jax.active_learning import loop
from rs_jax.active_learning import oracle as oracle_lib
from rs_jax.active_learning import state as state_lib
from rs_jax.active_learning import trainer

CURVE = "al_curve.json"
STATE = "al_state.npz"


class _Resized:
  """A source whose RGB images are resized (PIL bicubic) to size x size:
  UC Merced has a few images of 247-256 pixels, which cannot be batched."""

  def __init__(self, source, key, size):
    self.source, self.key, self.size = source, key, int(size)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    example = dict(self.source[index])
    image = np.asarray(example[self.key])
    if image.shape[:2] != (self.size, self.size):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      image = np.asarray(Image.fromarray(image).resize(
          (self.size, self.size), Image.BICUBIC))
    example[self.key] = image
    return example


def _open_splits(config, workdir):
  """(resolved config, {split: source} of the train, query and archive
  splits, resized to data.image_size when set, the dataset's own train
  source (for file paths))."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data = input_pipeline.resolve_dirs(config.data, workdir)
  if len(config.data.inputs) != 1:
    raise ValueError(f"data.inputs must name one image feature, got "
                     f"{config.data.inputs}")
  splits = sorted({config.data.train_split, config.eval.query_split,
                   config.eval.database_split})
  input_pipeline.prepare_once(config.data)
  sources = {s: data.load(config.data.name, s, config.data.data_dir)
             for s in splits}
  resized = sources
  if config.data.get("image_size"):
    resized = {s: _Resized(v, config.data.inputs[0], config.data.image_size)
               for s, v in sources.items()}
  return config, resized, sources[config.data.train_split]


def load_features(config, workdir):
  """{split: (features float32[N, D], labels)} of the train, query and
  archive splits, and the dataset's own train source (for file paths)."""
  from rs_jax import features  # pylint: disable=g-import-not-at-top
  config, sources, train_source = _open_splits(config, workdir)
  stats = data.statistics(config.data.name, config.data.data_dir)
  cached = features.cached_sources(config, sources, stats)
  key, label_key = config.data.inputs[0], config.data.label_key
  out = {s: (cached[s].arrays[key], cached[s].arrays[label_key])
         for s in sources}
  return out, train_source


def _num_classes(labels) -> int:
  labels = np.asarray(labels)
  return labels.shape[1] if labels.ndim == 2 else int(labels.max()) + 1


def _image_paths(config, source) -> list[str]:
  """The file of every training image, for the annotator: the stored
  `filename` (relative to the class folders) under data.manual_dir."""
  root = paths.resolve(config.data.manual_dir) if config.data.manual_dir else None
  if root is not None and (root / "Images").is_dir():
    root = root / "Images"
  out = []
  for i in range(len(source)):
    name = source[i].get("filename", str(i))
    name = name.decode("utf-8") if isinstance(name, bytes) else str(name)
    out.append(str(root / name) if root is not None else name)
  return out


def _oracle(config, workdir, labels, train_source):
  if config.al.oracle == "simulated":
    return oracle_lib.SimulatedOracle(labels, rule=config.al.rule)
  if config.al.oracle == "file":
    return oracle_lib.FileOracle(os.path.join(workdir, "queries"),
                                 _image_paths(config, train_source))
  raise ValueError(f"al.oracle must be 'simulated' or 'file', got "
                   f"{config.al.oracle!r}")


class _Model(NamedTuple):
  """A training mode's operations (the model interface of `loop.py`).

  labels: the training images' labels ([N] class ids or [N, C] multi-hot).
  train_source: the dataset's own train split (file names for the oracle).
  fit(items, labels, *, mode, steps=None) -> (params, last batch loss):
    trained from the seeded initialisation (`trainer.fit` / `finetune.fit`).
  embed(params, indices) -> {"embeddings", ("class_probs")} host arrays.
  pair_probs(params, embedded, pairs int[P, 2]) -> float[P] P(similar).
  evaluate(params) -> {"map@5": ...}, queries against the archive.
  """
  labels: np.ndarray
  train_source: Any
  fit: Callable
  embed: Callable
  pair_probs: Callable
  evaluate: Callable


def _fit_args(config):
  t = config.train
  return dict(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
              margin=t.margin, gamma=t.gamma,
              min_batches=t.min_batches_per_epoch)


def _frozen_model(config, workdir, mode) -> _Model:
  """Heads on cached frozen backbone features (`trainer.py`)."""
  start = time.time()
  feats, train_source = load_features(config, workdir)
  x, labels = feats[config.data.train_split]
  xq, lq = feats[config.eval.query_split]
  xdb, ldb = feats[config.eval.database_split]
  num_classes = _num_classes(labels)
  logging.info("anneal: %d training images (%d-d features), %d classes; "
               "features in %.0f s", len(x), x.shape[1], num_classes,
               time.time() - start)
  model = trainer.create_model(config.model, mode=mode,
                               num_classes=num_classes,
                               top=config.model.frozen_top)

  def fit(items, item_labels, *, mode, steps=None):
    return trainer.fit(model, x, items, item_labels, mode=mode,
                       seed=config.seed, steps=steps, **_fit_args(config))

  def embed(params, indices):
    out = trainer.embed(params, x[np.asarray(indices)], model=model,
                        with_classes=mode == "classes")
    return {k: np.asarray(v) for k, v in out.items()}

  def pair_probs(params, embedded, pairs):
    features = embedded.get("features")
    if features is None or len(features) != len(x):
      features = embed(params, np.arange(len(x)))["features"]
    return np.asarray(trainer.pair_probs(params, features, pairs))

  def evaluate(params):
    return trainer.evaluate(params, xq, lq, xdb, ldb, model=model, ks=(5,),
                            features=config.eval.retrieval_features)

  return _Model(labels, train_source, fit, embed, pair_probs, evaluate)


def _finetune_model(config, workdir, mode) -> _Model:
  """Backbone and heads trained on images (`finetune.py`), the backbone
  from config.model.weights."""
  from rs_jax.active_learning import finetune  # pylint: disable=g-import-not-at-top
  start = time.time()
  config, sources, train_source = _open_splits(config, workdir)
  key, label_key = config.data.inputs[0], config.data.label_key
  cache = config.train.get("image_cache_mb", 4096) * 2**20
  images = {s: finetune.Images(v, key, label_key, cache_bytes=cache)
            for s, v in sources.items()}
  train = images[config.data.train_split]
  query = images[config.eval.query_split]
  archive = images[config.eval.database_split]
  num_classes = _num_classes(train.labels)
  stats = data.statistics(config.data.name, config.data.data_dir).get(key)
  model = finetune.create_model(config.model, mode=mode,
                                num_classes=num_classes,
                                image_dtype=train.dtype, stats=stats)
  init = finetune.init_variables(model, config.model, train.shape,
                                 train.dtype, seed=config.seed)
  mesh = sharding.create_mesh()
  batch_size = config.eval.batch_size
  logging.info("anneal: fine-tuning %s (weights %r) on %d training images "
               "%s %s, %d classes, %d devices; images read in %.0f s",
               config.model.backbone, config.model.get("weights", ""),
               len(train), train.shape, train.dtype, num_classes, mesh.size,
               time.time() - start)

  def fit(items, item_labels, *, mode, steps=None):
    params, losses = finetune.fit(model, init, train, items, item_labels,
                                  mode=mode, seed=config.seed, steps=steps,
                                  mesh=mesh, **_fit_args(config))
    return params, float(losses[-1])

  def embed(params, indices):
    return finetune.embed(model, params, train, indices,
                          batch_size=batch_size, mesh=mesh,
                          with_classes=mode == "classes")

  def pair_probs(params, embedded, pairs):
    features = embedded.get("features")
    if features is None or len(features) != len(train):
      features = embed(params, None)["features"]
    return finetune.pair_probs(params, features, pairs)

  def evaluate(params):
    return finetune.evaluate(model, params, query, archive, ks=(5,),
                             features=config.eval.retrieval_features,
                             batch_size=batch_size, mesh=mesh)

  return _Model(train.labels, train_source, fit, embed, pair_probs, evaluate)


def _upper_bound(config, workdir, model: _Model):
  """Trained on all training pairs (1 bit each); once."""
  path = os.path.join(workdir, CURVE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  i, j = np.triu_indices(len(model.labels), k=1)
  pairs = np.stack([i, j], 1)
  similar = oracle_lib.similar(model.labels, pairs, rule=config.al.rule)
  steps = config.train.get("upper_bound_steps") or None
  params, _ = model.fit(pairs, similar, mode="pairs", steps=steps)
  got = model.evaluate(params)
  entry = {"round": 0, "bits": float(len(pairs)), "labeled_pairs": len(pairs),
           "free_pairs": 0, "labeled_images": 0,
           **{k: float(v) for k, v in got.items() if k.endswith("map@5")}}
  return state_lib.append_curve(path, entry)


def run(config, workdir):
  """Runs (or resumes) ANNEAL; returns the curve (list of round entries).
  The workdir is claimed first (`rs_jax.workdir.claim`)."""
  al = config.al
  if al.strategy not in acquisition.STRATEGIES:
    raise ValueError(f"al.strategy must be one of {acquisition.STRATEGIES}, "
                     f"got {al.strategy!r}")
  if config.eval.retrieval_features not in trainer.RETRIEVAL_FEATURES:
    raise ValueError(f"eval.retrieval_features must be one of "
                     f"{trainer.RETRIEVAL_FEATURES}, got "
                     f"{config.eval.retrieval_features!r}")
  with workdir_lib.claim(config, workdir):
    return _run(config, str(workdir))


def _run(config, workdir):
  al = config.al
  start = time.time()
  mode = trainer.mode_of(al.strategy)
  model = (_frozen_model if al.frozen_backbone else _finetune_model)(
      config, workdir, mode)
  labels = model.labels
  num_classes = _num_classes(labels)

  if al.upper_bound:
    return _upper_bound(config, workdir, model)

  def train_fn(items, item_labels, params):
    del params  # every round trains from the same initialisation
    t = time.time()
    params, loss = model.fit(items, item_labels, mode=mode)
    logging.info("anneal: trained on %d items in %.1f s, last loss %.4f",
                 len(items), time.time() - t, loss)
    return params

  state_path = os.path.join(workdir, STATE)
  if os.path.exists(state_path):
    initial = None  # resumed by the loop
  elif al.strategy == "cal":
    initial = state_lib.new_image_state(
        labels, num_classes=num_classes, fraction=al.initial_fraction,
        seed=config.seed)
  else:
    initial = state_lib.new_pair_state(
        labels, num_classes=num_classes, fraction=al.initial_fraction,
        seed=config.seed, pool_size=al.pool_size or None,
        num_similar=al.num_similar, num_dissimilar=al.num_dissimilar,
        rule=al.rule, initial_cost=al.initial_cost)
  result = loop.run_active_learning(
      state_path=state_path,
      curve_path=os.path.join(workdir, CURVE), strategy=al.strategy,
      rounds=al.rounds, h=al.h,
      oracle=_oracle(config, workdir, labels, model.train_source),
      train_fn=train_fn, embed_fn=model.embed, evaluate_fn=model.evaluate,
      initial_state=initial, pair_prob_fn=model.pair_probs, lam=al.lam,
      p_factor=al.p_factor, kmeans_iters=al.kmeans_iters, log=logging.info)
  if result.waiting_for:
    console.show(f"waiting for answers: fill in the 'similar' column of "
                 f"{result.waiting_for} (1 = similar, 0 = dissimilar), then "
                 f"run the same command again")
  logging.info("anneal: %s round %d in %.0f s", al.strategy,
               result.state.round, time.time() - start)
  with open(os.path.join(workdir, CURVE)) as f:
    return json.load(f)
