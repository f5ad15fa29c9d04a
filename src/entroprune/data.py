"""Datasets as in-memory tensors with deterministic train / validation / calibration splits.

Every loader returns float32 images in [0, 1], shaped (N, C, H, W), and int64 labels
(-1 for unlabelled images). Normalisation and augmentation happen per batch in
:class:`BatchLoader`, so a split is a plain pair of tensors that is cheap to slice.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .plugins import Registry
from .utils import progress_bar

DEBIAN_ROOT = Path("/usr/share/datasets")
# (x, y, test or None) from a data folder, an image size (a signal length) and channel count (folders of images
# or WAV files use those two); a reader may add a fourth item, a dict such as {"sample_rate": 16000} or
# {"classes": ["cat", "dog"]} (each label's name, which checkpoints record and exports carry)
Arrays = tuple[np.ndarray, np.ndarray, "tuple[np.ndarray, np.ndarray] | None"]
#: Dataset readers by name; :func:`register_dataset` adds one (``--dataset`` and configs read it).
DATASETS: Registry[Callable[[str | Path | None, int | None, int | None], Arrays]] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Callable], Callable]:
    def add(reader: Callable[[str | Path | None, int | None, int | None], Arrays]) -> Callable:
        DATASETS[name] = reader
        return reader
    return add


AUDIO_SUFFIXES = {".wav"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
# Which datasets may be flipped left-right without changing the class.
_FLIP_OK = {"fashion-mnist", "cifar10"}
#: Datasets built into the tool: they read no folder, so a `data_dir` given with one is refused (reading them
#: anyway would leave the user believing their folder was used) and one a checkpoint recorded is ignored.
BUILT_IN = frozenset({"digits"})


@dataclass
class ImageSet:
    x: torch.Tensor  # float32 (N, C, H, W) in [0, 1], 1-D signals (N, C, L) or volumes (N, C, D, H, W)
    y: torch.Tensor  # int64 (N,), -1 when unlabelled

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int | None) -> ImageSet:
        return self if n is None or n >= len(self) else ImageSet(self.x[:n], self.y[:n])


@dataclass
class DataBundle:
    """A dataset carved into splits, with the normalisation a checkpoint must remember. ``image_size`` is an
    image's (height, width), a signal's (length,), or a volume's (depth, height, width)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, ...]
    mean: list[float]
    std: list[float]
    train: ImageSet
    val: ImageSet
    calib: ImageSet
    test: ImageSet
    flip: bool = False
    sample_rate: int | None = None  # audio's, where the files say (a WAV folder)
    classes: list[str] | None = None  # the name of each label, where the data names them (a folder's sub-folders)

    @property
    def labelled(self) -> bool:
        return self.num_classes > 0

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - per_channel(self.mean, x.dim(), x.device)) / per_channel(self.std, x.dim(), x.device)

    def loader(self, split: str, batch_size: int = 256, shuffle: bool = False,
               augment: bool | str = False, seed: int = 0,
               device: torch.device | str = "cpu", limit: int | None = None,
               shard: tuple[int, int] = (0, 1)) -> BatchLoader:
        data = getattr(self, split).subset(limit)
        return BatchLoader(data, self.mean, self.std, batch_size, shuffle,
                           augment, self.flip, seed, torch.device(device), shard)

    def example_input(self, n: int = 1) -> torch.Tensor:
        return torch.zeros(n, self.in_channels, *self.image_size)


class BatchLoader:
    """Iterates normalised (and optionally augmented) batches of an in-memory split.

    Faster than a DataLoader over single samples for datasets that fit in memory, and
    reproducible: each epoch's order and augmentation come from ``seed`` and the epoch count.
    """

    def __init__(self, data: ImageSet, mean: list[float], std: list[float], batch_size: int,
                 shuffle: bool, augment: bool | str, flip: bool, seed: int, device: torch.device,
                 shard: tuple[int, int] = (0, 1)):
        """``augment``: False/"none", "flip" (left-right, where the dataset allows it), or
        True/"shift" (random translation by up to 2 pixels, plus flips where allowed; a 1-D signal by up to a
        tenth of its length, at least 2 samples: time-shift as keyword spotting trains, 100 ms of a 1 s clip).

        ``shard`` = (rank, world) for data-parallel training: every rank walks the same
        shuffled order in global batches of ``batch_size`` and takes every world-th image of
        each, so the ranks' batches are disjoint and together form the global batch.
        """
        mode = {True: "shift", False: "none"}.get(augment, augment)
        if mode not in ("none", "flip", "shift"):
            raise ValueError(f"unknown augmentation {augment!r}")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.shift, self.flip, self.device = mode == "shift", flip and mode != "none", device
        self.mean, self.std = per_channel(mean, data.x.dim()), per_channel(std, data.x.dim())
        self.shift_pad = max(2, int(data.x.shape[-1]) // 10) if data.x.dim() == 3 else 2
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world = shard
        if not 0 <= self.rank < self.world:
            raise ValueError(f"bad shard {shard}: need 0 <= rank < world")
        self.order_generator = self.generator
        if self.world > 1:  # the order is shared by all ranks, the augmentation is not
            self.order_generator = torch.Generator().manual_seed(seed)
            self.generator = torch.Generator().manual_seed(seed + 1 + self.rank)

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        if self.world > 1:  # a last global batch too small to give every rank an image is dropped
            return n // b + (1 if n % b >= self.world else 0)
        return (n + b - 1) // b

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = torch.randperm(n, generator=self.order_generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.world > 1:
                if len(idx) < self.world:
                    break
                idx = idx[self.rank::self.world]
            x, y = self.data.x[idx], self.data.y[idx]
            if self.shift:
                x = random_shift(x, self.shift_pad, self.generator)
            if self.flip:
                flip = torch.rand(len(x), generator=self.generator) < 0.5
                x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
            x = (x - self.mean) / self.std
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def per_channel(values: list[float], ndim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """One value per channel, shaped to broadcast over a batch of ``ndim`` dimensions (an image's or a signal's
    positions)."""
    return torch.tensor(values, device=device).view(1, -1, *[1] * (ndim - 2))


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``pad`` pixels (a signal by up to ``pad`` samples, a volume's slices all by
    the same pixels; zero fill), vectorised over the batch."""
    if x.dim() == 5:
        return random_shift(x.flatten(1, 2), pad, generator).view(x.shape)
    if x.dim() == 3:
        b, c, n = x.shape
        offset = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        idx = (offset[:, None] + torch.arange(n)).view(b, 1, n).expand(b, c, n)
        return F.pad(x, (pad, pad)).gather(2, idx)
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h)).view(b, 1, h, 1)
    cols = (ox[:, None] + torch.arange(w)).view(b, 1, 1, w)
    # Index all four dims so the result has plain NCHW strides: a permuted single-channel
    # tensor has ambiguous channels-last strides, on which torch 2.13's CPU conv backward
    # corrupted the heap (seen with one thread).
    return padded[torch.arange(b).view(b, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]


# --------------------------------------------------------------------------- file formats


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}; the file is corrupt or truncated, "
                        "download or reinstall it") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format), checking its header against its size."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad header); "
                        "replace it with the original dataset file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated (header incomplete); re-download the dataset")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    payload = memoryview(data)[4 + 4 * ndim:]
    expected = math.prod(dims)  # exact: numpy's int64 product wraps on hostile headers
    if len(payload) != expected:
        raise DataError(f"{path} holds {len(payload)} bytes of data but its header promises "
                        f"{expected}; the file is truncated or corrupt, re-download it")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()


def _find_file(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _data_roots(data_dir: str | Path | None, *defaults: str | Path | None) -> list[Path]:
    """Where a folder-based dataset is looked for: a folder the caller names is the only one searched (a copy
    found elsewhere is not the data asked for), else the default places that are set."""
    return [Path(p) for p in ([data_dir] if data_dir else defaults) if p]


def _idx_folder(name: str, data_dir: str | Path | None) -> Path:
    bases = _data_roots(data_dir, os.environ.get("ENTROPRUNE_DATA"), DEBIAN_ROOT)
    candidates = [c for base in bases for c in (base, base / name)]
    for folder in candidates:
        if _find_file(folder, "train-images-idx3-ubyte"):
            return folder
    searched = ", ".join(str(c) for c in candidates)
    if data_dir:
        raise DataError(f"{name} IDX files not found in {data_dir} (searched {searched}); pass `data_dir` to the "
                        "folder holding train-images-idx3-ubyte[.gz], or leave it out to search $ENTROPRUNE_DATA "
                        f"and {DEBIAN_ROOT}")
    hint = ("install it with `apt-get install dataset-fashion-mnist`, or "
            if name == "fashion-mnist" else "")
    raise DataError(f"{name} IDX files not found (searched {searched}); {hint}"
                    "pass `data_dir` to the folder holding train-images-idx3-ubyte[.gz]")


def _idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    img_path = _find_file(folder, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find_file(folder, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lbl_path is None:
        raise DataError(f"{folder} lacks {prefix}-images-idx3-ubyte or {prefix}-labels-idx1-ubyte; "
                        "copy both files of the split there")
    x, y = read_idx(img_path), read_idx(lbl_path)
    if x.ndim != 3 or y.ndim != 1:
        raise DataError(f"{img_path} must hold 3-D images and {lbl_path} 1-D labels; "
                        "the files are swapped or corrupt")
    if len(x) != len(y):
        raise DataError(f"{img_path} holds {len(x)} images but {lbl_path} holds {len(y)} labels; "
                        "use matching files")
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only numpy arrays and builtins, never arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _SafeUnpickler(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"] if b"data" in batch else batch["data"], dtype=np.uint8)
        labels = batch.get(b"labels", batch.get("labels"))
        labels = np.asarray(labels, dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError,
            AttributeError, OSError) as exc:
        raise DataError(f"cannot read CIFAR batch {path} ({exc}); the file is corrupt, "
                        "re-extract cifar-10-python.tar.gz") from None
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: expected rows of 3072 bytes (3x32x32), got {data.shape}; "
                        "re-extract the CIFAR-10 python batches")
    if len(data) != len(labels):
        raise DataError(f"{path} holds {len(data)} images but {len(labels)} labels; "
                        "re-extract the CIFAR-10 python batches")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels


def _cifar10(data_dir: str | Path | None):
    for root in _data_roots(data_dir, os.environ.get("ENTROPRUNE_DATA")):
        for folder in (root, root / "cifar-10-batches-py"):
            if (folder / "data_batch_1").is_file():
                train = [_load_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)
                         if (folder / f"data_batch_{i}").is_file()]
                x = np.concatenate([t[0] for t in train])
                y = np.concatenate([t[1] for t in train])
                test = (_load_cifar_batch(folder / "test_batch")
                        if (folder / "test_batch").is_file() else None)
                return x, y, test
    where = f" in {data_dir}" if data_dir else ""
    raise DataError(f"CIFAR-10 python batches not found{where}; pass `data_dir` to the folder "
                    "holding cifar-10-batches-py/data_batch_1 (CIFAR-10 cannot be downloaded here)")


def _npz(data_dir: str | Path | None, kind: str = "npz"):
    """An .npz of images (``npz``), 1-D signals (``signals``: x of shape (N, C, L)) or volumes (``volumes``: x of
    shape (N, C, D, H, W): videos, scans)."""
    to_array = {"npz": _to_nchw, "signals": _to_ncl, "volumes": _to_ncdhw}[kind]
    if not data_dir:
        raise DataError(f"the {kind} dataset needs `data_dir` pointing to a .npz file with arrays x and y")
    path = Path(data_dir)
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; pass `data_dir` to an existing .npz file")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            content = {k: arrays[k] for k in arrays.files}
    except Exception as exc:  # numpy raises many types for corrupt zips
        raise DataError(f"cannot read {path} as .npz ({type(exc).__name__}: {exc}); "
                        "write it with numpy.savez") from None
    if "x" not in content:
        raise DataError(f"{path} has no array 'x' (found {sorted(content)}); "
                        f"save {'images' if kind == 'npz' else kind} as x and labels as y")
    x = to_array(content["x"], path)
    y = content.get("y")
    y = np.full(len(x), -1, np.int64) if y is None else _labels(y, len(x), path)
    test = None
    # a test split given in part was dropped without a word, and a fifth of x carved as the test split instead
    if "y_test" in content and "x_test" not in content:
        raise DataError(f"{path} has y_test but no x_test; save the test images as x_test, or leave y_test out")
    if "x_test" in content:
        if "y_test" not in content and "y" in content:
            raise DataError(f"{path} has x_test but no y_test (x is labelled by y); save the test labels as y_test, "
                            "or leave x_test out to carve a test split from x")
        xt = to_array(content["x_test"], path)
        test = (xt, _labels(content["y_test"], len(xt), path) if "y_test" in content else np.full(len(xt), -1, np.int64))
    return x, y, test


def _labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {n} images but labels of shape {tuple(y.shape)}; "
                        "give one integer label per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got {y.dtype}; cast them to int64")
    return y.astype(np.int64)


def _channels_first(x: np.ndarray, path: Path, ndim: int, what: str, shapes: str, uint8_scaled: bool) -> np.ndarray:
    """Signals or volumes as float32 with a channel axis (added to data stored without one): uint8 volumes divided
    by 255 as images are, anything else as stored (a signal's or a scan's units are its own, no division to [0, 1])."""
    x = np.asarray(x)
    if x.ndim == ndim - 1:
        x = x[:, None]
    if x.ndim != ndim or len(x) == 0 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: {what} must be numbers of shape {shapes}, got {x.dtype} {tuple(x.shape)}; reshape x")
    if uint8_scaled and x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: {what} contain NaN or Inf; clean the data")
    return x


_to_ncl = partial(_channels_first, ndim=3, what="signals", shapes="(N, L) or (N, C, L)", uint8_scaled=False)
_to_ncdhw = partial(_channels_first, ndim=5, what="volumes", shapes="(N, D, H, W) or (N, C, D, H, W)", uint8_scaled=True)


def _to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise DataError(f"{path}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W) with 1 or 3 "
                        f"channels, got {tuple(x.shape)}; reshape x")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: images contain NaN or Inf; clean the data")
    return x / 255.0 if x.max() > 1.0 else x


# Larger images are refused before decoding: a decompression bomb (a small file that expands to
# gigabytes) would otherwise exhaust memory; real photos for these models are far smaller.
MAX_IMAGE_PIXELS = 40_000_000


def _open_image(path: Path):
    """PIL's lazy open (the header only), with the size checked before any pixel is decoded."""
    from PIL import Image

    try:
        img = Image.open(path)
    except Image.DecompressionBombError:
        raise DataError(f"image {path} is larger than PIL's safety limit (a decompression bomb?); "
                        "remove it or resize it") from None
    if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
        img.close()
        raise DataError(f"image {path} is {img.size[0]}x{img.size[1]} pixels, over entroprune's limit of "
                        f"{MAX_IMAGE_PIXELS:,}; resize it (the models take small inputs) or remove it")
    return img


class _Unreadable(DataError):
    """A file with an image (or WAV) suffix that PIL (or scipy) cannot decode: skipped, one warning per folder."""


#: Greyscale modes deeper than 8 bits and the value each one's white is: PIL's convert("L") clips them at 255, so
#: a 16-bit scan (microscopy, X-ray, depth) read almost all white and a float image in [0, 1] all black. 32-bit
#: integer images are read as 16-bit ones (PIL opened 16-bit PNGs as "I"); float images are taken as stored.
DEEP_GREY = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def _read_image(path: Path, mode: str, size: tuple[int, int] | None):
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_image(path) as img:
            if size is not None and img.format == "JPEG":
                # decoded at the smallest of 1/2, 1/4, 1/8 scale still at least the size asked: a 12-megapixel
                # photo read at 64x64 decodes some 20x faster, and is then resized as before
                img.draft(mode, (size[1], size[0]))
            white = DEEP_GREY.get(img.mode, 255.0)
            img = img.convert("F" if white != 255.0 else mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / white
            if img.mode == "F" and mode == "RGB":  # a deep greyscale image in a colour folder
                arr = np.repeat(arr[..., None], 3, axis=2)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _Unreadable(f"cannot read image {path} ({exc}); remove or replace the file") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _class_files(root: Path, suffixes: set[str], what: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """A folder's files by class: one sub-folder per class, each read with its sub-folders at any depth (as
    torchvision's ImageFolder reads them: class/2019/a.png is of that class; hidden folders such as
    .ipynb_checkpoints are skipped), or the files directly in it (unlabelled, -1)."""
    def listed(folder: Path, nested: bool) -> list[Path]:
        found = folder.rglob("*") if nested else folder.iterdir()
        return sorted(p for p in found if p.suffix.lower() in suffixes and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(folder).parent.parts))

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        files = [(f, i) for i, c in enumerate(classes) for f in listed(root / c, nested=True)]
    else:
        files = [(f, -1) for f in listed(root, nested=False)]
    if not files:
        raise DataError(f"no {what} found in {root}; put {what} in one sub-folder per class "
                        "(or directly in the folder for unlabelled data)")
    return files, classes


#: Folders of more files than this show a progress bar while they are read (on a terminal only: logs stay clean).
PROGRESS_FILES = 500


def _reading(files: list[tuple[Path, int]], root: Path) -> Iterator[tuple[Path, int]]:
    """``files`` in order, counted on a progress bar where there are many: decoding tens of thousands of photos
    takes minutes, which were silent."""
    import sys

    with progress_bar(disable=len(files) < PROGRESS_FILES or not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"read {root.name or root}", total=len(files), info="")
        for item in files:
            yield item
            bar.advance(task)


def _warn_skipped(skipped: list[Path], what: str, root: Path) -> None:
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable {what} in {root} (e.g. {skipped[0].name})", stacklevel=3)


def _scan_headers(files: list[Path], root: Path, size_known: bool) -> tuple[str, tuple[int, int] | None]:
    """Read from the images' headers alone: colour ("RGB") if any image is, else greyscale ("L"), and the (height,
    width) most of them have, to which the others are resized with a warning saying how many. The first 64 files
    decided the colour (a folder whose first class was greyscale made colour images grey) and the first file the
    size, whatever the rest were, and nothing was said."""
    from collections import Counter

    from PIL import UnidentifiedImageError

    colour, sizes = False, Counter[tuple[int, int]]()
    for f in files:
        try:
            with _open_image(f) as img:
                colour = colour or img.mode not in ("L", "1", "LA", *DEEP_GREY)
                sizes[(img.size[1], img.size[0])] += 1
        except (UnidentifiedImageError, OSError, ValueError):
            continue  # reported when read
    mode = "RGB" if colour else "L"
    if not sizes or size_known:
        return mode, None
    size, count = sizes.most_common(1)[0]
    others = sum(sizes.values()) - count
    if others:
        warnings.warn(f"{others} of {sum(sizes.values())} images in {root} are not {size[1]}x{size[0]} pixels, the most "
                      "common size, and are resized to it (stretched where their aspect differs); resize them "
                      "yourself to choose how", stacklevel=4)
    return mode, size


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (Linux's MemAvailable); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_fits(n: int, channels: int, size: tuple[int, int], root: Path) -> None:
    """Refuse, before decoding a pixel, a folder whose images would not fit in memory as float32 arrays (twice:
    the decoded images and their stacked copy): a folder of phone photos read at their own 3024x4032 was an
    out-of-memory kill after minutes of decoding."""
    need, free = 2 * 4 * n * channels * size[0] * size[1], available_memory()
    if free is not None and need > free:
        raise DataError(f"{n:,} images of {size[1]}x{size[0]} pixels ({channels} channel(s)) need about "
                        f"{need / 2**30:.1f} GiB of memory as float32 and {free / 2**30:.1f} GiB are available; "
                        "read them at the size the model takes (`image_size`), resize them, or use fewer")


def _folder_images(root: Path, image_size: int | tuple[int, int] | None, in_channels: int | None = None):
    files, classes = _class_files(root, IMAGE_SUFFIXES, "images")
    # the model's channels and (height, width) when known (a square model's as one number; greyscale and colour
    # images mixed in one folder are converted), else colour if any image is, and the size most images have
    mode = {1: "L", 3: "RGB"}.get(in_channels)
    size = ((image_size, image_size) if isinstance(image_size, int) else tuple(image_size)) if image_size else None
    if mode is None or size is None:
        scanned_mode, scanned_size = _scan_headers([f for f, _ in files], root, size is not None)
        mode, size = mode or scanned_mode, size or scanned_size
    if size is not None:
        _check_fits(len(files), 3 if mode == "RGB" else 1, size, root)
    arrays, labels, skipped = [], [], []
    for f, c in _reading(files, root):
        try:
            arrays.append(_read_image(f, mode, size))
            labels.append(c)
        except (_Unreadable, OSError):
            skipped.append(f)
    if not arrays:
        raise DataError(f"no readable image in {root} ({len(skipped)} files PIL cannot decode, e.g. {skipped[0]}); "
                        "replace them with PNG or JPEG images")
    _warn_skipped(skipped, "image(s)", root)
    x = np.stack(arrays)
    y = np.array(labels, dtype=np.int64)
    return x, y, classes, {}


def _read_wav(path: Path) -> tuple[int, np.ndarray]:
    """A WAV file's rate and its samples as float32 (C, L), integer PCM scaled to [-1, 1) by its type's range
    (scipy returns 24-bit PCM as int32 with the samples in the high bytes, so that scale holds for it too)."""
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():  # chunks scipy does not parse (metadata, cue points) are skipped
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt header trips scipy's parser anywhere (0 channels: ZeroDivisionError)
        raise _Unreadable(f"cannot read WAV file {path} ({type(exc).__name__}: {exc}); remove or replace the file") from None
    data = np.asarray(data)
    if data.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        x = data.astype(np.float32)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] == 0:
        raise _Unreadable(f"WAV file {path} holds no samples; remove it")
    if not np.isfinite(x).all():
        raise DataError(f"WAV file {path} contains NaN or Inf samples; clean or remove it")
    return int(rate), np.ascontiguousarray(x.T)


def _folder_wavs(root: Path, length: int | None, in_channels: int | None = None):
    """Every WAV file of a folder as (N, C, L) raw samples: cut or zero-padded at the end to ``length`` (the
    model's, else the median clip's: the longest would let one long recording among short clips multiply the
    memory by its length), mixed down to one channel where the model takes one; one rate for all."""
    files, classes = _class_files(root, AUDIO_SUFFIXES, "WAV files")
    # every file is read whole before clips are cut: hours of recordings as float32 (twice 16-bit PCM's bytes) and
    # the clips' array beside them, refused before the first is read rather than killed when memory runs out
    stored, free = sum(f.stat().st_size for f, _ in files), available_memory()
    if free is not None and 4 * stored > free:
        raise DataError(f"{len(files):,} WAV files in {root} hold {stored / 2**30:.1f} GiB, about "
                        f"{4 * stored / 2**30:.1f} GiB of memory as float32 samples, and {free / 2**30:.1f} GiB are "
                        "available; cut the recordings into clips, or use fewer")
    signals: list[tuple[Path, np.ndarray]] = []
    labels, skipped, rate, first = [], [], None, None
    for f, c in _reading(files, root):
        try:
            r, s = _read_wav(f)
        except _Unreadable:
            skipped.append(f)
            continue
        if rate is None:
            rate, first = r, f
        elif r != rate:
            raise DataError(f"{f} is sampled at {r} Hz but {first} at {rate} Hz; resample every file to one rate")
        signals.append((f, s))
        labels.append(c)
    if not signals:
        raise DataError(f"no readable WAV file in {root} ({len(skipped)} files scipy cannot read, e.g. {skipped[0]}); "
                        "write them as PCM or float WAV")
    _warn_skipped(skipped, "WAV file(s)", root)
    counts = sorted({s.shape[0] for _, s in signals})
    channels = in_channels or (counts[0] if len(counts) == 1 else 1)
    if not in_channels and len(counts) > 1:  # the first file decided: mono first mixed stereo down, stereo first refused mono
        warnings.warn(f"the WAV files in {root} have {' and '.join(map(str, counts))} channels; every file is mixed "
                      "down to mono (give every file the same channels to keep them)", stacklevel=4)
    length = length or sorted(s.shape[1] for _, s in signals)[len(signals) // 2]
    x = np.zeros((len(signals), channels, length), np.float32)
    for i, (f, s) in enumerate(signals):
        if s.shape[0] != channels:
            if channels != 1:
                raise DataError(f"{f} has {s.shape[0]} channel(s) but the model takes {channels}; give every file "
                                f"{channels} channel(s)")
            s = s.mean(axis=0, keepdims=True)
        n = min(length, s.shape[1])
        x[i, :, :n] = s[:, :n]
    return x, np.array(labels, dtype=np.int64), classes, {"sample_rate": rate}


#: A folder holding train/ takes its test split from the first of these it also holds (ImageNet's layout has val/,
#: many others valid/): a val/ beside train/ was never read, and the test split was carved from train/ instead.
HELD_OUT = ("test", "val", "valid", "validation")


def _folder_dataset(kind: str, what: str, read: Callable, data_dir: str | Path | None, size: int | None,
                    in_channels: int | None):
    """A folder of class sub-folders (or of unlabelled files), or one holding train/ and a held-out split
    (:data:`HELD_OUT`) so laid out."""
    if not data_dir:
        raise DataError(f"the {kind} dataset needs `data_dir` pointing to a folder of {what}s")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{what} folder {root} does not exist; pass `data_dir` to an existing folder")
    if not (root / "train").is_dir():
        x, y, classes, info = read(root, size, in_channels)
        return x, y, None, {**info, "classes": classes}
    x, y, classes, info = read(root / "train", size, in_channels)
    test = None
    held = [root / name for name in HELD_OUT if (root / name).is_dir()]
    if len(held) > 1:
        warnings.warn(f"{', '.join(str(h) for h in held[1:])} not read: {held[0]} is the test split, and the "
                      f"validation split is carved from {root / 'train'}; merge the images into one of them to use "
                      "them", stacklevel=4)
    if held:
        # the training split's size: a clip's length, an image's (height, width) (a square's width made 12x20 images
        # 20x20, refused as another size than training's)
        xt, yt, tclasses, tinfo = read(held[0], size or (x.shape[-1] if x.ndim == 3 else tuple(x.shape[-2:])),
                                       x.shape[1])
        if tclasses != classes:
            raise DataError(f"{held[0]} has classes {tclasses} but train has {classes}; "
                            "use the same class sub-folders")
        if tinfo != info:  # only WAV folders report anything here: their rate
            raise DataError(f"{held[0]} is sampled at {tinfo.get('sample_rate')} Hz but {root}/train at "
                            f"{info.get('sample_rate')} Hz; resample every file to one rate")
        test = (xt, yt)
    return x, y, test, {**info, "classes": classes}


def _digits():
    """scikit-learn's 8x8 digits, read from the CSV it ships: importing sklearn to load them costs every
    process ~3 s (scipy.stats and more), 25 times the read."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.is_file():
        # as load_digits parses it: 64 pixels in 0-16, then the label
        data = np.loadtxt(_read_bytes(path).decode().splitlines(), delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:  # another scikit-learn layout
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    return images.astype(np.float32)[:, None] / 16.0, target.astype(np.int64), None


#: The label names of the datasets that have them (Zalando's and the CIFAR-10 paper's, in label order).
CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def _idx(name: str) -> Callable[[str | Path | None, int | None, int | None], Arrays]:
    def read(data_dir: str | Path | None, image_size: int | None, in_channels: int | None) -> Arrays:
        folder = _idx_folder(name, data_dir)
        test = _idx_pair(folder, "t10k") if _find_file(folder, "t10k-images-idx3-ubyte") else None
        return (*_idx_pair(folder, "train"), test, {"classes": CLASS_NAMES.get(name)})
    return read


register_dataset("fashion-mnist")(_idx("fashion-mnist"))
register_dataset("mnist")(_idx("mnist"))
register_dataset("digits")(lambda data_dir, image_size, in_channels: _digits())
register_dataset("cifar10")(lambda data_dir, image_size, in_channels: (*_cifar10(data_dir), {"classes": CLASS_NAMES["cifar10"]}))
register_dataset("imagefolder")(partial(_folder_dataset, "imagefolder", "image", _folder_images))
register_dataset("wavfolder")(partial(_folder_dataset, "wavfolder", "audio", _folder_wavs))
register_dataset("npz")(lambda data_dir, image_size, in_channels: _npz(data_dir))
register_dataset("signals")(lambda data_dir, image_size, in_channels: _npz(data_dir, "signals"))
register_dataset("volumes")(lambda data_dir, image_size, in_channels: _npz(data_dir, "volumes"))


# --------------------------------------------------------------------------- public entry


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0,
                 val_size: int | None = None, calib_size: int | None = None,
                 min_size: int | None = None, image_size: int | tuple[int, int] | None = None,
                 train_limit: int | None = None, in_channels: int | None = None) -> DataBundle:
    """Load a named dataset and carve train / validation / calibration splits by ``seed``.

    The test split (the dataset's own, or a fixed 20% carved with seed 0 when it has none)
    is used only for final reports. Images smaller than ``min_size`` are upsampled so that
    every zoo model runs on every dataset. ``image_size`` (one number for square images, or (height, width)) and
    ``in_channels`` apply to image folders, whose images are resized and converted (greyscale or colour) to them
    (without ``image_size``, to the size most of them have), and to WAV folders,
    whose clips are cut or zero-padded to that length and mixed down to one channel where asked.
    """
    if train_limit is not None and train_limit < 1:
        raise DataError(f"`train_limit` must be >= 1 (or unset for every image), got {train_limit}")
    reader = DATASETS.require(name, DataError)
    if data_dir and name in BUILT_IN:
        raise DataError(f"{name} is built in (scikit-learn) and reads no folder, but `data_dir` names {data_dir}; "
                        "leave `data_dir` out, or set `dataset` to the one stored there")
    x, y, test, *extra = reader(data_dir, image_size, in_channels)
    info = extra[0] if extra else {}
    if np.ndim(x) not in (3, 4, 5):
        raise DataError(f"dataset {name}'s inputs have shape {tuple(np.shape(x))}; a reader returns images "
                        "(N, C, H, W), 1-D signals (N, C, L) or volumes (N, C, D, H, W)")

    for part, labels in (("training", y), ("test", None if test is None else test[1])):
        negative = np.asarray(labels) < 0 if labels is not None else np.zeros(0, bool)
        if negative.any() and not negative.all():  # -1 marks a set without labels: a few made the whole set one
            raise DataError(f"dataset {name}: {int(negative.sum())} of {len(negative)} {part} labels are negative "
                            "and the rest class indices; give every image a class index >= 0 (drop the others), "
                            "or leave the labels out for unlabelled images")
    labelled = bool((y >= 0).all())
    if labelled and len(np.unique(y)) < 2:
        raise DataError(f"dataset {name} has a single class; classification needs at least two "
                        "classes (check the folder layout or the labels)")
    if test is None:
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(x))
        n_test = max(1, len(x) // 5)
        test = (x[perm[:n_test]], y[perm[:n_test]])
        x, y = x[perm[n_test:]], y[perm[n_test:]]
    if test[0].shape[1:] != x.shape[1:]:
        raise DataError(f"{name}: test images are {test[0].shape[1:]} but training images "
                        f"{x.shape[1:]}; use one image size")
    num_classes = int(max(y.max(), test[1].max()) + 1) if labelled else 0
    empty = sorted(set(range(num_classes)) - set(np.unique(np.concatenate([y, test[1]])).tolist()))
    if empty:  # labels numbered from 1 (or with gaps) train a model with outputs that never see an image
        warnings.warn(f"dataset {name}: {len(empty)} of the {num_classes} classes its labels number have no image "
                      f"(class {', '.join(map(str, empty[:5]))}{', ...' if len(empty) > 5 else ''}): the model gets "
                      "an output for each that never learns; number the classes from 0 without gaps",
                      stacklevel=2)

    n = len(x)
    if n < 3:
        raise DataError(f"dataset {name} has only {n} training images; give it at least 3")
    val_size = min(5000, max(1, n // 10)) if val_size is None else val_size
    calib_size = min(1024, max(1, n // 10)) if calib_size is None else calib_size
    if val_size + calib_size >= n:
        raise DataError(f"validation ({val_size}) + calibration ({calib_size}) images leave no "
                        f"training images out of {n}; lower `val_size` / `calib_size`")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xt, test_x = _resize(xt, min_size), _resize(torch.from_numpy(test[0]), min_size)

    def take(idx: np.ndarray) -> ImageSet:
        return ImageSet(xt[idx].contiguous(), yt[idx].contiguous())

    val = take(perm[:val_size])
    calib = take(perm[val_size:val_size + calib_size])
    train = take(perm[val_size + calib_size:]).subset(train_limit)
    per_channel = (0, *range(2, xt.dim()))
    mean = train.x.mean(dim=per_channel).tolist()
    std = [max(s, 1e-3) for s in train.x.std(dim=per_channel).tolist()]
    return DataBundle(name=name, num_classes=num_classes, in_channels=int(xt.shape[1]),
                      image_size=tuple(int(d) for d in xt.shape[2:]), mean=mean, std=std,
                      train=train, val=val, calib=calib,
                      test=ImageSet(test_x, torch.from_numpy(test[1])), flip=name in _FLIP_OK,
                      sample_rate=info.get("sample_rate"), classes=_class_names(info.get("classes"), num_classes))


def _class_names(names: Any, num_classes: int) -> list[str] | None:
    """A reader's label names where they name every class the labels number: a name per output or none (a
    Fashion-MNIST file cut to three classes has no names for its labels' outputs)."""
    ok = isinstance(names, (list, tuple)) and len(names) == num_classes > 0 and all(isinstance(n, str) for n in names)
    return list(names) if ok else None


def _resize(x: torch.Tensor, min_size: int | None) -> torch.Tensor:
    if not min_size or x.dim() != 4 or min(x.shape[-2:]) >= min_size:  # signals are never resampled
        return x
    h, w = x.shape[-2:]
    scale = min_size / min(h, w)
    size = (round(h * scale), round(w * scale))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp_(0, 1)


def fashion_mnist_available(data_dir: str | Path | None = None) -> bool:
    try:
        _idx_folder("fashion-mnist", data_dir)
        return True
    except DataError:
        return False


__all__ = ["BatchLoader", "DataBundle", "ImageSet", "DATASETS", "BUILT_IN", "register_dataset", "load_dataset", "read_idx",
           "fashion_mnist_available"]
