import hashlib
import os

from entroprune.utils import atomic_write, file_sha256


def test_file_sha256_is_the_files_and_follows_a_rewrite(tmp_path):
    """Remembered per file version (a run and its search hash the same baseline once), never past a change:
    a checkpoint retrained in place has the same size, and may keep the same modification time."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"a" * 3_000_000)
    first = file_sha256(path)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    stat = path.stat()
    atomic_write(path, lambda p: p.write_bytes(b"b" * 3_000_000))  # how entroprune rewrites a checkpoint
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and time: only the inode tells
    assert file_sha256(path) == hashlib.sha256(b"b" * 3_000_000).hexdigest() != first
