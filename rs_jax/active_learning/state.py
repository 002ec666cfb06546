"""The active-learning state: labeled set T, pool U, bits; its updates and
its crash-safe persistence (atomic npz writes) plus the al_curve.json log.

Bits (ANNEAL Sec. III): 1 per pair label, log2 C per class label; pairs
derived by transitivity are free and counted apart. The initial set can be
charged either way (`initial_cost`): "class_labels" = its A selected images
labeled with classes (A log2 C bits; the paper's curves start there: 84
images x log2 21 = 369 bits on UC Merced) or "pairs" = 1 bit per pair.
"""
import dataclasses
import json
import os

import numpy as np

from rs_jax import paths
from rs_jax.active_learning import acquisition
from rs_jax.active_learning import pairs as pairs_lib
from rs_jax.active_learning import transitivity

PHASES = ("train", "select", "query")
_I2 = np.zeros((0, 2), np.int64)
_I1 = np.zeros(0, np.int64)


@dataclasses.dataclass
class ALState:
  """Everything needed to resume active learning after a crash.

  round: AL rounds whose labels are in T (0 = the initial set).
  phase: next step -- "train" (T changed, model not trained on it yet),
    "select" (trained; pick the next queries), "query" (queries in
    `pending` / `pending_images` wait for the oracle).
  pairs int64[M, 2], similar bool[M], free bool[M]: T; free = derived by
    transitivity (0 bits). pool int64[P, 2]: U. images int64[K],
    image_labels int64[K]: class-labeled images (CAL). seed: trial seed; the
    random draws of round r use (seed, r).
  """
  num_images: int
  num_classes: int
  seed: int
  round: int = 0
  phase: str = "train"
  bits: float = 0.0
  conflicts: int = 0
  pairs: np.ndarray = dataclasses.field(default_factory=lambda: _I2)
  similar: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, bool))
  free: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, bool))
  pool: np.ndarray = dataclasses.field(default_factory=lambda: _I2)
  pending: np.ndarray = dataclasses.field(default_factory=lambda: _I2)
  images: np.ndarray = dataclasses.field(default_factory=lambda: _I1)
  image_labels: np.ndarray = dataclasses.field(default_factory=lambda: _I1)
  pending_images: np.ndarray = dataclasses.field(default_factory=lambda: _I1)

  @property
  def labeled_pairs(self) -> int:
    """Annotated pairs in T (initial set + oracle), free ones excluded."""
    return int(np.sum(~self.free))

  @property
  def free_pairs(self) -> int:
    return int(np.sum(self.free))


def new_pair_state(labels, *, num_classes: int, fraction: float, seed: int,
                   pool_size=None, num_similar: int = 4,
                   num_dissimilar: int = 4, rule: str = "any_shared",
                   initial_cost: str = "class_labels") -> ALState:
  """State for pair strategies: initial T (`pairs.initial_set`) with its
  transitive pairs, U = all other pairs (or a seeded sample of pool_size)."""
  anchors, init, sim = pairs_lib.initial_set(
      labels, fraction=fraction, num_similar=num_similar,
      num_dissimilar=num_dissimilar, seed=seed, rule=rule)
  if initial_cost == "class_labels":
    bits = len(anchors) * acquisition.class_label_bits(num_classes)
  elif initial_cost == "pairs":
    bits = len(init) * acquisition.PAIR_LABEL_BITS
  else:
    raise ValueError("initial_cost must be 'class_labels' or 'pairs', got "
                     f"{initial_cost!r}")
  n = len(labels)
  state = ALState(num_images=n, num_classes=num_classes, seed=seed, bits=bits)
  state = add_pair_labels(state, init, sim, cost=0.0)
  state.pool = pairs_lib.unlabeled_pool(n, state.pairs, max_pairs=pool_size,
                                        seed=seed)
  return state


def new_image_state(labels, *, num_classes: int, fraction: float,
                    seed: int) -> ALState:
  """State for CAL: the same initial images as `new_pair_state` with the
  same seed, labeled with their classes (A log2 C bits)."""
  labels = np.asarray(labels)
  anchors, _, _ = pairs_lib.initial_set(labels, fraction=fraction, seed=seed)
  state = ALState(num_images=len(labels), num_classes=num_classes, seed=seed)
  return add_class_labels(state, anchors, labels[anchors])


def add_pair_labels(state: ALState, pairs, similar, *,
                    cost=None) -> ALState:
  """T + the annotated pairs, their one-step transitive pairs recomputed over
  all annotated pairs; both removed from U; bits += cost (default 1 each)."""
  new = pairs_lib.canonical(pairs)
  similar = np.asarray(similar, bool).reshape(-1)
  if len(similar) != len(new):
    raise ValueError(f"{len(similar)} answers for {len(new)} pairs")
  n = state.num_images
  if np.isin(pairs_lib.keys(new, n),
             pairs_lib.keys(state.pairs[~state.free], n)).any():
    raise ValueError("an annotated pair is already labeled in T")
  ann_pairs = np.concatenate([state.pairs[~state.free], new])
  ann_sim = np.concatenate([state.similar[~state.free], similar])
  free_pairs, free_sim, conflicts = transitivity.one_step(
      ann_pairs, ann_sim, num_images=n)
  cost = len(new) * acquisition.PAIR_LABEL_BITS if cost is None else cost
  return dataclasses.replace(
      state, bits=state.bits + cost, conflicts=conflicts,
      pairs=np.concatenate([ann_pairs, free_pairs]),
      similar=np.concatenate([ann_sim, free_sim]),
      free=np.r_[np.zeros(len(ann_pairs), bool), np.ones(len(free_pairs),
                                                         bool)],
      pool=pairs_lib.remove(state.pool, np.concatenate([new, free_pairs]), n),
      pending=_I2)


def add_class_labels(state: ALState, images, labels) -> ALState:
  """Class-labeled images (CAL) + `images`; bits += log2 C each."""
  images = np.asarray(images, np.int64)
  if np.isin(images, state.images).any():
    raise ValueError("an image is already class-labeled")
  return dataclasses.replace(
      state,
      bits=state.bits + len(images) * acquisition.class_label_bits(
          state.num_classes),
      images=np.concatenate([state.images, images]),
      image_labels=np.concatenate([state.image_labels,
                                   np.asarray(labels, np.int64)]),
      pending_images=_I1)


def save(path: str, state: ALState) -> None:
  """Writes the state to `path` (npz) atomically."""
  if state.phase not in PHASES:
    raise ValueError(f"phase must be one of {PHASES}, got {state.phase!r}")
  arrays = {f.name: np.asarray(getattr(state, f.name))
            for f in dataclasses.fields(state)}
  with paths.atomic_write(path) as f:
    np.savez(f, **arrays)


def load(path: str) -> ALState:
  """Reads a state written by `save`."""
  with np.load(path) as z:
    values = {}
    for f in dataclasses.fields(ALState):
      if f.name not in z:
        raise ValueError(f"{path}: no {f.name!r} in the saved AL state")
      v = z[f.name]
      values[f.name] = v.item() if v.ndim == 0 else v
  return ALState(**values)


def append_curve(path: str, entry: dict) -> list:
  """Adds `entry` to the JSON list in `path` (atomically); an entry of the
  same "round" is replaced, so re-running a round after a crash is safe."""
  curve = []
  if os.path.exists(path):
    with open(path) as f:
      curve = json.load(f)
  curve = [e for e in curve if e["round"] != entry["round"]] + [entry]
  curve.sort(key=lambda e: e["round"])
  paths.write_text(path, json.dumps(curve, indent=1))
  return curve
