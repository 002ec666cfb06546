"""The results tables of the benchmark scripts, rendered from JSON records
(the --from_json path): every metric at every k, hand notes kept."""
import itertools
import json

import pytest

from benchmarks import anneal_curves
from benchmarks import milan_table
from benchmarks import report
from benchmarks import s1s2_table
from benchmarks import train_throughput

METRICS = ("map", "map_r", "precision", "recall", "acg", "wap", "ndcg",
           "ndcg_r")


def s1s2_record(bits=(8, 16), ks=(5, 20)):
  """A small s1s2_table record whose values encode their names."""
  results = {}
  for b in bits:
    metrics = {"train/loss": 0.5, "train/steps_per_sec": 2.0,
               "train/final_step": 3}
    for i, (d, space, m, k) in enumerate(itertools.product(
        s1s2_table.DIRECTIONS, ("", "float/"), METRICS, ks)):
      metrics[f"test/{d}/{space}{m}@{k}"] = (i + b) / 1000
    results[str(b)] = {"seconds": 12.0, "metrics": metrics}
  return {"command": "python -m benchmarks.s1s2_table --bits 8,16",
          "dataset": "synthetic", "queries": "test", "archive": "validation",
          "loss": {"cross_modal_triplet": 1.0, "s1s2_push": 0.001},
          "note": "", "bits": list(bits), "results": results,
          "random_ranking_map": 0.25, "sheets": []}


def test_loss_tag_names_the_loss_not_the_regularisers():
  assert s1s2_table.loss_tag({"cross_modal_triplet": 1.0, "s1s2_push": 1e-3,
                              "s1s2_balance": 1.0}) == "triplet"
  assert s1s2_table.loss_tag({"mse_cosine_label": 1.0,
                              "s1s2_balance": 1.0}) == "mse"


def test_s1s2_table_shows_every_metric_at_every_k(tmp_path):
  record = s1s2_record()
  path = tmp_path / "s1s2_triplet_synthetic_cpu.json"
  path.write_text(json.dumps(record))
  (tmp_path / path.with_suffix(".md").name).write_text(
      f"old table\n{report.NOTES}\n\nA note by hand.\n")
  report.rerender(path, s1s2_table.render, "benchmarks.s1s2_table")
  md = path.with_suffix(".md").read_text()
  assert "old table" not in md and md.endswith("A note by hand.\n")
  sections = dict(s.split("\n", 1) for s in md.split("\n## ")[1:])
  for space in ("Hamming codes", "float outputs"):
    for k in (5, 20):
      title, = [t for t in sections if space in t and t.endswith(f"k = {k}")]
      assert all(f"| {m}@{k} |" in sections[title] for m in METRICS), title
  assert "0.250" in md and "train/steps_per_sec" in md
  # The average row is the mean of the four directions.
  metrics = record["results"]["8"]["metrics"]
  mean = sum(metrics[f"test/{d}/map@5"] for d in s1s2_table.DIRECTIONS) / 4
  block = md.split("| map@5 |")[1].split("\n")[:5]
  assert block[4].split("|")[3].strip() == f"{mean:.3f}"


@pytest.mark.parametrize("name", ["s1s2_mse_synthetic_cpu",
                                  "s1s2_triplet_synthetic_cpu",
                                  "s1s2_triplet_bigearthnet-mm-sample_cpu"])
def test_committed_s1s2_results_render_every_metric(name):
  record = report.read_json(report.RESULTS / f"{name}.json")
  md = s1s2_table.render(record)
  spaces, directions = s1s2_table.metric_index(
      record["results"][str(record["bits"][0])]["metrics"])
  assert set(spaces) == {"", "float/"} and len(directions) == 4
  for space, by_k in spaces.items():
    for k, metrics in by_k.items():
      assert len(metrics) == len(METRICS)
      assert all(f"| {m}@{k} |" in md for m in metrics)


def test_milan_table_from_json(tmp_path):
  records = [dict(method="nn_float", bits=0, seed=0, map=0.5, map_r=0.4),
             dict(method="milan", bits=16, seed=0, map=0.8, map_r=0.7),
             dict(method="milan", bits=16, seed=1, map=0.9, map_r=0.6),
             dict(method="milan_float", bits=16, seed=0, map=0.85,
                  map_r=0.75),
             dict(method="lambda_1", bits=16, seed=0, map=0.3, map_r=0.2)]
  record = dict(command="python -m benchmarks.milan_table --bits 16",
                environment={}, total_s=60.0, prepare_s=5.0, bits=[16],
                seeds=[0, 1], records=records,
                query_time_ms={"nn_float@0": 1.0, "milan@16": 0.5,
                               "milan_float@16": 0.4, "lambda_1@16": 0.6})
  path = tmp_path / "milan_ucm_cpu.json"
  path.write_text(json.dumps(record))
  report.rerender(path, milan_table.render, "benchmarks.milan_table")
  md = path.with_suffix(".md").read_text()
  assert "0.850 ± 0.071" in md and "0.650 ± 0.071" in md  # map, map_r
  rows = [l for l in md.splitlines() if l.startswith("| MiLaN")]
  assert [r.split(" | ")[0] for r in rows] == [
      "| MiLaN", "| MiLaN (Euclidean)", "| MiLaN, lambda1 = lambda2 = 1"] * 2


def _anneal_entry(offset, projection_offset=0.0):
  curves = [[{"round": r, "bits": 100.0 * (r + 1),
              "map@5": 0.5 + r / 10 + s / 100 + offset * (r > 0),
              "projection_map@5": 0.4 + projection_offset * (r > 0)}
             for r in range(3)] for s in range(2)]
  return {"trials": curves, "mean": anneal_curves.mean_curve(curves),
          "seconds": 9.0}


def test_anneal_table_from_json(tmp_path):
  results = {"command": "python -m benchmarks.anneal_curves", "seconds": 9.0,
             "retrieval_features": "backbone",
             "strategies": {"mgue": _anneal_entry(0.0)},
             "upper_bound": {"bits": 1e6, "map@5": 0.95}}
  path = tmp_path / "anneal_ucm_cpu.json"
  path.write_text(json.dumps(results))
  report.rerender(path, anneal_curves.render, "benchmarks.anneal_curves")
  md = path.with_suffix(".md").read_text()
  assert "| mgue | 50.50 ± 0.71 (100 b) | 60.50 ± 0.71 (200 b) |" in md
  assert "| all pairs (upper bound) | 95.00 (1000000 b) |" in md
  assert "2 trial(s)" in md
  assert "## mAP@5 (%), retrieval on the backbone features" in md
  assert "## mAP@5 (%), retrieval on the projection head output" in md
  assert "Per trial" not in md  # no cal / random to compare with


def test_anneal_ordering_is_checked_per_trial_and_round():
  """mgue > cal > random in every cell on the backbone features; on the
  projection cal ties random from round 1 on (mgue still beats cal)."""
  results = {"retrieval_features": "backbone", "strategies": {
      "mgue": _anneal_entry(0.2, 0.1), "cal": _anneal_entry(0.1),
      "random": _anneal_entry(0.0)}}
  md = anneal_curves.ordering(results)
  assert "| trial 0 (seed 0) | yes | yes |" in md
  assert "mgue > cal > random holds in 4 of 4; " in md
  md = anneal_curves.ordering(results, "projection_map@5")
  assert "| trial 1 (seed 1) | cal ≤ random | cal ≤ random |" in md
  assert ("mgue > cal > random holds in 0 of 4; mgue > cal holds in 4 of 4; "
          "mgue > random holds in 4 of 4; cal > random holds in 0 of 4 "
          "(trial, round) cells.") in md
  del results["strategies"]["random"]
  assert anneal_curves.ordering(results) is None


def test_train_throughput_table_from_json(tmp_path):
  record = dict(command="python -m benchmarks.train_throughput",
                device="cpu:0", device_kind="cpu", num_devices=1,
                processor="x86_64", cpus=2, jax="0.0",
                rows=[dict(backbone="resnet18", batch_size=16, steps=3,
                           seconds_per_step=2.0, examples_per_s=8.0,
                           first_step_s=9.0, params=12_300_000)])
  path = tmp_path / "train_throughput_cpu.json"
  path.write_text(json.dumps(record))
  report.rerender(path, train_throughput.render, "benchmarks.train_throughput")
  md = path.with_suffix(".md").read_text()
  assert "| resnet18 | 12.3M | 16 | 2.000 | 8.0 | 9.0 |" in md


def test_multilabel_ucm_table_from_json(tmp_path):
  from benchmarks import multilabel_ucm  # pylint: disable=g-import-not-at-top
  values = dict(map=0.5, map_r=0.4, wap=1.5, ndcg=0.7, ndcg_r=0.6, acg=1.2,
                precision=0.55)
  records = [dict(method="nn_float", bits=0, seed=0, **values),
             dict(method="kslsh", bits=16, seed=0, **values),
             dict(method="dhcnn", bits=16, seed=0, **values),
             dict(method="dhcnn", bits=16, seed=1, **{**values, "wap": 1.7})]
  record = dict(command="python -m benchmarks.multilabel_ucm --bits 16",
                environment={}, total_s=60.0, prepare_s=5.0, bits=[16],
                seeds=[0, 1], steps=100, records=records)
  path = tmp_path / "multilabel_ucm_cpu.json"
  path.write_text(json.dumps(record))
  report.rerender(path, multilabel_ucm.render, "benchmarks.multilabel_ucm")
  md = path.with_suffix(".md").read_text()
  assert md.count("## ") == len(multilabel_ucm.METRICS)
  assert "| Class head on the hash layer, sigmoid BCE (dhcnn_ucm) | " \
         "1.600 ± 0.141 |" in md
  assert "| NN frozen feat. (Euclidean) (1280-d float) | 0.550 |" in md
  assert "MiLaN" not in md.split("## ", 1)[1]  # rows only for what ran
