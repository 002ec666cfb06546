"""Oracles that label the selected pairs as similar / dissimilar (ANNEAL
Sec. III): a simulated annotator from class labels and a file-based human
annotator (CSV out, filled CSV back).

An oracle has `answer(pairs, *, round) -> bool[h]` (True = similar) and, for
the CAL baseline, `classify(images, *, round) -> int[n]` class ids.
"""
import csv
import os

import numpy as np

from rs_jax import paths

RULES = ("any_shared", "identical")
CSV_COLUMNS = ("pair_id", "index1", "index2", "path1", "path2", "similar")


def similar(labels, pairs, *, rule: str = "any_shared") -> np.ndarray:
  """Similarity of pairs from labels -> bool[M].

  Class ids int[N]: same class. Multi-hot [N, C]: rule "any_shared" = at
  least one shared label, "identical" = the same label set.
  """
  if rule not in RULES:
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
  labels = np.asarray(labels)
  pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
  a, b = labels[pairs[:, 0]], labels[pairs[:, 1]]
  if labels.ndim == 1:
    return a == b
  if labels.ndim != 2:
    raise ValueError(f"labels must be int[N] or multi-hot [N, C], got shape "
                     f"{labels.shape}")
  a, b = a != 0, b != 0
  if rule == "identical":
    return np.all(a == b, axis=1)
  return np.any(a & b, axis=1)


class SimulatedOracle:
  """Answers from the training images' ground-truth labels."""

  def __init__(self, labels, *, rule: str = "any_shared"):
    similar(labels, np.zeros((0, 2)), rule=rule)  # validates
    self.labels = np.asarray(labels)
    self.rule = rule

  def answer(self, pairs, *, round: int = 0) -> np.ndarray:
    del round
    return similar(self.labels, pairs, rule=self.rule)

  def classify(self, images, *, round: int = 0) -> np.ndarray:
    del round
    if self.labels.ndim != 1:
      raise ValueError("class-label queries (CAL) need single-label class ids "
                       f"int[N], got labels of shape {self.labels.shape}")
    return self.labels[np.asarray(images, np.int64)]


class AnswersPending(Exception):
  """The query CSV is written and not filled in yet; rerun when it is."""

  def __init__(self, path: str):
    super().__init__(f"fill in the 'similar' column (1 = similar, 0 = "
                     f"dissimilar) of {path}, then run again")
    self.path = path


class FileOracle:
  """A human annotator working on CSV files in `directory`.

  `answer` writes query_round{round:03d}.csv with columns CSV_COLUMNS and an
  empty `similar` column, and raises AnswersPending while that column is
  empty in every row. Once it is filled in, the file is validated (header,
  the same pairs in the same order, every row 0 or 1) and the answers are
  returned; a malformed file raises ValueError naming the file and line
  (line 1 is the header, as a spreadsheet numbers rows).

  Args:
    directory: where the CSV files go.
    image_paths: path of every training image (index -> path), for the sheet.
  """

  def __init__(self, directory: str, image_paths):
    self.directory = directory
    self.image_paths = list(image_paths)

  def path(self, round: int) -> str:
    return os.path.join(self.directory, f"query_round{round:03d}.csv")

  def answer(self, pairs, *, round: int) -> np.ndarray:
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    path = self.path(round)
    if not os.path.exists(path):
      self._write(path, pairs)
      raise AnswersPending(path)
    return read_answers(path, pairs)

  def _write(self, path, pairs):
    if pairs.size and pairs.max() >= len(self.image_paths):
      raise ValueError(f"pair index {pairs.max()} has no image path "
                       f"({len(self.image_paths)} paths given)")
    with paths.atomic_write(path, "w") as f:
      w = csv.writer(f)
      w.writerow(CSV_COLUMNS)
      for n, (i, j) in enumerate(pairs):
        w.writerow([n, i, j, self.image_paths[i], self.image_paths[j], ""])


def read_answers(path: str, pairs) -> np.ndarray:
  """Reads a filled query CSV for `pairs` int[h, 2] -> bool[h] (see
  FileOracle); AnswersPending if no row is answered yet."""
  pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows or tuple(c.strip() for c in rows[0]) != CSV_COLUMNS:
    raise ValueError(f"{path}: header must be {','.join(CSV_COLUMNS)}, got "
                     f"{','.join(rows[0]) if rows else '(empty file)'}")
  rows = [r for r in rows[1:] if any(c.strip() for c in r)]
  if len(rows) != len(pairs):
    raise ValueError(f"{path}: {len(rows)} pair rows, expected {len(pairs)}")
  answers = np.zeros(len(pairs), bool)
  empty = []
  for n, (row, (i, j)) in enumerate(zip(rows, pairs)):
    where = f"{path}, line {n + 2}"  # as a spreadsheet numbers it
    if len(row) != len(CSV_COLUMNS):
      raise ValueError(f"{where}: {len(row)} columns, expected "
                       f"{len(CSV_COLUMNS)}")
    got = [c.strip() for c in row[:3]]
    if got != [str(n), str(i), str(j)]:
      raise ValueError(f"{where}: pair_id,index1,index2 = {','.join(got)}, "
                       f"expected {n},{i},{j} (rows must not be changed)")
    value = row[5].strip()
    if value == "":
      empty.append(n + 2)
    elif value in ("0", "1"):
      answers[n] = value == "1"
    else:
      raise ValueError(f"{where}: similar must be 0 or 1, got {value!r}")
  if len(empty) == len(pairs) and len(pairs):
    raise AnswersPending(path)
  if empty:
    more = " ..." if len(empty) > 10 else ""
    raise ValueError(f"{path}: lines {empty[:10]}{more} have no answer in "
                     f"'similar' ({len(empty)} of {len(pairs)}); expected 0 "
                     "or 1 in every row")
  return answers
