"""MiLaN and the hashing baselines on UC Merced: the paper's Table I.

  python -m benchmarks.milan_table --data_dir DATA_DIR \
      --manual_dir ../shared/data/ucmerced
  python -m benchmarks.milan_table \
      --from_json benchmarks/results/milan_ucm_cpu.json

Prepares UC Merced once (split preset "milan": 60 % train of which 20 images
per class validate, 40 % test) and caches the frozen EfficientNet-Lite0
features once (DATA_DIR/features). Then, per K in --bits and seed in --seeds:
MiLaN (--config, default configs/milan_ucm.py, trained by rs_jax.train) and
its ablations lambda1 = lambda2 = 1 and = 0.001 (Sec. IV-A); the baselines
of rs_jax.baselines (NN on float features, Euclidean; NN on thresholded
features, Hamming; LSH; ITQ; KSLSH) fitted on the train split's features.
Every method is scored by `metrics.retrieval_metrics` on the test split,
queries = archive = test, the query excluded; both mAP normalisations are
reported (map@20: by the relevant items retrieved, what MiLaN's code
computes; map_r@20: by min(20, R)). Trained runs are restored with
`trained.load_trained`. Query time: mean wall time of one query's exact
top-20 search over the 840 test codes (`baselines.search`, jitted, after a
warm-up), in ms. OPENBLAS_NUM_THREADS defaults to 1 (KSLSH: ~20x faster
here).

--add_to RESULTS.json runs only the --variants rows and merges them into
that results file (replacing rows of the same name; the baselines, the
other rows, the plots and the hand notes stay): one more row without
rerunning the table. The added rows' commands are recorded in the file.

--study adds the rows that probe why frozen features may fall short (each a
config change, same seeds and K): semi-hard mining (sampler "pk", loss
triplet_mined), the 8 flips/rotations of the training features
(feature_views=8), and a longer training.

Writes OUT/milan_ucm_<tag>.{md,json}, OUT/milan_ucm_map_vs_bits.png and
OUT/milan_ucm_tsne.png (t-SNE of the K=32 test codes of KSLSH and MiLaN,
paper Fig. 3).
"""
import json
import os
import platform
import shutil
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # KSLSH: ~20x faster

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import report  # noqa: E402
from configs import milan_ucm  # noqa: E402
from rs_jax import baselines  # noqa: E402
from rs_jax import console  # noqa: E402
from rs_jax import evaluate  # noqa: E402
from rs_jax import hashing  # noqa: E402
from rs_jax import input_pipeline  # noqa: E402
from rs_jax import metrics  # noqa: E402
from rs_jax import paths  # noqa: E402
from rs_jax import train  # noqa: E402
from rs_jax import trained  # noqa: E402
from rs_jax.models import encoder as encoder_lib  # noqa: E402

FLAGS = flags.FLAGS
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
    "authors": "MiLaN, authors' code protocol (1,260 train, no val., "
               "two-class batches)",
}


BASE_METHODS = ("nn_float", "nn_hamming", "lsh", "itq", "kslsh", "milan",
                "milan_float")
STUDY = ("semi_hard", "views8", "long")


def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  config_flags.DEFINE_config_file(
      "config", os.fspath(report.ROOT / "configs" / "milan_ucm.py"),
      "MiLaN config; --data_dir, --manual_dir and --steps set its fields.",
      lock_config=True)
  define_ucm_flags(runs="milan_runs", bits=["16", "24", "32"],
                   seeds=["0", "1", "2"])
  flags.DEFINE_list("ablation_seeds", None, "Seeds of the ablation / study "
                    "rows (default --seeds).")
  flags.DEFINE_list("ablation_bits", None, "K of the ablation / study rows "
                    "(default --bits).")
  flags.DEFINE_integer("steps", None, "MiLaN training steps (default: the "
                       "config's 10000); validation every steps / 5.")
  flags.DEFINE_list("variants", ["milan", "lambda_1", "lambda_0.001"],
                    "MiLaN rows (see NAMES).")
  flags.DEFINE_bool("reuse", False, "Read finished runs (WORK_DIR/<row>_k<K>"
                    "_s<seed>/metrics.json and best checkpoint) instead of "
                    "training them again.")
  flags.DEFINE_bool("study", False, "Also the improvement rows (semi-hard, "
                    "views, long).")
  flags.DEFINE_string("add_to", None, "Merge the --variants rows into this "
                      "results .json (and its .md) instead of running the "
                      "whole table.")


def define_ucm_flags(*, runs, bits, seeds, seeds_help="Seeds of every row.",
                     archive="The UC Merced archive"):
  """Defines the flags every UC Merced table shares: data, runs (default
  folder DATA_DIR/`runs`), results, K, seeds and --from_json."""
  flags.DEFINE_string("data_dir", None, "Prepared dataset + feature cache "
                      "(made if missing); required unless --from_json.")
  flags.DEFINE_string("manual_dir", None, f"{archive}; required unless "
                      "--from_json.")
  flags.DEFINE_string("work_dir", None, f"Training runs (default "
                      f"DATA_DIR/{runs}).")
  flags.DEFINE_string("out", os.fspath(report.RESULTS), "Results folder.")
  flags.DEFINE_string("tag", "cpu", "File name suffix (the machine).")
  flags.DEFINE_list("bits", bits, "Code lengths K.")
  flags.DEFINE_list("seeds", seeds, seeds_help)
  flags.DEFINE_string("from_json", None, "Render the .md beside this results "
                      ".json again (no runs; hand notes are kept).")


def start_ucm_run(runs: str) -> str:
  """Checks --data_dir and --manual_dir and sends the log to WORK_DIR/log.txt
  (WORK_DIR: --work_dir, else DATA_DIR/`runs`) -> the absolute WORK_DIR."""
  if not (FLAGS.data_dir and FLAGS.manual_dir):
    raise app.UsageError("--data_dir and --manual_dir are required (or "
                         "--from_json)")
  work = os.path.abspath(FLAGS.work_dir or os.path.join(FLAGS.data_dir, runs))
  report.start_console(os.path.join(work, "log.txt"))
  return work


def fit_baseline(name, x_tr, y_tr, x_te, bits, seed):
  """Fits hashing baseline `name` on x_tr (labels y_tr for KSLSH only) ->
  (codes of x_te, seconds to fit and encode)."""
  t0 = time.perf_counter()
  encode = baselines.fit_encoder(name, x_tr, y_tr if name == "kslsh" else None,
                                 bits=bits, seed=seed)
  codes = jax.block_until_ready(encode(x_te))
  return codes, time.perf_counter() - t0


def ints(values):
  """Returns a list flag's values as ints (None stays None)."""
  return None if values is None else [int(v) for v in values]


# ------------------------------------------------------------- helpers --


def mean_spread(values):
  """Returns (mean, sample standard deviation; 0 for one value)."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values, digits=3):
  """Formats values as 'mean ± std' (one value: the value; none: '-')."""
  if not values:
    return "-"
  m, s = mean_spread(values)
  return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else (
      f"{m:.{digits}f}")


def retrieval_scores(codes, labels, *, metric):
  """Returns {map, map_r} @20 of queries = archive = `codes`, query
  excluded; metric "hamming" (packed codes) or "euclidean"."""
  score = _scores_hamming if metric == "hamming" else _scores_euclidean
  out = score(jnp.asarray(codes), jnp.asarray(labels))
  return {k: float(out[f"{k}@{K_TOP}"]) for k in ("map", "map_r")}


@jax.jit
def _scores_hamming(codes, labels):
  return metrics.retrieval_metrics(codes, labels, codes, labels, (K_TOP,),
                                   True, metric="hamming")


@jax.jit
def _scores_euclidean(codes, labels):
  return metrics.retrieval_metrics(codes, labels, codes, labels, (K_TOP,),
                                   True, metric="euclidean")


def query_time_ms(codes, *, num_queries=100):
  """Returns the mean ms of one query's exact top-20 (+ itself) search."""
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
  """Returns the packed MiLaN codes b = (sign(v - 0.5) + 1) / 2 (eq. 5)."""
  return evaluate.packed_codes(jnp.asarray(outputs))


# ---------------------------------------------------------------- runs --


def base_config(config, *, data_dir, manual_dir, steps):
  """Returns `config` with the data folders (absolute) and the steps set."""
  config = config.copy_and_resolve_references()
  config.data.data_dir = os.path.abspath(data_dir)
  config.data.manual_dir = os.path.abspath(manual_dir)
  if steps:
    config.train.steps = steps
    config.eval.every = config.train.log_every = max(steps // 5, 1)
  return config


def variant(config, name, *, bits, seed):
  """Returns the config of row `name` (see NAMES) at K = bits and seed."""
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
    with c.unlocked():  # the --config flag's config is locked
      c.train.sampler_options = dict(p=15, k=6)
  elif name == "eq1_printed":
    c.loss.options.triplet.normalize = False
  elif name == "views8":
    c.model.feature_views = 8
  elif name == "long":
    c.train.steps = 3 * c.train.steps
    c.eval.every = 3 * c.eval.every
  elif name == "authors":
    c = milan_ucm.authors_protocol(c)
  elif name != "milan":
    raise ValueError(f"unknown MiLaN variant {name!r}")
  return c


def load_features(config, workdir):
  """Returns {split: (features float32[N, D], labels int[N])}; prepares and
  caches them on first use (the same cache the training runs read)."""
  data = input_pipeline.load(config, workdir)
  m, key = config.data.inputs[0], config.data.label_key
  return {s: (np.asarray(src.arrays[m]), np.asarray(src.arrays[key]))
          for s, src in data.sources.items()}


def best_outputs(workdir, features):
  """Returns the sigmoid outputs float32[N, K] on `features` of the hash
  network restored from `workdir` (`trained.load_trained`: best state)."""
  run = trained.load_trained(workdir)
  m = run.config.data.inputs[0]
  outputs, _ = encoder_lib.encode(
      run.models, run.state["params"], run.state["batch_stats"],
      {m: jnp.asarray(features)}, run.stats, train=False)
  return np.asarray(outputs[m])


def run_milan(config, workdir, test_features, *, reuse=False):
  """Trains one MiLaN (or, with reuse, reads a finished run's metrics.json);
  returns (engine results, test outputs float32[N, K], trained now)."""
  done = os.path.join(workdir, "metrics.json")
  trained_now = not (reuse and os.path.exists(done))
  if trained_now:
    shutil.rmtree(workdir, ignore_errors=True)  # fresh: no stale resume
    os.makedirs(workdir)
    results = train.train_and_evaluate(config, workdir)
  else:
    results = report.read_json(done)
  return results, best_outputs(workdir, test_features), trained_now


def run_baselines(feats, bits_list, seeds):
  """Fits and scores the baselines; returns (records, query times, the
  t-SNE panel of KSLSH at the largest K)."""
  (x_tr, y_tr), (x_te, y_te) = feats["train"], feats["test"]
  records, times, panel = [], {}, None
  for name in ("nn_float", "nn_hamming"):
    codes = baselines.fit_encoder(name, x_tr)(x_te)
    metric = "euclidean" if name == "nn_float" else "hamming"
    records.append(dict(method=name, bits=0, seed=0,
                        **retrieval_scores(codes, y_te, metric=metric)))
    times[(name, 0)] = query_time_ms(codes)
    console.show(f"{name}: {records[-1]}")
  for name in ("lsh", "itq", "kslsh"):
    for bits in bits_list:
      for seed in seeds:
        codes, fit_s = fit_baseline(name, x_tr, y_tr, x_te, bits, seed)
        records.append(dict(method=name, bits=bits, seed=seed, fit_s=fit_s,
                            **retrieval_scores(codes, y_te, metric="hamming")))
        console.show(f"{name}: {records[-1]}")
      times[(name, bits)] = query_time_ms(codes)
      if name == "kslsh" and bits == max(bits_list):
        panel = (f"KSLSH, K={bits}", np.asarray(codes), bits)
  return records, times, panel


def run_row(config, name, work, test, *, bits, seed, reuse, timed):
  """Runs MiLaN row `name` at (bits, seed); returns (records, query times,
  packed test codes)."""
  x_te, y_te = test
  t0 = time.perf_counter()
  results, outputs, trained_now = run_milan(
      variant(config, name, bits=bits, seed=seed),
      os.path.join(work, f"{name}_k{bits}_s{seed}"), x_te, reuse=reuse)
  codes = hamming_codes(outputs)
  scores = retrieval_scores(codes, y_te, metric="hamming")
  # The engine's own test numbers come from the same metric code.
  assert abs(scores["map"] - results[f"test/map@{K_TOP}"]) < 1e-4, (
      scores, results[f"test/map@{K_TOP}"])
  records = [dict(method=name, bits=bits, seed=seed, **scores,
                  train_s=time.perf_counter() - t0 if trained_now else None,
                  steps_per_sec=results.get("train/steps_per_sec"))]
  times = {(name, bits): query_time_ms(codes)} if timed else {}
  if name == "milan":
    records.append(dict(method="milan_float", bits=bits, seed=seed,
                        **retrieval_scores(outputs, y_te,
                                           metric="euclidean")))
    if timed:
      times[("milan_float", bits)] = query_time_ms(outputs)
  console.show(f"{name}: {records[0]}")
  return records, times, codes


def run_variants(config, variants, work, test, *, bits, seeds, ablation_bits,
                 ablation_seeds, reuse):
  """Runs every MiLaN row; returns (records, query times, the t-SNE panel
  of MiLaN at the largest K)."""
  records, times, panel = [], {}, None
  for name in variants:
    row_seeds = seeds if name == "milan" else ablation_seeds or seeds
    row_bits = bits if name == "milan" else ablation_bits or bits
    for k in row_bits:
      for seed in row_seeds:
        got, got_times, codes = run_row(config, name, work, test, bits=k,
                                        seed=seed, reuse=reuse,
                                        timed=seed == row_seeds[0])
        records += got
        times.update(got_times)
        if name == "milan" and seed == row_seeds[0] and k == max(bits):
          panel = (f"MiLaN, K={k}", np.asarray(codes), k)
  return records, times, panel


# -------------------------------------------------------------- output --


def collect(records, method, bits, key):
  """Returns the `key` values of the records of (method, bits)."""
  return [r[key] for r in records if r["method"] == method
          and r["bits"] == bits]


def table(records, times, methods, bits_list, key):
  """Returns markdown shaped like Table I: mAP and time without K, then
  mAP, time and the paper's value per K."""
  head = ["Method", "mAP", "Time (ms)"]
  for b in bits_list:
    head += [f"K={b} mAP", f"K={b} ms", f"K={b} paper"]
  rows = []
  for m in methods:
    row = [NAMES.get(m, m)]
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
    rows.append(row)
  return report.markdown_table(head, rows)


def methods_of(records):
  """Returns the table's rows: the base methods, then the other MiLaN rows
  in the order they ran."""
  ran = list(dict.fromkeys(r["method"] for r in records))
  return [m for m in BASE_METHODS if m in ran] + [
      m for m in ran if m not in BASE_METHODS]


def times_of(record):
  """Returns {(method, bits): ms} of a results record's query_time_ms."""
  out = {}
  for key, ms in record["query_time_ms"].items():
    method, bits = key.rsplit("@", 1)
    out[(method, int(bits))] = ms
  return out


def plot_map_vs_bits(records, methods, bits_list, path):
  """Writes the mAP@20-vs-K plot of `methods` (and the paper's points)."""
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
  report.save_figure(fig, path, dpi=120)
  plt.close(fig)


def plot_tsne(panels, labels, path, seed=0):
  """Writes t-SNE plots of panels [(title, packed codes uint32[N, W],
  bits)], points coloured by class."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
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
  report.save_figure(fig, path, dpi=110)
  plt.close(fig)


def ucm_header(record, title, *, rendered_by=None, history=()) -> list:
  """Returns the opening markdown lines of a UC Merced table: the title,
  the command with its time, `history` (lines on how rows were run), the
  re-render line and the environment."""
  md = [f"# {title}", "",
        f"Command (`{record['total_s'] / 60:.1f}` min in all, preparation "
        f"and feature cache {record['prepare_s']:.0f} s):", "",
        f"    {record['command']}", "", *history]
  if rendered_by:
    md += [f"This file was rendered from the JSON by `{rendered_by}`.", ""]
  return md + [f"Environment: {record['environment']}", ""]


def render(record, *, rendered_by=None):
  """Returns the markdown of a results record (the .json's content)."""
  records, times, bits = record["records"], times_of(record), record["bits"]
  methods, seeds = methods_of(records), record["seeds"]
  history = []
  if record.get("command_as_run"):
    history += ["Recorded as run:", "", f"    {record['command_as_run']}", ""]
  for added in record.get("added", []):
    load = added.get("environment", {}).get("load_avg")
    history += [f"Rows {', '.join(added['variants'])} added later "
                f"(`{added['total_s'] / 60:.1f}` min"
                + (f", load average {load[0]:.1f}" if load else "") + ") by:",
                "", f"    {added['command']}", ""]
  md = ucm_header(record, f"MiLaN and hashing baselines, UC Merced "
                  f"(mAP@{K_TOP})", rendered_by=rendered_by, history=history)
  md += [
      "Protocol: split preset `milan` (per class 60 % train, of which 20 "
      "images are validation; 40 % test: 840 images); queries = archive = "
      "test, the query excluded; frozen EfficientNet-Lite0 ImageNet features "
      "(1280-d, the whole image resized to 224; the paper: Inception-v3 "
      "pool3, 2048-d). Baselines fitted on the 840 train-split features. "
      f"Values: mean ± sample std over seeds {seeds} "
      f"({len(seeds)} seeds; NN rows are deterministic). Time: mean ms of "
      f"one query's exact top-{K_TOP} search over the 840 test items on this "
      "CPU (jitted, after warm-up, first seed's codes).", "",
      f"## mAP@{K_TOP} normalised by the relevant items retrieved "
      f"(`map@{K_TOP}`)", "",
      "This is the normalisation of the paper's Table I: the authors' "
      "evaluation code (MHCLN `eval.py`) divides the sum of precisions at "
      "the relevant ranks by the number of relevant items in the top k.", "",
      table(records, times, methods, bits, "map"), "",
      f"## mAP@{K_TOP} normalised by min({K_TOP}, R) (`map_r@{K_TOP}`)", "",
      table(records, times, methods, bits, "map_r"), "",
      "Plots: `milan_ucm_map_vs_bits.png` (mAP@20 vs K), `milan_ucm_tsne.png` "
      f"(t-SNE of the K={max(bits)} test codes, Hamming metric, coloured by "
      "class; paper Fig. 3)."]
  return "\n".join(md)


def environment():
  """Returns the Python, JAX, devices, CPUs and load of this machine."""
  return dict(python=platform.python_version(), jax=jax.__version__,
              devices=str(jax.devices()), cpus=os.cpu_count(),
              load_avg=os.getloadavg(), platform=platform.platform())


# ---------------------------------------------------------------- main --


def prepare(config, work, variants):
  """Returns (features per split, seconds): prepared and cached once."""
  t0 = time.perf_counter()
  feats = load_features(config, work)
  if "views8" in variants:
    load_features(variant(config, "views8", bits=32, seed=0), work)
  prepare_s = time.perf_counter() - t0
  console.show(f"prepared + cached features in {prepare_s:.0f} s")
  return feats, prepare_s


def write_plots(out, records, panels, test_labels, bits):
  """Writes milan_ucm_map_vs_bits.png and milan_ucm_tsne.png into `out`."""
  plot_map_vs_bits(records, [m for m in methods_of(records)
                             if m in BASE_METHODS], bits,
                   out / "milan_ucm_map_vs_bits.png")
  plot_tsne([p for p in panels if p is not None], test_labels,
            out / "milan_ucm_tsne.png")


def merge_rows(record, records, times, added) -> dict:
  """Returns the results `record` with the MiLaN rows `records` (and their
  query `times`) in place of any rows of the same methods; `added` (the
  variants, command, seconds) is appended to record["added"]."""
  methods = {r["method"] for r in records}
  out = dict(record)
  out["records"] = [r for r in record["records"]
                    if r["method"] not in methods] + records
  out["query_time_ms"] = {
      **{k: v for k, v in record["query_time_ms"].items()
         if k.rsplit("@", 1)[0] not in methods},
      **{f"{m}@{b}": t for (m, b), t in times.items()}}
  out["added"] = [a for a in record.get("added", [])
                  if not set(a["variants"]) <= methods] + [added]
  return out


def add_rows(config, work, bits, seeds, t_start) -> None:
  """Runs the --variants rows and merges them into FLAGS.add_to."""
  record = report.read_json(FLAGS.add_to)
  variants = list(FLAGS.variants)
  test = load_features(config, work)["test"]
  records, times, _ = run_variants(
      config, variants, work, test, bits=bits, seeds=seeds,
      ablation_bits=ints(FLAGS.ablation_bits),
      ablation_seeds=ints(FLAGS.ablation_seeds), reuse=FLAGS.reuse)
  added = dict(variants=variants, total_s=time.perf_counter() - t_start,
               command=report.command(__spec__.name, env=(
                   "OPENBLAS_NUM_THREADS="
                   + os.environ["OPENBLAS_NUM_THREADS"])),
               environment=environment())
  merged = merge_rows(record, records, times, added)
  report.write_json(FLAGS.add_to, merged)
  md = render(merged)
  report.write_markdown(paths.resolve(FLAGS.add_to).with_suffix(".md"), md,
                        keep_notes=True)
  print(md)


def main(argv):
  """Runs the baselines and MiLaN rows and writes the table, or renders a
  JSON."""
  if report.rendered_from_json(argv, render, __spec__.name):
    return
  t_start = time.perf_counter()
  work = start_ucm_run("milan_runs")
  config = base_config(FLAGS.config, data_dir=FLAGS.data_dir,
                       manual_dir=FLAGS.manual_dir, steps=FLAGS.steps)
  bits, seeds = ints(FLAGS.bits), ints(FLAGS.seeds)
  if FLAGS.add_to:
    return add_rows(config, work, bits, seeds, t_start)
  variants = list(FLAGS.variants) + (list(STUDY) if FLAGS.study else [])
  feats, prepare_s = prepare(config, work, variants)
  records, times, kslsh_panel = run_baselines(feats, bits, seeds)
  milan_records, milan_times, milan_panel = run_variants(
      config, variants, work, feats["test"], bits=bits, seeds=seeds,
      ablation_bits=ints(FLAGS.ablation_bits),
      ablation_seeds=ints(FLAGS.ablation_seeds), reuse=FLAGS.reuse)
  records += milan_records
  times.update(milan_times)
  out = paths.resolve(FLAGS.out)
  write_plots(out, records, (kslsh_panel, milan_panel), feats["test"][1],
              bits)
  record = dict(
      command=report.command(__spec__.name, env="OPENBLAS_NUM_THREADS="
                             + os.environ["OPENBLAS_NUM_THREADS"]),
      environment=environment(), total_s=time.perf_counter() - t_start,
      prepare_s=prepare_s, bits=bits, seeds=seeds,
      config=json.loads(config.to_json_best_effort()), paper=PAPER,
      records=records,
      query_time_ms={f"{m}@{b}": t for (m, b), t in times.items()})
  prefix = out / f"milan_ucm_{FLAGS.tag}"
  report.write_results(prefix, record, render, keep_notes=False)


if __name__ == "__main__":
  define_flags()
  app.run(main)
