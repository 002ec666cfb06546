"""Deterministic, seeded train/validation/test splits.

A split spec is a dict {split name: ratio} with ratios summing to 1 (or the
string "train=0.8,test=0.2"), a preset name, or None (everything in
"train"). Presets:
  "milan":  60 % train / 40 % test per class, then 20 images per class moved
            from train to validation (MiLaN: "60% ... for training and
            cross-validation", "a validation set composed of 20 images per
            class").
  "anneal": 80 / 10 / 10 % train / validation / test per class (ANNEAL,
            Sec. IV: "training (80%), validation (10%) and test (10%)").
Counts come from rounding the cumulative ratios, so they always sum to n.
Every split's indices are returned sorted.
"""
from typing import Mapping

import numpy as np

PRESETS = {
    "milan": ({"train": 0.6, "test": 0.4}, 20),
    "anneal": ({"train": 0.8, "validation": 0.1, "test": 0.1}, 0),
}


def resolve(spec) -> tuple[dict[str, float], int]:
  """Spec -> (ratios, validation images per class taken from train)."""
  if spec is None:
    return {"train": 1.0}, 0
  if isinstance(spec, str) and "=" in spec:  # "train=0.8,test=0.2"
    try:
      spec = {k.strip(): float(v) for k, v in
              (part.split("=") for part in spec.split(",") if part.strip())}
    except ValueError:
      raise ValueError(f"split spec {spec!r}: expected 'name=ratio,...'"
                       ) from None
  if isinstance(spec, str):
    if spec not in PRESETS:
      raise ValueError(f"unknown split preset {spec!r}; known: {sorted(PRESETS)}")
    return dict(PRESETS[spec][0]), PRESETS[spec][1]
  if not isinstance(spec, Mapping) or not spec:
    raise ValueError(f"splits must be a dict of ratios, a preset or None; "
                     f"got {spec!r}")
  ratios = {str(k): float(v) for k, v in spec.items()}
  if min(ratios.values()) < 0 or abs(sum(ratios.values()) - 1.0) > 1e-6:
    raise ValueError(f"split ratios must be >= 0 and sum to 1, got {ratios}")
  if "all" in ratios:
    raise ValueError("'all' is reserved (every example), not a split name")
  return ratios, 0


def _cut(indices, ratios):
  bounds = np.round(np.cumsum(list(ratios.values())) * len(indices)).astype(int)
  return dict(zip(ratios, np.split(indices, bounds[:-1])))


def random_split(n: int, spec, *, seed: int) -> dict[str, np.ndarray]:
  """Indices 0..n-1 split by ratios after a seeded permutation."""
  ratios, per_class = resolve(spec)
  if per_class:
    raise ValueError(f"split spec {spec!r} needs class labels (stratified)")
  perm = np.random.default_rng([seed, n]).permutation(n)
  return {k: np.sort(v) for k, v in _cut(perm, ratios).items()}


def stratified_split(labels, spec, *, seed: int) -> dict[str, np.ndarray]:
  """Per class: seeded permutation of its indices cut by the ratios (and, for
  "milan", `validation_per_class` moved from train to validation)."""
  ratios, per_class = resolve(spec)
  labels = np.asarray(labels)
  out = {k: [] for k in ratios}
  if per_class:
    out["validation"] = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    perm = np.random.default_rng([seed, int(c)]).permutation(members)
    parts = _cut(perm, ratios)
    if per_class:
      train = parts["train"]
      if len(train) < per_class:
        raise ValueError(
            f"class {c}: {len(train)} training images, fewer than the "
            f"{per_class} validation images per class to take from them")
      parts["validation"], parts["train"] = train[:per_class], train[per_class:]
    for k, v in parts.items():
      out[k].append(v)
  return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64)
          for k, v in out.items()}
