"""Search server under load: `python -m rs_jax.serve` against faiss
IndexBinaryFlat behind a minimal server of the same framework (Starlette +
uvicorn), same machine, same run; and a one-shot CLI query against a faiss
script, as whole processes.

Id queries: N random 64-bit codes with int ids (1M, 10M). Each server is
started on a free localhost port; C concurrent clients (1, 8, 64; HTTP
keep-alive, a minimal asyncio client) send `--requests` id queries in all (at most
`--seconds` per cell), k = 20, each query's own row left out. Image
queries: a .npy patch encoded by the demo run's encoder (`--run`, 32-bit
codes), searched among N random codes of that run's length; the faiss
server encodes with the same encoder. The reference server runs faiss with
one OpenMP thread (its best here, `hamming_search.py`; OMP_NUM_THREADS=1,
which also holds in the worker threads, unlike omp_set_num_threads) in
Starlette's thread pool, so concurrent requests use both cores. Results of both servers
are compared (distances) on a sample of queries. Prints and writes a
markdown + JSON table with the command to benchmarks/results/.

  python -m benchmarks.serve_load --run workdirs/demo
  python -m benchmarks.serve_load --faiss_server INDEX.npz --port P   (the
      reference server; started by the benchmark)
  python -m benchmarks.serve_load --faiss_once INDEX.npz --query_id 7
      (the one-shot faiss script; started by the benchmark)
"""
import asyncio
import functools
import gc
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from absl import app
from absl import flags
import numpy as np

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_list("n", ["1e6", "1e7"], "Archive sizes of the id queries.")
  flags.DEFINE_list("image_n", ["1e6"], "Archive sizes of the image queries.")
  flags.DEFINE_list("clients", ["1", "8", "64"], "Concurrent clients.")
  flags.DEFINE_integer("requests", 320, "Requests per cell (all clients).")
  flags.DEFINE_float("seconds", 60.0, "Time bound per cell.")
  flags.DEFINE_integer("k", 20, "Neighbours per query.")
  flags.DEFINE_string("run", "workdirs/demo", "Training workdir whose s2 "
                      "encoder answers the image queries ('' = none).")
  flags.DEFINE_integer("cli_runs", 3, "One-shot processes per engine.")
  flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(
      __file__)), "results"), "Results directory.")
  flags.DEFINE_string("tag", "cpu", "Results file suffix.")
  flags.DEFINE_string("faiss_server", None, "Serve this codes .npz with faiss.")
  flags.DEFINE_string("faiss_once", None, "Search this codes .npz once.")
  flags.DEFINE_integer("port", 0, "Port of --faiss_server.")
  flags.DEFINE_string("server_flags", "", "More flags of the rs_jax server, "
                      "e.g. '--buckets=1,8,64 --max_wait_ms=4'.")
  flags.DEFINE_integer("query_id", 0, "Id of the --faiss_once query.")


FLAGS = flags.FLAGS


def faiss_index(path):
  """(IndexBinaryFlat, codes uint32[N, W], meta) of a codes .npz."""
  import faiss  # pylint: disable=g-import-not-at-top
  faiss.omp_set_num_threads(1)
  with np.load(path) as f:
    codes, meta = f["codes"], json.loads(str(f["meta"]))
  index = faiss.IndexBinaryFlat(meta["num_bits"])
  index.add(np.ascontiguousarray(codes).view(np.uint8))
  return index, codes, meta


def faiss_topk(index, q, k, exclude=None):
  """faiss top-k of uint32[1, W]; with exclude, k + 1 and that row dropped."""
  d, i = index.search(q.view(np.uint8), k + (exclude is not None))
  d, i = d[0].tolist(), i[0].tolist()
  if exclude is not None:
    keep = [j for j, r in enumerate(i) if r != exclude][:k]
    d, i = [d[j] for j in keep], [i[j] for j in keep]
  return [{"id": r, "distance": x} for r, x in zip(i, d)]


def run_faiss_once():
  """The one-shot script: load, search one id, print JSON."""
  index, codes, _ = faiss_index(FLAGS.faiss_once)
  row = FLAGS.query_id
  print(json.dumps([{"query": row, "results": faiss_topk(
      index, codes[row:row + 1], FLAGS.k, exclude=row)}]))


def run_faiss_server():
  """The reference: one faiss search per request, in Starlette's threads."""
  import uvicorn  # pylint: disable=g-import-not-at-top
  from starlette.applications import Starlette  # pylint: disable=g-import-not-at-top
  from starlette.responses import JSONResponse  # pylint: disable=g-import-not-at-top
  from starlette.routing import Route  # pylint: disable=g-import-not-at-top
  index, codes, meta = faiss_index(FLAGS.faiss_server)
  encoder = None
  if meta.get("run"):
    from rs_jax import trained  # pylint: disable=g-import-not-at-top
    from rs_jax.data import query_images  # pylint: disable=g-import-not-at-top
    encoder = trained.load_trained(meta["run"])
    shape = encoder.input_shapes["s2"]
    encoder.encode("s2", np.zeros((1, *shape), np.float32))

  def search(request):
    row = int(request.query_params["id"])
    k = int(request.query_params.get("k", 10))
    return JSONResponse({"results": [faiss_topk(
        index, codes[row:row + 1], k, exclude=row)]})

  async def search_image(request):
    body = await request.body()
    k = int(request.query_params.get("k", 10))

    def work():
      image = query_images.decode_image(request.query_params["filename"],
                                        body, "s2", shape)
      return faiss_topk(index, encoder.encode("s2", image[None]), k)

    loop = asyncio.get_running_loop()
    return JSONResponse({"results": [await loop.run_in_executor(None, work)]})

  def health(request):
    del request
    return JSONResponse({"status": "ok"})

  gc.collect()  # as the rs_jax server: start-up objects out of the
  gc.freeze()   # collector's sight, so a full collection stalls nothing
  uvicorn.run(Starlette(routes=[
      Route("/api/health", health), Route("/api/search", search),
      Route("/api/search/image", search_image, methods=["POST"])]),
              host="127.0.0.1", port=FLAGS.port, log_level="warning",
              access_log=False)


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(command, port, env=None):
  """Starts a server process (its output to a temporary log file) and waits
  for /api/health -> (process, url)."""
  log = tempfile.TemporaryFile()
  proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                          env=env)
  url = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 900
  while True:
    try:
      with urllib.request.urlopen(url + "/api/health", timeout=5):
        return proc, url
    except OSError:
      if proc.poll() is not None or time.monotonic() > deadline:
        proc.kill()
        log.seek(0)
        sys.exit(f"{command} did not start: {log.read().decode()[-2000:]}")
      time.sleep(0.5)


def stop(proc):
  proc.terminate()
  try:
    proc.wait(timeout=30)
  except subprocess.TimeoutExpired:
    proc.kill()


class Connection:
  """One HTTP/1.1 keep-alive connection to 127.0.0.1 (asyncio streams):
  a client much lighter than a general one, so that the clients' own CPU
  time (same machine) weighs little on what is measured."""

  def __init__(self, port):
    self.port, self.reader, self.writer = port, None, None

  async def request(self, method, target, body=b""):
    """-> (status, body bytes)."""
    if self.writer is None:
      self.reader, self.writer = await asyncio.open_connection(
          "127.0.0.1", self.port)
    self.writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    head = await self.reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return status, await self.reader.readexactly(length)

  def close(self):
    if self.writer is not None:
      self.writer.close()


async def load(url, clients, make_request, total, seconds, counts=None):
  """`clients` concurrent connections sending `total` requests (at most
  `seconds`); make_request(i) -> (method, target, body) -> dict of QPS,
  latencies and errors; counts: optional `searcher_counts` of the server,
  read after the warm-up and at the end (mean batch, search share)."""
  port = int(url.rsplit(":", 1)[1])
  latencies, errors, sent = [], [], [0]
  connections = [Connection(port) for _ in range(clients)]
  deadline = time.perf_counter() + seconds

  async def one_client(c):
    while sent[0] < total and time.perf_counter() < deadline:
      i = sent[0]
      sent[0] += 1
      start_t = time.perf_counter()
      try:
        status, body = await connections[c].request(*make_request(i + c))
        if status != 200:
          errors.append(f"{status}: {body[:200]!r}")
      except Exception as e:  # pylint: disable=broad-except
        errors.append(repr(e))
      latencies.append(time.perf_counter() - start_t)

  for c in connections:  # connect and warm up
    await c.request(*make_request(0))
  before = counts() if counts else None
  start_t = time.perf_counter()
  await asyncio.gather(*(one_client(c) for c in range(clients)))
  wall = time.perf_counter() - start_t
  for c in connections:
    c.close()
  lat = np.array(latencies) * 1e3
  out = dict(requests=len(lat), errors=len(errors), error_sample=errors[:3],
             qps=len(lat) / wall, p50_ms=float(np.percentile(lat, 50)),
             p99_ms=float(np.percentile(lat, 99)))
  if before is not None:
    batches, queries, search_s = (a - b for a, b in zip(counts(), before))
    out.update(mean_batch=queries / max(batches, 1),
               search_share=search_s / wall)
  return out


def write_archive(directory, n, bits, rng, run=None):
  """N random codes as an rs_jax index file and a faiss .npz -> paths."""
  from rs_jax import hashing  # pylint: disable=g-import-not-at-top
  from rs_jax.index import Index  # pylint: disable=g-import-not-at-top
  w = hashing.num_words(bits)
  codes = rng.integers(0, 2**32, (n, w), dtype=np.uint32)
  if bits % 32:
    codes[:, -1] &= np.uint32((1 << bits % 32) - 1)
  meta = {"modality": "s2"}
  if run is not None:
    meta.update(model_pair=run.model_pair,
                checkpoint={"workdir": run.workdir})
  stem = os.path.join(directory, f"archive_{n}_{bits}")
  Index.from_codes(codes, bits, np.arange(n), metadata=meta).save(
      stem + ".rsidx")
  np.savez(stem + ".npz", codes=codes, meta=json.dumps(
      {"num_bits": bits, "run": run.workdir if run else None}))
  return stem + ".rsidx", stem + ".npz"


def compare(rs_url, faiss_url, ids, k):
  """Whether both servers give the same distances for these id queries."""
  same = True
  for i in ids:
    got = []
    for url in (rs_url, faiss_url):
      with urllib.request.urlopen(f"{url}/api/search?id={i}&k={k}") as r:
        got.append([x["distance"] for x in json.load(r)["results"][0]])
    same &= got[0] == got[1]
  return same


def searcher_counts(url):
  """(batches, queries, search seconds) so far of an rs_jax server's s2
  index (/api/info); None for the faiss server (no /api/info)."""
  try:
    with urllib.request.urlopen(f"{url}/api/info") as r:
      s2 = json.load(r)["indexes"]["s2"]
  except urllib.error.HTTPError:
    return None
  return s2["batches"], s2["queries"], s2["search_seconds"]


def run_cell(url, clients, make_request):
  """`load` of one cell; for rs_jax also the mean batch its searcher ran
  and the share of the timed wall time spent searching."""
  return asyncio.run(load(url, clients, make_request, FLAGS.requests,
                          FLAGS.seconds, counts=functools.partial(
                              searcher_counts, url)))


def servers(rsidx, npz, extra=()):
  rs_port, faiss_port = free_port(), free_port()
  rs = start([sys.executable, "-m", "rs_jax.serve", "--index", rsidx,
              "--port", str(rs_port), "--k_max", str(FLAGS.k), *extra,
              *shlex.split(FLAGS.server_flags)],
             rs_port)
  fs = start([sys.executable, os.path.abspath(__file__), "--faiss_server",
              npz, "--port", str(faiss_port)], faiss_port,
             env={**os.environ, "OMP_NUM_THREADS": "1"})
  return rs, fs


def _id_request(queries, i):
  return "GET", f"/api/search?id={queries[i % len(queries)]}&k={FLAGS.k}"


def _image_request(patches, i):
  return ("POST", f"/api/search/image?filename=q.npy&k={FLAGS.k}",
          patches[i % len(patches)])


def id_cells(directory, rng):
  rows = []
  for n in (int(float(x)) for x in FLAGS.n):
    rsidx, npz = write_archive(directory, n, 64, rng)
    (rs, rs_url), (fs, fs_url) = servers(rsidx, npz)
    try:
      same = compare(rs_url, fs_url, rng.integers(0, n, 5).tolist(), FLAGS.k)
      queries = rng.integers(0, n, FLAGS.requests + 64)
      for c in (int(x) for x in FLAGS.clients):
        for engine, url in (("rs_jax", rs_url), ("faiss", fs_url)):
          r = run_cell(url, c, functools.partial(_id_request, queries))
          rows.append(dict(query="id", n=n, bits=64, clients=c,
                           engine=engine, same_distances=same, **r))
          print(_row(rows[-1]), flush=True)
    finally:
      stop(rs)
      stop(fs)
  return rows


def image_cells(directory, rng):
  from rs_jax import data  # pylint: disable=g-import-not-at-top
  from rs_jax import trained  # pylint: disable=g-import-not-at-top
  run = trained.load_trained(FLAGS.run)
  source = data.load(run.config.data.name, "all", os.path.join(
      run.workdir, run.config.data.data_dir))
  patches = []
  for i in range(16):
    buf = tempfile.SpooledTemporaryFile()
    np.save(buf, np.asarray(source[i]["s2"]))
    buf.seek(0)
    patches.append(buf.read())
  rows = []
  for n in (int(float(x)) for x in FLAGS.image_n):
    rsidx, npz = write_archive(directory, n, run.bits, rng, run)
    (rs, rs_url), (fs, fs_url) = servers(rsidx, npz)
    try:
      for c in (int(x) for x in FLAGS.clients):
        for engine, url in (("rs_jax", rs_url), ("faiss", fs_url)):
          r = run_cell(url, c, functools.partial(_image_request, patches))
          rows.append(dict(query="image", n=n, bits=run.bits, clients=c,
                           engine=engine, same_distances=None, **r))
          print(_row(rows[-1]), flush=True)
    finally:
      stop(rs)
      stop(fs)
  return rows


def one_shot(directory, rng):
  """Wall seconds of whole processes: the rs_jax CLI (compilation cache in
  a fresh directory: run 1 compiles, later runs read it) and the faiss
  script, both searching one id of 1M 64-bit codes."""
  rsidx, npz = write_archive(directory, 10**6, 64, rng)
  env = {**os.environ, "RS_JAX_COMPILATION_CACHE": os.path.join(
      directory, "cache")}
  commands = {
      "rs_jax": [sys.executable, "-m", "rs_jax.index_cli", "search",
                 "--index", rsidx, "--ids", "7", "--k", str(FLAGS.k)],
      "faiss": [sys.executable, os.path.abspath(__file__), "--faiss_once",
                npz, "--query_id", "7", "--k", str(FLAGS.k)]}
  times, outputs = {}, {}
  for engine, command in commands.items():
    times[engine] = []
    for _ in range(FLAGS.cli_runs):
      start_t = time.perf_counter()
      out = subprocess.run(command, capture_output=True, text=True, env=env,
                           check=True)
      times[engine].append(time.perf_counter() - start_t)
      outputs[engine] = [x["distance"] for x in json.loads(out.stdout)[0][
          "results"]]
  return dict(rs_jax_first_s=times["rs_jax"][0],
              rs_jax_warm_s=float(np.median(times["rs_jax"][1:])),
              faiss_s=float(np.median(times["faiss"])),
              same_distances=outputs["rs_jax"] == outputs["faiss"],
              runs=times)


HEAD = ["| query | N | K | clients | engine | requests | errors | QPS | "
        "p50 ms | p99 ms | mean batch | search share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def _row(r):
  batch = (f"{r['mean_batch']:.1f} | {100 * r['search_share']:.0f}%"
           if "mean_batch" in r else "- | -")
  return (f"| {r['query']} | {r['n']:.0e} | {r['bits']} | {r['clients']} | "
          f"{r['engine']} | {r['requests']} | {r['errors']} | "
          f"{r['qps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
          f"{batch} |")


def main(argv):
  del argv
  if FLAGS.faiss_once:
    return run_faiss_once()
  if FLAGS.faiss_server:
    return run_faiss_server()
  # pylint: disable=g-import-not-at-top
  import faiss
  import jax
  from benchmarks import report  # not at the top: the faiss processes run
  # this file as a plain script, importing only what faiss needs
  rng = np.random.default_rng(0)
  command = report.command("benchmarks.serve_load")
  info = dict(command=command, machine=platform.machine(),
              cpus=os.cpu_count(), jax=jax.__version__,
              faiss=faiss.__version__, k=FLAGS.k,
              requests_per_cell=FLAGS.requests,
              load_avg_1min=os.getloadavg()[0])
  print(json.dumps(info), "\n" + "\n".join(HEAD), flush=True)
  with tempfile.TemporaryDirectory() as directory:
    rows = id_cells(directory, rng)
    if FLAGS.run and FLAGS.image_n:
      rows += image_cells(directory, rng)
    cli = one_shot(directory, rng)
  ratios = []
  for r in rows:
    if r["engine"] == "rs_jax":
      ref = next(x for x in rows if x["engine"] == "faiss" and all(
          x[f] == r[f] for f in ("query", "n", "clients")))
      ratios.append(f"| {r['query']} | {r['n']:.0e} | {r['clients']} | "
                    f"{r['qps'] / ref['qps']:.2f} |")
  text = "\n".join([
      *HEAD, *map(_row, rows), "",
      "rs_jax QPS / faiss server QPS:", "",
      "| query | N | clients | ratio |", "|---|---|---|---|", *ratios, "",
      "One-shot CLI query, whole processes (1M x 64 bit, one id, k = "
      f"{FLAGS.k}): rs_jax first run {cli['rs_jax_first_s']:.2f} s "
      f"(compiles), later runs {cli['rs_jax_warm_s']:.2f} s (compilation "
      f"cache); faiss script {cli['faiss_s']:.2f} s; same distances: "
      f"{cli['same_distances']}."])
  print(text)
  stem = os.path.join(FLAGS.out, f"serve_load_{FLAGS.tag}")
  report.write_json(stem + ".json", dict(info, rows=rows, one_shot=cli))
  report.write_markdown(stem + ".md", f"`{command}`\n\n{json.dumps(info)}"
                        f"\n\n{text}\n", keep_notes=True)
  bad = [r for r in rows if r["errors"] or r["same_distances"] is False]
  if bad or not cli["same_distances"]:
    sys.exit(f"errors or differing results: {bad[:2]}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
