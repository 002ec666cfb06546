"""Index of a training run: every example of a prepared dataset split
encoded with the run's encoders (`trained.load_trained`), one `Index` per
modality.

Row r of a built index is example r of metadata["data"] (name, data_dir,
split); rows appended later (`Index.add`) have no image
(`index_query.archive_images`).
"""
import os

import jax
import numpy as np

from rs_jax import evaluate
from rs_jax import input_pipeline
from rs_jax import sharding
from rs_jax import trained
from rs_jax.index import Index

ID_KEYS = ("patch_name", "filename")  # the first one an example has is its id


def only_modality(config):
  """The run's one input modality; ValueError if it has several."""
  inputs = list(config.data.inputs)
  if len(inputs) != 1:
    raise ValueError(f"the run has encoders for {inputs}; name a modality")
  return inputs[0]


def _with_ids(batches, ids, id_key):
  """Passes `batches` on, writing each real row's id into `ids`."""
  for batch in batches:
    mask = batch["mask"]
    ids[batch["index"][mask]] = [
        i.decode("utf-8") if isinstance(i, bytes) else str(i)
        for i in batch[id_key][mask]]
    yield batch


def build_indexes(checkpoint_dir, data_name=None, data_dir=None, split="all",
                  *, modalities=None, batch_size=256):
  """Returns {modality: Index} of every example of a prepared dataset split.

  Encodes the split once with the run's encoders (restored best state;
  `trained.load_trained`) in batches sharded over all local devices
  (`evaluate.Evaluator.encode_batches`), then binarizes and packs (MiLaN
  eq. 5). data_name / data_dir default to the run's training data; the
  split must have the run's label key and its images the encoder's shape.
  Ids: the examples' patch_name or filename, else their position. Metadata:
  modality, model_pair, num_bits, checkpoint (workdir, step directory,
  sha256), the model config, label_key and data (name, data_dir, split,
  num_rows: row r < num_rows is example r of that split).
  """
  from rs_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from rs_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    raise NotImplementedError(
        "building an index runs in one process (all its local devices); "
        f"this job has {jax.process_count()} processes")
  restored = trained.load_trained(checkpoint_dir)
  modalities = list(modalities or restored.config.data.inputs)
  for m in modalities:
    restored.check_modality(m)
  run_data = input_pipeline.load(restored.config, restored.workdir)
  train_data = input_pipeline.resolve_dirs(restored.config.data,
                                           restored.workdir)
  name = data_name or train_data.name
  data_dir = os.path.abspath(data_dir or train_data.data_dir)
  source = data_lib.load(name, split, data_dir)
  if not len(source):
    raise ValueError(f"{name} split {split!r} in {data_dir} is empty")
  example = source[0]
  label_key = restored.config.data.label_key
  for key, want in [(label_key, None),
                    *((m, restored.input_shapes[m]) for m in modalities)]:
    if key not in example:
      raise ValueError(f"{name} split {split!r}: examples have no {key!r}"
                       f" (they have {sorted(example)})")
    if want is not None and np.shape(example[key]) != want:
      raise ValueError(f"{name} split {split!r}: {key!r} images are "
                       f"{np.shape(example[key])}, the encoder expects "
                       f"{want}")
  id_key = next((k for k in ID_KEYS if k in example), None)
  mesh = sharding.create_mesh(jax.local_devices())
  devices = mesh.shape["data"]
  batches = pipeline.eval_batches(
      source, batch_size=-(-batch_size // devices) * devices,
      keys=[*modalities, label_key, *[id_key] * (id_key is not None)])
  ids = np.arange(len(source)) if id_key is None else np.empty(
      len(source), object)
  if id_key is not None:
    batches = _with_ids(batches, ids, id_key)
  evaluator = evaluate.Evaluator({m: restored.models[m] for m in modalities},
                                 run_data, mesh, ks=())
  outputs, labels = evaluator.encode_batches(restored.state, batches,
                                             len(source))
  metadata = dict(
      model_pair=restored.model_pair, num_bits=restored.bits,
      checkpoint=dict(workdir=restored.workdir, path=restored.checkpoint,
                      step=restored.step, sha256=restored.checksum),
      model=restored.config.model.to_dict(), label_key=label_key,
      data=dict(name=name, data_dir=data_dir, split=split,
                num_rows=len(source), id_key=id_key))
  ids, labels = ids.tolist(), np.asarray(labels)
  return {m: Index(np.asarray(evaluate.packed_codes(outputs[m])),
                   restored.bits, ids, labels, dict(metadata, modality=m))
          for m in modalities}


def build_index(checkpoint_dir, data_name=None, data_dir=None, split="all",
                *, modality=None, batch_size=256):
  """Returns the `Index` of one modality (default: the run's only one);
  see `build_indexes`."""
  if modality is None:
    modality = only_modality(trained.load_config(checkpoint_dir))
  return build_indexes(checkpoint_dir, data_name, data_dir, split,
                       modalities=(modality,), batch_size=batch_size)[modality]


def index_path(out, modality, several):
  """Returns `out`, or with several modalities out's stem + '_<modality>'."""
  if not several:
    return out
  stem, ext = os.path.splitext(out)
  return f"{stem}_{modality}{ext}"
