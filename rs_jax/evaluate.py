"""Compiled evaluation: encode -> binarize -> pack -> Hamming top-k -> metrics.

Splits are encoded batch by batch with a jitted, batch-sharded encoder; the
outputs stay on device and `retrieval_scores` (one jitted function) ranks the
archive by Hamming distance of the packed codes and, beside it, by Euclidean
distance of the float (pre-binarisation) outputs, then scores both with
`metrics.retrieval_metrics`. With several modalities every direction is
scored ("s1->s2/map@20": S1 queries against the S2 archive).
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax import hashing
from rs_jax import metrics
from rs_jax import ranking
from rs_jax import sharding
from rs_jax.models import encoder as encoder_lib


METRICS = ("map", "map_r", "precision", "recall", "acg", "wap", "ndcg",
           "ndcg_r")


def metric_names(inputs, ks) -> set[str]:
  """Keys `Evaluator.evaluate` returns for these modalities and cut-offs."""
  prefixes = ([""] if len(inputs) == 1 else ["mean/"] + [
      f"{q}->{d}/" for q, d in itertools.product(inputs, repeat=2)])
  return {f"{p}{f}{m}@{k}" for p in prefixes for f in ("", "float/")
          for m in METRICS for k in ks}


def packed_codes(outputs):
  """float[N, K] sigmoid outputs -> uint32[N, ceil(K/32)] (MiLaN eq. 5)."""
  return hashing.pack_bits(hashing.binarize(outputs))


@functools.partial(jax.jit, static_argnames=("ks", "exclude_self"))
def retrieval_scores(queries, query_labels, archive, archive_labels, *, ks,
                     exclude_self):
  """Hamming metrics of the codes and float/ metrics of the outputs.

  queries float32[Q, K], archive float32[N, K] hash-layer outputs; labels
  int[.] or multi-hot [., C]. Returns {name@k: float32[]} and
  {float/name@k: ...} (`metrics.retrieval_metrics`).
  """
  args = (query_labels, archive_labels)
  hamming = metrics.retrieval_metrics(
      packed_codes(queries), args[0], packed_codes(archive), args[1], ks,
      exclude_self)
  euclid = metrics.retrieval_metrics(queries, args[0], archive, args[1], ks,
                                     exclude_self, metric="euclidean")
  return {**hamming, **{f"float/{k}": v for k, v in euclid.items()}}


@functools.partial(jax.jit, static_argnames="n")
def in_source_order(rows, index, mask, n):
  """rows[B, ...] of source items index[B] (mask: real) -> [n, ...]."""
  target = jnp.where(mask, index, n)
  out = jnp.zeros((n, *rows.shape[1:]), rows.dtype)
  return out.at[target].set(rows, mode="drop")


def score_directions(queries, query_labels, archive, archive_labels, *, ks,
                     same_split: bool) -> dict:
  """Scores every query -> archive modality direction.

  queries / archive: {modality: float32[N, K]} outputs, row i of every
  modality the same place. With same_split (queries = archive) query i's own
  item is excluded in every direction: in q->q its own code, in q->d its
  partner of the other modality, a guaranteed hit otherwise. Returns
  {metric: float}; with 2+ modalities keyed 'q->d/metric', plus 'mean/' for
  their average (the thesis selects on it).
  """
  modalities = list(queries)
  directions = list(itertools.product(modalities, repeat=2))
  results = {}
  for mq, md in directions:
    scores = retrieval_scores(
        queries[mq], query_labels, archive[md], archive_labels, ks=tuple(ks),
        exclude_self=same_split)
    prefix = "" if len(modalities) == 1 else f"{mq}->{md}/"
    results.update({prefix + k: float(v) for k, v in scores.items()})
  if len(modalities) > 1:
    for k in scores:
      results[f"mean/{k}"] = sum(results[f"{q}->{d}/{k}"]
                                 for q, d in directions) / len(directions)
  return results


class Evaluator:
  """Encodes splits and scores retrieval for a training state."""

  def __init__(self, models, data, mesh, *, ks):
    self.data, self.ks = data, tuple(ks)
    replicated = sharding.replicated(mesh)
    self.batch_sharding = sharding.batch_sharded(mesh)
    self._encode = jax.jit(
        lambda params, stats, batch: encoder_lib.encode(
            models, params, stats, batch, data.stats, train=False)[0],
        in_shardings=(replicated, replicated, self.batch_sharding),
        out_shardings=self.batch_sharding)

  def encode_split(self, state, split):
    """-> ({modality: float32[N, K]}, labels [N] or [N, C]), on device."""
    return self.encode_batches(state, self.data.eval_batches(split),
                               len(self.data.sources[split]))

  def encode_batches(self, state, batches, num_rows):
    """`encode_split` of host batches of one pass over num_rows rows
    (`data.pipeline.eval_batches`: "index", "mask", the label key and the
    encoders' inputs), e.g. of a dataset other than the run's.

    Each process encodes its shard; rows go back to source order through
    the batches' `index`, padding (`mask` False) is dropped.
    """
    outputs, index, mask, labels = [], [], [], []
    for host_batch in batches:
      batch = self.data.to_global(host_batch, self.batch_sharding)
      outputs.append(self._encode(state["params"], state["batch_stats"],
                                  batch))
      index.append(batch["index"])
      mask.append(batch["mask"])
      labels.append(batch[self.data.label_key])
    n = num_rows
    index, mask = jnp.concatenate(index), jnp.concatenate(mask)
    out = {m: in_source_order(jnp.concatenate([o[m] for o in outputs]),
                              index, mask, n) for m in outputs[0]}
    return out, in_source_order(jnp.concatenate(labels), index, mask, n)

  def evaluate(self, state, query_split, database_split) -> dict:
    """{metric: float}; with 2+ modalities prefixed 'q->d/' per direction,
    and 'mean/' for their average."""
    queries, query_labels = self.encode_split(state, query_split)
    if database_split == query_split:
      archive, archive_labels = queries, query_labels
    else:
      archive, archive_labels = self.encode_split(state, database_split)
    self._last = (query_split, database_split, queries, query_labels, archive,
                  archive_labels)
    return score_directions(queries, query_labels, archive, archive_labels,
                            ks=self.ks,
                            same_split=database_split == query_split)

  def save_sheet(self, path, num_queries: int = 4):
    """PNG of the first queries of the last `evaluate` and their top 8."""
    from rs_jax import viz  # pylint: disable=g-import-not-at-top
    split, archive_split, queries, query_labels, archive, archive_labels = (
        self._last)
    m = self.data.inputs[-1]
    num_queries = min(num_queries, queries[m].shape[0])
    top = min(8 + (archive_split == split), archive[m].shape[0])
    dist, idx = jax.device_get(ranking.hamming_topk(
        packed_codes(queries[m][:num_queries]), packed_codes(archive[m]),
        top))
    if archive_split == split:  # drop the query itself
      idx, dist = jax.device_get(ranking.exclude_rows(
          idx, np.arange(num_queries), dist))
    viz.retrieval_sheet(
        path,
        query_images=[self.data.example(split, i)[m]
                      for i in range(num_queries)],
        result_images=[[self.data.example(archive_split, j)[m] for j in row]
                       for row in idx],
        query_labels=np.asarray(query_labels[:num_queries]),
        result_labels=np.asarray(archive_labels)[idx], distances=dist,
        modality=m)
