"""Plumbing shared by the benchmark scripts: the recorded command, the
console, result files (written atomically) and markdown tables.

A results file NAME.md is rendered from NAME.json; text a person adds after
the `NOTES` line is kept when the table is rendered again with --from_json.
"""
import io
import json
import os
import shlex
import sys

from absl import app
from absl import flags

from rs_jax import console
from rs_jax import paths

# TensorFlow (dataset preparation, TensorBoard files) reads these when the
# rs_jax modules that a benchmark imports after this one import it; the
# defaults are `console.quiet()`'s.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = paths.resolve(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
RESULTS = ROOT / "benchmarks" / "results"
NOTES = "<!-- notes by hand below this line; --from_json keeps them -->"


def command(module: str, argv=None, env: str = "") -> str:
  """Returns the shell command that reruns `module` with this run's flags."""
  argv = sys.argv if argv is None else argv
  prefix = f"{env} " if env else ""
  return f"{prefix}python -m {module} {shlex.join(argv[1:])}".rstrip()


def start_console(log_path) -> None:
  """Keeps library INFO off the console (unless --verbosity) and appends
  every INFO record to `log_path`."""
  if not flags.FLAGS["verbosity"].present:
    console.quiet()
  console.log_to(os.fspath(log_path))


def read_json(path) -> dict:
  """Returns the JSON object in `path`."""
  return json.loads(paths.resolve(path).read_text())


def write_json(path, obj) -> None:
  """Writes `obj` to `path` as indented JSON, atomically."""
  paths.write_text(path, json.dumps(obj, indent=1) + "\n")


def hand_notes(path) -> str:
  """Returns the text after the `NOTES` line of an existing file, or ''."""
  path = paths.resolve(path)
  if not path.exists():
    return ""
  text = path.read_text()
  return text.split(NOTES, 1)[1].strip("\n") if NOTES in text else ""


def write_markdown(path, text: str, *, keep_notes: bool) -> None:
  """Writes `text` to `path` atomically; with keep_notes, appends the hand
  notes the file had."""
  notes = hand_notes(path) if keep_notes else ""
  body = text.rstrip("\n") + "\n"
  if notes:
    body += f"\n{NOTES}\n\n{notes}\n"
  paths.write_text(path, body)


def rerender(json_path, render, module: str) -> None:
  """Writes render(record, rendered_by=...) of the results JSON to the .md
  beside it, keeping hand notes, and prints it; module: the benchmark's
  module name, for the recorded command."""
  md = render(read_json(json_path), rendered_by=command(module))
  write_markdown(paths.resolve(json_path).with_suffix(".md"), md,
                 keep_notes=True)
  print(md)


def write_results(stem, record, render, *, keep_notes: bool) -> None:
  """Writes `record` to STEM.json and render(record) to STEM.md (see
  write_markdown), and prints the markdown."""
  stem = os.fspath(stem)
  write_json(stem + ".json", record)
  md = render(record)
  write_markdown(stem + ".md", md, keep_notes=keep_notes)
  print(md)


def rendered_from_json(argv, render, module: str) -> bool:
  """Refuses stray command-line arguments; with --from_json renders that
  JSON's .md again (`rerender`) and returns True: nothing is measured."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS.from_json:
    return False
  rerender(flags.FLAGS.from_json, render, module)
  return True


def save_figure(fig, path, dpi: int) -> None:
  """Writes a matplotlib figure to `path` as PNG, atomically."""
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=dpi, format="png")
  paths.write_bytes(path, buffer.getvalue())


def markdown_table(header, rows) -> str:
  """Returns a markdown table of `header` (cells) and `rows` (lists)."""
  lines = ["| " + " | ".join(map(str, header)) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  return "\n".join(lines)


def relative(path) -> str:
  """Returns `path` relative to the repository root when it is inside."""
  path = paths.resolve(path)
  try:
    return path.relative_to(ROOT).as_posix()
  except ValueError:
    return os.fspath(path)
