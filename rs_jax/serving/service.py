"""What a search server answers from: one or more indexes of one model pair
(one per modality, e.g. the S2 and S1 index of a run), a warm batched
`Searcher` per index, the run's encoders for image queries, label names and
thumbnails of archive rows.

Queries name the archive (target) modality and their own: an id is looked
up in the index of its own modality and its code searched in the target's
(the query row itself is left out when both are the same index); an image
is encoded by the run's encoder of its modality. Codes only compare within
one model pair (`Index.check_compatible`), so every loaded index must come
from the same run.
"""
import asyncio
import base64
import functools
import io
import os
import time
import urllib.parse

import numpy as np

from rs_jax import index_query
from rs_jax.index import Index
from rs_jax.serving import searcher as searcher_lib

THUMBNAIL_CACHE = 4096  # rendered PNGs kept per service


def png(image, modality) -> bytes:
  """[H, W, C] image of a modality -> PNG bytes (`viz.to_rgb` colours)."""
  import PIL.Image  # pylint: disable=g-import-not-at-top
  from rs_jax import viz  # pylint: disable=g-import-not-at-top
  rgb = np.round(viz.to_rgb(image, modality) * 255).astype(np.uint8)
  buf = io.BytesIO()
  PIL.Image.fromarray(rgb).save(buf, "PNG")
  return buf.getvalue()


def _ms(seconds):
  return round(1000 * seconds, 3)


class Service:
  """Indexes {modality: Index}, their searchers and an optional
  `trained.Trained` run (None: no image queries). Searcher options:
  k_max, buckets, max_wait (`searcher.Searcher`)."""

  def __init__(self, indexes, encoder=None, *, k_max=100,
               buckets=searcher_lib.BUCKETS, max_wait=0.002):
    self.indexes = {}
    for index in indexes:
      m = index.metadata.get("modality") or "codes"
      if m in self.indexes:
        raise ValueError(f"two indexes of modality {m!r}; give one per "
                         "modality")
      self.indexes[m] = index
    pairs = {i.metadata.get("model_pair") for i in self.indexes.values()}
    if len(pairs) > 1:
      raise ValueError(f"the indexes come from different model pairs "
                       f"{sorted(map(str, pairs))}; serve one run's indexes")
    self.encoder = encoder
    if encoder is not None:
      for m, index in self.indexes.items():
        index.check_compatible(encoder.bits, {
            "modality": m, "model_pair": encoder.model_pair})
    self.searchers = {m: searcher_lib.Searcher(
        i, k_max=k_max, buckets=buckets, max_wait=max_wait)
                      for m, i in self.indexes.items()}
    self.label_names = {m: index_query.label_names(i)
                        for m, i in self.indexes.items()}
    self._sources = {}
    self.thumbnail = functools.lru_cache(THUMBNAIL_CACHE)(self._thumbnail)

  @classmethod
  def load(cls, index_paths, checkpoint=None, **options):
    """Reads the index files and the run's encoders: `checkpoint`, else the
    run the indexes record when its workdir exists (else no image queries).
    """
    indexes = [Index.load(p) for p in index_paths]
    if not indexes:
      raise ValueError("give at least one index")
    workdir = checkpoint or indexes[0].metadata.get("checkpoint", {}).get(
        "workdir")
    encoder = None
    if workdir and (checkpoint or os.path.isdir(workdir)):
      from rs_jax import trained  # pylint: disable=g-import-not-at-top
      encoder = trained.load_trained(workdir)
    return cls(indexes, encoder, **options)

  @property
  def k_max(self):
    return min(s.k_max for s in self.searchers.values())

  def query_modalities(self):
    """Modalities an image may be given in: the run's encoders whose codes
    the indexes accept."""
    if self.encoder is None:
      return []
    return [m for m in sorted(self.encoder.models)
            if self._compatible(m, next(iter(self.indexes)))]

  def _compatible(self, query_modality, modality):
    try:
      self.indexes[modality].check_compatible(
          self.encoder.bits, {"modality": query_modality,
                              "model_pair": self.encoder.model_pair})
    except ValueError:
      return False
    return True

  def warm_up(self):
    """Compiles every searcher's buckets and each encoder for one image."""
    for s in self.searchers.values():
      s.warm_up()
    for m in self.query_modalities():
      self.encoder.encode(m, np.zeros((1, *self.encoder.input_shapes[m]),
                                      np.float32))

  def start(self):
    for s in self.searchers.values():
      s.start()

  async def stop(self):
    for s in self.searchers.values():
      await s.stop()

  def info(self) -> dict:
    """N, K, model pair, modalities and dataset of each index."""
    return {
        "modalities": list(self.indexes),
        "query_modalities": self.query_modalities(),
        "k_max": self.k_max,
        "buckets": list(next(iter(self.searchers.values())).buckets),
        "indexes": {m: {
            "num_codes": len(i), "num_bits": i.num_bits,
            "model_pair": i.metadata.get("model_pair"),
            "data": i.metadata.get("data"),
            "label_key": i.metadata.get("label_key"),
            "label_names": self.label_names[m],
            "batches": self.searchers[m].batches,
            "queries": self.searchers[m].queries,
            "search_seconds": self.searchers[m].search_seconds,
        } for m, i in self.indexes.items()},
    }

  def _modality(self, modality, what="modality"):
    if modality is None:
      return next(iter(self.indexes))
    if modality not in self.indexes:
      raise ValueError(f"{what} {modality!r}: this server has indexes of "
                       f"{list(self.indexes)}")
    return modality

  def _check_k(self, k):
    if not isinstance(k, int) or not 1 <= k <= self.k_max:
      raise ValueError(f"k must be an int from 1 to {self.k_max}, got {k!r}")

  async def _search(self, modality, codes, k, exclude=None):
    start = time.perf_counter()
    dist, rows = await self.searchers[modality].search(codes, k, exclude)
    return dist, rows, time.perf_counter() - start

  def _response(self, modality, query_modality, queries, dist, rows, times):
    index = self.indexes[modality]
    results = index_query.results(index, dist, rows,
                                  self.label_names[modality])
    for items, row in zip(results, np.asarray(rows).tolist()):
      for item, r in zip(items, row):
        item["row"] = r
        item["thumbnail"] = self._thumbnail_url(modality, r)
    return {"modality": modality, "query_modality": query_modality,
            "k": int(np.shape(rows)[1]), "queries": queries,
            "results": results,
            "index": {"num_codes": len(index), "num_bits": index.num_bits,
                      "model_pair": index.metadata.get("model_pair")},
            "time_ms": {k: _ms(v) for k, v in times.items()}}

  async def search_ids(self, ids, k, modality=None, query_modality=None):
    """Top k of archive `modality` for ids of index `query_modality`
    (default: the same) -> the JSON response."""
    start = time.perf_counter()
    modality = self._modality(modality)
    query_modality = self._modality(query_modality or modality,
                                    "query_modality")
    self._check_k(k)
    source = self.indexes[query_modality]
    rows = index_query.parse_ids(source, ids, "id")
    if len(rows) > self.searchers[modality].buckets[-1]:
      raise ValueError(f"id: at most {self.searchers[modality].buckets[-1]}"
                       f" ids at once, got {len(rows)}")
    if query_modality != modality:  # codes of another index: same pair?
      self.indexes[modality].check_compatible(source.num_bits,
                                              source.metadata)
    exclude = rows if query_modality == modality else None
    dist, got, search = await self._search(modality, source.codes[rows], k,
                                           exclude)
    queries = [{"id": source.ids[r].item(), "row": int(r),
                "thumbnail": self._thumbnail_url(query_modality, int(r))}
               for r in rows]
    return self._response(modality, query_modality, queries, dist, got, {
        "search": search, "total": time.perf_counter() - start})

  async def search_image(self, name, data, k, modality=None,
                         query_modality=None):
    """Top k of archive `modality` for an uploaded file `name` (bytes
    `data`, one image of `query_modality`; default: the archive's)."""
    from rs_jax.data import query_images  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    modality = self._modality(modality)
    query_modality = query_modality or modality
    self._check_k(k)
    if self.encoder is None:
      raise ValueError("image queries need the run's encoders: start the "
                       "server with --checkpoint TRAIN_WORKDIR")
    self.encoder.check_modality(query_modality)
    self.indexes[modality].check_compatible(self.encoder.bits, {
        "modality": query_modality, "model_pair": self.encoder.model_pair})
    loop = asyncio.get_running_loop()
    image = await loop.run_in_executor(
        None, query_images.decode_image, name, data, query_modality,
        self.encoder.input_shapes[query_modality])
    encoded = time.perf_counter()
    codes = await loop.run_in_executor(None, self.encoder.encode,
                                       query_modality, image[None])
    encode = time.perf_counter() - encoded
    dist, got, search = await self._search(modality, codes, k)
    thumb = base64.b64encode(png(image, query_modality)).decode("ascii")
    queries = [{"name": os.path.basename(name),
                "thumbnail": f"data:image/png;base64,{thumb}"}]
    return self._response(modality, query_modality, queries, dist, got, {
        "encode": encode, "search": search,
        "total": time.perf_counter() - start})

  def _thumbnail_url(self, modality, row):
    """/api/thumbnail URL of an index row, or None when it has no image."""
    index = self.indexes[modality]
    data = index.metadata.get("data")
    if data is None or row >= data["num_rows"]:
      return None
    query = urllib.parse.urlencode({"modality": modality,
                                    "id": index.ids[row].item()})
    return f"/api/thumbnail?{query}"

  def _thumbnail(self, modality, row):
    index = self.indexes[modality]
    if modality not in self._sources:
      self._sources[modality] = index_query.archive_source(index)
    image = index_query.archive_images(index, [row], self._sources[modality])
    return png(image[0], modality)

  def thumbnail_of(self, modality, patch_id) -> bytes:
    """PNG of archive patch `patch_id` in index `modality`."""
    modality = self._modality(modality)
    row = int(index_query.parse_ids(self.indexes[modality], [patch_id],
                                    "id")[0])
    return self.thumbnail(modality, row)
