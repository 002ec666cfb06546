"""EventWriter: TensorBoard events through the path layer, read back by
TensorFlow's own reader."""
import numpy as np
import pytest
import tensorflow as tf

from rs_jax import event_writer


def read_events(path):
  """[(step, tag, value)] of the summaries in an event file."""
  out = []
  for event in tf.compat.v1.train.summary_iterator(str(path)):
    for v in event.summary.value:
      out.append((event.step, v.tag, tf.make_ndarray(v.tensor)))
  return out


def test_scalars_texts_histograms_read_back(tmp_path):
  writer = event_writer.EventWriter(tmp_path / "run", flush_secs=1e9)
  assert writer.path.exists()  # created at once, like TensorFlow's
  writer.write_scalars(1, {"loss": 0.5, "lr": np.float32(1e-3)})
  writer.flush()
  writer.write_scalars(2, {"loss": 0.25})
  writer.write_texts(2, {"note": "hello"})
  writer.write_histograms(2, {"codes": np.arange(10.0)}, {"codes": 5})
  writer.close()
  events = read_events(writer.path)
  scalars = [(s, t, float(v)) for s, t, v in events if t in ("loss", "lr")]
  assert scalars == [(1, "loss", 0.5), (1, "lr", np.float32(1e-3)),
                     (2, "loss", 0.25)]
  assert [(s, t, v.item()) for s, t, v in events if t == "note"] == [
      (2, "note", b"hello")]
  (hist,) = [v for s, t, v in events if t == "codes"]
  assert hist.shape == (5, 3) and hist[:, 2].sum() == 10  # 5 buckets


def test_two_writers_two_files(tmp_path):
  a = event_writer.EventWriter(tmp_path)
  b = event_writer.EventWriter(tmp_path)
  assert a.path != b.path
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      [a.path.name, b.path.name])


def test_images_are_refused_by_name(tmp_path):
  writer = event_writer.EventWriter(tmp_path)
  with pytest.raises(NotImplementedError, match="not images"):
    writer.write_images(1, {"x": np.zeros((1, 2, 2, 3))})
