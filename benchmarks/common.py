"""Shared helpers of the benchmarks: checkpoints to time on and a machine line."""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from entroprune.checkpoint import ModelSpec, save_checkpoint
from entroprune.data import load_dataset
from entroprune.models import build_model, min_input_size
from entroprune.utils import machine_description

ROOT = Path(__file__).resolve().parents[1]  # the repository


def load_grid(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A grid's settings. A grid with ``base: OTHER.yaml`` (relative to its own folder) takes every setting of
    that grid and overrides the keys it gives itself, so a grid that reruns part of another (the machine
    check, a sweep) keeps its settings by reference instead of by copy, and cannot drift from them."""
    path = Path(path).resolve()
    if path in _seen:
        raise SystemExit(f"{path}: `base` chain loops back to itself ({' -> '.join(p.name for p in _seen)})")
    try:
        grid = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{path}: not a readable grid ({exc})") from None
    if not isinstance(grid, dict):
        raise SystemExit(f"{path}: a grid is a mapping of settings")
    base = grid.pop("base", None)
    if base is None:
        return grid
    return {**load_grid(path.parent / base, (*_seen, path)), **grid}


def timing_checkpoint(model: str, dataset: str = "fashion-mnist", given: str | None = None) -> Path:
    """``given`` if set, else a randomly initialised ``model`` for ``dataset`` (timings only
    depend on shapes, so an untrained network times the same as a trained one)."""
    if given:
        return Path(given)
    data = load_dataset(dataset, min_size=min_input_size(model))
    net = build_model(model, data.num_classes, data.in_channels)
    spec = ModelSpec(model, data.num_classes, data.in_channels, 1.0, dataset, data.mean, data.std,
                     [data.in_channels, *data.image_size])
    path = Path(tempfile.mkdtemp(prefix="entroprune-bench-")) / "model.pt"
    save_checkpoint(path, spec, net)
    return path


FRESH_TIMING = """
import json, sys, torch
from entroprune.api import load_model
from entroprune.latency import RUNTIMES, both_orders, paired_latency
torch.set_num_threads({threads})
nets = [load_model(p)[0].eval() for p in {paths!r}]
_, loaded = load_model({paths!r}[0])
pair = lambda mods, shape: paired_latency(mods, shape, {batch}, RUNTIMES[{backend!r}], {repeats})
shape = tuple(loaded.spec.input_size)
print(json.dumps(both_orders(pair, nets, shape) if {both_orders!r} else pair(nets, shape)))
"""


def fresh_latencies(paths: list[Path], backend: str, batch: int, repeats: int, threads: int,
                    processes: int, both_orders: bool = False) -> list[list[float]]:
    """Latency (ms) of each checkpoint, timed in alternation (first net's median, the others by their
    per-round ratio to it), once in each of ``processes`` fresh processes: a deployment starts fresh, and the
    same nets' latency fraction moves more between processes than within one
    (docs/measurements/latency_noise.md), so one process's timing can land in a slow mode.

    ``both_orders``: the nets are timed once more in reverse order and each net's latency is the geometric
    mean of its two (:func:`entroprune.latency.both_orders`): in alternation the second of two identical nets
    timed up to 2.9% faster, as much as the differences a comparison of pruned nets decides on."""
    code = FRESH_TIMING.format(threads=threads, paths=[str(p) for p in paths], batch=batch, backend=backend,
                               repeats=repeats, both_orders=both_orders)
    return [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]) for _ in range(processes)]


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_page(out: Path, lines: list[str], payload: dict | list) -> None:
    """A benchmark's page (``out``.md, also printed) and its data (``out``.json)."""
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    print("\n".join(lines))


def mean_sd(values: list[float], sign: bool = False) -> str:
    """``mean ± sample std`` of a page's cell (± 0.00 for one value), signed for paired differences."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if sign else ''}.2f} ± {sd:.2f}"


def same_cpu(a: str, b: str) -> bool:
    """Two machine lines of one CPU, cores, torch build and threads; the CPU's family and model, which machine
    lines before them did not give, left out."""
    return re.sub(r" \(family [^)]*\)", "", a or "") == re.sub(r" \(family [^)]*\)", "", b or "")


def arena_reruns(reruns: list[dict], arena: list[dict]) -> tuple[int, int]:
    """Of ``reruns`` (cells that pruned and fine-tuned the arena's uniform policy as the arena does), how many
    the arena ran with the same seed on the same CPU, and how many of those came out at the same accuracy: the
    check that a study's reference cell is the arena's."""
    pairs = [(float(r["test_accuracy"]), float(a["test_accuracy"])) for r in reruns for a in arena
             if a["source"] == "uniform" and a["model"] == r["model"] and float(a["target"]) == float(r["target"])
             and a["seed"] == r["seed"] and same_cpu(a.get("machine", ""), r["machine"])]
    return len(pairs), sum(abs(x - y) < 1e-9 for x, y in pairs)


def pair_study(doc: str, name: str, argv: list[str] | None) -> tuple[argparse.Namespace, dict, list[dict]]:
    """A study over the arena's pairs (``--grid``, ``--pairs``, ``--out`` docs/measurements/NAME.md): its
    arguments, the grid (torch's threads set to the grid's) and the arena's rows."""
    import torch

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--grid", default=str(ROOT / "benchmarks" / "arena.yaml"))
    p.add_argument("--pairs", nargs="+", default=["vgg:0.2", "resnet20:0.2"], help="model:target, the arena's pairs")
    p.add_argument("--out", default=str(ROOT / "docs" / "measurements" / f"{name}.md"))
    args = p.parse_args(argv)
    grid = load_grid(args.grid)
    torch.set_num_threads(grid["threads"])
    return args, grid, read_rows(ROOT / grid["results"])


def pair_heading(model: str, target: str | float, arena: list[dict]) -> list[str]:
    """A study page's section heading for a pair, with the unpruned net's accuracy the arena records."""
    base = next((a["baseline_accuracy"] for a in arena if a["model"] == model
                 and float(a["target"]) == float(target) and a.get("baseline_accuracy")), None)
    return [f"## {model} at {float(target):.0%} of the MACs", "", *([f"Unpruned: {float(base):.2f}%.", ""] if base else [])]


def read_rows(path: Path) -> list[dict]:
    """Rows of a results CSV (none when it does not exist yet)."""
    if not path.exists():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def append_row(path: Path, fields: list[str], row: dict) -> None:
    """Append one row, writing the header first when the file is new; a column added since the file was
    started widens the file once (earlier rows get it empty)."""
    new_file = not path.exists()
    if not new_file:
        with open(path) as fh:
            header = next(csv.reader(fh), [])
        missing = [f for f in fields if f not in header]
        if missing:
            write_rows(path, header + missing, read_rows(path))
        fields = header + missing
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def write_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Replace a CSV with these rows, atomically (a crash leaves the old file)."""
    from entroprune.utils import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def replace_block(path: Path, name: str, body: list[str]) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path`` with ``body``."""
    text = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + begin + "\n".join(body) + end + tail)


__all__ = ["timing_checkpoint", "machine_description", "read_rows", "append_row", "write_rows", "replace_block"]
