"""Unsupervised hashing on UC Merced: contrastive hashing vs LSH and ITQ.

  python -m benchmarks.unsupervised_ucm --data_dir DATA_DIR \
      --manual_dir ../shared/data/ucmerced
  python -m benchmarks.unsupervised_ucm \
      --from_json benchmarks/results/unsupervised_ucm_cpu.json

Prepares UC Merced once (split preset "milan", as benchmarks/milan_table.py:
the same 840 test images) and caches the frozen EfficientNet-Lite0
features of the 840 training images in their 8 flips / rotations (D4) and
of the test images. No label is used before scoring. Per K in --bits and
seed in --seeds: LSH and ITQ (rs_jax.baselines) fitted on the identity view
of the training features, ITQ also on all 8 views (the data the
contrastive hash sees), and the contrastive hash network (--config,
default configs/contrastive_ucm.py, trained by rs_jax.train: NT-Xent on
two of the 8 views per image + bit balance + quantization). NN on the
float features (Euclidean) is the reference. Scores: queries = archive =
test, the query excluded, mAP@20 in both normalisations (map@20 by the
relevant items retrieved, MiLaN's; map_r@20 by min(20, R)), Hamming
distance on the codes (`metrics.retrieval_metrics`).

Writes OUT/unsupervised_ucm_<tag>.{md,json}.
"""
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import milan_table  # noqa: E402
from benchmarks import report  # noqa: E402
from rs_jax import baselines  # noqa: E402
from rs_jax import console  # noqa: E402
from rs_jax import paths  # noqa: E402

FLAGS = flags.FLAGS
NAMES = {
    "nn_float": "NN frozen feat. (Euclidean, 1280-d float)",
    "lsh": "LSH", "itq": "ITQ",
    "itq_views8": "ITQ fitted on the 8 D4 views",
    "contrastive": "Contrastive hashing (NT-Xent, two D4 views)",
    "contrastive_float": "Contrastive hashing, float outputs (Euclidean)",
}


def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  config_flags.DEFINE_config_file(
      "config", os.fspath(report.ROOT / "configs" / "contrastive_ucm.py"),
      "Contrastive hashing config; --data_dir, --manual_dir and --steps set "
      "its fields.", lock_config=True)
  milan_table.define_ucm_flags(
      runs="unsupervised_runs", bits=["16", "32", "64"],
      seeds=["0", "1", "2"], seeds_help="Seeds of the baselines.")
  flags.adopt_module_key_flags(milan_table)  # listed by --helpshort
  flags.DEFINE_list("contrastive_seeds", ["0"], "Seeds of the contrastive "
                    "runs (~6 min each on the loaded 2-core CPU).")
  flags.DEFINE_integer("steps", None, "Training steps (default: the "
                       "config's).")
  flags.DEFINE_bool("reuse", False, "Read finished runs (WORK_DIR/"
                    "contrastive_k<K>_s<seed>) instead of training again.")


def identity_view(x, num_views):
  """Returns the first (identity) view of view-major rows [V * N, D]."""
  return x[:len(x) // num_views]


def run_baselines(feats, num_views, bits_list, seeds):
  """Returns the records of NN float, LSH, ITQ and ITQ on all views."""
  x_views, _ = feats["train"]
  x_tr = identity_view(x_views, num_views)
  x_te, y_te = feats["test"]
  records = [dict(method="nn_float", bits=0, seed=0,
                  **milan_table.retrieval_scores(x_te, y_te,
                                                 metric="euclidean"))]
  for name, baseline, fit_on in (("lsh", "lsh", x_tr), ("itq", "itq", x_tr),
                                 ("itq_views8", "itq", x_views)):
    for bits in bits_list:
      for seed in seeds:
        t0 = time.perf_counter()
        encode = baselines.fit_encoder(baseline, fit_on, bits=bits, seed=seed)
        codes = encode(x_te)
        records.append(dict(method=name, bits=bits, seed=seed,
                            fit_s=time.perf_counter() - t0,
                            **milan_table.retrieval_scores(
                                codes, y_te, metric="hamming")))
        console.show(f"{name}: {records[-1]}")
  return records


def run_contrastive(config, work, test, bits_list, seeds, *, reuse):
  """Trains (or reads) one contrastive run per (K, seed); returns records
  of its codes (Hamming) and float outputs (Euclidean)."""
  x_te, y_te = test
  records = []
  for bits in bits_list:
    for seed in seeds:
      c = config.copy_and_resolve_references()
      c.model.bits, c.seed = bits, seed
      t0 = time.perf_counter()
      results, outputs, trained_now = milan_table.run_milan(
          c, os.path.join(work, f"contrastive_k{bits}_s{seed}"), x_te,
          reuse=reuse)
      scores = milan_table.retrieval_scores(
          milan_table.hamming_codes(outputs), y_te, metric="hamming")
      assert abs(scores["map"] - results["test/map@20"]) < 1e-4
      records.append(dict(
          method="contrastive", bits=bits, seed=seed, **scores,
          train_s=time.perf_counter() - t0 if trained_now else None,
          steps_per_sec=results.get("train/steps_per_sec"),
          train_loss=results.get("train/loss")))
      records.append(dict(method="contrastive_float", bits=bits, seed=seed,
                          **milan_table.retrieval_scores(
                              outputs, y_te, metric="euclidean")))
      console.show(f"contrastive: {records[-2]}")
  return records


def table(records, bits_list, key):
  """Returns the markdown table of `key` (map or map_r) per method and K."""
  rows = []
  for m in [m for m in NAMES if any(r["method"] == m for r in records)]:
    if m == "nn_float":
      value = milan_table.fmt(milan_table.collect(records, m, 0, key))
      rows.append([NAMES[m]] + [f"{value} (any K)"] * len(bits_list))
      continue
    rows.append([NAMES[m]] + [milan_table.fmt(milan_table.collect(
        records, m, b, key)) for b in bits_list])
  return report.markdown_table(["Method"] + [f"K={b}" for b in bits_list],
                               rows)


def render(record, *, rendered_by=None):
  """Returns the markdown of a results record (the .json's content)."""
  records, bits = record["records"], record["bits"]
  steps = record["config"]["train"]["steps"]
  runs = [r for r in records if r["method"] == "contrastive"]
  rates = [r["steps_per_sec"] for r in runs if r.get("steps_per_sec")]
  md = milan_table.ucm_header(record, "Unsupervised hashing, UC Merced "
                              "(mAP@20)", rendered_by=rendered_by)
  md += [
      "Protocol: split preset `milan` (the test split of "
      "`milan_ucm_cpu.md`: 840 images, queries = archive = test, the query "
      "excluded); frozen EfficientNet-Lite0 ImageNet features (1280-d). "
      "Training data: the 840 `train` images, no label read (LSH / ITQ: "
      "their identity features; `ITQ fitted on the 8 D4 views` and the "
      "contrastive hash: the cached features of their 8 flips / rotations, "
      "6720 rows). Contrastive hash: `configs/contrastive_ucm.py`, "
      f"{steps} steps, no model selection (the last state is tested)"
      + (f", {np.mean(rates):.0f} steps/s" if rates else "") + ". "
      f"Values: mean ± sample std over seeds {record['seeds']} (baselines) "
      f"and {record['contrastive_seeds']} (contrastive).", "",
      "## mAP@20 normalised by the relevant items retrieved (`map@20`, "
      "MiLaN's)", "",
      table(records, bits, "map"), "",
      "## mAP@20 normalised by min(20, R) (`map_r@20`)", "",
      table(records, bits, "map_r")]
  return "\n".join(md)


def main(argv):
  """Runs the baselines and the contrastive runs and writes the table, or
  renders a JSON."""
  if report.rendered_from_json(argv, render, __spec__.name):
    return
  t_start = time.perf_counter()
  work = milan_table.start_ucm_run("unsupervised_runs")
  config = milan_table.base_config(FLAGS.config, data_dir=FLAGS.data_dir,
                                   manual_dir=FLAGS.manual_dir,
                                   steps=FLAGS.steps)
  bits, seeds = milan_table.ints(FLAGS.bits), milan_table.ints(FLAGS.seeds)
  cl_seeds = milan_table.ints(FLAGS.contrastive_seeds)
  feats = milan_table.load_features(config, work)
  prepare_s = time.perf_counter() - t_start
  console.show(f"prepared + cached features in {prepare_s:.0f} s")
  records = run_baselines(feats, config.model.feature_views, bits, seeds)
  records += run_contrastive(config, work, feats["test"], bits, cl_seeds,
                             reuse=FLAGS.reuse)
  record = dict(
      command=report.command(__spec__.name, env="OPENBLAS_NUM_THREADS="
                             + os.environ["OPENBLAS_NUM_THREADS"]),
      environment=milan_table.environment(),
      total_s=time.perf_counter() - t_start, prepare_s=prepare_s, bits=bits,
      seeds=seeds, contrastive_seeds=cl_seeds,
      config=json.loads(config.to_json_best_effort()), records=records)
  prefix = paths.resolve(FLAGS.out) / f"unsupervised_ucm_{FLAGS.tag}"
  report.write_results(prefix, record, render, keep_notes=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
