"""Preparing items in parallel: a pool of local processes, or Apache Beam.

Both run `builder.process(item)` (base.RsBuilder) on a copy of the builder
(pickled with its options and scan state) and keep the stored order:
  Workers       yields the results in item order; workers=1 runs in this
                process, N > 1 in N spawned processes (a script that
                prepares with workers > 1 needs `if __name__ == "__main__"`,
                as any spawning Python program).
  beam_split    a beam.PTransform for TFDS's Beam writer: the items go to a
                JSON-lines file in the dataset's temporary directory (a
                pipeline graph stays small at any archive size), are read
                back, reshuffled over the workers and processed; a global
                combine writes the split's summary (`read_beam_summary`) and
                label store beside the examples.
"""
import json
import multiprocessing

from absl import logging
from etils import epath

from rs_jax import paths
from rs_jax.data import sources
from rs_jax.data import summary as summary_lib

_WORKER_BUILDER = None


def _start_worker(builder):
  global _WORKER_BUILDER
  _WORKER_BUILDER = builder
  logging.set_verbosity(logging.WARNING)


def _process_in_worker(item):
  return _WORKER_BUILDER.process(item)


class Workers:
  """`map(items)` yields builder.process(item) for every item, in order:
  in this process (workers=1) or in `workers` spawned processes (no fork:
  the parent may hold JAX or TensorFlow threads), started on the first map
  (after the scan, whose state they copy) and kept until close()."""

  def __init__(self, builder, workers: int):
    if workers < 1:
      raise ValueError(f"workers must be >= 1, got {workers}")
    self._builder, self._workers, self._pool = builder, workers, None

  def map(self, items):
    if self._workers == 1 or len(items) < 2:
      for item in items:
        yield self._builder.process(item)
      return
    if self._pool is None:
      self._pool = multiprocessing.get_context("spawn").Pool(
          self._workers, initializer=_start_worker, initargs=(self._builder,))
    chunk = max(1, min(16, len(items) // (4 * self._workers)))
    yield from self._pool.imap(_process_in_worker, items, chunksize=chunk)

  def close(self):
    if self._pool is not None:
      self._pool.terminate()
      self._pool.join()
      self._pool = None


def _summary_path(data_dir, split):
  return epath.Path(data_dir) / f"_summary-{split}.json"


def read_beam_summary(data_dir, split) -> summary_lib.Summary:
  """The summary the pipeline wrote for `split` (the file is removed)."""
  path = _summary_path(data_dir, split)
  if not path.exists():
    raise FileNotFoundError(f"{path}: the Beam pipeline wrote no summary")
  out = summary_lib.Summary.from_json(json.loads(path.read_text()))
  path.unlink()
  return out


def beam_split(builder, split, items, data_dir):
  """beam.PTransform: root -> PCollection of (key, example) of `split`."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  items_path = epath.Path(data_dir) / f"_items-{split}.jsonl"
  with paths.atomic_write(items_path, "w") as f:
    for position, item in enumerate(items):
      f.write(json.dumps([position, item], default=str) + "\n")
  label_keys = builder.label_keys()

  class _Collect(beam.CombineFn):
    """(position, result) -> one summary; skipped and label rows in order."""

    def create_accumulator(self):
      return summary_lib.Summary(), [], []

    def add_input(self, acc, element):
      position, (_, example, labels, part) = element
      acc[0].merge(_without_skipped(part))
      acc[1].extend((position, s) for s in part.skipped)
      if example is not None:
        acc[2].append((position, labels))
      return acc

    def merge_accumulators(self, accumulators):
      out = self.create_accumulator()
      for acc in accumulators:
        out[0].merge(acc[0])
        out[1].extend(acc[1])
        out[2].extend(acc[2])
      return out

    def extract_output(self, acc):
      done = acc[0]
      done.skipped = [s for _, s in sorted(acc[1], key=lambda p: p[0])]
      return done, [row for _, row in sorted(acc[2], key=lambda p: p[0])]

  def write(collected):
    done, rows = collected
    sources.write_labels(epath.Path(data_dir) / f"labels-{split}.npz", rows,
                         label_keys)
    paths.write_text(_summary_path(data_dir, split),
                     json.dumps(done.to_json()))
    items_path.unlink()

  def process(line):
    position, item = json.loads(line)
    return position, builder.process(item)

  class _Prepare(beam.PTransform):

    def expand(self, root):
      results = (root
                 | "ReadItems" >> beam.io.ReadFromText(str(items_path))
                 | "Spread" >> beam.Reshuffle()
                 | "Process" >> beam.Map(process))
      _ = (results
           | "Collect" >> beam.CombineGlobally(_Collect())
           | "WriteSummary" >> beam.Map(write))
      return results | "Examples" >> beam.FlatMap(
          lambda r: [(r[1][0], r[1][1])] if r[1][1] is not None else [])

  return _Prepare()


def _without_skipped(part):
  out = summary_lib.Summary()
  out.moments, out.counts = part.moments, part.counts
  return out
