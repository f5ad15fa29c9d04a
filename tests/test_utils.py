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


def test_cpu_name_tells_masked_x86_generations_apart():
    """Two cloud VMs both named "AMD EPYC" (Zen 1 and Zen 4 here, 2.5x apart) are told apart by family, model and
    vector unit, with no comma inside (pages shorten a machine at its first comma); non-x86 keeps its name."""
    from entroprune.utils import cpu_name

    def info(family: str, model: str, flags: str) -> str:
        return (f"processor\t: 0\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n"
                f"flags\t\t: fpu {flags}\n\nprocessor\t: 1\nmodel name\t: another\n")

    zen1, zen4 = cpu_name(info("23", "1", "sse4_2 avx2")), cpu_name(info("25", "17", "avx2 avx512f"))
    assert (zen1, zen4) == ("AMD EPYC (family 23 model 1; AVX2)", "AMD EPYC (family 25 model 17; AVX-512)")
    assert cpu_name(info("6", "62", "sse4_2")) == "AMD EPYC (family 6 model 62)"
    assert "," not in zen4
    assert cpu_name("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n") == cpu_name("")


def test_a_quiet_call_hides_every_bar_below_it():
    """`--quiet` (an API call's quiet=True) hides bars drawn where no quiet is passed down: an image folder's
    reading bar showed on a terminal under it."""
    from entroprune.settings import checked_args
    from entroprune.utils import progress_bar

    @checked_args
    def stage(quiet: bool = False) -> bool:
        return progress_bar().disable

    assert stage(quiet=True) is True and stage(quiet=False) is False and stage() is False
    assert progress_bar().disable is False  # the quiet call's setting ends with it
