"""One path layer for every file the project reads or writes.

Paths are `etils.epath.Path`: local paths and URLs (`gs://`, `s3://`, ...)
as orbax and TFDS take them, never flattened through `os.path`. Writers go
through `atomic_write`, so a reader sees the old file or the new one, never
a part: locally a temporary file beside the target is fsynced, renamed over
it and the directory fsynced; on object stores, which publish an object
only when its upload completes, the content is spooled to a local temporary
file and uploaded when the block ends.
`create_new` makes a file only if it does not exist (locks), and
`copy_file` streams a file between any two filesystems.
"""
import contextlib
import io
import os
import shutil
import tempfile
from typing import IO, Iterator

from etils import epath

Path = epath.Path


def is_local(path) -> bool:
  """Returns whether `path` is on the local filesystem (not a URL)."""
  return "://" not in os.fspath(path)


def resolve(path, base=None) -> epath.Path:
  """Returns `path` as an absolute Path; relative paths are taken inside
  `base` (default: the working directory); URLs are kept as they are."""
  path = os.fspath(path)
  if not is_local(path):
    return epath.Path(path)
  if not os.path.isabs(path) and base is not None:
    return resolve(base) / path
  return epath.Path(os.path.abspath(path))


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb") -> Iterator[IO]:
  """Opens a file object whose content replaces `path` when the block ends.

  mode: "wb" or "w" (text, UTF-8). If the block raises, `path` is left as it
  was. New local files get the usual mode (0666 less the umask).
  """
  if mode not in ("wb", "w"):
    raise ValueError(f"atomic_write mode {mode!r}: use 'wb' or 'w'")
  path = resolve(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(path):
    with _upload_when_done(path, mode) as f:
      yield f
    return
  directory = os.fspath(path.parent)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it 0600
    with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})
                   ) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  dir_fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


@contextlib.contextmanager
def _upload_when_done(path, mode) -> Iterator[IO]:
  """Spools the block's writes to a local temporary file and uploads it
  only if the block ends without raising (closing an object store's file
  would publish a part)."""
  with tempfile.TemporaryFile() as spool:
    f = io.TextIOWrapper(spool, encoding="utf-8") if mode == "w" else spool
    yield f
    f.flush()
    if mode == "w":
      f.detach()
    spool.seek(0)
    with path.open("wb") as out:
      shutil.copyfileobj(spool, out, 16 << 20)


def write_text(path, text: str) -> None:
  """Replaces `path` with `text` atomically (`atomic_write`)."""
  with atomic_write(path, "w") as f:
    f.write(text)


def write_bytes(path, data: bytes) -> None:
  """Replaces `path` with `data` atomically (`atomic_write`)."""
  with atomic_write(path, "wb") as f:
    f.write(data)


def create_new(path, text: str) -> None:
  """Creates `path` holding `text`; raises FileExistsError if it exists.

  Locally with O_EXCL; on object stores with fsspec's create-only upload
  (on GCS an `ifGenerationMatch=0` precondition), so of two writers racing
  for the same name exactly one succeeds.
  """
  path = resolve(path)
  if is_local(path):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    return
  import fsspec  # pylint: disable=g-import-not-at-top
  fs, name = fsspec.core.url_to_fs(os.fspath(path))
  fs.pipe_file(name, text.encode("utf-8"), mode="create")


def copy_file(src, dst, chunk_bytes: int = 16 << 20) -> None:
  """Streams `src` to `dst` (any two filesystems, e.g. local -> gs://);
  `dst` is replaced as by `atomic_write`."""
  with resolve(src).open("rb") as r, atomic_write(dst, "wb") as w:
    shutil.copyfileobj(r, w, chunk_bytes)
