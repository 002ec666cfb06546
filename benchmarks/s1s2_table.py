"""The thesis' S1/S2 retrieval table: one training run per code length K.

For each K in --bits the config (configs/s1s2_triplet.py or s1s2_mse.py,
with any --config.* overrides) is trained and tested with
`train.train_and_evaluate` in WORKDIR/bitsK. Rows: retrieval directions
(S1->S1, S1->S2, S2->S1, S2->S2) and their average; columns: K, as the
thesis' Tables 4.1-4.4. mAP@k is normalised by the relevant items retrieved
in the top k (thesis eq. 2.11, `metrics.map_at_k`); relevance = at least one
shared label. Writes OUT/s1s2_<loss>_<dataset>_<tag>.{json,md} (every test
metric at every eval k, of the Hamming codes and of the float outputs, per
K) and, for the K of --sheet_bits, retrieval sheets: test queries and their
top results in the archive split of the other modality.

  python -m benchmarks.s1s2_table --config configs/s1s2_triplet.py:synthetic \
      --bits 8,16,32,64 --config.model.backbone=resnet18
  python -m benchmarks.s1s2_table \
      --from_json benchmarks/results/s1s2_triplet_synthetic_cpu.json
"""
import json
import os
import platform
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from benchmarks import report
from rs_jax import console
from rs_jax import data as data_lib
from rs_jax import evaluate
from rs_jax import input_pipeline
from rs_jax import paths
from rs_jax import ranking
from rs_jax import sharding
from rs_jax import train
from rs_jax import trained
from rs_jax import viz
from rs_jax.data import base as base_lib

FLAGS = flags.FLAGS
DIRECTIONS = ("s1->s1", "s1->s2", "s2->s1", "s2->s2")
# Short loss names for the file names; regularisers are left out.
LOSS_TAGS = {"cross_modal_triplet": "triplet", "mse_cosine_label": "mse"}
REGULARISERS = ("s1s2_push", "s1s2_balance", "push", "bit_balance",
                "quantization")
SPACES = (("", "Hamming codes (the table's K-bit codes)"),
          ("float/", "float outputs before binarisation (Euclidean)"))
# Keys of the JSON that are not the run's setup.
NOT_SETUP = ("note", "bits", "results", "sheets", "history",
             "random_ranking_map", "command_as_run")


def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  config_flags.DEFINE_config_file("config", None, "S1/S2 config file.",
                                  lock_config=True)
  flags.DEFINE_list("bits", ["8", "16", "32", "64", "128"], "Code lengths K.")
  flags.DEFINE_string("workdir", "/tmp/s1s2_table", "One subfolder per K.")
  flags.DEFINE_string("out", os.fspath(report.RESULTS),
                      "Folder of the tables and sheets.")
  flags.DEFINE_string("tag", "cpu", "File name suffix (the machine).")
  flags.DEFINE_string("dataset_tag", None,
                      "Dataset part of the file names (default: data.name).")
  flags.DEFINE_integer("sheet_bits", None, "K of the sheets (0: none; "
                       "default the last of --bits).")
  flags.DEFINE_bool("reuse", False, "Read WORKDIR/bitsK/metrics.json of a "
                    "finished run instead of training K again.")
  flags.DEFINE_string("note", "", "Free text for the markdown (e.g. how the "
                      "data was prepared).")
  flags.DEFINE_integer("sheet_queries", 3, "Queries per sheet.")
  flags.DEFINE_integer("sheet_top", 20, "Results per query in the sheets.")
  flags.DEFINE_string("from_json", None, "Render the .md beside this results "
                      ".json again (no training; hand notes are kept).")


# ------------------------------------------------------------- tables --


def loss_tag(weights) -> str:
  """Names the loss of `weights` ({term: weight}) for file names."""
  terms = [LOSS_TAGS.get(n, n) for n, w in sorted(weights.items())
           if w and n not in REGULARISERS]
  return "+".join(terms) or "none"


def parse_metric(name):
  """Splits 'test/s1->s2/float/map@20' -> ('s1->s2', 'float/', 'map', 20);
  None for other names."""
  parts = name.split("/")
  if len(parts) < 3 or parts[0] != "test" or "@" not in parts[-1]:
    return None
  metric, k = parts[-1].rsplit("@", 1)
  space = "".join(f"{p}/" for p in parts[2:-1])
  return parts[1], space, metric, int(k)


def metric_index(metrics: dict):
  """Returns (spaces {space: {k: [metric, ...]}}, directions) in `metrics`,
  metrics in `evaluate.METRICS` order, then any others."""
  order = {m: i for i, m in enumerate(evaluate.METRICS)}
  found, directions = {}, set()
  for name in metrics:
    parsed = parse_metric(name)
    if parsed and parsed[0] != "mean":
      direction, space, metric, k = parsed
      directions.add(direction)
      found.setdefault(space, {}).setdefault(k, set()).add(metric)
  spaces = {s: {k: sorted(ms, key=lambda m: (order.get(m, len(order)), m))
                for k, ms in sorted(by_k.items())}
            for s, by_k in found.items()}
  return spaces, [d for d in DIRECTIONS if d in directions] + sorted(
      directions - set(DIRECTIONS))


def metric_table(results: dict, bits, space: str, k: int, metrics,
                 directions) -> str:
  """Returns markdown: one block of rows per metric (the directions, then
  their average), one column per K."""
  rows = []
  for metric in metrics:
    values = {d: [results[str(b)]["metrics"][f"test/{d}/{space}{metric}@{k}"]
                  for b in bits] for d in directions}
    average = np.mean([values[d] for d in directions], axis=0)
    for i, d in enumerate(directions):
      rows.append([f"{metric}@{k}" if i == 0 else "", d.upper(),
                   *(f"{v:.3f}" for v in values[d])])
    rows.append(["", "average", *(f"{v:.3f}" for v in average)])
  return report.markdown_table(["metric", "direction",
                                *(f"{b}-bit" for b in bits)], rows)


def train_table(results: dict, bits) -> str:
  """Returns markdown: the train/ entries of each K's metrics, per K."""
  names = sorted({n for b in bits for n in results[str(b)]["metrics"]
                  if n.startswith("train/")})
  rows = [[n, *(f"{results[str(b)]['metrics'].get(n, float('nan')):.4g}"
                for b in bits)] for n in names]
  return report.markdown_table(["", *(f"{b}-bit" for b in bits)], rows)


def render(record: dict, *, rendered_by: str | None = None) -> str:
  """Returns the markdown of a results record (the .json's content)."""
  bits, results = record["bits"], record["results"]
  setup = {k: v for k, v in record.items() if k not in NOT_SETUP}
  seconds = [results[str(b)].get("seconds") for b in bits]
  md = [f"# S1/S2 cross-modal hashing, {loss_tag(record['loss'])} loss, "
        f"{record['dataset']}", "", f"Command: `{record['command']}`", ""]
  if record.get("command_as_run"):
    md += [f"Recorded as run: `{record['command_as_run']}`", ""]
  if rendered_by:
    md += [f"This file was rendered from the JSON by `{rendered_by}`.", ""]
  md += [*(f"{line}\n" for line in record.get("history", [])),
         *([record["note"], ""] if record.get("note") else []),
         "```json", json.dumps(setup), "```", "",
         "Rows: query modality -> archive modality; "
         f"{record['queries']} queries against the {record['archive']} "
         "archive. mAP@k normalised by the relevant items in the top k "
         "(thesis eq. 2.11); relevance = at least one shared label; WAP@k as "
         "thesis eq. 2.12 (ACG-weighted); `_r` variants normalised by "
         "min(k, R).", "",
         "Wall time per K (train + validation + test, s): " + ", ".join(
             f"{b}: {s:.0f}" if s is not None else f"{b}: not measured "
             "(--reuse)" for b, s in zip(bits, seconds)), ""]
  if record.get("random_ranking_map") is not None:
    md += ["Random ranking (expected mAP = share of relevant archive "
           f"items): {record['random_ranking_map']:.3f}", ""]
  spaces, directions = metric_index(results[str(bits[0])]["metrics"])
  for space, title in SPACES:
    for k, metrics in spaces.get(space, {}).items():
      md += [f"## Test, {title}, k = {k}", "",
             metric_table(results, bits, space, k, metrics, directions), ""]
  md += ["## Training", "", train_table(results, bits), ""]
  md += [f"![{os.path.basename(p)}]({os.path.basename(p)})"
         for p in record.get("sheets", [])]
  return "\n".join(md)


# --------------------------------------------------------------- runs --


def chance_map(config) -> float:
  """Returns the expected mAP@k of a random ranking: the mean share of
  archive items relevant to a query (>= 1 shared label)."""
  labels = []
  for split in (config.eval.query_split, config.eval.database_split):
    source = data_lib.load(config.data.name, split, config.data.data_dir)
    labels.append(np.stack([source[i][config.data.label_key]
                            for i in range(len(source))]).astype(np.int32))
  return float(np.mean((labels[0] @ labels[1].T) > 0))


def run_one(config, workdir, *, reuse: bool):
  """Returns (metrics, seconds or None) of one K: trained, or read back."""
  if reuse:
    return report.read_json(paths.resolve(workdir) / "metrics.json"), None
  t0 = time.perf_counter()
  metrics = train.train_and_evaluate(config, workdir)
  return metrics, time.perf_counter() - t0


def write_sheets(workdir, prefix: str, num_queries: int, top: int):
  """Writes prefix_s2_to_s1.png, prefix_s1_to_s2.png (test queries, their
  archive top) of the run in `workdir`; returns the paths."""
  run = trained.load_trained(workdir)
  qs, ds = run.config.eval.query_split, run.config.eval.database_split
  data = input_pipeline.load(run.config, run.workdir)
  evaluator = evaluate.Evaluator(run.models, data, sharding.create_mesh(),
                                 ks=(1,))
  queries, query_labels = evaluator.encode_split(run.state, qs)
  archive, archive_labels = evaluator.encode_split(run.state, ds)
  top = min(top, len(data.sources[ds]))
  num_queries = min(num_queries, len(data.sources[qs]))
  out = []
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
    out.append(path)
  return out


def setup(base, command: str) -> dict:
  """Returns the run's setup: command, machine, data, model, training."""
  return {
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


def per_k(metrics: dict, seconds, ks) -> dict:
  """Returns one K's JSON entry: seconds, {metric@k: {direction: value}}
  of the codes, and every metric."""
  return {"seconds": seconds,
          **{f"{m}@{c}": {d: metrics[f"test/{d}/{m}@{c}"] for d in DIRECTIONS}
             for m in ("map", "wap", "ndcg", "acg") for c in ks},
          "metrics": metrics}


def main(argv):
  """Trains and tests every K and writes the table, or renders a JSON."""
  if report.rendered_from_json(argv, render, __spec__.name):
    return
  if FLAGS.config is None:
    raise app.UsageError("--config is required (or --from_json)")
  base, bits = FLAGS.config, [int(b) for b in FLAGS.bits]
  workdir = paths.resolve(FLAGS.workdir)
  report.start_console(workdir / "log.txt")
  dataset = FLAGS.dataset_tag or base.data.name.replace("/", "-")
  prefix = os.fspath(paths.resolve(FLAGS.out) / (
      f"s1s2_{loss_tag(base.loss.weights)}_{dataset}_{FLAGS.tag}"))
  sheet_bits = bits[-1] if FLAGS.sheet_bits is None else FLAGS.sheet_bits
  if sheet_bits and sheet_bits not in bits:
    raise app.UsageError(f"--sheet_bits={sheet_bits} is not in --bits={bits}")
  if not os.path.isabs(base.data.data_dir):  # one preparation for all K
    with base.unlocked():
      base.data.data_dir = os.fspath(workdir / base.data.data_dir)
  results = {}
  for k in bits:
    config = base.copy_and_resolve_references()
    config.model.bits = k
    metrics, seconds = run_one(config, workdir / f"bits{k}",
                               reuse=FLAGS.reuse)
    results[str(k)] = per_k(metrics, seconds, tuple(base.eval.ks))
    console.show(console.metrics_line(
        f"K = {k}:", metrics,
        [f"test/{d}/map@{base.eval.ks[0]}" for d in DIRECTIONS]))
  sheets = write_sheets(workdir / f"bits{sheet_bits}", prefix,
                        FLAGS.sheet_queries, FLAGS.sheet_top) if (
                            sheet_bits) else []
  record = {**setup(base, report.command(__spec__.name)), "note": FLAGS.note,
            "bits": bits, "results": results,
            "random_ranking_map": chance_map(base),
            "sheets": [report.relative(p) for p in sheets]}
  report.write_results(prefix, record, render, keep_notes=False)


if __name__ == "__main__":
  define_flags()
  app.run(main)
