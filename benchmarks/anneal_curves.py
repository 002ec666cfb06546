"""ANNEAL learning curves on UC Merced in CPU mode (paper Figs. 5-8):
mAP@5 versus bits of information for every strategy and the upper bound.

  python -m benchmarks.anneal_curves --rounds 4 --trials 1 \
      --workdir workdirs/anneal_curves \
      --config.data.manual_dir=../shared/data/ucmerced
  python -m benchmarks.anneal_curves --strategies mgue --lambdas 1,2,3,4,5,6 \
      --rounds 11 --workdir workdirs/anneal_lambda \
      --out benchmarks/results/anneal_lambda_ucm_cpu   # Fig. 3
  python -m benchmarks.anneal_curves \
      --from_json benchmarks/results/anneal_ucm_cpu.json

Every strategy runs `rs_jax.active_learning.anneal.run` (--config, default
configs/anneal_ucm.py, with al.frozen_backbone=True) in
WORKDIR/<strategy>/seed<k> (with --lambdas: once per MGUE lambda of eq. 7,
in WORKDIR/lam<lambda>/<strategy>/seed<k>, named "<strategy> λ=<lambda>");
a rerun resumes. The UC Merced features are cached once in --data_dir. The
raw archive: --config.data.manual_dir, or $RS_JAX_DATA/ucmerced. Writes
OUT.json (curves, mean over trials, seconds, command; after every
strategy), OUT.md and OUT.png. Every round records mAP@5 of both retrieval
features (--config.eval.retrieval_features ranks "map@5", the other kind is
"<kind>_map@5"), so the .md has a table per kind and, with cal, random and
an ANNEAL strategy, the per-trial ordering check ANNEAL > CAL > random.
"""
import os
import time

import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from benchmarks import report
from rs_jax import console
from rs_jax.active_learning import anneal

FLAGS = flags.FLAGS
STRATEGIES = ("mgue", "bcgue", "mgue_nodiv", "bcgue_nodiv", "cal", "random")
PAPER_1845_BITS = {"mgue": 93.56, "bcgue": 93.55, "cal": 87.82,
                   "random": 71.96}
PAPER_METRIC = "map@5"


def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  config_flags.DEFINE_config_file(
      "config", os.fspath(report.ROOT / "configs" / "anneal_ucm.py"),
      "ANNEAL config; the flags below set its fields.", lock_config=True)
  flags.DEFINE_string("workdir", "workdirs/anneal_curves",
                      "One subfolder per strategy and trial.")
  flags.DEFINE_string("data_dir", "workdirs/anneal_ucm_data",
                      "Prepared UC Merced and its feature cache.")
  flags.DEFINE_integer("rounds", 4, "Active-learning rounds.")
  flags.DEFINE_integer("trials", 1, "Trials (seeds 0..trials-1).")
  flags.DEFINE_list("strategies", list(STRATEGIES), "Strategies to run.")
  flags.DEFINE_list("lambdas", [], "MGUE lambdas (eq. 7) to sweep (paper "
                    "Figs. 3-4: 1..6); every strategy runs once per lambda. "
                    "Empty: config.al.lam only.")
  flags.DEFINE_integer("epochs", 15, "Epochs per round (paper: 15).")
  flags.DEFINE_integer("pool_size", 0, "0: U = all training pairs; else a "
                       "seeded sample.")
  flags.DEFINE_integer("upper_bound_steps", 4000, "Steps of the all-pairs "
                       "upper bound (0: none).")
  flags.DEFINE_string("out", os.fspath(report.RESULTS / "anneal_ucm_cpu"),
                      "Results path without suffix.")
  flags.DEFINE_string("from_json", None, "Render the .md beside this results "
                      ".json again (no runs; hand notes are kept).")


def metric_names(curve) -> list[str]:
  """Returns the metric keys ('map@5', ...) of a curve's rounds."""
  return sorted(k for k in curve[0] if "@" in k and not k.endswith("_std"))


def mean_curve(curves):
  """Returns per round (the rounds all trials reached) the mean bits and,
  per metric, the mean and sample std over trials."""
  out = []
  for r in range(min(len(c) for c in curves)):
    entry = {"round": r,
             "bits": float(np.mean([c[r]["bits"] for c in curves]))}
    for m in metric_names(curves[0]):
      values = [c[r][m] for c in curves]
      entry[m] = float(np.mean(values))
      entry[f"{m}_std"] = float(np.std(values, ddof=1)) if len(
          values) > 1 else 0.0
    out.append(entry)
  return out


def metric_label(results, metric) -> str:
  """Returns the heading of a metric: which features it ranks."""
  kind, _, base = metric.rpartition("_")
  kind = kind or results["retrieval_features"]
  what = {"backbone": "backbone features (the paper's, Sec. IV-B)",
          "projection": "projection head output"}[kind]
  return f"{base.replace('map', 'mAP')} (%), retrieval on the {what}"


ANNEAL = ("mgue", "bcgue")


def ordering(results, metric=PAPER_METRIC):
  """Returns markdown: per trial and round (from 1; round 0 is the shared
  initial set), whether every ANNEAL strategy run (mgue, bcgue) > cal >
  random, else the comparisons that fail, and in how many cells each part
  of the claim holds; None without cal, random and an ANNEAL strategy."""
  s = results["strategies"]
  anneal_runs = [n for n in ANNEAL if n in s]
  if "cal" not in s or "random" not in s or not anneal_runs:
    return None
  names = [*anneal_runs, "cal", "random"]
  trials = min(len(s[n]["trials"]) for n in names)
  rounds = min(len(c) for n in names for c in s[n]["trials"][:trials])
  both = " and ".join(anneal_runs)
  held = {}  # claim -> cells where it holds
  rows = []
  for t in range(trials):
    cells = []
    for r in range(1, rounds):
      v = {n: s[n]["trials"][t][r][metric] for n in names}
      fails = [f"{n} ≤ cal" for n in anneal_runs if v[n] <= v["cal"]]
      if v["cal"] <= v["random"]:
        fails.append("cal ≤ random")
      above_cal = all(v[n] > v["cal"] for n in anneal_runs)
      cal_above_random = v["cal"] > v["random"]
      for claim, holds in {
          f"{both} > cal > random": above_cal and cal_above_random,
          f"{both} > cal": above_cal,
          f"{both} > random": all(v[n] > v["random"] for n in anneal_runs),
          "cal > random": cal_above_random}.items():
        held[claim] = held.get(claim, 0) + holds
      cells.append("yes" if not fails else ", ".join(fails))
    rows.append([f"trial {t} (seed {t})", *cells])
  md = report.markdown_table(
      ["", *(f"round {r}" for r in range(1, rounds))], rows)
  cells = trials * (rounds - 1)
  return md + "\n\n" + "; ".join(
      f"{claim} holds in {n} of {cells}" for claim, n in held.items()) + (
          " (trial, round) cells.")


def table(results, metric=PAPER_METRIC):
  """Returns markdown: `metric` (%) per strategy and round, mean ± std over
  trials, with the bits spent; the paper's value at 1845 bits."""
  strategies = results["strategies"]
  rounds = max(len(r["mean"]) for r in strategies.values())
  paper = PAPER_1845_BITS if metric == PAPER_METRIC else {}
  rows = []
  for name, r in strategies.items():
    cells = [f"{100 * e[metric]:.2f} ± {100 * e[metric + '_std']:.2f} "
             f"({e['bits']:.0f} b)" for e in r["mean"]]
    rows.append([name, *cells, *["-"] * (rounds - len(cells)),
                 paper.get(name, "-")])
  ub = results.get("upper_bound")
  if ub and metric in ub:
    rows.append(["all pairs (upper bound)",
                 f"{100 * ub[metric]:.2f} ({ub['bits']:.0f} b)",
                 *[""] * rounds])
  return report.markdown_table(
      ["strategy", *(f"round {r}" for r in range(rounds)),
       "paper @1845 bits"], rows)


def plot(results, path, metric=PAPER_METRIC):
  """Writes the learning curves (mean ± std band) and the upper bound."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, r in results["strategies"].items():
    c = r["mean"]
    bits = np.array([e["bits"] for e in c])
    m = 100 * np.array([e[metric] for e in c])
    sd = 100 * np.array([e[f"{metric}_std"] for e in c])
    ax.plot(bits, m, "o-", label=name)
    ax.fill_between(bits, m - sd, m + sd, alpha=0.15)
  ub = results.get("upper_bound")
  if ub:
    ax.axhline(100 * ub[metric], color="k", ls="--", label="all pairs")
  ax.set_xlabel("bits of information")
  ax.set_ylabel(f"{metric.replace('map', 'mAP')} (%)")
  ax.set_title("ANNEAL, UC Merced, CPU mode, retrieval on "
               f"{results['retrieval_features']} features")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  report.save_figure(fig, path, dpi=120)
  plt.close(fig)


def render(results, *, rendered_by=None) -> str:
  """Returns the markdown of a results record (the .json's content)."""
  trials = max(len(r["trials"]) for r in results["strategies"].values())
  first = next(iter(results["strategies"].values()))["trials"][0]
  title = "retrieval per round"
  if results.get("lambdas"):
    title = "MGUE λ sweep (eq. 7, paper Fig. 3)"
  md = [f"# ANNEAL, UC Merced, CPU mode: {title}", "",
        f"    {results['command']}", ""]
  if results.get("command_as_run"):
    md += ["Recorded as run:", "", f"    {results['command_as_run']}", ""]
  if rendered_by:
    md += [f"This file was rendered from the JSON by `{rendered_by}`.", ""]
  md += [f"{trials} trial(s), {results['seconds']:.0f} s in all; (b) = bits "
         "of information spent (mean over trials).", ""]
  metrics = metric_names(first)
  for metric in metrics:
    md += [f"## {metric_label(results, metric)}", "",
           table(results, metric), ""]
  for metric in metrics:
    check = ordering(results, metric)
    if check:
      md += [f"## Per trial: ANNEAL > CAL > random, "
             f"{metric_label(results, metric)}", "", check, ""]
  return "\n".join(md)


def base_config(config):
  """Returns the CPU-mode config with the flags' data folder and schedule."""
  config = config.copy_and_resolve_references()
  config.data.data_dir = os.path.abspath(FLAGS.data_dir)
  config.al.rounds = FLAGS.rounds
  config.al.frozen_backbone = True
  config.train.epochs = FLAGS.epochs
  config.al.pool_size = FLAGS.pool_size
  config.train.upper_bound_steps = FLAGS.upper_bound_steps
  return config


def run_strategy(base, name, workdir, trials, lam=None):
  """Runs `trials` trials of one strategy (with MGUE lambda `lam` when
  given); returns its JSON entry."""
  t = time.time()
  curves = []
  for seed in range(trials):
    config = base.copy_and_resolve_references()
    config.al.strategy, config.seed = name, seed
    if lam is not None:
      config.al.lam = lam
    curves.append(anneal.run(config, os.path.join(workdir, name,
                                                  f"seed{seed}")))
  entry = {"trials": curves, "mean": mean_curve(curves),
           "seconds": time.time() - t}
  console.show(f"{name}: {[round(e[PAPER_METRIC], 4) for e in entry['mean']]}"
               f" ({entry['seconds']:.0f} s)")
  return entry


def run_upper_bound(base, workdir):
  """Trains on all training pairs; returns its JSON entry."""
  t = time.time()
  config = base.copy_and_resolve_references()
  config.al.upper_bound = True
  curve = anneal.run(config, os.path.join(workdir, "upper_bound"))
  entry = {**curve[0], "steps": base.train.upper_bound_steps,
           "seconds": time.time() - t}
  console.show(f"upper bound: {curve[0][PAPER_METRIC]:.4f} "
               f"({entry['seconds']:.0f} s)")
  return entry


def main(argv):
  """Runs every strategy and the upper bound, or renders a JSON."""
  if report.rendered_from_json(argv, render, __spec__.name):
    return
  workdir = os.path.abspath(FLAGS.workdir)
  report.start_console(os.path.join(workdir, "log.txt"))
  base = base_config(FLAGS.config)
  results = {"command": report.command(__spec__.name), "strategies": {},
             "retrieval_features": base.eval.retrieval_features,
             "paper_map@5_at_1845_bits": PAPER_1845_BITS}
  lambdas = [float(v) for v in FLAGS.lambdas]
  if lambdas:
    results["lambdas"] = lambdas
  start = time.time()
  out = FLAGS.out
  runs = [(name, None, workdir) for name in FLAGS.strategies]
  if lambdas:
    runs = [(f"{name} λ={lam:g}", lam, os.path.join(workdir, f"lam{lam:g}"))
            for lam in lambdas for name in FLAGS.strategies]
  for key, lam, folder in runs:
    name = key.split(" ")[0]
    results["strategies"][key] = run_strategy(base, name, folder,
                                              FLAGS.trials, lam)
    results["seconds"] = time.time() - start
    report.write_json(out + ".json", results)  # partial results survive
  if FLAGS.upper_bound_steps:
    results["upper_bound"] = run_upper_bound(base, workdir)
  results["seconds"] = time.time() - start
  report.write_json(out + ".json", results)
  plot(results, out + ".png")
  md = render(results)
  report.write_markdown(out + ".md", md, keep_notes=False)
  print(md)
  console.show(f"wrote {out}.json/.md/.png in {results['seconds']:.0f} s")


if __name__ == "__main__":
  define_flags()
  app.run(main)
