"""ANNEAL active learning end to end (task "anneal"; configs/anneal_ucm.py).

run(config, workdir): prepares the dataset, caches frozen backbone features
of the train / query / archive splits (`features.cached_sources`), then runs
or resumes `loop.run_active_learning` with the heads of
`active_learning.trainer` trained on the labeled set every round. Writes
WORKDIR/al_curve.json (one entry per round: round, bits, labeled_pairs,
free_pairs, labeled_images, map@5) and WORKDIR/al_state.npz after every
step; rerunning the same command resumes. With al.upper_bound the heads are
trained once on all training pairs (a one-entry curve).

Retrieval (frozen mode): the projection head's output, cosine, queries from
eval.query_split (validation) against eval.database_split (test), mAP@5.
"""
import json
import os
import time

import numpy as np
from absl import logging

from rs_jax import input_pipeline
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


def load_features(config, workdir):
  """{split: (features float32[N, D], labels)} of the train, query and
  archive splits, and the dataset's own train source (for file paths)."""
  from rs_jax import data  # pylint: disable=g-import-not-at-top
  from rs_jax import features  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data = input_pipeline.resolve_dirs(config.data, workdir)
  if len(config.data.inputs) != 1:
    raise ValueError(f"data.inputs must name one image feature, got "
                     f"{config.data.inputs}")
  splits = sorted({config.data.train_split, config.eval.query_split,
                   config.eval.database_split})
  sources = {s: input_pipeline.open_split(config.data, s) for s in splits}
  resized = sources
  if config.data.get("image_size"):
    resized = {s: _Resized(v, config.data.inputs[0], config.data.image_size)
               for s, v in sources.items()}
  stats = data.statistics(config.data.name, config.data.data_dir)
  cached = features.cached_sources(config, resized, stats)
  key, label_key = config.data.inputs[0], config.data.label_key
  out = {s: (cached[s].arrays[key], cached[s].arrays[label_key])
         for s in splits}
  return out, sources[config.data.train_split]


def _num_classes(labels) -> int:
  labels = np.asarray(labels)
  return labels.shape[1] if labels.ndim == 2 else int(labels.max()) + 1


def _oracle(config, workdir, labels, train_source):
  if config.al.oracle == "simulated":
    return oracle_lib.SimulatedOracle(labels, rule=config.al.rule)
  if config.al.oracle == "file":
    names = [str(train_source[i].get("filename", i))
             for i in range(len(train_source))]
    return oracle_lib.FileOracle(os.path.join(workdir, "queries"), names)
  raise ValueError(f"al.oracle must be 'simulated' or 'file', got "
                   f"{config.al.oracle!r}")


def _upper_bound(config, workdir, model, x, labels, evaluate):
  """The heads trained on all training pairs (1 bit each); once."""
  path = os.path.join(workdir, CURVE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  n = len(x)
  i, j = np.triu_indices(n, k=1)
  pairs = np.stack([i, j], 1)
  similar = oracle_lib.similar(labels, pairs, rule=config.al.rule)
  steps = config.train.get("upper_bound_steps") or None
  params, _ = trainer.fit(model, x, pairs, similar, mode="pairs",
                          seed=config.seed, steps=steps, **_fit_args(config))
  entry = {"round": 0, "bits": float(len(pairs)), "labeled_pairs": len(pairs),
           "free_pairs": 0, "labeled_images": 0,
           "map@5": float(evaluate(params)["map@5"])}
  return state_lib.append_curve(path, entry)


def _fit_args(config):
  t = config.train
  return dict(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
              margin=t.margin, gamma=t.gamma,
              min_batches=t.min_batches_per_epoch)


def run(config, workdir):
  """Runs (or resumes) ANNEAL; returns the curve (list of round entries)."""
  al = config.al
  if not al.frozen_backbone:
    raise ValueError(
        "al.frozen_backbone=False (full fine-tuning of the backbone, the "
        "paper's GPU setting) is not supported yet: rs_jax.anneal trains "
        "heads on frozen backbone features only; set "
        "--config.al.frozen_backbone=True")
  if al.strategy not in acquisition.STRATEGIES:
    raise ValueError(f"al.strategy must be one of {acquisition.STRATEGIES}, "
                     f"got {al.strategy!r}")
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  feats, train_source = load_features(config, workdir)
  x, labels = feats[config.data.train_split]
  xq, lq = feats[config.eval.query_split]
  xdb, ldb = feats[config.eval.database_split]
  num_classes = _num_classes(labels)
  logging.info("anneal: %d training images (%d-d features), %d classes; "
               "features in %.0f s", len(x), x.shape[1], num_classes,
               time.time() - start)
  mode = trainer.mode_of(al.strategy)
  model = trainer.create_model(config.model, mode=mode,
                               num_classes=num_classes)

  def evaluate_fn(params):
    return trainer.evaluate(params, xq, lq, xdb, ldb, model=model, ks=(5,))

  if al.upper_bound:
    return _upper_bound(config, workdir, model, x, labels, evaluate_fn)

  def train_fn(items, item_labels, params):
    del params  # every round trains from the same initialisation
    t = time.time()
    params, loss = trainer.fit(model, x, items, item_labels, mode=mode,
                               seed=config.seed, **_fit_args(config))
    logging.info("anneal: trained on %d items in %.1f s, last loss %.4f",
                 len(items), time.time() - t, loss)
    return params

  def embed_fn(params, indices):
    out = trainer.embed(params, x[np.asarray(indices)], model=model,
                        with_classes=mode == "classes")
    return {k: np.asarray(v) for k, v in out.items()}

  def pair_prob_fn(params, embedded, pairs):
    del embedded
    return np.asarray(trainer.pair_probs(params, x, pairs))

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
      oracle=_oracle(config, workdir, labels, train_source),
      train_fn=train_fn, embed_fn=embed_fn, evaluate_fn=evaluate_fn,
      initial_state=initial, pair_prob_fn=pair_prob_fn, lam=al.lam,
      p_factor=al.p_factor, kmeans_iters=al.kmeans_iters, log=logging.info)
  if result.waiting_for:
    logging.info("anneal: waiting for the oracle: fill in %s and rerun",
                 result.waiting_for)
  logging.info("anneal: %s round %d in %.0f s", al.strategy,
               result.state.round, time.time() - start)
  with open(os.path.join(workdir, CURVE)) as f:
    return json.load(f)
