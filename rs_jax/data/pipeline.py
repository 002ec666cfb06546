"""grain input pipelines over random-access sources (rs_jax.data.load).

train_batches: infinite batches; `batch_size` is the global batch of all
processes. Global batch t is a pure function of (seed, t), the same on any
number of processes, and process p reads only its rows [p * b, (p + 1) * b)
(b = batch_size / processes), so the global batch that `sharding.to_global`
assembles keeps the sampler's row structure; grain reads batches ahead in
threads. Samplers:
  "random"   epochs of a seeded permutation of the whole source, cut into
             global batches; the last incomplete batch of an epoch is
             dropped.
  "pk"       p classes x k images each (options p, k; p * k = batch_size),
             classes drawn without replacement, images without replacement
             within a class when it has >= k (else with).
  "triplet"  T = batch_size / 3 triplets as in the MiLaN code: rows
             [anchors (T); positives (T); negatives (T)]; a positive shares a
             class with its anchor (is not the anchor itself), a negative shares
             none. Option two_classes=True: the MiLaN authors' batches
             instead (MHCLN code): per batch one class gives the 2T anchors
             and positives (distinct images) and one other class the T
             negatives (single-label classes).
  "pairs"    P = batch_size / 2 pairs, rows [firsts (P); seconds (P)] and
             `pair_label` int32[P] (1 similar, 0 dissimilar). From the option
             `pairs` int[M, 2] with `pair_labels` [M] (e.g. the annotated pairs
             of active learning), or drawn from class labels when not given;
             half of every batch is similar and half dissimilar, which
             oversamples the minority kind.
  "views"    B = batch_size / 2 images, rows [first views (B); second views
             (B)]: row i and row B + i are two views of one image (SimCLR's
             two augmented views; no label is read). Images are epochs of a
             seeded permutation (as "random"; the last incomplete batch of an
             epoch is dropped). Option view_key: a column whose equal values
             mark rows that are views of one image (e.g. "index" of the
             frozen-feature cache with model.feature_views = 8); each pair is
             then two distinct such rows. Without it every row is its own
             image, read twice, and the views differ by `augment` alone
             (which is then required).
Classes come from `label` (int) or a multi-hot key (option label_key, e.g.
"labels_19"); for multi-hot, "shares a class" means at least one common label
and "pk" draws k images carrying each of p labels. Sources with both `s1` and
`s2` give paired S1/S2 batches with every sampler; `pair_label` is split
over the processes like the rows. augment=True applies a random
flip/90-degree rotation per example (augment.random_dihedral); a callable
f(batch, rng) -> batch is applied instead when given. Either is called on
one row at a time with a generator seeded by (seed, t, global row).

eval_batches: one pass over this process's contiguous shard in index order;
the last batch is padded (repeating the shard's last example) to batch_size;
`mask` bool[B] is False on padding and `index` int64[B] the source index; all
processes yield the same number of batches.
"""
import functools
import sys
from typing import Any, Callable, Iterator, Sequence

import grain
import jax
import numpy as np

from rs_jax.data import augment as augment_lib
from rs_jax.data import sources

SAMPLERS = ("random", "pk", "triplet", "pairs", "views")


def _read(source, indices, keys) -> dict[str, np.ndarray]:
  """Stacks source[i] for i in indices into a dict of [B, ...] arrays."""
  examples = [source[int(i)] for i in indices]
  keys = keys or list(examples[0])
  missing = [k for k in keys if k not in examples[0]]
  if missing:
    raise KeyError(f"keys {missing} not in the source; it has "
                   f"{sorted(examples[0])}")
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in keys}


class ArraySource:
  """A random-access source over in-memory arrays {key: [N, ...]} (e.g.
  synthetic.generate): len(), [i] -> {key: value[i]}."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"ArraySource: arrays differ in length {lengths}")
    self.arrays = arrays

  def __len__(self):
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, i):
    return {k: v[i] for k, v in self.arrays.items()}


def _column(source, key) -> np.ndarray:
  """Returns column `key` [N, ...] of a source without decoding images: the
  label store of a prepared dataset, or an ArraySource's array."""
  if isinstance(source, ArraySource):
    if key not in source.arrays:
      raise KeyError(f"column {key!r} not in the source; it has "
                     f"{sorted(source.arrays)}")
    return np.asarray(source.arrays[key])
  return sources.columns(source, [key])[key]


class _Classes:
  """Class membership from int labels [N] or multi-hot labels [N, C]; from
  the label store of a prepared dataset (no image is decoded) or an
  ArraySource's arrays."""

  def __init__(self, source, label_key):
    labels = _column(source, label_key)
    if labels.ndim == 1:
      labels = np.eye(int(labels.max()) + 1, dtype=bool)[labels]
    self.hot = labels.astype(bool)                       # [N, C]
    self.members = [np.flatnonzero(c) for c in self.hot.T]

  def share(self, a, b) -> bool:
    return bool((self.hot[a] & self.hot[b]).any())

  def draw_unrelated(self, rng, anchor, tries=1000):
    for _ in range(tries):
      j = int(rng.integers(len(self.hot)))
      if not self.share(anchor, j):
        return j
    raise ValueError(f"no example without a class of example {anchor} found "
                     f"in {tries} draws; is there more than one class?")


def _random_indices(t, *, n, batch_size, seed):
  per_epoch = n // batch_size
  if per_epoch == 0:
    raise ValueError(f"source of {n} examples is smaller than one global "
                     f"batch ({batch_size})")
  epoch, step = divmod(t, per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  return perm[step * batch_size:(step + 1) * batch_size], None


def _pk_indices(rng, *, classes, batch_size, p=None, k=4):
  p = batch_size // k if p is None else p
  if p * k != batch_size:
    raise ValueError(f"pk sampler: p * k = {p} x {k} != batch_size {batch_size}")
  usable = [c for c, m in enumerate(classes.members) if len(m)]
  if p > len(usable):
    raise ValueError(f"pk sampler: p = {p} classes requested, "
                     f"{len(usable)} classes have examples")
  chosen = rng.choice(usable, p, replace=False)
  return np.concatenate([
      rng.choice(classes.members[c], k, replace=len(classes.members[c]) < k)
      for c in chosen]), None


def _triplet_indices(rng, *, classes, batch_size, two_classes=False):
  if batch_size % 3:
    raise ValueError(f"triplet sampler: batch_size {batch_size} is not 3T")
  if two_classes:
    return _two_class_triplets(rng, classes=classes, t=batch_size // 3), None
  usable = [c for c, m in enumerate(classes.members) if len(m) >= 2]
  if not usable:
    raise ValueError("triplet sampler: no class has 2 examples")
  anchors, positives, negatives = [], [], []
  for c in rng.choice(usable, batch_size // 3):
    a, pos = rng.choice(classes.members[c], 2, replace=False)
    anchors.append(a)
    positives.append(pos)
    negatives.append(classes.draw_unrelated(rng, a))
  return np.array(anchors + positives + negatives), None


def _two_class_triplets(rng, *, classes, t):
  """The MiLaN authors' batch (MHCLN trainer.py, get_triplets): one class for
  anchors and positives, 2T distinct images of it, and one other class for
  the T negatives, distinct images; single-label classes only."""
  if (classes.hot.sum(1) != 1).any():
    raise ValueError("triplet sampler two_classes: needs single-label "
                     "classes (one class per example)")
  sizes = np.array([len(m) for m in classes.members])
  usable = np.flatnonzero(sizes >= 2 * t)
  if not len(usable) or (sizes >= t).sum() < 2:
    raise ValueError(f"triplet sampler two_classes: T = {t} triplets need a "
                     f"class of >= {2 * t} examples and another of >= {t}; "
                     f"class sizes are {sorted(sizes.tolist())}")
  c = rng.choice(usable)
  negative_classes = np.flatnonzero((sizes >= t) & (np.arange(len(sizes)) != c))
  same = rng.choice(classes.members[c], 2 * t, replace=False)
  other = rng.choice(classes.members[rng.choice(negative_classes)], t,
                     replace=False)
  return np.concatenate([same, other])


def _pairs_indices(rng, *, classes, batch_size, pairs=None, pair_labels=None):
  if batch_size % 2:
    raise ValueError(f"pairs sampler: batch_size {batch_size} is not 2P")
  half = batch_size // 2
  n_sim = half // 2
  labels = np.array([1] * n_sim + [0] * (half - n_sim), np.int32)
  if pairs is not None:
    pairs, pair_labels = np.asarray(pairs), np.asarray(pair_labels)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pair_labels) != len(pairs):
      raise ValueError(f"pairs sampler: pairs must be int[M, 2] with "
                       f"pair_labels [M]; got {pairs.shape}, "
                       f"{np.shape(pair_labels)}")
    chosen = []
    for kind, count in ((1, n_sim), (0, half - n_sim)):
      pool = np.flatnonzero(pair_labels == kind)
      if count and not len(pool):
        raise ValueError(f"pairs sampler: no pair with pair_label {kind}")
      chosen.append(pairs[rng.choice(pool, count)] if count else
                    np.zeros((0, 2), np.int64))
    chosen = np.concatenate(chosen)
  else:
    triplets, _ = _triplet_indices(rng, classes=classes, batch_size=3 * half)
    a, pos, neg = np.split(triplets, 3)
    chosen = np.concatenate([np.stack([a[:n_sim], pos[:n_sim]], 1),
                             np.stack([a[n_sim:], neg[n_sim:]], 1)])
  order = rng.permutation(half)
  return np.concatenate([chosen[order, 0], chosen[order, 1]]), labels[order]


def _view_groups(source, view_key):
  """Returns [int64[V_g]] per image: the rows that are its views (one row
  each without view_key), images in first-row order."""
  if view_key is None:
    return [np.array([i]) for i in range(len(source))]
  groups = {}
  for row, image in enumerate(_column(source, view_key).tolist()):
    groups.setdefault(image, []).append(row)
  return [np.array(g) for g in groups.values()]


def _views_indices(t, *, groups, batch_size, seed):
  if batch_size % 2:
    raise ValueError(f"views sampler: batch_size {batch_size} is not 2B")
  images, _ = _random_indices(t, n=len(groups), batch_size=batch_size // 2,
                              seed=seed)
  rng = np.random.default_rng([seed, t, 2])
  firsts, seconds = [], []
  for g in images:
    rows = groups[g]
    a, b = rng.choice(rows, 2, replace=False) if len(rows) > 1 else rows[[0, 0]]
    firsts.append(a)
    seconds.append(b)
  return np.array(firsts + seconds), None


def train_batches(source, *, batch_size: int, seed: int,
                  sampler: str = "random",
                  augment: bool | Callable[..., dict] = False,
                  keys: Sequence[str] | None = None,
                  **sampler_options) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of this process's batches (see the module docstring).

  batch_size: the global batch (all processes); this process yields rows
  [p * b, (p + 1) * b) of it, b = batch_size / processes.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; known: {SAMPLERS}")
  process, processes = jax.process_index(), jax.process_count()
  if batch_size < 1 or batch_size % processes:
    raise ValueError(f"batch_size must be a positive multiple of the "
                     f"{processes} processes, got {batch_size}")
  local = batch_size // processes
  rows = slice(process * local, (process + 1) * local)
  label_key = sampler_options.pop("label_key", "label")
  if sampler == "random":
    if sampler_options:
      raise ValueError(f"random sampler takes no options {sorted(sampler_options)}")
    draw = functools.partial(_random_indices, n=len(source),
                             batch_size=batch_size, seed=seed)
  elif sampler == "views":
    view_key = sampler_options.pop("view_key", None)
    if sampler_options:
      raise ValueError(f"views sampler takes only the option view_key, got "
                       f"{sorted(sampler_options)}")
    groups = _view_groups(source, view_key)
    if not augment and max(len(g) for g in groups) < 2:
      raise ValueError(
          "views sampler: every image has one row and augment is off, so its "
          "two views would be the same; set train.augment or give view_key "
          "with several views per image (model.feature_views = 8)")
    draw = functools.partial(_views_indices, groups=groups,
                             batch_size=batch_size, seed=seed)
  else:
    fn = {"pk": _pk_indices, "triplet": _triplet_indices,
          "pairs": _pairs_indices}[sampler]
    fn = functools.partial(fn, classes=_Classes(source, label_key),
                           batch_size=batch_size, **sampler_options)
    draw = lambda t: fn(np.random.default_rng([seed, t]))
  draw(0)  # bad options raise here, not inside grain's reader threads
  if augment is True:
    augment = augment_lib.random_dihedral
  keys = list(keys) if keys else None

  def make_batch(t: int) -> dict[str, np.ndarray]:
    indices, pair_label = draw(t)
    batch = _read(source, indices[rows], keys)
    if pair_label is not None:  # [P] beside rows [firsts; seconds]
      per_process = len(pair_label) // processes
      batch["pair_label"] = pair_label[process * per_process:
                                       (process + 1) * per_process]
    if augment:  # drawn per global row: the same on any process count
      batch = _stack([augment({k: v[i:i + 1] for k, v in batch.items()},
                              rng=np.random.default_rng([seed, t, row, 1]))
                      for i, row in enumerate(range(rows.start, rows.stop))])
    return batch

  dataset = grain.MapDataset.range(sys.maxsize).map(make_batch)
  return iter(dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)))


def _stack(batches: list[dict]) -> dict:
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def eval_batches(source, *, batch_size: int,
                 keys: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
  """One exact pass over this process's shard (see the module docstring)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  processes = jax.process_count()
  shards = np.array_split(np.arange(len(source)), processes)
  shard = shards[jax.process_index()]
  num_batches = -(-max(len(s) for s in shards) // batch_size)
  keys = list(keys) if keys else None

  def make_batch(b: int) -> dict[str, Any]:
    index = shard[b * batch_size:(b + 1) * batch_size]
    mask = np.zeros(batch_size, bool)
    mask[:len(index)] = True
    # Padding repeats a real example (or example 0 for an empty shard).
    pad = index[-1] if len(index) else (shard[-1] if len(shard) else 0)
    index = np.concatenate([index, np.full(batch_size - len(index), pad)])
    batch = _read(source, index, keys)
    batch["mask"], batch["index"] = mask, index.astype(np.int64)
    return batch

  dataset = grain.MapDataset.range(num_batches).map(make_batch)
  return iter(dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)))
