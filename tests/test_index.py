"""rs_jax.index: file round trip, append, corruption, cross-modal rule,
search by id, exclusion, sharded search, and the rs_jax.index_cli command
line, against NumPy references."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from rs_jax import compile_cache, hashing, ranking, ranking_numpy
from rs_jax.index import FORMAT_VERSION, Index, IndexFileError

N, BITS, K = 300, 40, 10  # 40 bits: two words, the last one padded
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_bits(rng, n):
  bits = rng.integers(0, 2, (n, BITS)).astype(np.uint8)
  bits[rng.integers(0, n, n // 4)] = bits[0]  # exact duplicates: ties
  return bits


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  bits = random_bits(rng, N)
  return dict(
      bits=bits, codes=np.array(hashing.pack_bits(bits)),
      ids=[f"S2_patch_{i:04d}" for i in range(N)],
      labels=rng.integers(0, 2, (N, 5)).astype(np.uint8),
      queries=np.asarray(hashing.pack_bits(random_bits(rng, 7))))


@pytest.fixture(scope="module")
def index(data):
  return Index.from_codes(
      data["codes"], BITS, data["ids"], labels=data["labels"],
      metadata={"modality": "s2", "model_pair": "run-1", "config": {"K": 40}})


def np_topk(query_codes, codes, k, exclude=None):
  """Reference: all distances, stable sort by (distance, row)."""
  d = np.bitwise_count(query_codes[:, None] ^ codes[None]).sum(-1)
  if exclude is not None:
    d[np.arange(len(d)), exclude] = 10**6
  order = np.argsort(d, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(d, order, 1), order


def test_save_load_search_round_trip(data, index, tmp_path):
  path = tmp_path / "archive.rsidx"
  index.save(path)
  assert os.listdir(tmp_path) == ["archive.rsidx"]  # no temp file left
  loaded = Index.load(path)
  assert len(loaded) == N and loaded.num_bits == BITS
  np.testing.assert_array_equal(loaded.codes, data["codes"])
  assert loaded.ids.tolist() == data["ids"]
  np.testing.assert_array_equal(loaded.labels, data["labels"])
  assert loaded.metadata == index.metadata
  want_d, want_i = ranking.hamming_topk(data["queries"], data["codes"], K)
  ref_d, ref_i = np_topk(data["queries"], data["codes"], K)
  np.testing.assert_array_equal(want_d, ref_d)
  np.testing.assert_array_equal(want_i, ref_i)
  for _ in range(2):  # the second search reuses the prepared layout
    d, ids = loaded.search(data["queries"], K)
    assert d.dtype == np.int32 and d.shape == ids.shape == (7, K)
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(ids, np.array(data["ids"])[ref_i])
  # k = N is more than the prepared blocks: the layout is rebuilt.
  d, ids = loaded.search(data["queries"], N)
  ref_d, ref_i = np_topk(data["queries"], data["codes"], N)
  np.testing.assert_array_equal(d, ref_d)
  np.testing.assert_array_equal(ids, np.array(data["ids"])[ref_i])


def test_int_ids_and_class_labels_round_trip(data, tmp_path):
  ids = list(range(1000, 1000 + N))
  labels = np.arange(N) % 21
  index = Index.from_codes(data["codes"], BITS, ids, labels=labels)
  index.save(tmp_path / "x")
  loaded = Index.load(tmp_path / "x")
  assert loaded.ids.dtype == np.int64 and loaded.ids.tolist() == ids
  assert loaded.labels.dtype == np.int32
  np.testing.assert_array_equal(loaded.labels, labels)
  assert loaded.metadata == {}
  d, got = loaded.search_ids(ids[:7], K, exclude_self=False)
  ref_d, ref_i = np_topk(data["codes"][:7], data["codes"], K)
  np.testing.assert_array_equal(d, ref_d)
  np.testing.assert_array_equal(got, np.array(ids)[ref_i])
  np.testing.assert_array_equal(loaded.rows([1299, 1000]), [299, 0])
  with pytest.raises(KeyError, match="'1000': the index has int ids"):
    loaded.rows(["1000"])
  with pytest.raises(KeyError, match="id 999 is not in the index"):
    loaded.rows([1000, 999])


def test_index_is_read_only(data, index):
  with pytest.raises(ValueError):
    index.codes[0, 0] = 1
  assert data["codes"].flags.writeable  # the caller's array is untouched


def test_add_equals_index_of_concatenation(data, index):
  part = Index.from_codes(data["codes"][:200], BITS, data["ids"][:200],
                          labels=data["labels"][:200],
                          metadata=index.metadata)
  part.search(data["queries"], K)  # a layout cached before add
  grown = part.add(data["codes"][200:], data["ids"][200:],
                   labels=data["labels"][200:])
  assert len(part) == 200 and len(grown) == N
  assert grown.metadata == index.metadata
  np.testing.assert_array_equal(grown.labels, data["labels"])
  for a, b in zip(grown.search(data["queries"], K),
                  index.search(data["queries"], K)):
    np.testing.assert_array_equal(a, b)

  more = data["codes"][:2]
  with pytest.raises(ValueError, match="'S2_patch_0001' is already"):
    part.add(more, ["new", "S2_patch_0001"], labels=data["labels"][:2])
  with pytest.raises(ValueError, match="duplicate ids"):
    part.add(more, ["new", "new"], labels=data["labels"][:2])
  with pytest.raises(TypeError, match="has str ids, got int ids"):
    part.add(more, [1, 2], labels=data["labels"][:2])
  with pytest.raises(ValueError, match="labels: must be given"):
    part.add(more, ["a", "b"])
  with pytest.raises(ValueError, match="shape"):
    part.add(more, ["a", "b"], labels=np.ones((2, 3), np.uint8))
  with pytest.raises(ValueError, match="uint32"):
    part.add(np.zeros((2, 1), np.uint32), ["a", "b"],
             labels=data["labels"][:2])


def _rewrite(path, fn):
  data = bytearray(path.read_bytes())
  path.write_bytes(bytes(fn(data)))


def _flip(offset):
  def fn(data):
    data[offset] ^= 0x01
    return data
  return fn


@pytest.mark.parametrize("damage,message", [
    (_flip(-40), "checksum mismatch"),  # a payload byte (labels)
    (_flip(100), "checksum mismatch"),  # a header byte
    (_flip(-1), "checksum mismatch"),  # the checksum itself
    (lambda d: d[:-1000], "truncated"),
    (lambda d: d[:20], "truncated"),
    (lambda d: d + b"\0", "trailing data"),
    (lambda d: d[:8] + (FORMAT_VERSION + 1).to_bytes(4, "little") + d[12:],
     f"format version {FORMAT_VERSION + 1}"),
    (lambda d: b"PK" + d[2:], "not an rs_jax index"),
])
def test_damaged_file_is_refused(index, tmp_path, damage, message):
  path = tmp_path / "damaged.rsidx"
  index.save(path)
  _rewrite(path, damage)
  with pytest.raises(IndexFileError, match=message) as e:
    Index.load(path)
  assert str(path) in str(e.value)


def test_failed_save_keeps_previous_file(data, index, tmp_path, monkeypatch):
  path = tmp_path / "archive.rsidx"
  small = Index.from_codes(data["codes"][:3], BITS, ["a", "b", "c"])
  small.save(path)
  before = path.read_bytes()

  def crash(*args):
    raise OSError("disk full")

  monkeypatch.setattr(os, "fsync", crash)
  with pytest.raises(OSError, match="disk full"):
    index.save(path)
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["archive.rsidx"]


def test_search_ids_with_and_without_self(data, index):
  # A duplicate of row 0 at a higher row: its own row is not the first of
  # its distance-0 ties, yet is the one left out.
  dup = np.flatnonzero((data["bits"] == data["bits"][0]).all(1))[1]
  rows = np.array([0, 17, dup, 5, 100, 200, 299])
  query_ids = [data["ids"][r] for r in rows]
  codes = data["codes"]
  d, ids = index.search_ids(query_ids, K, exclude_self=False)
  ref_d, ref_i = np_topk(codes[rows], codes, K)
  np.testing.assert_array_equal(d, ref_d)
  np.testing.assert_array_equal(ids, np.array(data["ids"])[ref_i])
  d, ids = index.search_ids(query_ids, K - 1)  # searches K with self
  ref_d, ref_i = np_topk(codes[rows], codes, K - 1, exclude=rows)
  np.testing.assert_array_equal(d, ref_d)
  np.testing.assert_array_equal(ids, np.array(data["ids"])[ref_i])
  assert not (ids == np.array(query_ids)[:, None]).any()
  with pytest.raises(KeyError, match="'nope' is not in the index"):
    index.search_ids(["nope"], K)
  with pytest.raises(ValueError, match=f"k = {N} exceeds the {N - 1}"):
    index.search_ids(query_ids, N)


def test_topk_excludes_given_rows(data, index):
  codes, queries = data["codes"], data["queries"]
  d, rows = index.topk(queries, K)
  np.testing.assert_array_equal((d, rows), np_topk(queries, codes, K))
  # Leave out each query's 3rd result (present) or row 1 (mostly absent).
  for exclude in (rows[:, 2], np.ones(len(queries), int)):
    got = index.topk(queries, K, exclude=exclude)
    np.testing.assert_array_equal(got, np_topk(queries, codes, K, exclude))
  with pytest.raises(ValueError, match=r"exclude: need one row per query "
                     r"\(7\), got shape \(2,\)"):
    index.topk(queries, K, exclude=[0, 1])


def test_check_compatible(index):
  s1 = {"modality": "s1", "model_pair": "run-1"}
  index.check_compatible(BITS, s1)  # S1 query, same pair: accepted
  index.check_compatible(BITS, {"modality": "s2", "model_pair": "run-1"})
  with pytest.raises(ValueError, match="32 bits, the index holds 40"):
    index.check_compatible(32, s1)
  with pytest.raises(ValueError, match="'run-1', the query encoded by 'run-2'"):
    index.check_compatible(BITS, {"modality": "s1", "model_pair": "run-2"})
  with pytest.raises(ValueError, match="model pair mismatch"):
    index.check_compatible(BITS, {"modality": "s1"})
  alone = Index.from_codes(index.codes, BITS, index.ids,
                           metadata={"modality": "s2"})
  alone.check_compatible(BITS, {"modality": "s2"})
  with pytest.raises(ValueError, match="'s1' query against a 's2' index"):
    alone.check_compatible(BITS, {"modality": "s1"})


def test_bad_input_is_refused(data, index):
  codes, ids = data["codes"], data["ids"]
  cases = [
      (lambda: Index.from_codes(codes[:0], BITS, []), ValueError,
       "at least one code"),
      (lambda: Index.from_codes(codes.astype(np.int32), BITS, ids),
       TypeError, "must be uint32, got int32"),
      (lambda: Index.from_codes(codes, 33, ids), ValueError,
       "bits set beyond bit 33"),
      (lambda: Index.from_codes(codes, 96, ids), ValueError,
       r"uint32\[N, 3\], got shape \(300, 2\)"),
      (lambda: Index.from_codes(codes, 0, ids), ValueError, "num_bits"),
      (lambda: Index.from_codes(codes, BITS, ids[:-1]), ValueError,
       r"need 300 ids \(one per code\), got shape \(299,\)"),
      (lambda: Index.from_codes(codes, BITS, ids[:-1] + [ids[0]]),
       ValueError, "duplicate ids"),
      (lambda: Index.from_codes(codes, BITS, ids[:-1] + [7]), TypeError,
       "all str or all int"),
      (lambda: Index.from_codes(codes, BITS, ids[:-1] + ["a\nb"]),
       ValueError, "without newlines"),
      (lambda: Index.from_codes(codes, BITS, ids, labels=np.full((N, 2), 2)),
       ValueError, "0 or 1"),
      (lambda: Index.from_codes(codes, BITS, ids, labels=np.ones(N - 1, int)),
       ValueError, "labels: must be"),
      (lambda: Index.from_codes(codes, BITS, ids, metadata={"f": object()}),
       TypeError, "JSON-serialisable"),
      (lambda: index.search(data["queries"], N + 1), ValueError,
       f"k = {N + 1} exceeds"),
      (lambda: index.search(data["queries"], 0), ValueError, "positive int"),
      (lambda: index.search(data["queries"][:, :1], K), ValueError,
       "query_codes"),
      (lambda: index.search(data["queries"] | np.uint32(1 << 31), K),
       ValueError, "bits set beyond bit 40"),
  ]
  for fn, error, message in cases:
    with pytest.raises(error, match=message):
      fn()
  d, ids = index.search(np.zeros((0, 2), np.uint32), K)  # no queries
  assert d.shape == ids.shape == (0, K)


@pytest.mark.parametrize("shards", [8, 4])  # N = 300 uneven, even
def test_sharded_search_equals_single_device(data, index, shards):
  assert jax.device_count() == 8, "tests expect 8 fake CPU devices"
  mesh = jax.make_mesh((shards,), ("data",), devices=jax.devices()[:shards])
  want = index.search(data["queries"], K)
  for _ in range(2):  # the second search reuses the placed codes
    got = index.search(data["queries"], K, mesh=mesh)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
  got = index.search_ids(data["ids"][:7], K - 1, mesh=mesh)
  want = index.search_ids(data["ids"][:7], K - 1)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])


def _expected_json(index, queries, dist, ids):
  rows = index.rows(ids.ravel().tolist()).reshape(ids.shape)
  return [{"query": q, "results": [
      {"id": i, "distance": int(d), "labels": np.flatnonzero(
          index.labels[r]).tolist()} for d, i, r in zip(*row)]}
          for q, row in zip(queries, zip(dist, ids.tolist(), rows))]


def cli(tmp_path, *args, python=()):
  """`python [PYTHON] -m rs_jax.index_cli ARGS` with a compilation cache in
  tmp_path -> the finished process."""
  return subprocess.run(
      [sys.executable, *python, "-m", "rs_jax.index_cli", *map(str, args)],
      cwd=ROOT,
      capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, "RS_JAX_COMPILATION_CACHE": str(tmp_path / "cache")})


def test_cli_search_by_id_end_to_end(data, index, tmp_path):
  """A few queries are searched in NumPy: the process never imports JAX
  (`-X importtime` lists every module imported) and compiles nothing."""
  path, out = tmp_path / "archive.rsidx", tmp_path / "out.json"
  index.save(path)
  queries = data["ids"][:7]
  proc = cli(tmp_path, "search", "--index", path, "--ids", ",".join(queries),
             "--k", K - 1, "--json", out, python=("-X", "importtime"))
  assert proc.returncode == 0, proc.stderr
  want = _expected_json(index, queries, *index.search_ids(queries, K - 1))
  assert json.loads(out.read_text()) == want
  assert json.loads(proc.stdout) == want
  imported = re.findall(r"^import time:.*\| +(\S+)$", proc.stderr, re.M)
  assert "rs_jax.ranking_numpy" in imported
  assert not [m for m in imported if m.split(".")[0] in ("jax", "jaxlib")]
  assert not os.path.exists(tmp_path / "cache")


def test_one_shot_search_above_the_numpy_bound_is_compiled_once(
    data, index, tmp_path, monkeypatch):
  """Past ranking_numpy.MAX_PAIRS a one-shot search runs the program kept by
  compile_cache.exported: traced in the first process, read back after."""
  monkeypatch.setattr(ranking_numpy, "MAX_PAIRS", 0)
  names = ("jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  before = {name: getattr(jax.config, name) for name in names}
  compile_cache.enable(str(tmp_path / "cache"))
  try:
    want = index.topk(data["queries"], K)
    for _ in range(2):
      got = index.topk(data["queries"], K, one_shot=True)
      np.testing.assert_array_equal(got[0], want[0])
      np.testing.assert_array_equal(got[1], want[1])
  finally:
    for name, value in before.items():
      jax.config.update(name, value)
  assert len(os.listdir(tmp_path / "cache" / "exported")) == 1


def test_cli_search_by_codes_and_errors(data, index, tmp_path):
  path, codes = tmp_path / "archive.rsidx", tmp_path / "q.npy"
  index.save(path)
  np.save(codes, data["queries"])
  meta = tmp_path / "meta.json"
  meta.write_text(json.dumps({"num_bits": BITS, "modality": "s1",
                              "model_pair": "run-1"}))
  proc = cli(tmp_path, "search", "--index", path, "--codes", codes,
             "--query_metadata", meta, "--k", K)
  assert proc.returncode == 0, proc.stderr
  want = _expected_json(index, [f"{codes}[{i}]" for i in range(7)],
                        *index.search(data["queries"], K))
  assert json.loads(proc.stdout) == want

  meta.write_text(json.dumps({"num_bits": BITS, "model_pair": "run-2"}))
  corrupt = tmp_path / "corrupt.rsidx"
  index.save(corrupt)
  _rewrite(corrupt, _flip(-40))
  cases = [
      (["--codes", codes, "--query_metadata", meta], "model pair mismatch"),
      (["--ids", "missing"], "'missing' is not in the index"),
      (["--ids", ","], "--ids: no ids given"),
      (["--ids", data["ids"][0], "--codes", codes], "exactly one of"),
      (["--ids", data["ids"][0], "--k", N], f"k = {N} exceeds the {N - 1}"),
  ]
  for args, message in cases:
    proc = cli(tmp_path, "search", "--index", path, *args)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
  proc = cli(tmp_path, "search", "--index", corrupt, "--ids", data["ids"][0])
  assert proc.returncode == 1 and "checksum mismatch" in proc.stderr
