"""ANNEAL learning curves on UC Merced in CPU mode (paper Figs. 5-8):
mAP@5 versus bits of information for every strategy and the upper bound.

python benchmarks/anneal_curves.py --rounds 4 --trials 1 \
    --workdir workdirs/anneal_curves

Every strategy runs `rs_jax.active_learning.anneal.run` (configs/anneal_ucm.py with
al.frozen_backbone=True) in WORKDIR/<strategy>/seed<k>; a rerun resumes. The
UC Merced features are cached once in --data_dir. Writes
benchmarks/results/anneal_ucm_cpu.json (curves, mean over trials, seconds,
command) and .png.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs import anneal_ucm  # pylint: disable=g-import-not-at-top,wrong-import-position
from rs_jax.active_learning import anneal  # pylint: disable=g-import-not-at-top,wrong-import-position

STRATEGIES = ("mgue", "bcgue", "mgue_nodiv", "bcgue_nodiv", "cal", "random")
PAPER_1845_BITS = {"mgue": 93.56, "bcgue": 93.55, "cal": 87.82,
                   "random": 71.96}


def mean_curve(curves):
  """Mean bits, mean and sample std of map@5 per round over trials (the
  rounds all trials reached)."""
  n = min(len(c) for c in curves)
  out = []
  for r in range(n):
    maps = [c[r]["map@5"] for c in curves]
    out.append({"round": r,
                "bits": float(np.mean([c[r]["bits"] for c in curves])),
                "map@5": float(np.mean(maps)),
                "map@5_std": float(np.std(maps, ddof=1)) if len(maps) > 1
                             else 0.0})
  return out


def table(results):
  """Markdown: mAP@5 (%) per strategy and round, mean +- std over trials."""
  strategies = results["strategies"]
  rounds = max(len(r["mean"]) for r in strategies.values())
  lines = ["| strategy | " + " | ".join(f"round {r}" for r in range(rounds))
           + " | paper @1845 bits |", "|---" * (rounds + 2) + "|"]
  for name, r in strategies.items():
    cells = [f"{100 * e['map@5']:.2f} ± {100 * e['map@5_std']:.2f} "
             f"({e['bits']:.0f} b)" for e in r["mean"]]
    cells += ["-"] * (rounds - len(cells))
    lines.append(f"| {name} | " + " | ".join(cells) +
                 f" | {PAPER_1845_BITS.get(name, '-')} |")
  ub = results.get("upper_bound")
  if ub:
    lines.append(f"| all pairs (upper bound) | {100 * ub['map@5']:.2f} "
                 f"({ub['bits']:.0f} b) |" + " |" * rounds)
  return "\n".join(lines)


def plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, r in results["strategies"].items():
    c = r["mean"]
    bits = np.array([e["bits"] for e in c])
    m = 100 * np.array([e["map@5"] for e in c])
    sd = 100 * np.array([e["map@5_std"] for e in c])
    ax.plot(bits, m, "o-", label=name)
    ax.fill_between(bits, m - sd, m + sd, alpha=0.15)
  ub = results.get("upper_bound")
  if ub:
    ax.axhline(100 * ub["map@5"], color="k", ls="--", label="all pairs")
  ax.set_xlabel("bits of information")
  ax.set_ylabel("mAP@5 (%)")
  ax.set_title("ANNEAL, UC Merced, frozen EfficientNet-Lite0 features (CPU)")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="workdirs/anneal_curves")
  parser.add_argument("--data_dir", default="workdirs/anneal_ucm_data")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--trials", type=int, default=1)
  parser.add_argument("--strategies", default=",".join(STRATEGIES))
  parser.add_argument("--epochs", type=int, default=15,
                      help="epochs per round (paper: 15)")
  parser.add_argument("--pool_size", type=int, default=0,
                      help="0: U = all training pairs; else a seeded sample")
  parser.add_argument("--upper_bound_steps", type=int, default=4000)
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "anneal_ucm_cpu"))
  args = parser.parse_args()
  workdir = os.path.abspath(args.workdir)
  base = anneal_ucm.get_config()
  base.data.data_dir = os.path.abspath(args.data_dir)
  base.al.rounds = args.rounds
  base.al.frozen_backbone = True
  base.train.epochs = args.epochs
  base.al.pool_size = args.pool_size
  base.train.upper_bound_steps = args.upper_bound_steps
  results = {"command": "python " + " ".join(sys.argv), "strategies": {},
             "paper_map@5_at_1845_bits": PAPER_1845_BITS}
  start = time.time()
  for name in args.strategies.split(","):
    t = time.time()
    curves = []
    for seed in range(args.trials):
      config = base.copy_and_resolve_references()
      config.al.strategy, config.seed = name, seed
      curves.append(anneal.run(config, os.path.join(workdir, name,
                                                    f"seed{seed}")))
    results["strategies"][name] = {"trials": curves,
                                   "mean": mean_curve(curves),
                                   "seconds": time.time() - t}
    print(f"{name}: {[round(e['map@5'], 4) for e in mean_curve(curves)]} "
          f"({time.time() - t:.0f} s)", flush=True)
  if args.upper_bound_steps:
    t = time.time()
    config = base.copy_and_resolve_references()
    config.al.upper_bound = True
    curve = anneal.run(config, os.path.join(workdir, "upper_bound"))
    results["upper_bound"] = {**curve[0], "steps": args.upper_bound_steps,
                              "seconds": time.time() - t}
    print(f"upper bound: {curve[0]['map@5']:.4f} ({time.time() - t:.0f} s)")
  results["seconds"] = time.time() - start
  with open(args.out + ".json", "w") as f:
    json.dump(results, f, indent=1)
  plot(results, args.out + ".png")
  md = table(results)
  with open(args.out + ".md", "w") as f:
    f.write(f"# ANNEAL, UC Merced, CPU mode: mAP@5 (%) per round\n\n"
            f"    {results['command']}\n\n{args.trials} trial(s), "
            f"{results['seconds']:.0f} s in all; (b) = bits of information "
            f"spent (mean over trials).\n\n{md}\n")
  print(md)
  print(f"wrote {args.out}.json/.md/.png in {results['seconds']:.0f} s")


if __name__ == "__main__":
  main()
