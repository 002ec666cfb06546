"""What a person sees while a task runs, and where the rest goes.

`quiet()` keeps the console for progress lines, headline metrics, our
warnings and every error (of a library's errors the first, on one line);
`log_to(path)` sends every INFO record (ours and the libraries': orbax,
TFDS, clu, absl) to a log file. A command-line tool
calls `quiet()` unless absl's --verbosity was given. `show(text)` prints a
line for the person and also records it in the log.
"""
import ast
import contextlib
import errno
import io
import logging
import os
import re
import sys
import time

_OURS = tuple(os.sep + p for p in (f"rs_jax{os.sep}", "launch.py",
                                    f"benchmarks{os.sep}"))
_FORMAT = "%(asctime)s %(levelname)s %(filename)s:%(lineno)d] %(message)s"


class _ConsoleFilter(logging.Filter):
  """Passes errors, and warnings raised by the project's own code. A
  library's error record is shown as its first line, and only the first
  of them (a failing library repeats itself: orbax logs every failed write
  of a save with its traceback); the full records go to the log."""

  def __init__(self):
    super().__init__()
    self._library_errors = 0

  def filter(self, record) -> bool:
    ours = any(p in record.pathname for p in _OURS)
    if record.levelno >= logging.ERROR and not ours:
      self._library_errors += 1
      if self._library_errors == 1:
        first = (record.getMessage().strip().splitlines() or [""])[0]
        print(f"{record.levelname} {record.filename}:{record.lineno}] "
              f"{first[:300]} (further library errors: in the log)",
              file=sys.stderr, flush=True)
      return False
    return record.levelno >= logging.WARNING and (
        ours or record.levelno >= logging.ERROR)


class _QuietStderr(io.TextIOBase):
  """sys.stderr without the 'RuntimeError: Event loop is closed' tracebacks
  that tensorstore's callbacks print by the thousand once orbax's event
  loop is gone (a save failing on a full disk); all else passes, in order."""

  _CLOSED = "RuntimeError: Event loop is closed"
  _GOES_ON = ("Traceback", "During handling", "The above exception", " ",
              "\t")

  def __init__(self, stream):
    super().__init__()
    self.stream, self._held = stream, ""

  def write(self, text) -> int:
    if not self._held and not text.startswith("Traceback (most recent"):
      return self.stream.write(text)
    self._held += text
    lines = self._held.split("\n")
    for n, line in enumerate(lines[1:-1], start=1):
      if line and not line.startswith(self._GOES_ON):  # its last line
        block, self._held = "\n".join(lines[:n + 1]) + "\n", ""
        if line.strip() != self._CLOSED:
          self.stream.write(block)
        rest = "\n".join(lines[n + 1:])
        if rest:
          self.write(rest)
        break
    return len(text)

  def flush(self) -> None:
    self.stream.flush()

  def fileno(self) -> int:
    return self.stream.fileno()

  def isatty(self) -> bool:
    return self.stream.isatty()

  @property
  def encoding(self):
    return self.stream.encoding

  def __getattr__(self, name):  # buffer, errors, ...: the stream's
    return getattr(self.stream, name)


def quiet() -> None:
  """Keeps INFO records and library warnings off the console.

  Also sets TensorFlow's C++ logging to warnings (TF_CPP_MIN_LOG_LEVEL and
  TF_ENABLE_ONEDNN_OPTS, unless set; read when TensorFlow is imported).
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  # TensorFlow only writes TensorBoard files and prepares datasets here; its
  # oneDNN kernels are unused, and their start-up notice goes to the console
  # before any log level applies.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  for handler in logging.getLogger().handlers:
    handler.addFilter(_ConsoleFilter())
  # A log file that cannot be written (full disk) is not worth a traceback
  # on the console for every record.
  logging.raiseExceptions = False
  if not isinstance(sys.stderr, _QuietStderr):
    sys.stderr = _QuietStderr(sys.stderr)


def log_to(log_path) -> None:
  """Appends every INFO (and higher) record to `log_path`, a local file."""
  root = logging.getLogger()
  root.setLevel(min(root.level or logging.INFO, logging.INFO))
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  handler = logging.FileHandler(log_path, encoding="utf-8")
  handler.setFormatter(logging.Formatter(_FORMAT))
  root.addHandler(handler)


@contextlib.contextmanager
def to_log(what: str):
  """Runs a block whose prints and progress bars (TFDS preparation) go to
  the log; shows 'WHAT ...' and 'WHAT: done in N s' on the console."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  show(f"{what} ...")
  start = time.perf_counter()
  captured = io.StringIO()
  tfds.disable_progress_bar()
  with contextlib.redirect_stdout(captured):
    yield
  if captured.getvalue().strip():
    logging.getLogger("rs_jax").info("%s", captured.getvalue().strip())
  show(f"{what}: done in {_duration(time.perf_counter() - start)}")


@contextlib.contextmanager
def errors_in_one_line(log_path, *, verbose: bool = False):
  """Turns an exception of the block into one line on stderr and exit 1.

  The traceback goes to the log (`log_path`); with `verbose` the exception
  propagates as it is. A full disk is named as such, whatever library
  met it.
  """
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if verbose:
      raise
    logging.getLogger("rs_jax").info("error", exc_info=True)
    message = short(str(e) or type(e).__name__)
    if _no_space(e):
      message = f"no space left on the device ({message})"
    print(f"error: {message}\n(traceback in {log_path})", file=sys.stderr,
          flush=True)
    logging.shutdown()
    os._exit(1)  # pylint: disable=protected-access; no atexit noise


def parse_flags(argv):
  """Parses the command line (absl's app.run flags_parser): a bad flag value
  or config (a missing config file, a field that does not exist) ends as
  one line 'error: FLAG: PROBLEM' on stderr and exit 2, without the
  traceback that ml_collections' config flags raise. absl's own flag
  errors keep their usual message."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
    if any(l.startswith("Traceback") for l in lines):
      # A config file whose get_config raised: the flag and the last error.
      lines = [f"{lines[0].split(': ', 1)[0]}: {lines[-1]}"]
    print(f"error: {' '.join(lines)}", file=sys.stderr, flush=True)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except
    problem = _root_problem(e)
    named = [a for a in argv[1:] if any(
        w and w in a for w in re.findall(r"'([^']+)'", problem))]
    where = f"{named[0]}: " if named else ""
    print(f"error: {where}{problem}", file=sys.stderr, flush=True)
    sys.exit(2)


def _root_problem(e: BaseException) -> str:
  """The message of the exception that `e` came from, on one line (an
  AttributeError, ml_collections' unknown field, keeps its own message:
  it suggests the field meant)."""
  if isinstance(e, AttributeError):
    text = str(e)
    with contextlib.suppress(ValueError, SyntaxError):
      text = str(ast.literal_eval(text))
    if "'" not in text and " " not in text.strip():
      text = f"no field {text!r} in the config"
    elif text.startswith("'") and text.endswith("'") and " " not in text:
      text = f"no field {text} in the config"
  else:
    while (e.__cause__ or e.__context__) is not None:
      e = e.__cause__ or e.__context__
    text = str(e) or type(e).__name__
  return " ".join(line.strip() for line in text.splitlines() if line.strip())


_PATH = re.compile(r"(?:/[\w.\-+]+){2,}/?")


def short(message: str, max_lines: int = 3, width: int = 240) -> str:
  """Returns `message` as it is when it has at most `max_lines` lines, else
  its first line (cut at `width`) with the first file path it names (a
  library's multi-line dump, e.g. a TensorStore spec) and a pointer to the
  log, where the whole message is."""
  lines = message.strip().splitlines()
  if len(lines) <= max_lines:
    return message
  first = lines[0] if len(lines[0]) <= width else lines[0][:width] + " ..."
  path = _PATH.search(message)
  where = f"{path.group(0)}: " if path and path.group(0) not in first else ""
  return f"{where}{first} ({len(lines)} lines; all in the log)"


def _no_space(e: BaseException) -> bool:
  """Whether e, or an exception it came from, is ENOSPC."""
  while e is not None:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def show(text: str) -> None:
  """Prints `text` for the person at the console and logs it."""
  print(text, flush=True, file=sys.stdout)
  logging.getLogger("rs_jax").info("%s", text)


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
  """Formats 'step 75/150 (50%) | loss 0.2435 | 3.1 steps/s | ETA 0:24'.

  The rate is over the steps since the previous line (the first window
  includes compilation).
  """

  def __init__(self, total_steps: int, start_step: int = 0):
    self.total = total_steps
    self._last = (start_step, time.perf_counter())

  def __call__(self, step: int, scalars: dict) -> None:
    """Shows one line for `step` with the scalars' loss."""
    now = time.perf_counter()
    last_step, last_time = self._last
    self._last = (step, now)
    rate = (step - last_step) / max(now - last_time, 1e-9)
    parts = [f"step {step}/{self.total} ({100 * step // self.total}%)"]
    if "loss" in scalars:
      parts.append(f"loss {scalars['loss']:.4f}")
    parts.append(f"{rate:.2f} steps/s")
    if rate > 0 and step < self.total:
      parts.append(f"ETA {_duration((self.total - step) / rate)}")
    show(" | ".join(parts))


def metrics_line(prefix: str, metrics: dict, keys, strip: str = "") -> str:
  """Returns 'PREFIX map@20 0.8123 | ...' for the keys that metrics has,
  each shown without the leading `strip`."""
  shown = [f"{k.removeprefix(strip)} {metrics[k]:.4f}" for k in keys
           if k in metrics]
  return f"{prefix} " + " | ".join(shown)
