"""Retrieval metrics: relevance, mAP@k, P@k, R@k, ACG@k, WAP@k, NDCG@k.

Labels are class ids int[N] (single-label) or multi-hot [N, C] (multi-label);
C(q, i) is the number of labels that query q and image i share (single-label:
1 for the same class, else 0), and i is relevant to q iff C(q, i) >= 1.

A ranked list is an array [Q, L], position 0 = best match, of either relevance
(bool, or ints with nonzero = relevant) or shared-label counts C(q, i); a
metric "@k" reads its first k columns (k a static int, 1 <= k <= L). Metrics
are means over queries; a query without a relevant item scores 0, never NaN.

Two normalisations, kept apart by name (the papers differ):
  "map@k", "ndcg@k": normalised by what the top k holds -- AP divided by the
    number of relevant items in the top k (thesis eq. 2.11, MiLaN code); iDCG
    of the retrieved items re-sorted by decreasing C (thesis eq. 2.9).
  "map_r@k", "ndcg_r@k": normalised by what the archive holds -- AP divided by
    min(k, R), R = relevant items in the archive (k = N gives scikit-learn's
    average_precision_score); iDCG of the archive's k best items.
"""
import jax
import jax.numpy as jnp
import numpy as np
from rs_jax import hashing
from rs_jax import ranking


def _is_multilabel(query_labels, db_labels) -> bool:
  """Checks the label pair; True for multi-hot [., C], False for ids [.]."""
  qs, ds = jnp.shape(query_labels), jnp.shape(db_labels)
  if len(qs) != len(ds) or len(qs) not in (1, 2):
    raise ValueError(
        "query_labels and db_labels must both be class ids ([Q], [N]) or both "
        f"multi-hot ([Q, C], [N, C]); got shapes {qs} and {ds}")
  if len(qs) == 2 and qs[1] != ds[1]:
    raise ValueError(
        f"query_labels has {qs[1]} classes (multi-hot columns), "
        f"db_labels has {ds[1]}")
  for x, name in ((query_labels, "query_labels"), (db_labels, "db_labels")):
    if len(qs) == 1 and not jnp.issubdtype(jnp.result_type(x), jnp.integer):
      raise TypeError(
          f"{name}: class ids [N] must be integers, got {jnp.result_type(x)}")
  return len(qs) == 2


def _multihot(x):
  return (jnp.asarray(x) != 0).astype(jnp.int32)


def shared_labels(query_labels, db_labels):
  """C(q, i) for all pairs: [Q] or [Q, C], [N] or [N, C] -> int32[Q, N]."""
  query_labels, db_labels = jnp.asarray(query_labels), jnp.asarray(db_labels)
  if _is_multilabel(query_labels, db_labels):
    return _multihot(query_labels) @ _multihot(db_labels).T
  return (query_labels[:, None] == db_labels[None, :]).astype(jnp.int32)


def relevance(query_labels, db_labels):
  """Tr(q, i) (thesis eq. 2.11): at least one shared label -> bool[Q, N]."""
  return shared_labels(query_labels, db_labels) > 0


def _shared_retrieved(query_labels, retrieved_labels):
  """C(q, i) of per-query lists: [Q(, C)], [Q, k(, C)] -> int32[Q, k]."""
  if jnp.ndim(query_labels) == 2:
    return jnp.einsum("qc,qkc->qk", _multihot(query_labels),
                      _multihot(retrieved_labels))
  return (query_labels[:, None] == retrieved_labels).astype(jnp.int32)


def _check_ranked(x, k, name):
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be [Q, L], got shape {x.shape}")
  if not 1 <= k <= x.shape[1]:
    raise ValueError(f"k must be in [1, {x.shape[1]}] for {name} of shape "
                     f"{x.shape}, got {k}")
  return x


def _check_per_query(x, q, name):
  x = jnp.asarray(x)
  if x.shape != (q,):
    raise ValueError(f"{name} must be [{q}] (one per query), got {x.shape}")
  return x.astype(jnp.float32)


def _ratio(a, b):
  """a / b, 0 where b == 0."""
  return jnp.where(b > 0, a / jnp.where(b > 0, b, 1), 0.0)


def _ranks(k):
  """Positions i = 1..k, a trace-time constant (k is static)."""
  return np.arange(1, k + 1, dtype=np.float32)


def average_precision_at_k(ranked_relevance, k: int, num_relevant=None):
  """AP@k per query: bool/int[Q, L] -> float32[Q].

  AP(q) = 1/Z sum_{i<=k} Tr(q, i) N_Tr(q)@i / i   (thesis eq. 2.11), with
  Z = N_Tr(q)@k, the relevant items in the top k, when `num_relevant` is None
  (thesis, MiLaN code); Z = min(k, R_q) given `num_relevant` R int[Q], the
  relevant items in the archive. AP = 0 where Z = 0.
  """
  rel = _check_ranked(ranked_relevance, k, "ranked_relevance")[:, :k] != 0
  hits = jnp.cumsum(rel, axis=1, dtype=jnp.float32)
  total = jnp.sum(jnp.where(rel, hits / _ranks(k), 0.0), axis=1)
  if num_relevant is None:
    norm = hits[:, -1]
  else:
    norm = jnp.minimum(
        k, _check_per_query(num_relevant, rel.shape[0], "num_relevant"))
  return _ratio(total, norm)


def map_at_k(ranked_relevance, k: int, num_relevant=None):
  """mAP@k = mean_q AP@k (thesis eq. 2.10); see `average_precision_at_k`."""
  return jnp.mean(average_precision_at_k(ranked_relevance, k, num_relevant))


def precision_at_k(ranked_relevance, k: int):
  """P@k = mean_q N_Tr(q)@k / k: bool/int[Q, L] -> float32[]."""
  rel = _check_ranked(ranked_relevance, k, "ranked_relevance")[:, :k] != 0
  return jnp.mean(rel, dtype=jnp.float32)


def recall_at_k(ranked_relevance, k: int, num_relevant):
  """R@k = mean_q N_Tr(q)@k / R_q (0 where R_q = 0), R int[Q] -> float32[]."""
  rel = _check_ranked(ranked_relevance, k, "ranked_relevance")[:, :k] != 0
  r = _check_per_query(num_relevant, rel.shape[0], "num_relevant")
  return jnp.mean(_ratio(jnp.sum(rel, axis=1, dtype=jnp.float32), r))


def acg_at_k(ranked_shared, k: int):
  """ACG@k = mean_q 1/k sum_{i<=k} C(q, i) (thesis eq. 2.7): int[Q, L] -> []."""
  c = _check_ranked(ranked_shared, k, "ranked_shared")[:, :k]
  return jnp.mean(c, dtype=jnp.float32)


def wap_at_k(ranked_shared, k: int):
  """WAP@k (thesis eq. 2.12): int[Q, L] shared-label counts -> float32[].

  WAP = mean_q 1/N_Tr(q)@k sum_{i<=k} Tr(q, i) ACG@i, Tr(q, i) = [C(q, i) > 0];
  0 for a query without a relevant item in the top k. Like ACG it counts
  labels, so it can exceed 1 for multi-label data.
  """
  c = _check_ranked(ranked_shared, k, "ranked_shared")[:, :k]
  c = c.astype(jnp.float32)
  acg = jnp.cumsum(c, axis=1) / _ranks(k)
  total = jnp.sum(jnp.where(c > 0, acg, 0.0), axis=1)
  return jnp.mean(_ratio(total, jnp.sum(c > 0, axis=1)))


def _dcg(gains):
  """DCG = sum_i (2^C_i - 1) / log2(1 + i), i = 1.. (thesis eq. 2.8)."""
  g = jnp.exp2(gains.astype(jnp.float32)) - 1.0
  return jnp.sum(g / np.log2(1.0 + _ranks(gains.shape[1])), axis=1)


def ndcg_at_k(ranked_shared, k: int, ideal_shared=None):
  """NDCG@k = mean_q DCG / iDCG (thesis eqs. 2.8-2.9): int[Q, L] -> float32[].

  DCG as in `_dcg` (the thesis writes log(1 + i); the base cancels in the
  ratio). iDCG is the DCG of the k largest entries of each row of
  `ideal_shared` int[Q, M] (M >= k), by default the retrieved top k itself
  (thesis: retrieved images re-sorted by decreasing C); pass the archive's
  counts (`shared_labels(query_labels, db_labels)`, or its k best per query)
  for the archive-wide iDCG. NDCG = 0 where iDCG = 0.
  """
  c = _check_ranked(ranked_shared, k, "ranked_shared")[:, :k]
  if ideal_shared is None:
    ideal_shared = c
  ideal = _check_ranked(ideal_shared, k, "ideal_shared")
  ideal = jax.lax.top_k(ideal, k)[0]
  return jnp.mean(_ratio(_dcg(c), _dcg(ideal)))


def _archive_histogram(query_labels, db_labels, batch_size=256):
  """int32[Q, B]: archive items sharing c = 0..B-1 labels with each query.

  B = 2 for class ids (sort + binary search). B = C + 1 for multi-hot: labels
  packed into bits, C(q, .) = popcount(q AND d) over the archive for
  `batch_size` queries at a time, then counted per value.
  """
  if jnp.ndim(query_labels) == 2:
    num_bins = query_labels.shape[1] + 1
    db = hashing.pack_bits(db_labels).T  # uint32[W, N]

    def row(q):  # uint32[W]: one query's packed labels.
      shared = jnp.sum(jax.lax.population_count(db & q[:, None]), axis=0)
      return jnp.bincount(shared, length=num_bins)

    return jax.lax.map(row, hashing.pack_bits(query_labels),
                       batch_size=batch_size).astype(jnp.int32)
  ids = jnp.sort(db_labels)
  same = (jnp.searchsorted(ids, query_labels, side="right") -
          jnp.searchsorted(ids, query_labels, side="left")).astype(jnp.int32)
  return jnp.stack([ids.shape[0] - same, same], axis=1)


def _best_from_histogram(hist, k):
  """The k largest C(q, .) of the archive, descending: int32[Q, B] -> [Q, k]."""
  at_least = jnp.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # #items with C >= c.
  return jnp.sum(at_least[:, 1:, None] > jnp.arange(k), axis=1)


def retrieval_metrics(query_codes, query_labels, db_codes, db_labels,
                      ks=(5, 20, 50), exclude_self=False, metric="hamming"):
  """Ranks the archive and scores it; jit with ks, exclude_self, metric static.

  Args:
    query_codes: uint32[Q, W] packed codes (`hashing.pack_bits`), or float
      features [Q, D] when metric is 'euclidean' or 'cosine'.
    query_labels: int[Q] class ids or [Q, C] multi-hot.
    db_codes: uint32[N, W].
    db_labels: int[N] or [N, C], same kind as query_labels.
    ks: cut-offs (static tuple of ints).
    exclude_self: the queries are the first Q archive items (query i = item
      i; MiLaN protocol: queries = archive = test set): each query is left
      out of its own ranking and of R. Ranks k + 1 and drops the query, or
      the last entry when lower-index copies at distance 0 pushed the query
      out (= ranking the archive without it).
  Returns:
    {f"{name}@{k}": float32[]} for name in map, map_r, precision, recall,
    acg, wap, ndcg, ndcg_r (module docstring: map/ndcg vs map_r/ndcg_r).
    Ranking by `ranking.hamming_topk` / `float_topk` (ties by ascending
    archive index);
    R (recall, map_r) and the archive iDCG (ndcg_r) come from one pass over
    the archive: a class histogram for ids, for multi-hot a popcount of
    packed labels over [256, N] query blocks.
  """
  ks = tuple(ks)
  if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
    raise ValueError(f"ks must be a non-empty tuple of ints >= 1, got {ks}")
  query_labels, db_labels = jnp.asarray(query_labels), jnp.asarray(db_labels)
  multi = _is_multilabel(query_labels, db_labels)
  for codes, labels, name in ((query_codes, query_labels, "query"),
                              (db_codes, db_labels, "db")):
    if jnp.shape(labels)[0] != jnp.shape(codes)[0]:
      raise ValueError(
          f"{name}_labels has {jnp.shape(labels)[0]} rows but {name}_codes "
          f"has {jnp.shape(codes)[0]}")
  num_db, kmax = jnp.shape(db_codes)[0], max(ks)
  if exclude_self and jnp.shape(query_codes)[0] > num_db:
    raise ValueError(
        f"exclude_self=True needs query i to be archive item i, got "
        f"{jnp.shape(query_codes)[0]} query_codes for {num_db} db_codes")
  if kmax > num_db - exclude_self:
    raise ValueError(
        f"ks: max(ks) = {kmax} exceeds the {num_db - exclude_self} archive "
        f"items that can be retrieved (exclude_self={exclude_self})")

  if metric == "hamming":
    _, indices = ranking.hamming_topk(query_codes, db_codes,
                                      kmax + exclude_self)
  else:
    _, indices = ranking.float_topk(query_codes, db_codes, kmax + exclude_self,
                                    metric=metric)
  hist = _archive_histogram(query_labels, db_labels)
  if exclude_self:
    indices, = ranking.exclude_rows(indices, jnp.arange(indices.shape[0]))
    self_shared = jnp.sum(_multihot(query_labels), axis=1) if multi else 1
    hist -= jax.nn.one_hot(self_shared, hist.shape[1], dtype=jnp.int32)
  ranked = _shared_retrieved(query_labels, jnp.take(db_labels, indices, axis=0))
  num_relevant = jnp.sum(hist[:, 1:], axis=1)
  ideal = _best_from_histogram(hist, kmax)

  out = {}
  for k in ks:
    out[f"map@{k}"] = map_at_k(ranked, k)
    out[f"map_r@{k}"] = map_at_k(ranked, k, num_relevant)
    out[f"precision@{k}"] = precision_at_k(ranked, k)
    out[f"recall@{k}"] = recall_at_k(ranked, k, num_relevant)
    out[f"acg@{k}"] = acg_at_k(ranked, k)
    out[f"wap@{k}"] = wap_at_k(ranked, k)
    out[f"ndcg@{k}"] = ndcg_at_k(ranked, k)
    out[f"ndcg_r@{k}"] = ndcg_at_k(ranked, k, ideal)
  return out
