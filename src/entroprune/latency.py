"""CPU latency of models timed in alternation, and the reductions and speed-ups derived from it."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .settings import BACKENDS, FRESH_PROCESSES, RUNTIMES, LatencyConfig, in_fresh
from .structure import CONVS, ROOTS

#: How reports and benchmark pages name each runtime (by column prefix).
RUNTIME_NAMES = {"torch": "torch eager", "ts": "TorchScript", "ort": "onnxruntime"}


def ratio_key(runtime: str) -> str:
    """The row key of a runtime's batch-64 speed-up over MACs reduction; torch's keeps its historic unprefixed
    name (reports and results CSVs read it)."""
    return "speedup_vs_macs_b64" if runtime == "torch" else f"{runtime}_speedup_vs_macs_b64"


def _runner(model: nn.Module, shape: tuple[int, ...], batch: int, runtime: str):
    """A zero-argument callable running one forward of ``batch`` images on ``runtime``."""
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    if runtime in ("torch", "ts"):
        from .export import deployed_eager, deployed_torchscript

        # traced at the timed batch (a trace can fix it); the eager check needs only a few inputs
        if runtime == "ts":
            model = deployed_torchscript(model, x)
        else:
            model = deployed_eager(model, x[:2]) if DEPLOY_EAGER else model.cpu().eval()

        def run():
            with torch.no_grad():
                model(x)
        return run
    from .export import onnx_bytes, onnx_session

    sess = onnx_session(onnx_bytes(model.cpu().eval(), torch.zeros(1, *shape)), torch.get_num_threads())
    feed = {"input": x.numpy()}
    return lambda: sess.run(None, feed)


#: Time eager torch as :func:`entroprune.export.deployed_eager` prepares a net. Off only to measure what that
#: changes (benchmarks/latency_deploy.py).
DEPLOY_EAGER = True


#: Keep glibc's heap before timing (:func:`keep_heap`). Off only to measure what it changes
#: (benchmarks/latency_noise.py).
KEEP_HEAP = True


def keep_heap() -> bool:
    """Make glibc keep freed memory in its heap for the rest of the process (no trimming, no fresh mmap for
    large blocks). Under its default, adaptive settings a batch-64 forward's large activations may be
    mmapped and page-faulted anew on every call, depending on the process's history: the same unpruned
    net's torch latency then differs up to 2.5x between processes, and speed-ups with it
    (docs/measurements/latency_noise.md). The cost is memory the process does not give back. Returns
    whether the settings took (False off glibc, or with :data:`KEEP_HEAP` off)."""
    if not KEEP_HEAP:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # M_TRIM_THRESHOLD (-1) and M_MMAP_THRESHOLD (-3); setting them also stops glibc adapting them
        return bool(libc.mallopt(-1, ctypes.c_int(2_000_000_000)) and libc.mallopt(-3, ctypes.c_int(1_000_000_000)))
    except (OSError, AttributeError):
        return False


def paired_latency(models: list[nn.Module], shape: tuple[int, ...], batch: int, runtime: str = "torch",
                   repeats: int = 20, warmup: int = 3) -> list[float]:
    """Wall time (ms) of one forward per model, timed in alternation with glibc's heap kept
    (:func:`keep_heap`): the first model's median, the others as the first's median times their median
    per-round ratio to it (:func:`relative_medians`).

    Alternating the models round by round exposes them to the same machine load, so the
    ratio between them (the speed-up) stays stable even when absolute timings drift.
    """
    keep_heap()
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
    return [1000 * t for t in relative_medians(times)]


def relative_medians(times: list[list[float]]) -> list[float]:
    """The first list's median, and each other list's median ratio to it round by round, times that median.

    On a shared VM the machine's speed moves in phases longer than a round: a ratio of two medians can
    pair one model's fast phase with the other's slow one, the median of per-round ratios cannot.
    """
    first = statistics.median(times[0])
    return [first] + [first * statistics.median(t / f for t, f in zip(ts, times[0], strict=True))
                      for ts in times[1:]]


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(wall clock, CPU seconds every process spent, CPU seconds this one and its waited-for children spent), or
    None where /proc/stat cannot be read (not Linux)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    t = os.times()
    return (time.monotonic(), (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
            t.user + t.system + t.children_user + t.children_system)


@contextlib.contextmanager
def others_busy() -> Iterator[dict[str, float | None]]:
    """How many cores other processes kept busy, on average, while the block ran (``cores``; None where it cannot
    be read): latencies timed beside them are not this machine's."""
    out: dict[str, float | None] = {"cores": None}
    start = _cpu_seconds()
    yield out
    end = _cpu_seconds()
    if start and end and end[0] > start[0]:
        out["cores"] = max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


def latency_rows(models: list[nn.Module], shape: tuple[int, ...], repeats: int = 20,
                 processes: int = FRESH_PROCESSES) -> list[dict[str, Any]]:
    """Batch-1 and batch-64 CPU latency with torch (eager and TorchScript) and onnxruntime, models timed in
    alternation.

    In ``processes`` new Python processes with this one's thread count, as a deployment starts (what ran
    before in a process, training or large evaluation batches, can move a net's latency between modes):
    the first model's median over them, the others by their median ratio to it (:func:`relative_medians`).
    ``processes=0``, or models whose classes another process cannot import (defined in a script or an
    interactive session), are timed in this process; ``latency_processes`` in each row says how many fresh
    ones timed it (0: this one).
    """
    with others_busy() as busy:
        rows = _latency_rows(models, shape, repeats, processes)
    for row in rows:  # None where it cannot be read
        row["others_busy_cores"] = None if busy["cores"] is None else round(busy["cores"], 3)
    return rows


def _latency_rows(models: list[nn.Module], shape: tuple[int, ...], repeats: int, processes: int
                  ) -> list[dict[str, Any]]:
    runs = _in_fresh_processes({"job": "rows", "models": models, "shape": list(shape), "repeats": repeats},
                               processes) if processes else None
    if runs:
        keys = [k for k in runs[0][0] if k.endswith("_ms")]
        cols = {k: relative_medians([[r[i][k] for r in runs] for i in range(len(models))]) for k in keys}
        return [{**{k: cols[k][i] for k in keys}, "latency_processes": processes, "eager_deployed": DEPLOY_EAGER}
                for i in range(len(models))]
    rows: list[dict[str, Any]] = [{"latency_processes": 0, "eager_deployed": DEPLOY_EAGER} for _ in models]
    for runtime in RUNTIMES.values():
        for batch, reps in ((1, repeats * 3), (64, repeats)):
            for row, ms in zip(rows, paired_latency(models, shape, batch, runtime, reps), strict=True):
                row[f"{runtime}_b{batch}_ms"] = ms
    return rows


def fresh_pair_times(models: list[nn.Module], shape: tuple[int, ...], batch: int, backend: str, repeats: int,
                     processes: int = FRESH_PROCESSES, beside_first: bool = False) -> list[list[float]] | None:
    """Each of ``processes`` new processes' :func:`both_orders` timing (s) of ``models`` on ``backend``: a
    comparison timed as a deployment starts, not in a long-running search process (there, a MobileNetV2 net
    widened by free channels read 1.2% faster than the pick on a confirming timing, and 0.5-3.8% slower in
    each of five fresh processes: docs/measurements/latency_target_mobilenetv2_fit2.md). None when the models
    cannot travel to another process (see :func:`latency_rows`).

    ``beside_first``: each later model timed in alternation with the first alone, one pair after another (its
    time: its ratio to the first times the first's median over the pairs), as two nets are compared; many
    MobileNetV2 nets alternated together read their latency fractions up to a third off the pairs'."""
    return _in_fresh_processes({"job": "pair", "models": models, "shape": list(shape), "repeats": repeats,
                                "batch": batch, "backend": backend, "beside_first": beside_first}, processes)


def _fresh_job(job: dict[str, Any]) -> Any:
    """What a fresh process computes for :func:`_in_fresh_processes`."""
    shape, models = tuple(job["shape"]), job["models"]
    if job["job"] == "rows":
        return latency_rows(models, shape, job["repeats"], processes=0)
    pair = wall_pair_timer(job["batch"], job["backend"], job["repeats"])
    if not job.get("beside_first"):
        return both_orders(pair, models, shape)
    pairs = [both_orders(pair, [models[0], m], shape) for m in models[1:]]
    first = float(np.median([p[0] for p in pairs]))
    return [first, *(first * p[1] / p[0] for p in pairs)]


_FRESH_CHILD = """
import json, sys, torch
from entroprune.latency import _fresh_job
torch.set_num_threads(int(sys.argv[2]))
job = torch.load(sys.argv[1], weights_only=False)  # written by the parent a moment ago, in its own temp folder
print(json.dumps(_fresh_job(job)))
"""


def _in_fresh_processes(job: dict[str, Any], processes: int) -> list[Any] | None:
    """:func:`_fresh_job` run by ``processes`` new interpreters in turn (``python -c``, not multiprocessing's
    spawn, which would re-run the caller's script), from one saved copy of the job's models; None when the
    models cannot be pickled here or a process fails (classes it cannot import)."""
    import json
    import pickle
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    runs = []
    with tempfile.TemporaryDirectory(prefix="entroprune-latency-") as tmp:
        path = Path(tmp) / "job.pt"
        try:
            # copies: .cpu() moves a module in place, and the caller's (a search's, maybe on a GPU) stays put
            torch.save({**job, "models": [copy.deepcopy(m).cpu() for m in job["models"]]}, path)
        except (pickle.PicklingError, AttributeError, TypeError):
            return None
        for _ in range(processes):
            proc = subprocess.run([sys.executable, "-c", _FRESH_CHILD, str(path), str(torch.get_num_threads())],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                return None
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reductions and speed-ups of every row against the first (the original)."""
    base = rows[0]
    for row in rows[1:]:
        row["macs_reduction"] = base["macs"] / row["macs"]
        row["params_reduction"] = base["params"] / row["params"]
        for runtime in RUNTIMES.values():
            for batch in (1, 64):
                key = f"{runtime}_b{batch}_ms"
                if key in row and key in base:
                    row[f"speedup_{runtime}_b{batch}"] = base[key] / row[key]
            if f"speedup_{runtime}_b64" in row:
                row[ratio_key(runtime)] = row[f"speedup_{runtime}_b64"] / row["macs_reduction"]
    return rows


# ----------------------------------------------------------------------------- latency model
# MACs are a proxy: two policies of equal MACs can differ 2x in time (channel counts that suit the
# kernels, memory-bound layers). The model below predicts a pruned net's measured latency from its
# channel counts, NetAdapt/HALP style: each conv or linear layer timed alone over a grid of input and
# output channel counts and interpolated, the rest of the net (norms, activations, pooling, overhead)
# fitted on whole pruned nets. Queries are vectorised, so the search's action wall can ask it per step.


@dataclass
class LayerShape:
    """A conv or linear layer's channel counts as affine functions of the groups' kept counts; a 1-D conv's
    kernel, stride, padding and map sizes are 1-tuples, a 3-D conv's 3-tuples."""

    name: str
    kind: str  # conv, convT or linear
    in_full: int
    out_full: int
    in_coef: np.ndarray  # channels of the layer's input removed per channel removed from each group
    out_coef: np.ndarray
    kernel: tuple[int, ...] = (1, 1)
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    groups: int = 1  # grouped convs keep their group count; depthwise ones follow their channels
    depthwise: bool = False
    in_hw: tuple[int, ...] = (1, 1)
    out_hw: tuple[int, ...] = (1, 1)

    def channels(self, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(in, out) channel counts for rows of channels removed per group."""
        cin = np.maximum(1, np.rint(self.in_full - removed @ self.in_coef)).astype(int)
        cout = np.maximum(1, np.rint(self.out_full - removed @ self.out_coef)).astype(int)
        return cin, cout

    def out_elements(self, cout: np.ndarray) -> np.ndarray:
        """Output values per image: what the norms and activations after the layer touch."""
        return cout * float(math.prod(self.out_hw))


def layer_shapes(model: nn.Module, structure: Any) -> list[LayerShape]:
    """Every conv and linear layer with the groups that set its channels, found by pruning each group
    alone by half on a copy and reading the layers' new channel counts."""
    from .prune import apply_physical
    from .utils import forward_with_hooks

    model = copy.deepcopy(model).cpu().eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, ROOTS)}
    hw: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(name: str, inp: tuple, out: torch.Tensor) -> None:
        def size(t: torch.Tensor) -> tuple[int, ...]:
            # a conv's map (a 1-D conv's length, a 3-D conv's volume); a Linear's only on a 4-D input
            conv_map = isinstance(layers[name], CONVS) and t.dim() > 2
            return tuple(int(d) for d in t.shape[2:]) if conv_map or t.dim() == 4 else (1, 1)

        hw.setdefault(name, (size(inp[0]), size(out)))

    forward_with_hooks(model, structure.example_input,
                       [(m, lambda mod, inp, out, n=n: record(n, inp, out)) for n, m in layers.items()])
    n_groups = len(structure.groups)
    coef = {n: (np.zeros(n_groups), np.zeros(n_groups)) for n in layers}
    for j, g in enumerate(structure.groups):
        keep = max(g.step, (g.channels // 2) // g.step * g.step)
        if keep >= g.channels:
            continue
        pruned = copy.deepcopy(model)
        apply_physical(pruned, structure, {g.name: keep})
        mods = dict(pruned.named_modules())
        for n, m in layers.items():
            cin, cout = _io(mods[n])
            coef[n][0][j] = (_io(m)[0] - cin) / (g.channels - keep)
            coef[n][1][j] = (_io(m)[1] - cout) / (g.channels - keep)
    shapes = []
    for n, m in layers.items():
        cin, cout = _io(m)
        conv = isinstance(m, CONVS)
        shapes.append(LayerShape(
            n, "linear" if not conv else ("convT" if isinstance(m, nn.modules.conv._ConvTransposeNd) else "conv"),
            cin, cout,
            coef[n][0], coef[n][1], **({} if not conv else {
                "kernel": tuple(m.kernel_size), "stride": tuple(m.stride), "padding": tuple(m.padding),
                "groups": m.groups, "depthwise": m.groups > 1 and m.groups == cin}),
            in_hw=hw.get(n, ((1, 1), (1, 1)))[0], out_hw=hw.get(n, ((1, 1), (1, 1)))[1]))
    return shapes


def _io(m: nn.Module) -> tuple[int, int]:
    return (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)


def build_layer(shape: LayerShape, cin: int, cout: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The layer alone at these channel counts, and the shape of one input (without the batch)."""
    if shape.kind == "linear":
        return nn.Linear(cin, cout), (cin,)
    groups = cin if shape.depthwise else shape.groups
    if shape.depthwise:
        cout = cin
    classes = {1: (nn.Conv1d, nn.ConvTranspose1d), 2: (nn.Conv2d, nn.ConvTranspose2d),
               3: (nn.Conv3d, nn.ConvTranspose3d)}[len(shape.kernel)]
    cls = classes[shape.kind == "convT"]
    return cls(cin, cout, shape.kernel, shape.stride, shape.padding, groups=groups), (cin, *shape.in_hw)


# A timer: (module, input shape without the batch) -> seconds per forward of the configured batch.
Timer = Callable[[nn.Module, tuple[int, ...]], float]


# A paired timer: (modules, input shape) -> seconds per forward of each, timed in alternation.
PairTimer = Callable[[list[nn.Module], tuple[int, ...]], list[float]]


# A fresh-process timer: (modules, input shape) -> one paired timing per new process, or None where the modules
# cannot travel to another process.
FreshTimer = Callable[[list[nn.Module], tuple[int, ...]], list[list[float]] | None]


def wall_timer(batch: int, backend: str = LatencyConfig.backend, repeats: int = LatencyConfig.repeats,
               warmup: int = 2) -> Timer:
    """Median wall time of one forward of ``batch`` inputs on ``backend`` (one of :data:`BACKENDS`)."""
    pair = wall_pair_timer(batch, backend, repeats, warmup)
    return lambda module, shape: pair([module], shape)[0]


def wall_pair_timer(batch: int, backend: str = LatencyConfig.backend, repeats: int = LatencyConfig.repeats,
                    warmup: int = 2) -> PairTimer:
    """Like :func:`wall_timer` for several modules, timed round by round in alternation, so that machine
    load drifts alike for all of them (on a shared 2-core VM one net's median moved 30% between calls)."""
    runtime = RUNTIMES[backend]

    def timer(modules: list[nn.Module], shape: tuple[int, ...]) -> list[float]:
        return [ms / 1000 for ms in paired_latency(modules, shape, batch, runtime, repeats, warmup)]
    return timer


def fresh_timer(batch: int, backend: str = LatencyConfig.backend, repeats: int = LatencyConfig.repeats,
                processes: int = LatencyConfig.processes) -> FreshTimer | None:
    """:func:`fresh_pair_times` with these settings, each net beside the first alone (None for ``processes=0``:
    time in this process)."""
    if processes == 0:
        return None
    return lambda modules, shape: fresh_pair_times(modules, shape, batch, backend, repeats, processes,
                                                   beside_first=True)


def both_orders(pair: PairTimer, modules: list[nn.Module], shape: tuple[int, ...]) -> list[float]:
    """Each module's time from ``pair`` in the given order and in reverse (geometric mean of the two): in
    alternation the second of two identical VGG nets timed 0.6-2.9% faster in each of five processes
    (docs/method.md, "Latency targets"), as much as the differences between pruned nets being compared."""
    fwd = pair(modules, shape)
    back = pair(modules[::-1], shape)[::-1]
    return [float(np.sqrt(a * b)) for a, b in zip(fwd, back, strict=True)]


def _grid(lo: int, hi: int, points: int, step: int) -> np.ndarray:
    """Up to ``points`` channel counts from lo to hi (multiples of ``step``), ends included."""
    vals = np.rint(np.linspace(lo, hi, points) / step).astype(int) * step
    return np.unique(np.clip(vals, max(step, lo // step * step), hi))


def _interp2(x: np.ndarray, y: np.ndarray, gx: np.ndarray, gy: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``table`` (gx by gy) at the points (x, y); linear beyond the grid's ends."""
    def weights(v, g):
        if len(g) == 1:
            return np.zeros(len(v), int), np.zeros(len(v))
        i = np.clip(np.searchsorted(g, v) - 1, 0, len(g) - 2)
        return i, (v - g[i]) / (g[i + 1] - g[i])
    ix, tx = weights(x.astype(float), gx)
    iy, ty = weights(y.astype(float), gy)
    jx, jy = np.minimum(ix + 1, len(gx) - 1), np.minimum(iy + 1, len(gy) - 1)
    return ((1 - tx) * (1 - ty) * table[ix, iy] + tx * (1 - ty) * table[jx, iy]
            + (1 - tx) * ty * table[ix, jy] + tx * ty * table[jx, jy])


@dataclass
class LatencyModel:
    """Predicted latency (seconds per batch) of a pruned net from its groups' kept counts.

    ``coef`` weighs the summed layer tables, the output values the norms and activations touch
    (a fraction of the unpruned net's), and a constant: fitted on whole pruned nets.
    """

    layers: list[LayerShape]
    grids: list[tuple[np.ndarray, np.ndarray]]
    tables: list[np.ndarray]
    full_counts: np.ndarray
    coef: np.ndarray
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        self._full_elems = max(1.0, sum(float(s.out_elements(np.array([s.out_full]))[0]) for s in self.layers))

    def features(self, counts: np.ndarray) -> np.ndarray:
        """Rows of (summed layer time, output-values fraction, 1) for rows of counts."""
        counts = np.atleast_2d(np.asarray(counts, dtype=float))
        removed = self.full_counts - counts
        total, elems = np.zeros(len(counts)), np.zeros(len(counts))
        for shape, (gx, gy), table in zip(self.layers, self.grids, self.tables, strict=True):
            cin, cout = shape.channels(removed)
            total += _interp2(cin, cin if shape.depthwise else cout, gx, gy, table)
            elems += shape.out_elements(cout)
        return np.stack([total, elems / self._full_elems, np.ones(len(counts))], 1)

    def predict(self, counts: np.ndarray) -> np.ndarray:
        """Seconds per batch for each row of counts."""
        return self.features(counts) @ self.coef

    def fraction(self, counts: np.ndarray) -> np.ndarray:
        """Predicted latency relative to the unpruned net's."""
        pred = self.predict(np.vstack([self.full_counts, np.atleast_2d(counts)]))  # one pass, the wall's hot path
        return pred[1:] / pred[0]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(s).items()}
                           for s in self.layers],
                "grids": [[gx.tolist(), gy.tolist()] for gx, gy in self.grids],
                "tables": [t.tolist() for t in self.tables], "full_counts": self.full_counts.tolist(),
                "coef": self.coef.tolist(), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyModel:
        layers = [LayerShape(**{k: np.array(v, dtype=float) if k.endswith("_coef") else
                                (tuple(v) if isinstance(v, list) else v) for k, v in layer.items()})
                  for layer in d["layers"]]
        return cls(layers, [(np.array(gx), np.array(gy)) for gx, gy in d["grids"]],
                   [np.array(t) for t in d["tables"]], np.array(d["full_counts"]), np.array(d["coef"]), d["meta"])


def _tables(shapes: list[LayerShape], lo: np.ndarray, full: np.ndarray, timer: Timer, points: int,
            round_to: int = 1) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray], int]:
    """Each layer timed alone over a grid of its channel counts, from the search's floor to full, at
    multiples of the search's rounding (kernels often work in blocks of channels: between two rounded
    counts the time is then close to linear); layers of one configuration are timed once. Returns the
    grids, the tables and the timings made."""
    grids, tables, seen = [], [], {}
    removed = np.stack([full - lo, np.zeros_like(full)]).astype(float)
    for shape in shapes:
        cins, couts = shape.channels(removed)
        cin_lo, cout_lo = cins[0], couts[0]
        step = math.lcm(round_to, 1 if shape.depthwise else shape.groups)
        gx = _grid(int(cin_lo), shape.in_full, points, step)
        gy = np.array([shape.out_full]) if shape.depthwise else _grid(int(cout_lo), shape.out_full, points, step)
        table = np.zeros((len(gx), len(gy)))
        for i, cin in enumerate(gx):
            for j, cout in enumerate(gy):
                layer, inp = build_layer(shape, int(cin), int(cout))
                key = (type(layer).__name__, inp, int(cout), shape.kernel, shape.stride, shape.padding,
                       layer.groups if hasattr(layer, "groups") else 1)
                if key not in seen:
                    seen[key] = timer(layer.eval(), inp)
                table[i, j] = seen[key]
        grids.append((gx.astype(float), gy.astype(float)))
        tables.append(table)
    return grids, tables, len(seen)


def _random_counts(structure: Any, lo: np.ndarray, rng: np.random.Generator, round_to: int) -> np.ndarray:
    counts = structure.keep_counts(rng.uniform(0.05, 1.0, len(structure.groups)), round_to)
    return np.maximum(counts, lo)


def measured_fraction(model: nn.Module, structure: Any, counts: np.ndarray, pair: PairTimer) -> float:
    """The pruned net's latency relative to the unpruned one's, both timed in alternation (drift cancels)."""
    from .prune import prune_model

    t_full, t_net = pair([model.eval(), prune_model(model, structure, counts)[0].eval()],
                         tuple(structure.example_input.shape[1:]))
    return t_net / t_full


def fresh_fractions(model: nn.Module, structure: Any, rows: list[np.ndarray],
                    fresh: FreshTimer) -> tuple[np.ndarray, int] | None:
    """Each row's pruned net's latency relative to the unpruned one's, timed beside it in each of ``fresh``'s
    new processes, the median over the processes kept, and how many processes timed them; None where the
    nets cannot travel."""
    from .prune import prune_model

    nets = [prune_model(model, structure, c)[0].eval() for c in rows]
    runs = fresh([model.eval(), *nets], tuple(structure.example_input.shape[1:]))
    if not runs:
        return None
    return np.median([[t / run[0] for t in run[1:]] for run in runs], axis=0), len(runs)


def whole_fractions(model: nn.Module, structure: Any, rows: list[np.ndarray], measure: Callable[[np.ndarray], float],
                    fresh: FreshTimer | None = None) -> tuple[np.ndarray, int]:
    """Each row's pruned net's latency fraction: by :func:`fresh_fractions` where ``fresh`` is given and the
    nets can travel, else one at a time by ``measure`` in this process; and how many fresh processes timed
    them (0: this one)."""
    timed = fresh_fractions(model, structure, rows, fresh) if fresh is not None else None
    return timed or (np.array([measure(c) for c in rows]), 0)


def fit_latency_model(model: nn.Module, structure: Any, lo_counts: np.ndarray, timer: Timer,
                      points: int = LatencyConfig.points, calibration: int = LatencyConfig.calibration,
                      held_out: int = LatencyConfig.held_out, round_to: int = 1, seed: int = 0,
                      meta: dict[str, Any] | None = None, pair: PairTimer | None = None,
                      fresh: FreshTimer | None = None) -> tuple[LatencyModel, dict[str, Any]]:
    """Fit the latency model and measure its own error on ``held_out`` random policies it never saw.

    ``lo_counts``: the smallest counts the search may choose (its floor). With ``pair``, each whole pruned
    net is timed in alternation with the unpruned one and taken as that ratio times the unpruned net's
    latency (drift cancels). With ``fresh`` (:func:`fresh_timer`), the whole nets, calibration and held-out
    alike, are timed so in new processes instead, as the result will be measured; where they cannot travel
    there, in this one. Returns the model and a report (cost, timings made, median and worst relative error
    on the held-out policies, ``fit_processes``: how many fresh processes timed the whole nets, 0 for this
    one).
    """
    from scipy.optimize import lsq_linear

    from .prune import prune_model

    t0 = time.perf_counter()
    full = structure.full_counts()
    lo = np.minimum(np.asarray(lo_counts, dtype=int), full)
    shapes = layer_shapes(model, structure)
    heap_kept = keep_heap()  # the allocator regime every timing below runs under, recorded with the model
    grids, tables, timings = _tables(shapes, lo, full, timer, points, round_to)
    lm = LatencyModel(shapes, grids, tables, full, np.array([1.0, 0.0, 0.0]), {**(meta or {}), "heap_kept": heap_kept})
    rng = np.random.default_rng(seed)
    shape = tuple(structure.example_input.shape[1:])

    base = model.eval()
    full_s = timer(base, shape)

    def measure(counts: np.ndarray) -> float:
        """The pruned net's latency as a fraction of the unpruned net's."""
        if pair is None:
            return timer(prune_model(model, structure, counts)[0].eval(), shape) / full_s
        return measured_fraction(base, structure, counts, pair)

    fit_rows = [full, lo, *(_random_counts(structure, lo, rng, round_to) for _ in range(calibration))]
    test_rows = [_random_counts(structure, lo, rng, round_to) for _ in range(held_out)]
    whole, processes = whole_fractions(base, structure, fit_rows[1:] + test_rows, measure, fresh)
    fit_y = full_s * np.concatenate([[1.0], whole[:len(fit_rows) - 1]])
    test_y = whole[len(fit_rows) - 1:]
    feats = lm.features(np.array(fit_rows))
    # Least squares with the layer tables' and the output values' weights kept >= 0 (time does not fall as
    # a net grows; the two features move together, so free weights fit noise with opposite signs), the
    # constant free to go negative: each layer timed alone carries the fixed cost of a forward call,
    # which the whole net pays once.
    lm.coef = lsq_linear(feats, fit_y, bounds=([0, 0, -np.inf], [np.inf, np.inf, np.inf])).x
    if lm.coef[0] <= 0 and lm.coef[1] <= 0:  # nothing left to scale with the net: the layer sum alone
        lm.coef = np.array([float(np.mean(fit_y / feats[:, 0])), 0.0, 0.0])
    # The error is on latency fractions, the quantity a latency target bounds, each measured in
    # alternation with the unpruned net (an absolute time would carry the drift since ``full_s``).
    errors = np.abs(lm.fraction(np.array(test_rows)) / test_y - 1) if held_out else np.zeros(0)
    report = {"fit_time_s": time.perf_counter() - t0, "layers": len(shapes), "layer_timings": timings,
              "calibration_policies": len(fit_rows), "held_out_policies": held_out,
              "median_error": float(np.median(errors)) if held_out else None,
              "max_error": float(errors.max()) if held_out else None,
              "full_latency_s": float(fit_y[0]), "coef": lm.coef.tolist(), "heap_kept": heap_kept,
              "fit_processes": processes,
              "held_out": [{"counts": [int(c) for c in row], "measured_fraction": float(y)}
                           for row, y in zip(test_rows, test_y, strict=True)]}
    lm.meta["report"] = report
    return lm, report


#: Channel steps the rounding choice tries (kernels vectorise over blocks of 4, 8 or 16 channels).
ROUNDING_STEPS = (1, 2, 4, 8, 16, 32)


def choose_rounding(model: nn.Module, structure: Any, policies: dict[int, np.ndarray], pair: PairTimer,
                    tie: float = 0.05) -> dict[str, Any]:
    """The channel step that makes pruning pay most on this backend: each step's policy (the search's
    :func:`~entroprune.search.policies.uniform_policies`: the uniform policy at one MACs target, rounded to that
    step) timed in alternation with the unpruned net. The measured speed-up per MACs reduction (1.0: time
    falls as fast as the MACs) decides; the smallest step within ``tie`` of the best wins, since a finer step
    leaves the search more policies."""
    from .errors import ConfigError

    if not policies:
        raise ConfigError("no channel step to try: every group is narrower than the smallest step")
    base = model.cpu().eval()
    rows = []
    for step, counts in sorted(policies.items()):
        macs = structure.macs(counts) / structure.total_macs
        speedup = 1 / measured_fraction(base, structure, counts, pair)
        rows.append({"round_to": int(step), "macs_fraction": float(macs), "speedup": float(speedup),
                     "efficiency": float(speedup * macs), "counts": [int(c) for c in counts]})
    best = max(r["efficiency"] for r in rows)
    chosen = min(r["round_to"] for r in rows if r["efficiency"] >= (1 - tie) * best)
    return {"round_to": chosen, "rows": rows, "tie": tie}


__all__ = ["paired_latency", "relative_medians", "keep_heap", "latency_rows", "add_ratios", "LayerShape", "LatencyModel", "LatencyConfig", "BACKENDS", "RUNTIMES", "RUNTIME_NAMES", "ratio_key", "FRESH_PROCESSES",
           "fresh_pair_times", "fresh_timer", "fresh_fractions", "whole_fractions", "in_fresh",
           "layer_shapes", "build_layer", "wall_timer", "wall_pair_timer", "fit_latency_model", "measured_fraction",
           "choose_rounding", "ROUNDING_STEPS"]
