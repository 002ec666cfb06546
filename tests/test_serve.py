"""rs_jax.serving: the API in-process (Starlette's test client) against
direct `Index` searches and encodings, coalesced batches against single
searches, and the page in headless Chromium against a real server."""
import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import PIL.Image
import pytest
from starlette.testclient import TestClient

from rs_jax import data, index_build, trained, viz
from rs_jax.serving import app as app_lib
from rs_jax.serving import searcher as searcher_lib
from rs_jax.serving import service as service_lib

from tests import test_index_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 5
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny two-modality run (2 steps) and its saved S1 and S2 indexes."""
  workdir, data_dir = test_index_build.train_two_modality_run(tmp_path_factory)
  indexes = index_build.build_indexes(workdir, batch_size=64)
  paths = {}
  for m, index in indexes.items():
    paths[m] = workdir.parent / f"index_{m}.rsidx"
    index.save(paths[m])
  return dict(workdir=workdir, indexes=indexes, paths=paths,
              source=data.load("synthetic", "all", data_dir),
              restored=trained.load_trained(workdir))


@pytest.fixture(scope="module")
def client(run):
  service = service_lib.Service(
      [run["indexes"]["s2"], run["indexes"]["s1"]], run["restored"],
      k_max=20, buckets=(1, 4, 16), max_wait=0.001)
  with TestClient(app_lib.create_app(service, max_upload=1 << 20),
                  raise_server_exceptions=False) as c:
    yield c


def npy(array):
  buf = io.BytesIO()
  np.save(buf, array)
  return buf.getvalue()


def results(body):
  return [[(r["id"], r["distance"]) for r in q] for q in body["results"]]


def expected(dist, ids):
  return [list(zip(i, d)) for i, d in zip(ids.tolist(), dist.tolist())]


def test_health_info_and_page(client, run):
  assert client.get("/api/health").json() == {"status": "ok"}
  info = client.get("/api/info").json()
  s2 = run["indexes"]["s2"]
  assert info["modalities"] == ["s2", "s1"]
  assert info["query_modalities"] == ["s1", "s2"]
  assert info["k_max"] == 20
  assert info["indexes"]["s2"]["num_codes"] == len(s2) == 160
  assert info["indexes"]["s2"]["num_bits"] == 16
  assert info["indexes"]["s1"]["model_pair"] == s2.metadata["model_pair"]
  page = client.get("/?id=x&k=8")
  assert page.status_code == 200 and "<script>" in page.text
  assert "/api/search" in page.text


def test_search_by_id_same_and_cross_modal(client, run):
  s1, s2 = run["indexes"]["s1"], run["indexes"]["s2"]
  ids = s2.ids[[3, 77]].tolist()
  body = client.get("/api/search", params={"id": ",".join(ids), "k": K}).json()
  assert results(body) == expected(*s2.search_ids(ids, K))
  assert [q["id"] for q in body["queries"]] == ids
  first = body["results"][0][0]
  row = s2.rows([first["id"]])[0]
  assert first["labels"] == np.flatnonzero(s2.labels[row]).tolist()
  assert first["row"] == row and "/api/thumbnail?" in first["thumbnail"]
  assert body["time_ms"]["search"] >= 0 and body["k"] == K
  # S1 ids against the S2 archive: the S1 codes, nothing excluded.
  body = client.get("/api/search", params={
      "id": ids[0], "k": K, "modality": "s2", "query_modality": "s1"}).json()
  rows = s1.rows(ids[:1])
  assert results(body) == expected(*s2.search(s1.codes[rows], K))
  assert body["modality"] == "s2" and body["query_modality"] == "s1"


def test_search_by_uploaded_image(client, run):
  s2, restored = run["indexes"]["s2"], run["restored"]
  for r, modality in [(8, "s2"), (100, "s1")]:  # S1 image -> S2 archive
    image = run["source"][r][modality]
    body = client.post(
        "/api/search/image", content=npy(image),
        params={"filename": "q.npy", "k": K, "modality": "s2",
                "query_modality": modality}).json()
    codes = restored.encode(modality, image[None])
    assert results(body) == expected(*s2.search(codes, K))
    assert body["queries"][0]["name"] == "q.npy"
    assert body["queries"][0]["thumbnail"].startswith("data:image/png")
    assert body["time_ms"]["encode"] >= 0


def test_thumbnails(client, run):
  s1 = run["indexes"]["s1"]
  got = client.get("/api/thumbnail", params={"modality": "s1",
                                             "id": s1.ids[5]})
  assert got.status_code == 200 and got.headers["content-type"] == (
      "image/png")
  want = np.round(viz.to_rgb(run["source"][5]["s1"], "s1") * 255)
  np.testing.assert_array_equal(
      np.asarray(PIL.Image.open(io.BytesIO(got.content))), want)


def test_errors_are_json_4xx_with_the_cli_messages(client, run):
  s2 = run["indexes"]["s2"]
  nan = run["source"][0]["s1"].copy()
  nan[1, 2, 0] = np.nan
  gets = [
      ({"id": "nope"}, 404, "'nope' is not in the index"),
      ({"id": s2.ids[0], "k": 0}, 400, "k must be an int from 1 to 20"),
      ({"id": s2.ids[0], "k": 21}, 400, "k must be an int from 1 to 20"),
      ({"id": s2.ids[0], "k": "x"}, 400, "k: expected an integer"),
      ({"id": s2.ids[0], "modality": "rgb"}, 400,
       r"modality 'rgb': this server has indexes of ['s2', 's1']"),
      ({}, 400, "id: give one or more"),
  ]
  for params, status, message in gets:
    got = client.get("/api/search", params=params)
    assert got.status_code == status, (params, got.text)
    assert message in got.json()["error"], (params, got.text)
  s2_image = run["source"][0]["s2"]
  posts = [
      ({"filename": "q.npy", "query_modality": "s1"}, npy(s2_image), 400,
       "q.npy: has 12 bands, the s1 encoder expects 2"),
      ({"filename": "q.npy", "query_modality": "s1"}, npy(nan), 400,
       "q.npy: has NaN/inf values"),
      ({"filename": "q.npy"}, npy(s2_image[:8]), 400,
       "q.npy: is 8x16 pixels, the s2 encoder expects 16x16"),
      ({"filename": "q.npy", "query_modality": "rgb"}, npy(s2_image), 400,
       "modality 'rgb': the run"),
      ({"filename": "q.png"}, b"junk", 400, "q.png: not a readable image"),
      ({}, npy(s2_image), 400, "filename: name the uploaded file"),
      ({"filename": "q.npy"}, b"", 400, "q.npy: the upload is empty"),
      ({"filename": "big.npy"}, b"\0" * ((1 << 20) + 1), 413,
       "upload over the limit of 1048576 bytes"),
  ]
  for params, body, status, message in posts:
    got = client.post("/api/search/image", params=params, content=body)
    assert got.status_code == status, (params, got.text)
    assert message in got.json()["error"], (params, got.text)
  got = client.get("/api/thumbnail", params={"modality": "s2", "id": "nope"})
  assert got.status_code == 404 and "nope" in got.json()["error"]
  got = client.get("/api/nothing")
  assert got.status_code == 404 and got.json()["error"] == "Not Found"
  got = client.get("/api/search/image")
  assert got.status_code == 405 and "error" in got.json()


def test_coalesced_searches_equal_single_ones(run):
  index = run["indexes"]["s2"]
  searcher = searcher_lib.Searcher(index, k_max=12, buckets=(1, 4, 16),
                                   max_wait=0.05)
  rng = np.random.default_rng(0)
  requests = []
  for i in range(20):
    rows = rng.integers(0, len(index), 1 + i % 3)
    k = int(rng.integers(1, 13))
    exclude = rows if i % 2 else None
    requests.append((index.codes[rows], k, exclude))

  async def all_at_once():
    searcher.start()
    try:
      return await asyncio.gather(*(searcher.search(*r) for r in requests))
    finally:
      await searcher.stop()

  got = asyncio.run(all_at_once())
  sizes = [len(r[0]) for r in requests]
  assert searcher.queries == sum(sizes)
  batches, size = 1, 0  # in arrival order, at most 16 queries a batch
  for n in sizes:
    batches, size = (batches + 1, n) if size + n > 16 else (batches, size + n)
  assert searcher.batches == batches < len(requests)
  for (codes, k, exclude), (dist, rows) in zip(requests, got):
    want = index.topk(codes, k, exclude=exclude)
    np.testing.assert_array_equal(dist, want[0])
    np.testing.assert_array_equal(rows, want[1])


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
  """`python -m rs_jax.serve` on a free localhost port -> its base URL."""
  port = free_port()
  cache = tmp_path_factory.mktemp("cache")
  proc = subprocess.Popen(
      [sys.executable, "-m", "rs_jax.serve", "--index", str(run["paths"]["s2"]),
       "--index", str(run["paths"]["s1"]), "--port", str(port),
       "--k_max", "20", "--buckets", "1,4"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      env={**os.environ, "RS_JAX_COMPILATION_CACHE": str(cache)})
  url = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 600
  while True:
    try:
      with urllib.request.urlopen(url + "/api/health", timeout=5) as r:
        assert json.load(r) == {"status": "ok"}
      break
    except OSError:
      if proc.poll() is not None or time.monotonic() > deadline:
        proc.kill()
        pytest.fail("server did not start:\n" + proc.stdout.read().decode())
      time.sleep(0.5)
  yield url
  proc.terminate()
  proc.wait(timeout=60)


@pytest.fixture
def browser(tmp_path):
  if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("Chromium is not installed (apt-get install chromium "
                "chromium-driver; .ci/run does)")
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless", "--no-sandbox", "--disable-gpu",
               "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--window-size=1200,900",
               f"--user-data-dir={tmp_path / 'profile'}"):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  yield driver
  driver.quit()


def tile_ids(driver):
  """Ids of the result tiles the page shows now."""
  return driver.execute_script(
      "return [...document.querySelectorAll('#results .tile')]"
      ".map(t => t.dataset.id)")


def shown(driver, want):
  """Waits (up to 2 min) for the page to show tiles of ids `want`; -> the
  ids it shows."""
  from selenium.common.exceptions import TimeoutException  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  try:
    WebDriverWait(driver, 120).until(lambda d: tile_ids(d) == want)
  except TimeoutException:
    pass
  return tile_ids(driver)


def test_page_in_headless_chromium(server, browser, run, tmp_path):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  s2 = run["indexes"]["s2"]
  query = s2.ids[42]
  browser.get(f"{server}/?id={query}&k={K}")  # the URL carries the query
  want = s2.search_ids([query], K)[1][0].tolist()
  assert len(want) == K and shown(browser, want) == want
  assert "search" in browser.find_element(By.ID, "status").text
  # Click the third result: the page searches from it, the URL follows.
  clicked = want[2]
  browser.find_elements(By.CSS_SELECTOR, "#results .tile")[2].click()
  want = s2.search_ids([clicked], K)[1][0].tolist()
  assert shown(browser, want) == want
  assert f"id={clicked}" in browser.current_url
  # Upload a .npy patch through the file input.
  image = run["source"][9]["s2"]
  np.save(tmp_path / "patch.npy", image)
  browser.find_element(By.ID, "file").send_keys(str(tmp_path / "patch.npy"))
  codes = run["restored"].encode("s2", image[None])
  want = s2.search(codes, K)[1][0].tolist()
  assert shown(browser, want) == want
  shot = os.environ.get("RS_JAX_SCREENSHOT", str(tmp_path / "page.png"))
  browser.save_screenshot(shot)
  assert open(shot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_launch_task_config():
  import importlib.util  # pylint: disable=g-import-not-at-top
  from rs_jax.serving import task  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "serve_config", os.path.join(ROOT, "configs", "serve.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert config.task == "serving.task"
  assert tuple(config.buckets) == searcher_lib.BUCKETS
  with pytest.raises(ValueError, match="config.index: give one or more"):
    task.run(config, "unused")


def test_indexes_of_one_model_pair_only():
  from rs_jax.index import Index  # pylint: disable=g-import-not-at-top
  codes = np.arange(20, dtype=np.uint32)[:, None]
  ids = [f"p{i}" for i in range(20)]
  s2 = Index.from_codes(codes, 32, ids, metadata={"modality": "s2"})
  s1 = Index.from_codes(codes, 32, ids, metadata={"modality": "s1"})
  service = service_lib.Service([s2, s1], k_max=5)
  with pytest.raises(ValueError, match="a 's1' query against a 's2' index "
                     "needs the same 'model_pair'"):
    asyncio.run(service.search_ids(["p3"], 3, "s2", "s1"))
  other = Index.from_codes(codes, 32, ids, metadata={
      "modality": "s1", "model_pair": "run_b"})
  with pytest.raises(ValueError, match="different model pairs"):
    service_lib.Service([s2, other])
  with pytest.raises(ValueError, match="two indexes of modality 's2'"):
    service_lib.Service([s2, s2])
