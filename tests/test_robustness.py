"""benchmarks/robustness.py: a few cases through the script's own case
runner (real commands on generated data), and its verdicts from output."""
from benchmarks import robustness


def test_cases_run_and_are_judged_by_their_output(tmp_path):
  names = ["ben_labels_a_string", "ben_first_patch_bad_skip",
           "prepare_config_field_typo"]
  results = robustness.run_cases(names, str(tmp_path), timeout=120,
                                 progress=lambda line: None)
  got = {r.name: r for r in results}
  assert [got[n].verdict for n in names] == ["CLEAR", "OK", "CLEAR"], results
  assert "is the string 'Forest'" in got["ben_labels_a_string"].seen
  assert got["ben_labels_a_string"].seen.startswith("exit 1: error: $TMP/")
  assert got["prepare_config_field_typo"].seen == (
      "exit 2: error: --config.data.optoins.splits=anneal: 'optoins'")
  assert got["ben_first_patch_bad_skip"].command.startswith(
      "python -m rs_jax.data.prepare_cli --config configs/prepare.py:bigearthnet/s2"
      " --config.data.manual_dir=$TMP/")


def seen(rc, stderr="", stdout=""):
  return robustness.Seen(["python"], rc, stdout, stderr, 1.0)


def test_verdicts_follow_what_was_printed():
  refused = robustness.refused
  assert refused(seen(1, "error: a.csv: bad\n(traceback in log)"),
                 "a.csv") == ("CLEAR", "")
  assert refused(seen(0, ""), "a.csv")[0] == "SILENT"
  assert refused(seen(None), "a.csv")[0] == "UNCLEAR"
  assert refused(seen(1, "Traceback (most recent call last):\nValueError: "
                         "a.csv"), "a.csv")[0] == "UNCLEAR"
  assert refused(seen(1, "error: bad value"), "a.csv") == (
      "UNCLEAR", "the message does not name ['a.csv']")
  assert refused(seen(1, "w\nw\nw\nerror: a.csv"), "a.csv")[0] == "UNCLEAR"
  assert robustness.kept(seen(0), []) == ("OK", "")
  assert robustness.kept(seen(0), ["2 labels lost"]) == ("LOSS",
                                                         "2 labels lost")
  assert robustness.kept(seen(1), [])[0] == "LOSS"
