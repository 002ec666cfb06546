"""paths.create_new / copy_file locally (the gs:// side is in
test_remote_storage.py; the workdir lock built on create_new in
test_workdir.py)."""
import pytest

from rs_jax import paths


def test_create_new_refuses_an_existing_file(tmp_path):
  lock = tmp_path / "lock"
  paths.create_new(lock, "first")
  with pytest.raises(FileExistsError):
    paths.create_new(lock, "second")
  assert lock.read_text() == "first"


def test_copy_file_replaces_the_target(tmp_path):
  src, dst = tmp_path / "src.bin", tmp_path / "out" / "dst.bin"
  src.write_bytes(bytes(range(256)) * 100)
  paths.copy_file(src, dst, chunk_bytes=1000)
  paths.copy_file(src, dst)
  assert dst.read_bytes() == src.read_bytes()

