"""Shared fixtures: tiny datasets written to disk in every supported format."""

from __future__ import annotations

import gzip
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
# One thread per xdist worker holds for the processes the tests start too (the CLI, benchmarks, Ray and DDP
# workers): at torch's default of one thread per core, each would oversubscribe the cores its siblings run on.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state, whichever tests ran before it in its process
    (`make test` spreads them over pytest-xdist workers in an order that varies run to run)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """A 60-image, 3-class MNIST-style folder (gzip train, raw test)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    y = np.arange(60) % 3
    x = (rng.random((60, 12, 12)) * 60).astype(np.uint8)
    for i, c in enumerate(y):  # class-dependent bright square so models can learn
        x[i, 2 + 3 * c:5 + 3 * c, 2:10] = 250
    write_idx(folder / "train-images-idx3-ubyte", x)
    write_idx(folder / "train-labels-idx1-ubyte", y)
    write_idx(folder / "t10k-images-idx3-ubyte", x[:15], gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", y[:15], gz=False)
    return folder


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, n in [("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 10)]:
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return tmp_path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(2)
    root = tmp_path / "images"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            arr = rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def npz_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.integers(0, 255, (40, 9, 9), dtype=np.uint8), y=np.arange(40) % 4)
    return path


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory) -> Path:
    """A small trained VGG on digits, shared by tests that need a checkpoint."""
    from entroprune.api import train_baseline

    out = tmp_path_factory.mktemp("digits_vgg")
    train_baseline("vgg", "digits", out, epochs=3, width_mult=0.5, seed=0, quiet=True)
    return out / "model.pt"


@pytest.fixture(scope="session")
def resnet_ckpt(tmp_path_factory) -> Path:
    from entroprune.api import train_baseline

    out = tmp_path_factory.mktemp("digits_resnet")
    train_baseline("resnet20", "digits", out, epochs=1, width_mult=0.5, seed=0, quiet=True)
    return out / "model.pt"


@pytest.fixture(scope="session")
def pruned_ckpt(digits_ckpt, tmp_path_factory) -> Path:
    """digits_ckpt pruned uniformly to about half of its MACs, cut plainly (a fine-tune has accuracy to win back)."""
    from entroprune.api import prune_checkpoint, search_checkpoint
    from entroprune.search import SearchConfig

    root = tmp_path_factory.mktemp("digits_pruned")
    search_checkpoint(digits_ckpt, root / "search", SearchConfig(macs_target=0.5, agent="uniform"), quiet=True)
    prune_checkpoint(digits_ckpt, root / "search" / "policy.json", root / "pruned", refit=False)
    return root / "pruned" / "model.pt"


def measured_macs_fraction(ckpt_path: Path, counts: dict[str, int]) -> float:
    """A search result's MACs fraction measured apart from the code under test: torch-pruning's
    counter on the physically pruned network against the unpruned one."""
    return measured_fractions(ckpt_path, counts)[0]


def measured_fractions(ckpt_path: Path, counts: dict[str, int]) -> tuple[float, float]:
    """The MACs and parameter fractions of :func:`measured_macs_fraction`."""
    import copy

    from entroprune.api import build_structure, load_model
    from entroprune.prune import apply_physical
    from entroprune.structure import count_macs_params

    model, ckpt = load_model(ckpt_path)
    model.eval()
    structure = build_structure(model, ckpt.spec)
    pruned = copy.deepcopy(model)
    apply_physical(pruned, structure, counts)
    x = ckpt.spec.example_input()
    (macs, params), (macs0, params0) = count_macs_params(pruned, x), count_macs_params(model, x)
    return macs / macs0, params / params0


def assert_budget(ckpt_path: Path, result, target: float, under: float = 0.05) -> None:
    """Never over the target, at most ``under`` (relative) below it, measured independently."""
    measured = measured_macs_fraction(ckpt_path, result.counts)
    assert (1 - under) * target <= measured <= target * (1 + 1e-6), (measured, target)
    assert measured == pytest.approx(result.achieved, rel=1e-3)
