"""Warm, batched exact search of one `Index` for a server.

Concurrent queries are coalesced: a query waits in a queue; the worker takes
every query queued (up to the largest bucket) and, unless it is one query
after a batch of one (a lone client, which never waits), waits at most
`max_wait` seconds for more to fill the batch; queries that arrive while a
search runs form the next batch. (Waiting only for batches smaller than the
last one let 64 clients settle at batches of 5: each small, quick search
left little time for the next queries to arrive.) It pads the batch to the next compiled query-batch size (a
bucket) and runs one `Index.topk` in a worker thread, so the event loop
keeps accepting requests meanwhile. Every search
asks for the same `k_max` neighbours (+1 for the excluded query row) and
each query keeps its first k: the k best of an exact top-k_max list in the
`ranking.hamming_topk` order (ascending distance, ties by ascending row)
are the exact top-k, so batching never changes a result. Padding rows are
zero codes whose results are dropped.
"""
import asyncio
import collections
import concurrent.futures
import dataclasses
import time

import numpy as np

BUCKETS = (1, 4, 16, 32, 64)


@dataclasses.dataclass
class _Request:
  codes: np.ndarray  # uint32[q, W]
  exclude: np.ndarray  # int[q]; -1 keeps every row
  future: asyncio.Future


class Searcher:
  """Searches `index` in coalesced batches of up to max(buckets) queries.

  k_max: the most neighbours a query may ask for (at most len(index) - 1);
  buckets: the query-batch sizes compiled by `warm_up`; max_wait: seconds
  the worker waits to fill a batch (0: take only what is queued).
  """

  def __init__(self, index, *, k_max=100, buckets=BUCKETS, max_wait=0.002):
    if len(index) < 2:
      raise ValueError("the server needs an index of at least 2 codes")
    self.index = index
    self.k_max = min(int(k_max), len(index) - 1)
    self.buckets = tuple(sorted(set(int(b) for b in buckets)))
    self.max_wait = float(max_wait)
    self.batches = 0  # searches run, for /api/info
    self.queries = 0
    self.search_seconds = 0.0  # spent in Index.topk
    self._pool = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="search")
    self._pending = self._wakeup = self._worker = None
    self._last_size = 1  # queries in the previous batch

  def _bucket(self, n):
    return next(b for b in self.buckets if b >= n)

  def search_now(self, codes, exclude):
    """Blocking top-k_max of uint32[q, W] codes, q <= max(buckets), with
    rows `exclude` int[q] (-1: none) left out -> (int32[q, k_max] distances,
    int32[q, k_max] rows)."""
    q = len(codes)
    pad = self._bucket(q) - q
    codes = np.pad(codes, ((0, pad), (0, 0)))
    exclude = np.pad(np.asarray(exclude, np.int64), (0, pad),
                     constant_values=-1)
    start = time.perf_counter()
    dist, rows = self.index.topk(codes, self.k_max, exclude=exclude)
    self.search_seconds += time.perf_counter() - start
    return dist[:q], rows[:q]

  def warm_up(self):
    """Lays the codes out and compiles the search of every bucket."""
    w = self.index.codes.shape[1]
    for b in self.buckets:
      self.search_now(np.zeros((b, w), np.uint32), np.full(b, -1))

  def start(self):
    """Starts the batching worker on the running event loop."""
    self._pending = collections.deque()
    self._wakeup = asyncio.Event()
    self._worker = asyncio.get_running_loop().create_task(self._run())

  async def stop(self):
    if self._worker is not None:
      self._worker.cancel()
      try:
        await self._worker
      except asyncio.CancelledError:
        pass
    self._pool.shutdown(wait=True)

  async def search(self, codes, k, exclude=None):
    """Exact top-k of uint32[Q, W] codes (Q <= max(buckets)) -> (int32[Q, k]
    distances, int32[Q, k] rows); exclude: optional int[Q] rows to leave
    out (-1: none). k: 1 <= k <= k_max."""
    if not isinstance(k, int) or not 1 <= k <= self.k_max:
      raise ValueError(f"k must be an int from 1 to {self.k_max}, got {k!r}")
    if len(codes) > self.buckets[-1]:
      raise ValueError(f"at most {self.buckets[-1]} queries at once, got "
                       f"{len(codes)}")
    if exclude is None:
      exclude = np.full(len(codes), -1)
    future = asyncio.get_running_loop().create_future()
    self._pending.append(_Request(np.asarray(codes, np.uint32),
                                  np.asarray(exclude, np.int64), future))
    self._wakeup.set()
    dist, rows = await future
    return dist[:, :k], rows[:, :k]

  def _take(self, batch, size):
    """Moves pending requests into `batch` while they fit; -> (size, full)."""
    while self._pending:
      n = len(self._pending[0].codes)
      if size + n > self.buckets[-1]:
        return size, True
      batch.append(self._pending.popleft())
      size += n
    return size, size >= self.buckets[-1]

  async def _run(self):
    loop = asyncio.get_running_loop()
    while True:
      while not self._pending:
        self._wakeup.clear()
        await self._wakeup.wait()
      batch = []
      size, full = self._take(batch, 0)
      deadline = loop.time() + self.max_wait
      while (not full and max(size, self._last_size) > 1 and
             (timeout := deadline - loop.time()) > 0):
        self._wakeup.clear()
        try:
          await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:
          pass
        size, full = self._take(batch, size)
      codes = np.concatenate([r.codes for r in batch])
      exclude = np.concatenate([r.exclude for r in batch])
      try:
        dist, rows = await loop.run_in_executor(self._pool, self.search_now,
                                                codes, exclude)
      except Exception as e:  # pylint: disable=broad-except
        for r in batch:
          if not r.future.done():
            r.future.set_exception(e)
        continue
      self.batches += 1
      self.queries += size
      self._last_size = size
      start = 0
      for r in batch:
        end = start + len(r.codes)
        if not r.future.done():  # its client may have gone
          r.future.set_result((dist[start:end], rows[start:end]))
        start = end
