"""TensorBoard event files written through the path layer (`paths`).

clu's SummaryWriter writes with TensorFlow's own file system, a second path
layer next to epath whose gs:// client has fixed Google endpoints (it cannot
be pointed at a GCS emulator). `EventWriter` is a clu MetricWriter that
builds the same events with TensorBoard's protos and writes them through
epath instead: a local file is appended to at each flush; an object (gs://,
which cannot be appended to) is rewritten whole, as TensorFlow's GCS writer
does. Records are flushed by `flush()`, `close()` and, while writing, every
`flush_secs`.
"""
import io
import os
import socket
import time
from typing import Any, Mapping

from clu.metric_writers import interface
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer import record_writer

from rs_jax import paths


class EventWriter(interface.MetricWriter):
  """Scalars, texts and histograms as TensorBoard events in `logdir`."""

  def __init__(self, logdir, *, flush_secs: float = 30.0):
    name = (f"events.out.tfevents.{int(time.time()):010d}."
            f"{socket.gethostname()}.{os.getpid()}.{time.time_ns() % 10**9}"
            ".v2")
    self.path = paths.resolve(logdir) / name
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.flush_secs = flush_secs
    self._local = paths.is_local(self.path)
    self._pending = io.BytesIO()
    self._records = record_writer.RecordWriter(self._pending)
    self._written = b""  # the object's content so far (object stores)
    self._add(event_pb2.Event(file_version="brain.Event:2"))
    self.flush()  # the file exists from the start, as with TensorFlow's

  def _add(self, event, step=None) -> None:
    event.wall_time = time.time()
    if step is not None:
      event.step = int(step)
    self._records.write(event.SerializeToString())

  def _add_summaries(self, step, summaries) -> None:
    for summary in summaries:
      self._add(event_pb2.Event(summary=summary), step)
    if time.monotonic() - self._last_flush >= self.flush_secs:
      self.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self._add_summaries(step, [scalar_summary.scalar_pb(k, v)
                               for k, v in scalars.items()])

  def write_texts(self, step: int, texts: Mapping[str, str]):
    self._add_summaries(step, [text_summary.text_pb(k, v)
                               for k, v in texts.items()])

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Mapping[str, int] | None = None):
    buckets = num_buckets or {}
    self._add_summaries(step, [
        histogram_summary.histogram_pb(k, v, buckets=buckets.get(k))
        for k, v in arrays.items()])

  def _unsupported(self, kind):
    raise NotImplementedError(
        f"{self.path}: EventWriter writes scalars, texts and histograms, "
        f"not {kind}")

  def write_summaries(self, step, values, metadata=None):
    self._unsupported("raw summaries")

  def write_images(self, step, images):
    self._unsupported("images")

  def write_videos(self, step, videos):
    self._unsupported("videos")

  def write_audios(self, step, audios, *, sample_rate):
    self._unsupported("audios")

  def write_hparams(self, hparams):
    self._unsupported("hparams")

  def flush(self):
    new = self._pending.getvalue()
    self._last_flush = time.monotonic()
    if not new:
      return
    if self._local:
      with self.path.open("ab") as f:
        f.write(new)
    else:
      self._written += new
      paths.write_bytes(self.path, self._written)
    self._pending.seek(0)
    self._pending.truncate()

  def close(self):
    self.flush()
