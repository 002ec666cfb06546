"""The UC Merced multi-label annotation: the TSV reader on the real file, the
builder option `multilabels` on tiny generated class folders, bad rows."""
import numpy as np
from PIL import Image
import pytest

import rs_jax.data
from rs_jax.data import rgb_folders

from tests import shared_data


@pytest.fixture(name="tsv")
def fixture_tsv():
  """The real multilabels.tsv, read in place."""
  return shared_data.real("ucmerced") + "/multilabels.tsv"


def _plain_read(path):
  """{name: int[17]} by splitting the file by hand."""
  lines = open(path).read().splitlines()
  return {c[0]: np.array(c[1:], int) for c in
          (line.split("\t") for line in lines[1:])}


def test_reader_on_the_real_file(tsv):
  table = rgb_folders.read_multilabels(tsv)
  expected = _plain_read(tsv)
  assert len(table) == 2100 == len(expected)
  for name, row in expected.items():
    np.testing.assert_array_equal(table[name], row)
  counts = np.stack(list(table.values())).sum(1)
  assert counts.min() == 1 and counts.max() == 7  # data README: 1-7 labels
  assert open(tsv).readline().rstrip("\n").split("\t")[1:] == list(
      rgb_folders.UCMERCED_MULTILABELS)


def _write_archive(root, per_class=2):
  """Tiny images under the real UC Merced names (class00, class01, ...)."""
  rng = np.random.default_rng(0)
  for c in rgb_folders.UCMERCED_CLASSES:
    (root / "Images" / c).mkdir(parents=True)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(
          root / "Images" / c / f"{c}{i:02d}.png")


def test_builder_carries_multi_hot_and_class_label(tmp_path, tsv):
  raw = tmp_path / "raw"
  _write_archive(raw)
  data_dir = tmp_path / "data"
  rs_jax.data.prepare("ucmerced", raw, data_dir, multilabels=tsv,
                      splits=dict(train=0.5, test=0.5))
  expected = _plain_read(tsv)
  src = rs_jax.data.load("ucmerced", "all", data_dir)
  assert len(src) == 42
  for i in range(len(src)):
    ex = src[i]
    cls, name = ex["filename"].decode().split("/")
    assert rgb_folders.UCMERCED_CLASSES[ex["label"]] == cls
    assert ex["labels"].dtype == np.uint8
    np.testing.assert_array_equal(ex["labels"], expected[name[:-4]])
  # The label store (what samplers and the trainer read) has both.
  cols = rs_jax.data.load("ucmerced", "train", data_dir).columns(
      ["label", "labels"])
  assert cols["labels"].shape == (21, 17) and cols["label"].shape == (21,)


def test_relative_path_is_inside_manual_dir(tmp_path, tsv):
  raw = tmp_path / "raw"
  _write_archive(raw, per_class=1)
  (raw / "ml.tsv").write_text(open(tsv).read())
  rs_jax.data.prepare("ucmerced", raw, tmp_path / "data", multilabels="ml.tsv")
  src = rs_jax.data.load("ucmerced", "train", tmp_path / "data")
  np.testing.assert_array_equal(src[0]["labels"],
                                _plain_read(tsv)["agricultural00"])


def _bad_tsv(path, edit, tsv):
  lines = open(tsv).read().splitlines()
  edit(lines)
  path.write_text("\n".join(lines) + "\n")
  return path


def _set(row, value):
  def edit(lines):
    lines[row] = value
  return edit


@pytest.mark.parametrize("edit, message", [
    (_set(3, "agricultural02\t0\t1"), r"bad\.tsv: row 4: 3 columns, "
                                      r"expected 18"),
    (_set(2, "agricultural01" + "\t0" * 8 + "\t2" + "\t0" * 8),
     r"bad\.tsv: row 3 \(agricultural01\): label 'grass' is '2', expected "
     r"0 or 1"),
    (_set(0, "IMAGE\\LABEL\tairplane"), r"bad\.tsv: row 1: header must be"),
    (lambda lines: lines.pop(1),
     r"agricultural00\.png: no row 'agricultural00' in the multilabels TSV "
     r".*bad\.tsv"),
    (lambda lines: lines.append(lines[1]),
     r"bad\.tsv: row 2102: image 'agricultural00' again"),
])
def test_bad_rows_name_file_and_row(tmp_path, tsv, edit, message):
  raw = tmp_path / "raw"
  _write_archive(raw, per_class=1)
  bad = _bad_tsv(tmp_path / "bad.tsv", edit, tsv)
  with pytest.raises(ValueError, match=message):
    rs_jax.data.prepare("ucmerced", raw, tmp_path / "data",
                        multilabels=str(bad))


def test_missing_file_and_aid_refuse(tmp_path, tsv):
  raw = tmp_path / "raw"
  _write_archive(raw, per_class=1)
  with pytest.raises(FileNotFoundError, match=r"nope\.tsv: the multilabels"):
    rs_jax.data.prepare("ucmerced", raw, tmp_path / "data",
                        multilabels="nope.tsv")
  with pytest.raises(ValueError,
                     match=r"unknown option\(s\) \['multilabels'\]"):
    rs_jax.data.prepare("aid", raw, tmp_path / "aid", multilabels=tsv)


def test_unset_option_matches_older_preparations(tmp_path):
  raw = tmp_path / "raw"
  _write_archive(raw, per_class=1)
  rs_jax.data.prepare("ucmerced", raw, tmp_path / "data", seed=1)
  for unset in (None, ""):  # reused, not "prepared with other options"
    b = rs_jax.data.prepare("ucmerced", raw, tmp_path / "data", seed=1,
                            multilabels=unset)
    assert "multilabels" not in b.options
  assert "labels" not in rs_jax.data.load("ucmerced", "train",
                                          tmp_path / "data")[0]
