"""MiLaN and the hashing baselines on UC Merced: the paper's Table I.

  OPENBLAS_NUM_THREADS=1 python benchmarks/milan_table.py \\
      --data_dir DATA_DIR --manual_dir /work/shared/data/ucmerced

Prepares UC Merced once (split preset "milan": 60 % train of which 20 images
per class validate, 40 % test) and caches the frozen EfficientNet-Lite0
features once (DATA_DIR/features). Then, per K in --bits and seed in --seeds:
MiLaN (configs/milan_ucm.py, rs_jax.train) and its ablations lambda1 =
lambda2 = 1 and = 0.001 (Sec. IV-A); the baselines of rs_jax.baselines (NN
on float features, Euclidean; NN on thresholded features, Hamming; LSH; ITQ;
KSLSH) fitted on the train split's features. Every method is scored by
`metrics.retrieval_metrics` on the test split, queries = archive = test, the
query excluded; both mAP normalisations are reported (map@20: by the relevant
items retrieved, what MiLaN's code computes; map_r@20: by min(20, R)).
Query time: mean wall time of one query's exact top-20 search over the 840
test codes (`baselines.search`, jitted, after a warm-up), in ms.

--study adds the rows that probe why frozen features may fall short (each a
config change, same seeds and K): semi-hard mining (sampler "pk", loss
triplet_mined), the 8 flips/rotations of the training features
(feature_views=8), and a longer training.

Writes OUT/milan_ucm_cpu.{md,json}, OUT/milan_ucm_map_vs_bits.png and
OUT/milan_ucm_tsne.png (t-SNE of the K=32 test codes of KSLSH and MiLaN,
paper Fig. 3).
"""
import argparse
import json
import os
import platform
import shutil
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # KSLSH: ~20x faster here

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import milan_ucm  # noqa: E402
from rs_jax import baselines  # noqa: E402
from rs_jax import input_pipeline  # noqa: E402
from rs_jax import metrics  # noqa: E402
from rs_jax import train  # noqa: E402
from rs_jax.models import encoder as encoder_lib  # noqa: E402

K_TOP = 20
PAPER = {  # Table I (UCMD, mAP@20) and the ablation of Sec. IV-A.
    "nn_float": {0: 0.724}, "nn_hamming": {0: 0.359},
    "kslsh": {16: 0.557, 24: 0.594, 32: 0.630},
    "milan": {16: 0.875, 24: 0.890, 32: 0.904},
    "milan_float": {16: 0.903, 24: 0.894, 32: 0.916},
    "lambda_1": {16: 0.231, 24: 0.524, 32: 0.408},
    "lambda_0.001": {16: 0.823, 24: 0.851, 32: 0.907},
}
NAMES = {
    "nn_float": "NN frozen feat. (Euclidean)",
    "nn_hamming": "NN frozen feat. (Hamming, threshold 0.5)",
    "lsh": "LSH", "itq": "ITQ", "kslsh": "KSLSH",
    "milan": "MiLaN", "milan_float": "MiLaN (Euclidean)",
    "lambda_1": "MiLaN, lambda1 = lambda2 = 1",
    "lambda_0.001": "MiLaN, lambda1 = lambda2 = 0.001",
    "semi_hard": "MiLaN + semi-hard mining (pk 15x6)",
    "views8": "MiLaN + 8 flips/rotations of train features",
    "long": "MiLaN, 3x training steps",
    "eq1_printed": "MiLaN, eq. 1 as printed (no L2 normalisation)",
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data_dir", required=True,
                 help="prepared dataset + feature cache (made if missing)")
  p.add_argument("--manual_dir", required=True, help="the UC Merced archive")
  p.add_argument("--work_dir", default=None,
                 help="training runs (default DATA_DIR/milan_runs)")
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
  p.add_argument("--bits", type=int, nargs="+", default=[16, 24, 32])
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--ablation_seeds", type=int, nargs="+", default=None,
                 help="seeds of the ablation / study rows (default --seeds)")
  p.add_argument("--ablation_bits", type=int, nargs="+", default=None,
                 help="K of the ablation / study rows (default --bits)")
  p.add_argument("--steps", type=int, default=None,
                 help="MiLaN training steps (default: the config's 10000); "
                 "validation every steps / 5")
  p.add_argument("--variants", nargs="+", default=[
      "milan", "lambda_1", "lambda_0.001"],
                 help="MiLaN rows (see NAMES)")
  p.add_argument("--reuse", action="store_true",
                 help="read finished runs (WORK_DIR/<row>_k<K>_s<seed>/"
                 "metrics.json and best checkpoint) instead of training "
                 "them again")
  p.add_argument("--study", action="store_true",
                 help="also the improvement rows (semi-hard, views, long)")
  return p.parse_args(argv)


# ------------------------------------------------------------- helpers --


def mean_spread(values):
  """(mean, sample standard deviation; 0 for one value)."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values, digits=3):
  if not values:
    return "-"
  m, s = mean_spread(values)
  return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else (
      f"{m:.{digits}f}")


def retrieval_scores(codes, labels, *, metric):
  """{map@20, map_r@20} of queries = archive = `codes`, query excluded."""
  out = _scores(jnp.asarray(codes), jnp.asarray(labels), metric=metric)
  return {k: float(out[f"{k}@{K_TOP}"]) for k in ("map", "map_r")}


@jax.jit
def _scores_hamming(codes, labels):
  return metrics.retrieval_metrics(codes, labels, codes, labels, (K_TOP,),
                                   True, metric="hamming")


@jax.jit
def _scores_euclidean(codes, labels):
  return metrics.retrieval_metrics(codes, labels, codes, labels, (K_TOP,),
                                   True, metric="euclidean")


def _scores(codes, labels, *, metric):
  return (_scores_hamming if metric == "hamming" else _scores_euclidean)(
      codes, labels)


def query_time_ms(codes, *, num_queries=100):
  """Mean ms of one query's exact top-20 (+ itself) over the archive."""
  codes = jnp.asarray(codes)
  search = jax.jit(lambda q, db: baselines.search(q, db, K_TOP + 1))
  jax.block_until_ready(search(codes[:1], codes))  # compile
  times = []
  for i in range(min(num_queries, len(codes))):
    t0 = time.perf_counter()
    jax.block_until_ready(search(codes[i:i + 1], codes))
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.mean(times))


def hamming_codes(outputs):
  """Packed MiLaN codes b = (sign(v - 0.5) + 1) / 2 (eq. 5)."""
  from rs_jax import evaluate  # pylint: disable=g-import-not-at-top
  return evaluate.packed_codes(jnp.asarray(outputs))


# ---------------------------------------------------------------- runs --


def base_config(args):
  config = milan_ucm.get_config()
  config.data.data_dir = os.path.abspath(args.data_dir)
  config.data.manual_dir = os.path.abspath(args.manual_dir)
  if args.steps:
    config.train.steps = args.steps
    config.eval.every = config.train.log_every = max(args.steps // 5, 1)
  return config


def variant(config, name, *, bits, seed):
  """The config of row `name` (see NAMES) at K = bits and seed."""
  c = config.copy_and_resolve_references()
  c.model.bits, c.seed = bits, seed
  w = c.loss.weights
  if name == "lambda_1":
    w.push, w.bit_balance = 1.0, 1.0
  elif name == "lambda_0.001":
    w.push, w.bit_balance = 0.001, 0.001
  elif name == "semi_hard":
    c.loss.weights = dict(triplet_mined=1.0, push=w.push,
                          bit_balance=w.bit_balance)
    c.loss.options = dict(triplet_mined=dict(margin=0.2, miner="semi_hard",
                                             normalize=True),
                          push=dict(form="code"),
                          bit_balance=dict(form="code"))
    c.train.sampler = "pk"
    c.train.sampler_options = dict(p=15, k=6)
  elif name == "eq1_printed":
    c.loss.options.triplet.normalize = False
  elif name == "views8":
    c.model.feature_views = 8
  elif name == "long":
    c.train.steps = 3 * c.train.steps
    c.eval.every = 3 * c.eval.every
  elif name != "milan":
    raise ValueError(f"unknown MiLaN variant {name!r}")
  return c


def load_features(config, workdir):
  """{split: (features float32[N, D], labels int[N])}; prepares and caches
  on first use (the same cache the training runs read)."""
  data = input_pipeline.load(config, workdir)
  m, key = config.data.inputs[0], config.data.label_key
  return {s: (np.asarray(src.arrays[m]), np.asarray(src.arrays[key]))
          for s, src in data.sources.items()}


def best_outputs(config, workdir, features):
  """Sigmoid outputs float32[N, K] of the best-validation hash network."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  best = os.path.join(workdir, "checkpoints", "best")
  step = max(int(d) for d in os.listdir(best) if d.isdigit())
  state = ocp.StandardCheckpointer().restore(
      os.path.join(best, str(step), "state"))
  m = config.data.inputs[0]
  model = encoder_lib.create_encoder(config.model, frozen=True)
  return np.asarray(jax.jit(model.apply)({"params": state["params"][m]},
                                         jnp.asarray(features)))


def run_milan(config, workdir, test_features, *, reuse=False):
  """Trains one MiLaN (or, with reuse, reads a finished run's metrics.json);
  -> (engine results, test outputs float32[N, K], trained now)."""
  done = os.path.join(workdir, "metrics.json")
  trained = not (reuse and os.path.exists(done))
  if trained:
    shutil.rmtree(workdir, ignore_errors=True)  # fresh: no stale resume
    os.makedirs(workdir)
    results = train.train_and_evaluate(config, workdir)
  else:
    with open(done) as f:
      results = json.load(f)
  return results, best_outputs(config, workdir, test_features), trained


def run_baselines(feats, bits_list, seeds, records, times):
  (x_tr, y_tr), (x_te, y_te) = feats["train"], feats["test"]
  for name in ("nn_float", "nn_hamming"):
    codes = baselines.fit_encoder(name, x_tr)(x_te)
    metric = "euclidean" if name == "nn_float" else "hamming"
    records.append(dict(method=name, bits=0, seed=0,
                        **retrieval_scores(codes, y_te, metric=metric)))
    times[(name, 0)] = query_time_ms(codes)
    print(name, records[-1], flush=True)
  for name in ("lsh", "itq", "kslsh"):
    for bits in bits_list:
      for seed in seeds:
        t0 = time.perf_counter()
        encode = baselines.fit_encoder(
            name, x_tr, y_tr if name == "kslsh" else None, bits=bits,
            seed=seed)
        codes = jax.block_until_ready(encode(x_te))
        records.append(dict(method=name, bits=bits, seed=seed,
                            fit_s=time.perf_counter() - t0,
                            **retrieval_scores(codes, y_te, metric="hamming")))
        print(name, records[-1], flush=True)
      times[(name, bits)] = query_time_ms(codes)
      if name == "kslsh" and bits == max(bits_list):
        yield "kslsh", codes


# -------------------------------------------------------------- output --


def collect(records, method, bits, key):
  return [r[key] for r in records if r["method"] == method
          and r["bits"] == bits]


def table(records, times, methods, bits_list, key):
  """Markdown shaped like Table I: mAP and time without K, then per K."""
  head = ["Method", "mAP", "Time (ms)"]
  for b in bits_list:
    head += [f"K={b} mAP", f"K={b} ms", f"K={b} paper"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for m in methods:
    row = [NAMES[m]]
    if any(r["method"] == m and r["bits"] == 0 for r in records):
      paper = PAPER.get(m, {}).get(0)
      row += [fmt(collect(records, m, 0, key)) +
              (f" (paper {paper})" if paper and key == "map" else ""),
              f"{times[(m, 0)]:.2f}"]
      row += ["-"] * (3 * len(bits_list))
    else:
      row += ["-", "-"]
      for b in bits_list:
        t = times.get((m, b))
        row += [fmt(collect(records, m, b, key)),
                f"{t:.2f}" if t is not None else "-",
                str(PAPER.get(m, {}).get(b, "-")) if key == "map" else "-"]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def plot_map_vs_bits(records, methods, bits_list, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for m in methods:
    if any(r["method"] == m and r["bits"] == 0 for r in records):
      ax.axhline(np.mean(collect(records, m, 0, "map")), ls=":", lw=1,
                 label=NAMES[m], color="grey" if m == "nn_float" else "k")
      continue
    stats = [mean_spread(collect(records, m, b, "map")) for b in bits_list]
    ax.errorbar(bits_list, [s[0] for s in stats], [s[1] for s in stats],
                marker="o", capsize=3, label=NAMES[m])
  for m, style in (("milan", "r*"), ("kslsh", "b*")):
    ax.plot(bits_list, [PAPER[m].get(b, np.nan) for b in bits_list], style,
            ms=9, label=f"{NAMES[m]} (paper)")
  ax.set_xlabel("K (bits)")
  ax.set_ylabel(f"mAP@{K_TOP}")
  ax.set_xticks(bits_list)
  ax.set_ylim(0, 1)
  ax.set_title("UC Merced, test = queries = archive")
  ax.legend(fontsize=6, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_tsne(panels, labels, path, seed=0):
  """panels: [(title, packed codes uint32[N, W], bits)]; points by class."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  from rs_jax import hashing  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5))
  cmap = plt.get_cmap("tab20b", int(labels.max()) + 1)
  for ax, (title, codes, bits) in zip(np.atleast_1d(axes), panels):
    bits01 = np.asarray(hashing.unpack_bits(jnp.asarray(codes), bits),
                        np.float32)
    xy = TSNE(2, metric="hamming", init="random", random_state=seed,
              perplexity=30).fit_transform(bits01)
    ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, s=6)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------- main --


def main(argv=None):
  args = parse_args(argv)
  t_start = time.perf_counter()
  work = os.path.abspath(args.work_dir or os.path.join(args.data_dir,
                                                       "milan_runs"))
  os.makedirs(args.out, exist_ok=True)
  config = base_config(args)
  variants = list(args.variants)
  if args.study:
    variants += ["semi_hard", "views8", "long"]

  t0 = time.perf_counter()
  feats = load_features(config, work)
  if "views8" in variants:
    load_features(variant(config, "views8", bits=32, seed=0), work)
  prepare_s = time.perf_counter() - t0
  print(f"prepared + cached features in {prepare_s:.0f} s", flush=True)
  x_te, y_te = feats["test"]

  records, times = [], {}
  tsne_panels = []
  for name, codes in run_baselines(feats, args.bits, args.seeds, records,
                                   times):
    tsne_panels.append((f"KSLSH, K={max(args.bits)}", np.asarray(codes),
                        max(args.bits)))

  for name in variants:
    seeds, bits_list = args.seeds, args.bits
    if name != "milan":
      seeds = args.ablation_seeds or seeds
      bits_list = args.ablation_bits or bits_list
    for bits in bits_list:
      for seed in seeds:
        c = variant(config, name, bits=bits, seed=seed)
        t0 = time.perf_counter()
        results, outputs, trained = run_milan(c, os.path.join(
            work, f"{name}_k{bits}_s{seed}"), x_te, reuse=args.reuse)
        codes = hamming_codes(outputs)
        scores = retrieval_scores(codes, y_te, metric="hamming")
        # The engine's own test numbers come from the same metric code.
        assert abs(scores["map"] - results[f"test/map@{K_TOP}"]) < 1e-4, (
            scores, results[f"test/map@{K_TOP}"])
        records.append(dict(
            method=name, bits=bits, seed=seed, **scores,
            train_s=time.perf_counter() - t0 if trained else None,
            steps_per_sec=results.get("train/steps_per_sec")))
        print(name, records[-1], flush=True)
        if name == "milan":
          records.append(dict(method="milan_float", bits=bits, seed=seed,
                              **retrieval_scores(outputs, y_te,
                                                 metric="euclidean")))
          if seed == seeds[0]:
            times[("milan", bits)] = query_time_ms(codes)
            times[("milan_float", bits)] = query_time_ms(outputs)
            if bits == max(args.bits):
              tsne_panels.append((f"MiLaN, K={bits}", np.asarray(codes), bits))
        elif seed == seeds[0]:
          times[(name, bits)] = query_time_ms(codes)

  methods = ["nn_float", "nn_hamming", "lsh", "itq", "kslsh", "milan",
             *(["milan_float"] if "milan" in variants else []),
             *[v for v in variants if v != "milan"]]
  png = os.path.join(args.out, "milan_ucm_map_vs_bits.png")
  plot_map_vs_bits(records, [m for m in methods if m in (
      "nn_float", "nn_hamming", "lsh", "itq", "kslsh", "milan",
      "milan_float")], args.bits, png)
  tsne = os.path.join(args.out, "milan_ucm_tsne.png")
  plot_tsne(tsne_panels, y_te, tsne)
  total_s = time.perf_counter() - t_start

  command = "OPENBLAS_NUM_THREADS=1 python " + " ".join(
      [os.path.relpath(__file__, ROOT)] + (sys.argv[1:] if argv is None
                                           else list(argv)))
  env = dict(python=platform.python_version(), jax=jax.__version__,
             devices=str(jax.devices()), cpus=os.cpu_count(),
             load_avg=os.getloadavg(), platform=platform.platform())
  n_seeds = len(args.seeds)
  md = [
      f"# MiLaN and hashing baselines, UC Merced (mAP@{K_TOP})", "",
      f"Command (`{total_s / 60:.1f}` min in all, preparation and feature "
      f"cache {prepare_s:.0f} s):", "", f"    {command}", "",
      f"Environment: {env}", "",
      "Protocol: split preset `milan` (per class 60 % train, of which 20 "
      "images are validation; 40 % test: 840 images); queries = archive = "
      "test, the query excluded; frozen EfficientNet-Lite0 ImageNet features "
      "(1280-d, the whole image resized to 224; the paper: Inception-v3 "
      "pool3, 2048-d). Baselines fitted on the 840 train-split features. "
      f"Values: mean ± sample std over seeds {args.seeds} "
      f"({n_seeds} seeds; NN rows are deterministic). Time: mean ms of one "
      f"query's exact top-{K_TOP} search over the 840 test items on this "
      "CPU (jitted, after warm-up, first seed's codes).", "",
      f"## mAP@{K_TOP} normalised by the relevant items retrieved "
      "(`map@20`)", "",
      "This is the normalisation of the paper's Table I: the authors' "
      "evaluation code (MHCLN `eval.py`) divides the sum of precisions at "
      "the relevant ranks by the number of relevant items in the top k.", "",
      table(records, times, methods, args.bits, "map"), "",
      f"## mAP@{K_TOP} normalised by min(20, R) (`map_r@20`)", "",
      table(records, times, methods, args.bits, "map_r"), "",
      f"Plots: `{os.path.basename(png)}` (mAP@{K_TOP} vs K), "
      f"`{os.path.basename(tsne)}` (t-SNE of the K={max(args.bits)} test "
      "codes, Hamming metric, coloured by class; paper Fig. 3).", ""]
  with open(os.path.join(args.out, "milan_ucm_cpu.md"), "w") as f:
    f.write("\n".join(md))
  with open(os.path.join(args.out, "milan_ucm_cpu.json"), "w") as f:
    json.dump(dict(command=command, environment=env, total_s=total_s,
                   prepare_s=prepare_s, bits=args.bits, seeds=args.seeds,
                   config=json.loads(config.to_json_best_effort()),
                   paper=PAPER, records=records,
                   query_time_ms={f"{m}@{b}": t for (m, b), t in
                                  times.items()}), f, indent=1)
  print("\n".join(md))


if __name__ == "__main__":
  main()
