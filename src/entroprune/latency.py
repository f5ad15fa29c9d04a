"""CPU latency of models timed in alternation, and the reductions and speed-ups derived from it."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn as nn


def _runner(model: nn.Module, shape: tuple[int, ...], batch: int, runtime: str):
    """A zero-argument callable running one forward of ``batch`` images on ``runtime``."""
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    if runtime == "torch":
        model = model.cpu().eval()

        def run():
            with torch.no_grad():
                model(x)
        return run
    from .export import onnx_bytes, onnx_session

    sess = onnx_session(onnx_bytes(model.cpu().eval(), torch.zeros(1, *shape)), torch.get_num_threads())
    feed = {"input": x.numpy()}
    return lambda: sess.run(None, feed)


def paired_latency(models: list[nn.Module], shape: tuple[int, ...], batch: int, runtime: str = "torch",
                   repeats: int = 20, warmup: int = 3) -> list[float]:
    """Median wall time (ms) of one forward per model, timed in alternation.

    Alternating the models round by round exposes them to the same machine load, so the
    ratio between them (the speed-up) stays stable even when absolute timings drift.
    """
    runs = [_runner(m, shape, batch, runtime) for m in models]
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            run()
            times[i].append(time.perf_counter() - t0)
    return [1000 * statistics.median(t) for t in times]


def latency_rows(models: list[nn.Module], shape: tuple[int, ...], repeats: int = 20) -> list[dict[str, float]]:
    """Batch-1 and batch-64 CPU latency with torch and onnxruntime, models timed in alternation."""
    rows: list[dict[str, float]] = [{} for _ in models]
    for runtime in ("torch", "ort"):
        for batch, reps in ((1, repeats * 3), (64, repeats)):
            for row, ms in zip(rows, paired_latency(models, shape, batch, runtime, reps), strict=True):
                row[f"{runtime}_b{batch}_ms"] = ms
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reductions and speed-ups of every row against the first (the original)."""
    base = rows[0]
    for row in rows[1:]:
        row["macs_reduction"] = base["macs"] / row["macs"]
        row["params_reduction"] = base["params"] / row["params"]
        for key in ("torch_b1_ms", "torch_b64_ms", "ort_b1_ms", "ort_b64_ms"):
            if key in row and key in base:
                row[f"speedup_{key.removesuffix('_ms')}"] = base[key] / row[key]
        if "speedup_torch_b64" in row:
            row["speedup_vs_macs_b64"] = row["speedup_torch_b64"] / row["macs_reduction"]
            row["ort_speedup_vs_macs_b64"] = row["speedup_ort_b64"] / row["macs_reduction"]
    return rows


__all__ = ["paired_latency", "latency_rows", "add_ratios"]
