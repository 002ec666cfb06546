"""Archive index at scale: build, save, load, file size and search latency.

An index of N random K-bit codes with string ids (patch names) and 19-class
multi-hot labels (BigEarthNet-19 sized) is built, saved, loaded (checksum
verified) and searched with k = 20 for Q = 1, 16, 256 query codes and by one
id. "first" is the first search of a Q (layout + compile), "search" the best
of the following calls. Results equal `ranking.hamming_topk` on the codes
(checked). Writes JSON + markdown with the command to benchmarks/results/.

  python -m benchmarks.index_search            # N = 1e6, K = 64
"""
import json
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app
from absl import flags

from benchmarks import report
from rs_jax import ranking
from rs_jax.index import Index


def define_flags():
  """Defines the command-line flags (only when run as a program)."""
  flags.DEFINE_float("n", 1e6, "Codes in the index.")
  flags.DEFINE_integer("bits", 64, "Bits per code.")
  flags.DEFINE_list("queries", ["1", "16", "256"], "Query batch sizes.")
  flags.DEFINE_integer("k", 20, "Neighbours per query.")
  flags.DEFINE_integer("repeats", 5, "Timed searches per batch size.")
  flags.DEFINE_string("out", str(report.RESULTS), "Results folder.")
  flags.DEFINE_string("tag", "cpu", "Suffix of the results files.")


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def main(argv):
  del argv
  args = flags.FLAGS
  report.start_console(os.path.join(tempfile.gettempdir(),
                                    "index_search.log"))
  n, w = int(args.n), -(-args.bits // 32)
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 2**32, (n, w), dtype=np.uint32)
  if args.bits % 32:
    codes[:, -1] &= np.uint32((1 << args.bits % 32) - 1)
  ids = [f"patch_{i:07d}" for i in range(n)]
  labels = rng.random((n, 19)) < 0.15
  command = report.command("benchmarks.index_search")
  info = dict(command=command, machine=platform.machine(),
              cpus=os.cpu_count(), device=str(jax.devices()[0].device_kind),
              jax=jax.__version__, n=n, bits=args.bits, k=args.k,
              load_avg_1min=os.getloadavg()[0])
  print(json.dumps(info), flush=True)

  t_build, index = timed(lambda: Index.from_codes(
      codes, args.bits, ids, labels=labels, metadata={"modality": "s2"}))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "archive.rsidx")
    t_save, _ = timed(lambda: index.save(path))
    size = os.path.getsize(path)
    t_load, index = timed(lambda: Index.load(path))
  setup = dict(build_s=t_build, save_s=t_save, load_s=t_load,
               file_mb=size / 1e6, codes_mb=codes.nbytes / 1e6)
  print(json.dumps(setup), flush=True)

  rows = []
  for nq in map(int, args.queries):
    q = rng.integers(0, 2**32, (nq, w), dtype=np.uint32)
    if args.bits % 32:
      q[:, -1] &= np.uint32((1 << args.bits % 32) - 1)
    t_first, (dist, got) = timed(lambda: index.search(q, args.k))
    times = [timed(lambda: index.search(q, args.k))[0]
             for _ in range(args.repeats)]
    want_d, want_i = ranking.hamming_topk(q, codes, args.k)
    identical = bool(np.array_equal(dist, want_d) and
                     np.array_equal(got, index.ids[np.asarray(want_i)]))
    rows.append(dict(query="codes", queries=nq, first_s=t_first,
                     search_s=min(times), identical=identical))
    print(rows[-1], flush=True)
  query_id = [ids[n // 2]]
  t_first, _ = timed(lambda: index.search_ids(query_id, args.k))
  times = [timed(lambda: index.search_ids(query_id, args.k))[0]
           for _ in range(args.repeats)]
  rows.append(dict(query="id", queries=1, first_s=t_first,
                   search_s=min(times), identical=None))
  print(rows[-1], flush=True)

  table = [
      f"N = {n:.0e}, K = {args.bits}, k = {args.k}: build "
      f"{t_build:.2f} s, save {t_save:.2f} s, load {t_load:.2f} s, file "
      f"{size / 1e6:.1f} MB (codes {codes.nbytes / 1e6:.1f} MB)", "",
      "| query | Q | first search s | search s | ms / query | "
      "equals hamming_topk |", "|---|---|---|---|---|---|"]
  same = {True: "yes", False: "NO", None: "-"}
  table += [f"| {r['query']} | {r['queries']} | {r['first_s']:.3f} | "
            f"{r['search_s']:.4f} | {1e3 * r['search_s'] / r['queries']:.2f}"
            f" | {same[r['identical']]} |" for r in rows]
  text = "\n".join(table)
  print(text)
  name = f"index_search_{args.tag}"
  report.write_json(os.path.join(args.out, name + ".json"),
                    dict(info, **setup, rows=rows))
  report.write_markdown(os.path.join(args.out, name + ".md"),
                        f"`{command}`\n\n{json.dumps(info)}\n\n{text}\n",
                        keep_notes=True)
  if not all(r["identical"] in (True, None) for r in rows):
    sys.exit("index search differs from hamming_topk")


if __name__ == "__main__":
  define_flags()
  app.run(main)
