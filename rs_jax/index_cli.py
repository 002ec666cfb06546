"""Command line of the archive index: build one from a training run, or
search one and print (and write) JSON, optionally a retrieval sheet.

  python -m rs_jax.index_cli build --checkpoint TRAIN_WORKDIR --out PATH
      [--data_name N --data_dir D --split all --modality s2]
  python -m rs_jax.index_cli search --index PATH --ids ID1,ID2 --k 10
      [--json F] [--sheet P.png] [--include_self]
  python -m rs_jax.index_cli search --index PATH --codes Q.npy --k 10
      [--query_metadata META.json]
  python -m rs_jax.index_cli search --index PATH --image FILE [--image ...]
      [--checkpoint TRAIN_WORKDIR --modality s1] --k 10

Query files: `rs_jax.data.query_images` (.npy, GeoTIFF stack, zipped or
unzipped BigEarthNet patch folder, PNG/JPEG). Compiled searches are kept in
JAX's persistent compilation cache (`compile_cache`), so a second search
does not compile again. A bad input ends with "error: ..." naming it.
"""
import json
import sys

from absl import app
from absl import flags
import numpy as np

from rs_jax import compile_cache
from rs_jax import console
from rs_jax import index_query
from rs_jax import paths
from rs_jax.index import Index

COMMANDS = ("build", "search")

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_string("checkpoint", None, "Training workdir (config.json, "
                      "checkpoints/); search --image: the encoder's run "
                      "(default: the index's).")
  flags.DEFINE_string("out", None, "build: index file to write; with several "
                      "modalities one per modality, STEM_<modality>.EXT.")
  flags.DEFINE_string("data_name", None, "build: dataset (default: the run's).")
  flags.DEFINE_string("data_dir", None, "build: prepared data (default: the "
                      "run's).")
  flags.DEFINE_string("split", "all", "build: split, 'all' or a TFDS slice.")
  flags.DEFINE_string("modality", None, "build: one encoder (default: all); "
                      "search --image: the query's modality (default: the "
                      "index's).")
  flags.DEFINE_integer("batch_size", 256, "build: global batch size.")
  flags.DEFINE_string("index", None, "search: index file.")
  flags.DEFINE_string("ids", None, "search: comma-separated ids in the index.")
  flags.DEFINE_string("codes", None, "search: .npy of uint32[Q, W] codes.")
  flags.DEFINE_multi_string("image", None, "search: query file (.npy, .tif, "
                            ".zip, BigEarthNet folder, PNG/JPEG); repeatable.")
  flags.DEFINE_string("query_metadata", None, "search --codes: JSON metadata "
                      "of their encoder (num_bits, modality, model_pair).")
  flags.DEFINE_integer("k", 10, "search: results per query.")
  flags.DEFINE_bool("include_self", False, "search --ids: keep each query in "
                    "its own results.")
  flags.DEFINE_string("json", None, "search: also write the results here.")
  flags.DEFINE_string("sheet", None, "search: PNG of each query and its top k.")


FLAGS = flags.FLAGS


def _queries(index):
  """-> (names, codes, rows or None, images or None, modality) of the
  query given by --ids, --codes or --image."""
  given = [f for f in ("ids", "codes", "image") if FLAGS[f].value]
  if len(given) != 1:
    raise ValueError("search: give exactly one of --ids, --codes, --image "
                     f"(got {len(given)})")
  modality = index.metadata.get("modality")
  if FLAGS.ids:
    names = [s for s in FLAGS.ids.split(",") if s.strip()]
    rows = index_query.parse_ids(index, names, "--ids")
    images = None
    if FLAGS.sheet:
      images = index_query.archive_images(index, rows)
    return names, index.codes[rows], rows, images, modality
  if FLAGS.codes:
    if FLAGS.sheet:
      raise ValueError("--sheet needs --ids or --image queries (codes have "
                       "no picture)")
    codes = np.load(FLAGS.codes)
    if FLAGS.query_metadata:
      meta = json.loads(paths.resolve(FLAGS.query_metadata).read_text())
      index.check_compatible(meta.get("num_bits", index.num_bits), meta)
    return ([f"{FLAGS.codes}[{i}]" for i in range(len(codes))], codes, None,
            None, modality)
  from rs_jax.data import query_images  # pylint: disable=g-import-not-at-top
  restored, modality = index_query.load_encoder(index, FLAGS.checkpoint,
                                                FLAGS.modality)
  shape = restored.input_shapes[modality]
  images = np.stack([query_images.read_image(p, modality, shape)
                     for p in FLAGS.image])
  return (list(FLAGS.image), restored.encode(modality, images), None, images,
          modality)


def search():
  if not FLAGS.index:
    raise ValueError("search: --index is required")
  index = Index.load(FLAGS.index)
  names, codes, rows, images, modality = _queries(index)
  exclude = None if rows is None or FLAGS.include_self else rows
  dist, got = index.topk(codes, FLAGS.k, exclude=exclude, one_shot=True)
  out = [{"query": q, "results": r}
         for q, r in zip(names, index_query.results(index, dist, got))]
  text = json.dumps(out, indent=1)
  if FLAGS.json:
    paths.write_text(FLAGS.json, text + "\n")
  print(text)
  if FLAGS.sheet:
    from rs_jax import viz  # pylint: disable=g-import-not-at-top
    labels = index.labels
    if labels is None:
      labels = np.zeros(len(index), np.int32)
    # Image queries have no known labels: all-zero (no label shared).
    query_labels = (labels[rows] if rows is not None else
                    np.zeros((len(names), *labels.shape[1:]), labels.dtype))
    viz.retrieval_sheet(
        FLAGS.sheet, query_images=images, query_labels=query_labels,
        result_images=index_query.archive_images(index, got),
        result_labels=labels[got], distances=dist, modality=modality,
        result_modality=index.metadata["modality"])


def build():
  from rs_jax import index_build  # pylint: disable=g-import-not-at-top
  for name in ("checkpoint", "out"):
    if not FLAGS[name].value:
      raise ValueError(f"build: --{name} is required")
  indexes = index_build.build_indexes(
      FLAGS.checkpoint, FLAGS.data_name, FLAGS.data_dir, FLAGS.split,
      modalities=[FLAGS.modality] if FLAGS.modality else None,
      batch_size=FLAGS.batch_size)
  for m, index in indexes.items():
    path = index_build.index_path(FLAGS.out, m, len(indexes) > 1)
    index.save(path)
    print(f"{path}: {len(index)} {m} codes of {index.num_bits} bits")


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"give one command, {' or '.join(COMMANDS)}; got "
                         f"{argv[1:]}")
  if not FLAGS["verbosity"].present:  # library records stay off the console
    console.quiet()
  compile_cache.enable()
  try:
    {"build": build, "search": search}[argv[1]]()
  except (ValueError, KeyError, TypeError, OSError) as e:
    sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
