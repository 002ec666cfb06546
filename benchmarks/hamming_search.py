"""Exact Hamming top-k: rs_jax.ranking.hamming_topk versus faiss IndexBinaryFlat.

Times both (and a NumPy floor on small cells) on the same random codes, same
machine and thread count, checks that the distances equal faiss's, and prints
a markdown table: seconds, rs_jax / faiss ratio and effective GB/s scanned
(Q * N * K / 8 bytes per second). "prepared" searches a
`ranking.prepare_codes` database (byte-plane layout built once, as an index
keeps it); plain `hamming_topk` rebuilds that layout on every call. Writes JSON + markdown with the command to
benchmarks/results/.

  python benchmarks/hamming_search.py                  # full grid
  python benchmarks/hamming_search.py --quick          # N = 1e6, K = 64, Q = 256
  python benchmarks/hamming_search.py --devices 8      # sharded scaling table
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--n", type=float, nargs="+", default=[1e5, 1e6, 1e7])
  p.add_argument("--bits", type=int, nargs="+", default=[32, 64, 128])
  p.add_argument("--queries", type=int, nargs="+", default=[1, 256, 4096])
  p.add_argument("--k", type=int, default=20)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--numpy_max", type=float, default=3e8,
                 help="NumPy floor only where Q * N <= this")
  p.add_argument("--memory_gb", type=float, default=4.0,
                 help="skip cells whose database exceeds this")
  p.add_argument("--devices", type=int, default=1,
                 help=">1: fake CPU devices; prints the sharded scaling table")
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results"))
  p.add_argument("--tag", default="cpu")
  args = p.parse_args()
  if args.quick:
    args.n, args.bits, args.queries = [1e6], [64], [256]
  return args


ARGS = parse_args()
if ARGS.devices > 1:  # before jax is imported
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_"
                             f"host_platform_device_count={ARGS.devices}")
import faiss  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rs_jax import ranking  # noqa: E402


def best_time(fn, repeats):
  """Minimum wall time over `repeats` calls after one warm-up call."""
  out = fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return min(times), out


def numpy_floor(q, db, k, chunk=64):
  """Distances by np.bitwise_count, top-k by argpartition (ties unordered)."""
  out = np.empty((q.shape[0], k), np.int64)
  for s in range(0, q.shape[0], chunk):
    d = np.bitwise_count(q[s:s + chunk, None, :] ^ db[None]).sum(-1)
    part = np.partition(d, k - 1, axis=1)[:, :k]
    out[s:s + chunk] = np.sort(part, axis=1)
  return out


def rs_search(q, db, k, mesh=None):
  return lambda: jax.block_until_ready(
      ranking.hamming_topk(q, db, k, mesh=mesh))


def grid(rng):
  rows = []
  threads = os.cpu_count()
  faiss.omp_set_num_threads(threads)
  for n in map(int, ARGS.n):
    for bits in ARGS.bits:
      w = bits // 32
      if n * w * 4 / 1e9 > ARGS.memory_gb:
        continue
      db_np = rng.integers(0, 2**32, (n, w), dtype=np.uint32)
      db = jnp.asarray(db_np)
      index = faiss.IndexBinaryFlat(bits)
      index.add(db_np.view(np.uint8))
      t_layout, prepared = best_time(
          lambda: jax.block_until_ready(ranking.prepare_codes(db, ARGS.k)), 1)
      for nq in ARGS.queries:
        q_np = rng.integers(0, 2**32, (nq, w), dtype=np.uint32)
        q = jnp.asarray(q_np)
        reps = 10 if nq * n <= 1e8 else ARGS.repeats if nq * n <= 3e9 else 1
        t_faiss, (d_faiss, _) = best_time(
            lambda: index.search(q_np.view(np.uint8), ARGS.k), reps)
        t_rs, (d_rs, _) = best_time(rs_search(q, db, ARGS.k), reps)
        t_prep, (d_prep, _) = best_time(rs_search(q, prepared, ARGS.k), reps)
        identical = bool(np.array_equal(np.asarray(d_rs), d_faiss) and
                         np.array_equal(np.asarray(d_prep), d_faiss))
        t_np = None
        if nq * n <= ARGS.numpy_max:
          t_np, d_np = best_time(lambda: numpy_floor(q_np, db_np, ARGS.k), 1)
          identical &= bool(np.array_equal(d_np, d_faiss))
        scanned = nq * n * bits / 8 / 1e9
        rows.append(dict(
            n=n, bits=bits, queries=nq, k=ARGS.k, rs_jax_s=t_rs,
            prepared_s=t_prep, prepare_codes_s=t_layout, faiss_s=t_faiss,
            numpy_s=t_np, ratio=t_rs / t_faiss,
            prepared_ratio=t_prep / t_faiss,
            rs_jax_gbps=scanned / t_rs, faiss_gbps=scanned / t_faiss,
            identical=identical))
        print(_row(rows[-1]), flush=True)
  return rows


def scaling(rng):
  """Sharded search over 1, 2, 4, ... devices; identical to 1 device."""
  n, bits, nq = int(ARGS.n[0]), ARGS.bits[0], ARGS.queries[0]
  w = bits // 32
  db = jnp.asarray(rng.integers(0, 2**32, (n, w), dtype=np.uint32))
  q = jnp.asarray(rng.integers(0, 2**32, (nq, w), dtype=np.uint32))
  t1, ref = best_time(rs_search(q, db, ARGS.k), ARGS.repeats)
  rows = [dict(devices=1, n=n, bits=bits, queries=nq, seconds=t1,
               speedup=1.0, identical=True)]
  d = 2
  while d <= jax.device_count():
    mesh = jax.make_mesh((d,), ("data",), devices=jax.devices()[:d])
    sharded = jax.device_put(db, jax.NamedSharding(mesh, jax.P("data")))
    t, got = best_time(rs_search(q, sharded, ARGS.k, mesh), ARGS.repeats)
    same = all(np.array_equal(a, b) for a, b in zip(got, ref))
    rows.append(dict(devices=d, n=n, bits=bits, queries=nq, seconds=t,
                     speedup=t1 / t, identical=same))
    print(rows[-1], flush=True)
    d *= 2
  return rows


def _fmt(x, spec):
  return "-" if x is None else format(x, spec)


def _row(r):
  return (f"| {r['n']:.0e} | {r['bits']} | {r['queries']} | "
          f"{r['rs_jax_s']:.4f} | {r['prepared_s']:.4f} | {r['faiss_s']:.4f} | "
          f"{_fmt(r['numpy_s'], '.3f')} | {r['ratio']:.2f} | "
          f"{r['prepared_ratio']:.2f} | "
          f"{r['rs_jax_gbps']:.1f} | {r['faiss_gbps']:.1f} | "
          f"{'yes' if r['identical'] else 'NO'} |")


def main():
  rng = np.random.default_rng(0)
  command = "python " + " ".join(sys.argv)
  info = dict(command=command, machine=platform.machine(),
              cpus=os.cpu_count(), device=str(jax.devices()[0].device_kind),
              jax=jax.__version__, faiss=faiss.__version__, k=ARGS.k)
  print(json.dumps(info))
  if ARGS.devices > 1:
    rows = scaling(rng)
    name = f"hamming_search_scaling_{ARGS.tag}"
    table = ["| devices | N | K | Q | seconds | speedup | identical |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['devices']} | {r['n']:.0e} | {r['bits']} | "
              f"{r['queries']} | {r['seconds']:.4f} | {r['speedup']:.2f} | "
              f"{'yes' if r['identical'] else 'NO'} |" for r in rows]
  else:
    table = ["| N | K | Q | rs_jax s | prepared s | faiss s | NumPy s | "
             "rs_jax/faiss | prepared/faiss | rs_jax GB/s | faiss GB/s | "
             "identical |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(table), flush=True)
    rows = grid(rng)
    table += [_row(r) for r in rows]
    name = f"hamming_search_{ARGS.tag}"
  text = "\n".join(table)
  print(text)
  os.makedirs(ARGS.out, exist_ok=True)
  with open(os.path.join(ARGS.out, name + ".json"), "w") as f:
    json.dump(dict(info, rows=rows), f, indent=2)
  with open(os.path.join(ARGS.out, name + ".md"), "w") as f:
    f.write(f"`{command}`\n\n{json.dumps(info)}\n\n{text}\n")
  if not all(r["identical"] for r in rows):
    sys.exit("distances differ from faiss / the single-device result")


if __name__ == "__main__":
  main()
