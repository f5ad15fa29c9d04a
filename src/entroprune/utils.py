"""Small shared helpers: seeding, threads, devices and atomic file output.

Torch is imported by the helpers that use it, not here: the command line's error handling and file checks
run before (or without) torch's import, so --help and a refused input answer at once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError
from .settings import QUIET, SUFFIXES

if TYPE_CHECKING:
    import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed every global RNG and return a torch generator for explicit use."""
    import torch

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads; ``None`` or 0 keeps torch's default."""
    import torch

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ConfigError(f"threads must be an integer >= 0 (0 = torch's default), got {n!r}")
    # torch's thread pool crashes the process (a segfault, no message) on absurd counts
    limit = max(64, 4 * (os.cpu_count() or 1))
    if n is not None and n > limit:
        raise ConfigError(f"threads must be at most {limit} (this machine has {os.cpu_count()} cores), got {n}")
    if n:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a clear error (the API's functions
    failed in torch's own assertion), as is a device entroprune does not run on."""
    import torch

    name = (str(name) if isinstance(name, torch.device) else name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("`device=cuda` was asked for but no CUDA GPU is available; "
                              "use `device=auto` or `device=cpu`")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Write through a temporary file in the same folder, then rename over ``path``.

    Readers never see a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, default=_jsonable)))


def read_json(path: str | Path) -> Any:
    """A run folder's JSON file, or None when absent; unreadable is one clear error."""
    from .errors import ConfigError

    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({type(exc).__name__}); the run was interrupted while "
                          "writing it or the file was edited, rerun the command that wrote it") from None


_DIGESTS: dict[tuple[str, str, int, int, int], str] = {}


def _remembered(kind: str, path: str | Path, compute: Callable[[Path], str]) -> str:
    """``compute(path)``, remembered while the file keeps the same inode, size and modification time (a file
    rewritten atomically is a new inode): a run checks its baseline's hashes, and the search and pruning it starts
    the same file's."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (kind, str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = compute(path)
    return _DIGESTS[key]


def weights_sha256(path: str | Path) -> str:
    """A checkpoint's sha256 over what the net computes (its spec, pruning record and tensors), not its training
    times: a baseline retrained into a removed cache with the same seed has the same weights but another file."""
    def compute(path: Path) -> str:
        import torch

        raw = torch.load(path, map_location="cpu", weights_only=True)
        digest = hashlib.sha256(json.dumps({k: raw.get(k) for k in ("spec", "pruning")}, sort_keys=True,
                                           default=str).encode())
        for name, t in sorted(raw["state_dict"].items()):
            digest.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
            digest.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    return _remembered("weights", path, compute)


def same_weights(path: str | Path, recorded: str | None) -> bool:
    """``path`` holds the net ``recorded`` (a :func:`weights_sha256`) was taken of; False for records without one
    and for a file that is no longer a readable checkpoint."""
    if recorded is None:
        return False
    try:
        return weights_sha256(path) == recorded
    except Exception:  # noqa: BLE001 - replaced by anything at all: not the same net
        return False


def file_sha256(path: str | Path) -> str:
    """A file's sha256, read in chunks (a checkpoint may be hundreds of MB)."""
    def compute(path: Path) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    return _remembered("file", path, compute)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    torch = sys.modules.get("torch")  # without torch imported, nothing is a tensor
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# Folders this command created, outermost first: a refused or interrupted command removes the ones
# it left empty (never one that holds anything), so it leaves nothing behind.
_CREATED: list[Path] = []


def remove_empty_created_dirs() -> None:
    for folder in reversed(_CREATED):
        try:
            folder.rmdir()  # only succeeds on an empty folder
        except OSError:
            pass
    _CREATED.clear()


def forget_created_dirs() -> None:
    _CREATED.clear()


def refuse_output_inside(out: str | Path, inputs: list[str | Path | None], option: str = "`out_dir`") -> None:
    """An output folder that is, or lies inside, an input folder would change that input (a search's
    plots in an image folder become a class of it on the next run): refused, even with ``force``."""
    from .errors import ConfigError

    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        folder = Path(given).resolve()
        if folder.is_dir() and (target == folder or folder in target.parents):
            raise ConfigError(f"{option} {out} lies inside the input folder {given}; writing there would change "
                              "the input, choose a folder outside it")


#: Suffixes of the files entroprune reads and writes (the export formats' among them): a new output folder named
#: so was meant as a file (`train --out model.pt` made a folder model.pt, which `run --checkpoint model.pt` refused).
FILE_SUFFIXES = {*SUFFIXES.values(), ".pt", ".pth", ".json", ".jsonl", ".yaml", ".yml", ".npz", ".csv", ".md"}


def check_writable_dir(path: str | Path, setting: str = "out_dir") -> Path:
    """Create ``path`` (and parents) or fail with one line naming it and the ``setting`` that named it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output directory {path} is a file; choose another `{setting}`")
    if not path.exists() and path.suffix.lower() in FILE_SUFFIXES:
        raise ConfigError(f"output directory {path} is named as a {path.suffix} file, but `{setting}` is the folder its "
                          f"files are written into; pass `{setting}` {path.with_suffix('')} (or create the folder first "
                          "to keep the name)")
    try:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        _CREATED.extend(reversed(missing))
        probe = path / f".entroprune-write-test-{os.getpid()}"  # per process: DDP ranks check at once
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output directory {path} is not writable ({exc.strerror}); "
                          f"choose another `{setting}`") from None
    return path


def claim_dir(path: Path) -> bool:
    """Create ``path`` if no one has (one atomic mkdir, so of processes racing for a name one wins); False when it
    exists. A claimed folder is removed as the command's other new folders are when it ends refused."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    _CREATED.append(path)
    return True


def input_kind(spatial_dims: int) -> str:
    """What an input of that many dimensions after the channels is, as messages and reports name it."""
    return {1: "signals", 2: "images", 3: "volumes"}.get(spatial_dims, f"{spatial_dims}-D inputs")


def shell_arg(path: str | Path) -> str:
    """A path as a command the user copies takes it: quoted where the shell would split it ("my runs/run-...")."""
    import shlex

    return shlex.quote(str(path))


def count_text(n: int, word: str, many: str | None = None) -> str:
    """A count with its noun as messages write it: 1 epoch, 3 epochs (``many`` where the plural is not +s)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def shape_text(dims) -> str:
    """A shape as messages and reports write it: (1, 28, 28) -> '1x28x28'."""
    return "x".join(str(int(d)) for d in dims)


def progress_bar(disable: bool = False):
    """A rich progress bar on stderr, so stdout stays clean for results; none inside a quiet call
    (:data:`entroprune.settings.QUIET`)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=Console(stderr=True), disable=disable or QUIET.get(), transient=False)


@contextlib.contextmanager
def modes_kept(model: torch.nn.Module):
    """Inside: the caller may switch ``model`` to eval mode; on exit every submodule has its own training
    flag back (``model.train(was)`` would also switch a BN the user froze in eval mode back to train)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def flat_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a model's output, through nested tuples, lists and dicts (anything else left out)."""
    import torch

    tensors, stack = [], [out]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif isinstance(x, (tuple, list)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
    return tensors


def forward_with_hooks(model: torch.nn.Module, example: torch.Tensor,
                       hooks: list[tuple[torch.nn.Module, Callable]]) -> None:
    """One no-grad eval-mode forward with temporary forward hooks; restores the mode after.

    Hooks must return None (a returned value would replace the module's output).
    """
    import torch

    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with modes_kept(model), torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str):
    """Hold an exclusive lock on ``folder`` (created if needed) for a writer's whole run, so a second
    process writing into it is refused in one line instead of interleaving with the first."""
    import fcntl

    from .errors import ConfigError

    created = not Path(folder).exists()
    folder = check_writable_dir(folder)
    lock = folder / ".entroprune.lock"
    lock_created = not lock.exists()
    fh = open(lock, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ConfigError(f"another entroprune process is writing {what} into {folder}; wait for it to finish "
                          "or choose another `out_dir`") from None
    failed = True
    try:
        yield folder
        failed = False
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()
        if failed and lock_created:  # refused or failed: leave no lock file (and no empty folder) behind
            lock.unlink(missing_ok=True)
            if created and not any(folder.iterdir()):
                folder.rmdir()


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name, with its x86 family, model and widest vector unit: cloud VMs often mask the name
    ("AMD EPYC" on two generations 2.5x apart here), and timings are only comparable on the same chip."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip() and fields:  # the first processor's block is enough
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        flags = set(fields.get("flags", "").split())
        simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
        # no comma inside: pages shorten a machine to the text before its first comma
        name += f" (family {fields['cpu family']} model {fields['model']}{'; ' + simd if simd else ''})"
    return name


def machine_description(threads: bool = True) -> str:
    """CPU, cores and torch build, plus the current torch thread count unless ``threads`` is off
    (for tables whose rows vary it)."""
    import torch

    machine = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    return f"{machine}, {torch.get_num_threads()} threads" if threads else machine
