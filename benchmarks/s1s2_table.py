"""The thesis' S1/S2 retrieval table: one training run per code length K.

For each K in --bits the config (configs/s1s2_triplet.py or s1s2_mse.py,
with any --config.* overrides) is trained and tested with
`train.train_and_evaluate`; the table has one row per retrieval direction
(S1->S1, S1->S2, S2->S1, S2->S2) and their average, one column per K, as
the thesis' Tables 4.1-4.4. mAP@k is normalised by the relevant items
retrieved in the top k (thesis eq. 2.11, `metrics.map_at_k`); relevance =
at least one shared label. Writes benchmarks/results/s1s2_<dataset>_<tag>
.{md,json} (mAP, WAP, NDCG, ACG at every eval k, per K) and, for the K of
--sheet_bits, retrieval sheets: test queries and their top 20 of the
archive split in the other modality (S2 -> S1 and S1 -> S2).

  python benchmarks/s1s2_table.py --config configs/s1s2_triplet.py:synthetic \
      --bits 8,16,32,64 --config.model.backbone=resnet18
"""
import json
import os
import platform
import shlex
import sys
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from rs_jax import checkpoints  # noqa: E402
from rs_jax import data as data_lib  # noqa: E402
from rs_jax import evaluate  # noqa: E402
from rs_jax import input_pipeline  # noqa: E402
from rs_jax import optimizers  # noqa: E402
from rs_jax import ranking  # noqa: E402
from rs_jax import sharding  # noqa: E402
from rs_jax import train  # noqa: E402
from rs_jax import viz  # noqa: E402
from rs_jax.data import base as base_lib  # noqa: E402

config_flags.DEFINE_config_file("config", None, "S1/S2 config file.",
                                lock_config=True)
flags.DEFINE_list("bits", ["8", "16", "32", "64", "128"], "Code lengths K.")
flags.DEFINE_string("workdir", "/tmp/s1s2_table", "One subfolder per K.")
flags.DEFINE_string("out", os.path.join(ROOT, "benchmarks", "results"),
                    "Folder of the tables and sheets.")
flags.DEFINE_string("tag", "cpu", "File name suffix (the machine).")
flags.DEFINE_string("dataset_tag", None,
                    "Dataset part of the file names (default: data.name).")
flags.DEFINE_integer("sheet_bits", None, "K of the sheets (0: none; default "
                     "the last of --bits).")
flags.DEFINE_bool("reuse", False, "Read WORKDIR/bitsK/metrics.json of a "
                  "finished run instead of training K again.")
flags.DEFINE_string("note", "", "Free text for the markdown (e.g. how the "
                    "data was prepared).")
flags.DEFINE_integer("sheet_queries", 3, "Queries per sheet.")
flags.DEFINE_integer("sheet_top", 20, "Results per query in the sheets.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS

DIRECTIONS = ("s1->s1", "s1->s2", "s2->s1", "s2->s2")
METRICS = ("map", "wap", "ndcg", "acg")


def table(results, bits, metric):
  """Markdown rows: direction x K of test/<direction>/<metric>, + average."""
  head = "| " + metric + " | " + " | ".join(f"{k}-bit" for k in bits) + " |"
  lines = [head, "|---" * (len(bits) + 1) + "|"]
  values = {d: [results[k][f"test/{d}/{metric}"] for k in bits]
            for d in DIRECTIONS}
  for d in DIRECTIONS:
    lines.append(f"| {d.upper()} | " + " | ".join(f"{v:.3f}" for v in values[d])
                 + " |")
  avg = np.mean([values[d] for d in DIRECTIONS], axis=0)
  lines.append("| average | " + " | ".join(f"{v:.3f}" for v in avg) + " |")
  return "\n".join(lines)


def chance_map(config):
  """Expected mAP@k of a random ranking: the mean share of archive items
  relevant to a query (>= 1 shared label), test queries vs the archive."""
  labels = []
  for split in (config.eval.query_split, config.eval.database_split):
    source = data_lib.load(config.data.name, split, config.data.data_dir)
    labels.append(np.stack([source[i][config.data.label_key]
                            for i in range(len(source))]).astype(np.int32))
  return float(np.mean((labels[0] @ labels[1].T) > 0))


def restore_best(config, workdir):
  """(Evaluator, best state, data) of a finished run in workdir."""
  mesh = sharding.create_mesh()
  data = input_pipeline.load(config, workdir)
  models = train.create_models(config, data.input_shapes)
  tx, _ = optimizers.create_optimizer(config.optim, config.train.steps)
  variables = train.init_variables(models, data.input_shapes, config.seed)
  params = {m: v["params"] for m, v in variables.items()}
  state = {"step": jax.numpy.zeros((), jax.numpy.int32), "params": params,
           "batch_stats": {m: v["batch_stats"] for m, v in variables.items()},
           "opt_state": tx.init(params)}
  state = jax.device_put(state, sharding.replicated(mesh))
  ckpt = checkpoints.Checkpoints(workdir, best_metric=config.eval.select)
  best = ckpt.restore_best(state)
  ckpt.close()
  if best is None:
    raise FileNotFoundError(f"{workdir}: no best checkpoint")
  return evaluate.Evaluator(models, data, mesh, ks=(1,)), best, data


def write_sheets(config, workdir, prefix, num_queries, top):
  """prefix_s2_to_s1.png, prefix_s1_to_s2.png: test queries, archive top."""
  evaluator, state, data = restore_best(config, workdir)
  qs, ds = config.eval.query_split, config.eval.database_split
  queries, query_labels = evaluator.encode_split(state, qs)
  archive, archive_labels = evaluator.encode_split(state, ds)
  top = min(top, len(data.sources[ds]))
  num_queries = min(num_queries, len(data.sources[qs]))
  paths = []
  for mq, md in (("s2", "s1"), ("s1", "s2")):
    dist, idx = jax.device_get(ranking.hamming_topk(
        evaluate.packed_codes(queries[mq][:num_queries]),
        evaluate.packed_codes(archive[md]), top))
    path = f"{prefix}_{mq}_to_{md}.png"
    viz.retrieval_sheet(
        path,
        query_images=[data.example(qs, i)[mq] for i in range(num_queries)],
        result_images=[[data.example(ds, j)[md] for j in row] for row in idx],
        query_labels=np.asarray(query_labels)[:num_queries],
        result_labels=np.asarray(archive_labels)[idx], distances=dist,
        modality=mq, result_modality=md)
    paths.append(path)
  return paths


def main(argv):
  del argv
  base = FLAGS.config
  bits = [int(b) for b in FLAGS.bits]
  dataset = FLAGS.dataset_tag or base.data.name.replace("/", "-")
  prefix = os.path.join(FLAGS.out, f"s1s2_{dataset}_{FLAGS.tag}")
  sheet_bits = bits[-1] if FLAGS.sheet_bits is None else FLAGS.sheet_bits
  if sheet_bits and sheet_bits not in bits:
    raise ValueError(f"--sheet_bits={sheet_bits} is not in --bits={bits}")
  command = "python " + shlex.join(
      [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
  results, seconds = {}, {}
  if not os.path.isabs(base.data.data_dir):  # one preparation for all K
    with base.unlocked():
      base.data.data_dir = os.path.join(os.path.abspath(FLAGS.workdir),
                                        base.data.data_dir)
  for k in bits:
    config = base.copy_and_resolve_references()
    config.model.bits = k
    workdir = os.path.join(FLAGS.workdir, f"bits{k}")
    t0 = time.perf_counter()
    if FLAGS.reuse:
      with open(os.path.join(workdir, "metrics.json")) as f:
        results[k] = json.load(f)
    else:
      results[k] = train.train_and_evaluate(config, workdir)
    seconds[k] = None if FLAGS.reuse else time.perf_counter() - t0
    print(f"K = {k}: " + ", ".join(
        f"{d} {results[k][f'test/{d}/map@20']:.3f}" for d in DIRECTIONS
        if f"test/{d}/map@20" in results[k]), flush=True)

  os.makedirs(FLAGS.out, exist_ok=True)
  sheets = []
  if sheet_bits:
    config = base.copy_and_resolve_references()
    config.model.bits = sheet_bits
    sheets = write_sheets(config, os.path.join(FLAGS.workdir,
                                               f"bits{sheet_bits}"),
                          prefix, FLAGS.sheet_queries, FLAGS.sheet_top)

  ks = tuple(base.eval.ks)
  setup = {
      "command": command, "machine": platform.machine(),
      "cpus": os.cpu_count(), "device": jax.devices()[0].platform,
      "num_devices": jax.device_count(), "jax": jax.__version__,
      "load_avg_1min": os.getloadavg()[0], "dataset": base.data.name,
      "data_options": base_lib.read_metadata(data_lib.builder(
          base.data.name, base.data.data_dir).data_path)["options"],
      "loss": base.loss.weights.to_dict(), "backbone": base.model.backbone,
      "width": base.model.width, "steps": base.train.steps,
      "batch_size": base.train.batch_size,
      "queries": base.eval.query_split, "archive": base.eval.database_split,
      "select": base.eval.select,
  }
  per_k = {str(k): {"seconds": seconds[k],
                    **{f"{m}@{c}": {d: results[k][f"test/{d}/{m}@{c}"]
                                    for d in DIRECTIONS}
                       for m in METRICS for c in ks},
                    "metrics": results[k]} for k in bits}
  with open(prefix + ".json", "w") as f:
    json.dump({**setup, "note": FLAGS.note, "bits": bits, "results": per_k,
               "sheets": [os.path.relpath(p, ROOT) for p in sheets]}, f,
              indent=2, sort_keys=True)

  k20 = 20 if 20 in ks else ks[0]
  md = [f"`{command}`", "", *([FLAGS.note, ""] if FLAGS.note else []),
        "```json", json.dumps(setup), "```", "",
        "Rows: query modality -> archive modality; "
        f"{base.eval.query_split} queries against the "
        f"{base.eval.database_split} archive. mAP@k normalised by the "
        "relevant items in the top k (thesis eq. 2.11); relevance = at least "
        "one shared label; WAP@k as thesis eq. 2.12 (ACG-weighted).", "",
        "Wall time per K (train + validation + test, s): " + ", ".join(
            f"{k}: {seconds[k] or 0:.0f}" for k in bits)
        + (" (--reuse: not measured)" if FLAGS.reuse else ""), "",
        f"Random ranking (expected mAP = share of relevant archive items): "
        f"{chance_map(base):.3f}", "",
        table(results, bits, f"map@{k20}"), "",
        table(results, bits, f"wap@{k20}"), ""]
  md += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in sheets]
  with open(prefix + ".md", "w") as f:
    f.write("\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  app.run(main)
