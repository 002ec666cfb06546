"""What preparing a split reports besides its examples: per-channel pixel
moments (the band statistics), event counts and skipped items. Summaries
merge exactly, so workers (local processes or Beam) summarise their items and
the merge equals one pass over the split."""
import collections

import numpy as np


class ChannelMoments:
  """Per-channel pixel count, mean and sum of squared deviations, merged
  exactly (Chan et al.'s pairwise update) in float64."""

  def __init__(self, n=0, mean=0.0, m2=0.0):
    self.n, self.mean, self.m2 = n, mean, m2

  @classmethod
  def of(cls, x, repeat=1):
    """Moments of [H, W, C] pixels, each pixel counted `repeat` times (a
    band on a coarser grid counts as its nearest-neighbour upsampling)."""
    x = np.asarray(x)
    rows = np.ascontiguousarray(np.moveaxis(x, -1, 0), np.float64).reshape(
        x.shape[-1], -1)  # [C, pixels]: contiguous per channel
    mean = rows.mean(1)
    dev = rows - mean[:, None]
    return cls(rows.shape[1] * repeat, mean,
               np.einsum("ij,ij->i", dev, dev) * repeat)

  @classmethod
  def concat(cls, parts):
    """Channels side by side (all parts must count the same pixels)."""
    counts = {p.n for p in parts}
    if len(counts) != 1:
      raise ValueError(f"channel groups count different pixels: {counts}")
    return cls(counts.pop(), np.concatenate([np.atleast_1d(p.mean)
                                             for p in parts]),
               np.concatenate([np.atleast_1d(p.m2) for p in parts]))

  def merge(self, other):
    total = self.n + other.n
    if other.n:
      delta = other.mean - self.mean
      self.mean = self.mean + delta * other.n / total
      self.m2 = self.m2 + other.m2 + delta ** 2 * self.n * other.n / total
      self.n = total
    return self

  def as_dict(self):
    return {"mean": np.atleast_1d(self.mean).tolist(),
            "std": np.sqrt(np.atleast_1d(self.m2) / self.n).tolist(),
            "count": self.n}


class Summary:
  """moments {feature: ChannelMoments}, counts {event: n}, skipped [(path,
  problem)] of some items of one split."""

  def __init__(self):
    self.moments: dict[str, ChannelMoments] = {}
    self.counts: collections.Counter = collections.Counter()
    self.skipped: list[tuple[str, str]] = []

  def merge(self, other: "Summary") -> "Summary":
    for k, m in other.moments.items():
      self.moments.setdefault(k, ChannelMoments()).merge(m)
    self.counts.update(other.counts)
    self.skipped.extend(other.skipped)
    return self

  def to_json(self):
    return {"moments": {k: [m.n, np.atleast_1d(m.mean).tolist(),
                            np.atleast_1d(m.m2).tolist()]
                        for k, m in self.moments.items()},
            "counts": dict(self.counts),
            "skipped": [list(s) for s in self.skipped]}

  @classmethod
  def from_json(cls, blob):
    out = cls()
    out.moments = {k: ChannelMoments(n, np.asarray(mean), np.asarray(m2))
                   for k, (n, mean, m2) in blob["moments"].items()}
    out.counts.update(blob["counts"])
    out.skipped = [tuple(s) for s in blob["skipped"]]
    return out
