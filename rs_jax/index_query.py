"""Queries against an `Index`, shared by the command line and the server:
ids given as text -> rows, image files -> codes with the run's encoder
(refused unless it made the index's codes), top-k rows -> JSON-able results
with ids, distances, labels and label names, and the images of index rows
read back from the dataset the index was built from (`index_build`).
"""
import numpy as np


def parse_ids(index, names, what="ids"):
  """Returns the int64 rows of id strings `names` (ints for an index of int
  ids); ValueError naming `what` if empty or not of the index's kind,
  KeyError naming the first unknown id."""
  names = [s.strip() for s in names if s.strip()]
  if not names:
    raise ValueError(f"{what}: no ids given")
  if index.ids.dtype.kind in "iu":
    try:
      names = [int(s) for s in names]
    except ValueError as e:
      raise ValueError(f"{what}: the index has int ids: {e}") from None
  return index.rows(names)


def load_encoder(index, checkpoint=None, modality=None):
  """Returns (trained.Trained, modality) whose encoder may query `index`.

  checkpoint defaults to the run recorded in the index, modality to the
  index's own; ValueError when either is unknown, the run has no such
  encoder, or its codes do not compare with the index's
  (`Index.check_compatible`).
  """
  from rs_jax import trained  # pylint: disable=g-import-not-at-top
  modality = modality or index.metadata.get("modality")
  workdir = checkpoint or index.metadata.get("checkpoint", {}).get("workdir")
  if not workdir:
    raise ValueError("an image query needs the training run (the index "
                     "names none): give --checkpoint")
  if modality is None:
    raise ValueError("an image query needs its modality (the index names "
                     "none): give --modality")
  restored = trained.load_trained(workdir)
  restored.check_modality(modality)
  index.check_compatible(restored.bits, {"modality": modality,
                                         "model_pair": restored.model_pair})
  return restored, modality


def row_labels(labels, row):
  """JSON labels of one row: a class id, or the list of active labels."""
  if labels.ndim == 1:
    return int(labels[row])
  return np.flatnonzero(labels[row]).tolist()


def label_names(index):
  """Names of the index's label classes (tuple of str), or None when the
  dataset recorded at build time names none."""
  info, key = index.metadata.get("data"), index.metadata.get("label_key")
  if info is None or key is None or index.labels is None:
    return None
  if key in ("labels_43", "labels_19"):
    from rs_jax.data.bigearthnet import labels  # pylint: disable=g-import-not-at-top
    return labels.LABELS_43 if key == "labels_43" else labels.LABELS_19
  from rs_jax import data  # pylint: disable=g-import-not-at-top
  try:
    feature = data.builder(info["name"], info["data_dir"]).info.features[key]
  except (KeyError, ValueError, OSError):
    return None
  names = getattr(feature, "names", None)
  return tuple(names) if names else None


def results(index, dist, rows, names=None):
  """Returns [[{id, distance[, labels[, label_names]]}] per query] for
  int[Q, k] distances and rows; names: the label names or None."""
  out = []
  for d_row, r_row in zip(np.asarray(dist).tolist(),
                          np.asarray(rows).tolist()):
    items = []
    for d, r in zip(d_row, r_row):
      item = {"id": index.ids[r].item(), "distance": d}
      if index.labels is not None:
        item["labels"] = row_labels(index.labels, r)
        if names is not None:
          active = ([item["labels"]] if index.labels.ndim == 1
                    else item["labels"])
          item["label_names"] = [names[i] for i in active]
      items.append(item)
    out.append(items)
  return out


def archive_source(index):
  """Returns the random-access source of the prepared dataset split the
  index was built from (metadata["data"]); its item r is index row r."""
  from rs_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  info = index.metadata.get("data")
  if info is None:
    raise ValueError("the index records no dataset (not built by "
                     "build_indexes): no images to show")
  return data_lib.load(info["name"], info["split"], info["data_dir"])


def archive_images(index, rows, source=None):
  """Returns the images [..., H, W, C] of index `rows` [...], read back from
  `source` (default: `archive_source(index)`)."""
  rows = np.asarray(rows)
  source = archive_source(index) if source is None else source
  num_rows = index.metadata["data"]["num_rows"]
  if rows.size and rows.max() >= num_rows:
    raise ValueError(f"row {int(rows.max())} was added after the index was "
                     f"built from {index.metadata['data']['name']} "
                     f"({num_rows} rows): no image")
  key = index.metadata["modality"]
  images = [np.asarray(source[int(r)][key]) for r in rows.ravel()]
  return np.stack(images).reshape(*rows.shape, *images[0].shape)
