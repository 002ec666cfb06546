"""BigEarthNet data throughput: storage, preparation and reading rates.

Writes a generated BigEarthNet-shaped archive (random pixels at native size
in the real formats: v1 folders of GeoTIFFs + JSON, the reBEN LMDB +
safetensors + metadata.parquet) of --pairs S1/S2 pairs to a temp dir, then,
for every dataset in --names, measures in one run:
  plain     a plain single-process read of the same raw files (tifffile for
            the bands + json for the labels; LMDB + safetensors for reBEN):
            the rate preparation is compared with;
  prepare   rs_jax.data.prepare end to end (scan, decode, checks, band
            statistics, label store, array_record writing) with each of
            --workers local processes and on Beam's DirectRunner (--beam);
  disk      bytes per example of the prepared array_record files, against
            the raw pixel payload and the GeoTIFF / LMDB bytes per patch;
  train     rs_jax.data.pipeline.train_batches(sampler="random") examples/s
            after one warm-up batch; eval: one pass of eval_batches;
  hours     the full archive (590,326 v1 patches or pairs; 549,488 reBEN
            pairs) at the best local preparation rate measured here.
Prints a markdown table and writes JSON + markdown (with the command) to
--out/data_throughput_<tag>.{json,md}.

  python -m benchmarks.data_throughput                     # 2,000 pairs
  python -m benchmarks.data_throughput --pairs 64 --batches 4 --tag quick
"""
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

import rs_jax.data as data
from rs_jax.data import pipeline
from rs_jax.data.bigearthnet import fake
from rs_jax.data.bigearthnet import patches

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_integer("pairs", 2000, "Generated S1/S2 pairs.")
  flags.DEFINE_list("names", [
      "bigearthnet/s2", "bigearthnet/s1", "bigearthnet/mm",
      "bigearthnet_v2/s2", "bigearthnet_v2/s1", "bigearthnet_v2/mm"],
                    "Datasets to measure.")
  flags.DEFINE_list("workers", ["1", "2"],
                    "Local worker counts to prepare with.")
  flags.DEFINE_bool("beam", True, "Also prepare on Beam's DirectRunner.")
  flags.DEFINE_integer("batch_size", 32, "Batch size.")
  flags.DEFINE_integer("batches", 50, "Timed train batches.")
  flags.DEFINE_string("out", os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results"), "Results folder.")
  flags.DEFINE_string("tag", "cpu", "Results file tag.")


FLAGS = flags.FLAGS

FULL = {"bigearthnet": 590_326, "bigearthnet_v2": 549_488}
_MODALITIES = {"s2": ("s2",), "s1": ("s1",), "mm": ("s2", "s1")}
_BANDS = {"s2": patches.S2_BANDS, "s1": patches.S1_BANDS}


def seconds(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def plain_read_v1(raw, written, config):
  """Reads every patch's bands (tifffile) and JSON like a minimal loader."""
  import tifffile  # pylint: disable=g-import-not-at-top
  roots = {"s2": os.path.join(raw, fake.S2_ROOT_V1),
           "s1": os.path.join(raw, fake.S1_ROOT_V1)}
  for w in written:
    for m in _MODALITIES[config]:
      name = w[f"{m}_name"]
      folder = os.path.join(roots[m], name)
      for band in _BANDS[m]:
        tifffile.imread(os.path.join(folder, f"{name}_{band}.tif"))
      with open(os.path.join(folder, f"{name}_labels_metadata.json")) as f:
        json.load(f)


def plain_read_v2(raw, rows, config):
  """Reads every patch from the reBEN LMDB (safetensors) like a minimal
  loader, plus the metadata table."""
  import lmdb  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  pq.read_table(os.path.join(raw, "metadata.parquet")).to_pylist()
  env = lmdb.open(os.path.join(raw, "BigEarthNet-V2-LMDB"), readonly=True,
                  lock=False, readahead=False)
  with env.begin() as txn:
    for row in rows:
      for m in _MODALITIES[config]:
        key = row["patch_id"] if m == "s2" else row["s1_name"]
        safetensors.numpy.load(txn.get(key.encode()))
  env.close()


def raw_bytes_v1(raw, written, config):
  """GeoTIFF file bytes (bands only) per example."""
  roots = {"s2": fake.S2_ROOT_V1, "s1": fake.S1_ROOT_V1}
  total = 0
  for w in written:
    for m in _MODALITIES[config]:
      name = w[f"{m}_name"]
      total += sum(os.path.getsize(os.path.join(
          raw, roots[m], name, f"{name}_{b}.tif")) for b in _BANDS[m])
  return total / len(written)


def raw_bytes_v2(raw, rows, config):
  """LMDB value bytes (safetensors blobs) per example."""
  import lmdb  # pylint: disable=g-import-not-at-top
  env = lmdb.open(os.path.join(raw, "BigEarthNet-V2-LMDB"), readonly=True,
                  lock=False)
  total = 0
  with env.begin() as txn:
    for row in rows:
      for m in _MODALITIES[config]:
        key = row["patch_id"] if m == "s2" else row["s1_name"]
        total += len(txn.get(key.encode()))
  env.close()
  return total / len(rows)


def payload_bytes(config):
  """Raw pixel bytes of one example at native size (uint16 S2, f32 S1)."""
  size = {"s2": 2, "s1": 4}
  return sum(patches.NATIVE_SIZE[b] ** 2 * size[m]
             for m in _MODALITIES[config] for b in _BANDS[m])


def measure(name, raw, items, work):
  family, config = name.split("/")
  row = {"dataset": name, "examples": len(items)}
  plain = plain_read_v1 if family == "bigearthnet" else plain_read_v2
  row["plain"] = len(items) / seconds(lambda: plain(raw, items, config))
  modes = [(f"workers={w}", dict(workers=int(w))) for w in FLAGS.workers]
  if FLAGS.beam:
    modes.append(("beam", dict(beam=["--runner=DirectRunner"])))
  row["prepare"] = {}
  first = None
  for label, how in modes:
    out = os.path.join(work, name.replace("/", "_"), label)
    row["prepare"][label] = len(items) / seconds(
        lambda: data.prepare(name, raw, out, **how))  # pylint: disable=cell-var-from-loop
    first = first or out
    print(f"  {name} prepare {label}: {row['prepare'][label]:.1f}/s",
          flush=True)
  b = data.builder(name, first)
  row["disk_bytes"] = sum(os.path.getsize(f) for f in
                          b.data_path.glob("*.array_record*")) / len(items)
  row["payload_bytes"] = payload_bytes(config)
  raw_bytes = raw_bytes_v1 if family == "bigearthnet" else raw_bytes_v2
  row["raw_file_bytes"] = raw_bytes(raw, items, config)
  source = data.load(name, "all", first)
  batches = pipeline.train_batches(source, batch_size=FLAGS.batch_size,
                                   seed=0)
  next(batches)
  row["train"] = FLAGS.batch_size * FLAGS.batches / seconds(
      lambda: [next(batches) for _ in range(FLAGS.batches)])
  row["eval"] = len(source) / seconds(lambda: list(pipeline.eval_batches(
      source, batch_size=FLAGS.batch_size)))
  best = max(v for k, v in row["prepare"].items() if k != "beam")
  row["full_archive"] = FULL[family]
  row["full_hours"] = FULL[family] / best / 3600
  return row


def table(rows, command, load):
  modes = list(rows[0]["prepare"])
  lines = [
      f"Data throughput, {FLAGS.pairs} generated BigEarthNet pairs (random "
      f"pixels at native size), batch {FLAGS.batch_size}, {os.cpu_count()} "
      f"CPUs ({platform.machine()}), 1-min load average {load:.1f} at the "
      "end (the machine is shared: rates are lower bounds)",
      "",
      "| dataset | disk B/ex | pixel payload B | raw files B/ex | plain read "
      "/s | " + " | ".join(f"prepare {m} /s" for m in modes) +
      " | best / plain | train_batches ex/s | eval_batches ex/s | full "
      "archive h (best local) |",
      "|---" * (9 + len(modes)) + "|"]
  for r in rows:
    best = max(v for k, v in r["prepare"].items() if k != "beam")
    lines.append(
        f"| {r['dataset']} | {r['disk_bytes']:.0f} | {r['payload_bytes']} | "
        f"{r['raw_file_bytes']:.0f} | {r['plain']:.0f} | " +
        " | ".join(f"{r['prepare'][m]:.0f}" for m in modes) +
        f" | {best / r['plain']:.2f} | {r['train']:.0f} | {r['eval']:.0f} | "
        f"{r['full_hours']:.2f} ({r['full_archive']:,}) |")
  lines += ["", f"Command: `{command}`"]
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  tmp = tempfile.mkdtemp(prefix="rs_jax_data_bench_")
  try:
    raw_v1, raw_v2 = os.path.join(tmp, "v1"), os.path.join(tmp, "v2")
    written = fake.write_v1(raw_v1, FLAGS.pairs)
    rows_v2 = fake.write_v2(raw_v2, FLAGS.pairs, fmt="lmdb")
    for r in rows_v2:
      del r["s2_bands"], r["s1_bands"]
    for w in written:
      del w["s2_bands"], w["s1_bands"]
    rows = []
    for name in FLAGS.names:
      v1 = name.startswith("bigearthnet/")
      rows.append(measure(name, raw_v1 if v1 else raw_v2,
                          written if v1 else rows_v2,
                          os.path.join(tmp, "prepared")))
      print(json.dumps(rows[-1]), flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  command = "python " + " ".join(sys.argv)
  load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
  text = table(rows, command, load)
  print(text)
  os.makedirs(FLAGS.out, exist_ok=True)
  stem = os.path.join(FLAGS.out, f"data_throughput_{FLAGS.tag}")
  with open(stem + ".md", "w") as f:
    f.write(text + "\n")
  with open(stem + ".json", "w") as f:
    json.dump({"command": command, "pairs": FLAGS.pairs,
               "cpus": os.cpu_count(), "load_average_1min": load,
               "platform": platform.platform(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
