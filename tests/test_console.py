"""rs_jax.console's quiet console: a failing library's noise (orbax on a
full disk) stays in the log, everything else reaches stderr in order."""
import io
import logging

from rs_jax import console

CLOSED = ("Traceback (most recent call last):\n"
          '  File "base_events.py", line 806, in call_soon_threadsafe\n'
          "    self._check_closed()\n"
          "RuntimeError: Event loop is closed\n")
OTHER = ("Traceback (most recent call last):\n"
         '  File "a.py", line 1, in <module>\n'
         "KeyError: 'x'\n"
         "\nDuring handling of the above exception, another exception "
         "occurred:\n\n"
         "Traceback (most recent call last):\n"
         '  File "b.py", line 2, in <module>\n'
         "ValueError: y\n")


def test_quiet_stderr_drops_only_closed_loop_tracebacks():
  out = io.StringIO()
  stderr = console._QuietStderr(out)  # pylint: disable=protected-access
  for chunk in ["step 1\n", *CLOSED.splitlines(True), OTHER[:40],
                OTHER[40:], CLOSED * 3, "\rbar 50%", "error: done\n"]:
    stderr.write(chunk)
  assert out.getvalue() == "step 1\n" + OTHER + "\rbar 50%error: done\n"


def _record(pathname, level, msg):
  return logging.LogRecord("x", level, pathname, 7, msg, None, None)


def test_console_filter_shows_the_first_library_error_on_one_line(capsys):
  keep = console._ConsoleFilter()  # pylint: disable=protected-access
  lib = "/venv/site-packages/orbax/future.py"
  ours = "/repo/rs_jax/train.py"
  assert not keep.filter(_record(lib, logging.ERROR, "disk full\nTraceback"))
  assert not keep.filter(_record(lib, logging.ERROR, "disk full again"))
  assert not keep.filter(_record(lib, logging.WARNING, "a library warning"))
  assert keep.filter(_record(ours, logging.ERROR, "our error"))
  assert keep.filter(_record(ours, logging.WARNING, "our warning"))
  assert capsys.readouterr().err == (
      "ERROR future.py:7] disk full (further library errors: in the log)\n")


def test_a_long_library_message_becomes_one_line_naming_its_file():
  dump = ("Encountered error while reading array index. See details: {\n"
          "  'driver': 'zarr',\n  'kvstore': {\n"
          "    'path': '/w/run/checkpoints/latest/6/state/',\n  },\n})")
  assert console.short(dump) == (
      "/w/run/checkpoints/latest/6/state/: Encountered error while reading "
      "array index. See details: { (6 lines; all in the log)")
  assert console.short("a.csv: bad\nline two") == "a.csv: bad\nline two"
