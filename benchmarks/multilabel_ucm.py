"""Hashing on multi-label UC Merced (17 labels, Chaudhuri et al. 2018).

  python -m benchmarks.multilabel_ucm --data_dir DATA_DIR \
      --manual_dir ../shared/data/ucmerced
  python -m benchmarks.multilabel_ucm \
      --from_json benchmarks/results/multilabel_ucm_cpu.json

Prepares UC Merced once with the builder option multilabels (labels = the
17-d multi-hot rows of multilabels.tsv; split preset "milan", stratified by
the 21 classes) and caches the frozen EfficientNet-Lite0 features once
(`benchmarks.milan_table.load_features`, the MiLaN UCM feature cache). Then
per K in --bits and seed in --seeds: NN on the float features (Euclidean),
LSH, ITQ and KSLSH (rs_jax.baselines, fitted on the train split); MiLaN
(--milan_config, configs/milan_ucm.py) on the multi-hot labels with
semi-hard triplet mining on multi-label relevance (share >= 1 label; the
`semi_hard` row of benchmarks.milan_table: loss triplet_mined, pk sampler);
and the classification-head hashing of configs/dhcnn_ucm.py (sigmoid BCE
on a class head on the hash layer). Both trained by rs_jax.train for
--steps steps (validation every steps / 5 keeps the best by val mAP@20).
Scores: `metrics.retrieval_metrics` at k = 20 on the test split, queries =
archive = test, the query excluded: mAP in both normalisations (map: by the
relevant retrieved, map_r: by min(20, R)), WAP, NDCG (both iDCGs), ACG,
precision. Writes OUT/multilabel_ucm_<tag>.{json,md}.
"""
import functools
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # KSLSH: ~20x faster

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import milan_table  # noqa: E402
from benchmarks import report  # noqa: E402
from rs_jax import console  # noqa: E402
from rs_jax import metrics  # noqa: E402
from rs_jax import paths  # noqa: E402

FLAGS = flags.FLAGS
K_TOP = 20
METRICS = ("map", "map_r", "wap", "ndcg", "ndcg_r", "acg", "precision")
NAMES = {
    "nn_float": "NN frozen feat. (Euclidean)", "lsh": "LSH", "itq": "ITQ",
    "kslsh": "KSLSH",
    "milan": "MiLaN, semi-hard mining on multi-label relevance",
    "dhcnn": "Class head on the hash layer, sigmoid BCE (dhcnn_ucm)",
}
METHODS = tuple(NAMES)


def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  config_flags.DEFINE_config_file(
      "milan_config", os.fspath(report.ROOT / "configs" / "milan_ucm.py"),
      "MiLaN config (its data fields are the class-head config's).",
      lock_config=True)
  config_flags.DEFINE_config_file(
      "class_config", os.fspath(report.ROOT / "configs" / "dhcnn_ucm.py"),
      "Class-head config (multi-label); --data_dir, --manual_dir, --steps "
      "set its fields.", lock_config=True)
  milan_table.define_ucm_flags(
      runs="multilabel_runs", bits=["16", "32", "64"], seeds=["0"],
      archive="The UC Merced archive with multilabels.tsv")
  flags.adopt_module_key_flags(milan_table)  # listed by --helpshort
  flags.DEFINE_integer("steps", 2000, "Training steps of MiLaN and the "
                       "class head; validation every steps / 5.")
  flags.DEFINE_bool("reuse", False, "Read finished runs (WORK_DIR/<row>_k<K>"
                    "_s<seed>) instead of training them again.")


def scores(codes, labels, *, metric):
  """Returns {name: value} @20 of METRICS, queries = archive = `codes`,
  the query excluded; metric "hamming" (packed codes) or "euclidean"."""
  out = _scores(jnp.asarray(codes), jnp.asarray(labels), metric)
  return {m: float(out[f"{m}@{K_TOP}"]) for m in METRICS}


@functools.partial(jax.jit, static_argnums=2)
def _scores(codes, labels, metric):
  return metrics.retrieval_metrics(codes, labels, codes, labels, (K_TOP,),
                                   True, metric=metric)


def multilabel_configs(milan_config, class_config, *, data_dir, manual_dir,
                       steps):
  """Returns (MiLaN config, class-head config): the data folders, steps and
  data fields of `class_config` (multilabels option, label_key) in both."""
  class_config = milan_table.base_config(
      class_config, data_dir=data_dir, manual_dir=manual_dir, steps=steps)
  milan_config = milan_table.base_config(
      milan_config, data_dir=data_dir, manual_dir=manual_dir, steps=steps)
  milan_config.data = class_config.data.copy_and_resolve_references()
  return milan_config, class_config


def run_baselines(feats, bits_list, seeds):
  """Fits and scores NN, LSH, ITQ and KSLSH; returns records."""
  (x_tr, y_tr), (x_te, y_te) = feats["train"], feats["test"]
  records = [dict(method="nn_float", bits=0, seed=0,
                  **scores(x_te, y_te, metric="euclidean"))]
  for name in ("lsh", "itq", "kslsh"):
    for bits in bits_list:
      for seed in seeds:
        codes, fit_s = milan_table.fit_baseline(name, x_tr, y_tr, x_te, bits,
                                                seed)
        records.append(dict(method=name, bits=bits, seed=seed, fit_s=fit_s,
                            **scores(codes, y_te, metric="hamming")))
        console.show(f"{name}: {records[-1]}")
  return records


def run_trained(configs, work, test, bits_list, seeds, *, reuse):
  """Trains (or reads) MiLaN and the class-head rows; returns records."""
  x_te, y_te = test
  records = []
  for name, config in configs.items():
    for bits in bits_list:
      for seed in seeds:
        c = (milan_table.variant(config, "semi_hard", bits=bits, seed=seed)
             if name == "milan" else config.copy_and_resolve_references())
        c.model.bits, c.seed = bits, seed
        t0 = time.perf_counter()
        results, outputs, trained_now = milan_table.run_milan(
            c, os.path.join(work, f"{name}_k{bits}_s{seed}"), x_te,
            reuse=reuse)
        got = scores(milan_table.hamming_codes(outputs), y_te,
                     metric="hamming")
        # The engine's own test numbers come from the same metric code.
        assert abs(got["map"] - results[f"test/map@{K_TOP}"]) < 1e-4, (
            got, results[f"test/map@{K_TOP}"])
        records.append(dict(
            method=name, bits=bits, seed=seed, **got,
            train_s=time.perf_counter() - t0 if trained_now else None,
            steps_per_sec=results.get("train/steps_per_sec")))
        console.show(f"{name}: {records[-1]}")
  return records


def table(records, bits_list, key):
  """Returns a markdown table of `key`: rows = methods, columns = K."""
  head = ["Method"] + [f"K={b}" for b in bits_list]
  rows = []
  for m in METHODS:
    if not any(r["method"] == m for r in records):
      continue
    if m == "nn_float":
      value = milan_table.fmt(milan_table.collect(records, m, 0, key))
      rows.append([f"{NAMES[m]} (1280-d float)"] + [value] * len(bits_list))
      continue
    rows.append([NAMES[m]] + [
        milan_table.fmt(milan_table.collect(records, m, b, key))
        for b in bits_list])
  return report.markdown_table(head, rows)


def render(record, *, rendered_by=None):
  """Returns the markdown of a results record (the .json's content)."""
  records, bits, seeds = record["records"], record["bits"], record["seeds"]
  md = milan_table.ucm_header(
      record, f"Hashing on multi-label UC Merced (17 labels), k = {K_TOP}",
      rendered_by=rendered_by)
  md += [
      "Protocol: UC Merced with the 17-label annotation of Chaudhuri et al. "
      "(IEEE TGRS 2018, `multilabels.tsv`); split preset `milan` (per "
      "class of the 21, 60 % train of which 20 images are validation; 40 % "
      "test: 840 images); queries = archive = test, the query excluded; "
      "relevant = at least one shared label. Frozen ImageNet "
      "EfficientNet-Lite0 features (1280-d), the MiLaN UCM feature cache. "
      "Baselines fitted on the 840 train-split features (KSLSH with the "
      "multi-label similarity). MiLaN and the class head trained "
      f"{record['steps']} steps each (validation every "
      f"{max(record['steps'] // 5, 1)}, best by val mAP@20). Values: mean "
      f"± sample std over seeds {seeds} ({len(seeds)} seed"
      f"{'s' if len(seeds) > 1 else ''}; NN is deterministic).", "",
      "Metrics (rs_jax/metrics.py): `map` = mAP@20 normalised by the "
      "relevant items retrieved (MiLaN code, thesis eq. 2.11); `map_r` = "
      "normalised by min(20, R); WAP@20 and ACG@20 count shared labels (can "
      "exceed 1); `ndcg` = NDCG@20 with the iDCG of the retrieved items "
      "re-sorted, `ndcg_r` = with the archive's best 20."]
  titles = {"map": "mAP@20 (by the relevant retrieved)",
            "map_r": "mAP@20 (by min(20, R))", "wap": "WAP@20",
            "ndcg": "NDCG@20 (iDCG of the retrieved)",
            "ndcg_r": "NDCG@20 (iDCG of the archive)", "acg": "ACG@20",
            "precision": "Precision@20"}
  for key in METRICS:
    md += ["", f"## {titles[key]}", "", table(records, bits, key)]
  return "\n".join(md)


def main(argv):
  """Runs every row and writes the tables, or renders a JSON."""
  if report.rendered_from_json(argv, render, __spec__.name):
    return
  t_start = time.perf_counter()
  work = milan_table.start_ucm_run("multilabel_runs")
  milan_config, class_config = multilabel_configs(
      FLAGS.milan_config, FLAGS.class_config, data_dir=FLAGS.data_dir,
      manual_dir=FLAGS.manual_dir, steps=FLAGS.steps)
  bits, seeds = milan_table.ints(FLAGS.bits), milan_table.ints(FLAGS.seeds)
  t0 = time.perf_counter()
  feats = milan_table.load_features(class_config, work)
  prepare_s = time.perf_counter() - t0
  console.show(f"prepared + cached features in {prepare_s:.0f} s")
  records = run_baselines(feats, bits, seeds)
  records += run_trained({"milan": milan_config, "dhcnn": class_config},
                         work, feats["test"], bits, seeds, reuse=FLAGS.reuse)
  record = dict(
      command=report.command(__spec__.name, env="OPENBLAS_NUM_THREADS="
                             + os.environ["OPENBLAS_NUM_THREADS"]),
      environment=milan_table.environment(),
      total_s=time.perf_counter() - t_start, prepare_s=prepare_s, bits=bits,
      seeds=seeds, steps=FLAGS.steps,
      configs={"milan": json.loads(milan_config.to_json_best_effort()),
               "dhcnn": json.loads(class_config.to_json_best_effort())},
      records=records)
  prefix = paths.resolve(FLAGS.out) / f"multilabel_ucm_{FLAGS.tag}"
  report.write_results(prefix, record, render, keep_notes=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
