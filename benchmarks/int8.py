"""What int8 adds to pruning: a finished run's original and pruned nets exported float and int8 (as `entroprune
export --int8` writes them), their accuracy and their onnxruntime latency against the float original.

    python benchmarks/int8.py RUN_DIR [--processes 3] [--repeats 20] [--out docs/measurements/int8]

RUN_DIR is a finished run (`make run`): its baseline (the checkpoint the run pruned) and its fine-tuned pruned net.
Each is quantised on the run's calibration images and checked on the test split (test accuracy beside the float
net's, top-1 agreement with it). The four ONNX files are then timed by onnxruntime (the session threads torch
uses here) at batch 1 and 64, in alternation round by round, in ``--processes`` fresh processes with glibc's heap
kept, as the run's own latencies are: the float original's median, the others by their median per-round ratio
to it, then the median over the processes. Writes OUT.md and OUT.json. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time, numpy as np, torch
from entroprune.export import onnx_session
from entroprune.latency import keep_heap, relative_medians
torch.set_num_threads({threads})
keep_heap()
sessions = [onnx_session(open(f, "rb").read(), {threads}) for f in {files!r}]
out = {{}}
for batch, repeats in ((1, {repeats} * 3), (64, {repeats})):
    x = np.random.default_rng(0).standard_normal((batch, *{shape!r})).astype(np.float32)
    for s in sessions:
        for _ in range(3):
            s.run(None, {{"input": x}})
    times = [[] for _ in sessions]
    for _ in range(repeats):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, {{"input": x}})
            times[i].append(time.perf_counter() - t0)
    out[f"b{{batch}}"] = [1000 * t for t in relative_medians(times)]
print(json.dumps(out))
"""


def export_all(run_dir: Path, work: Path) -> tuple[list[dict], list[Path], list[int]]:
    """The original and the pruned net, each exported float and int8 into ``work`` (original float, original int8,
    pruned float, pruned int8), with the accuracy the int8 export's check read for both forms."""
    from entroprune.api import export_checkpoint
    from entroprune.checkpoint import load_checkpoint

    pruned = run_dir / "finetuned" / "model.pt"
    read = load_checkpoint(pruned)  # its spec and the original its pruning record names
    original = Path(read.pruning["original"])
    rows, files = [], []
    for name, ckpt in (("original", original), ("pruned", pruned)):
        plain, quantised = work / f"{name}.onnx", work / f"{name}-int8.onnx"
        flt = export_checkpoint(ckpt, plain, "onnx")
        q = export_checkpoint(ckpt, quantised, "onnx", int8=True)
        rows += [{"net": f"{name} float", "bytes": flt["bytes"], "test_accuracy": q["float_test_accuracy"],
                  "agreement_with_float": None},
                 {"net": f"{name} int8", "bytes": q["bytes"], "test_accuracy": q["test_accuracy"],
                  "agreement_with_float": q["agreement"]}]
        files += [plain, quantised]
    return rows, files, list(read.spec.input_size)


def time_all(files: list[Path], shape: list[int], processes: int, repeats: int, threads: int) -> dict[str, list[float]]:
    """Each batch's latencies (ms), the median over fresh processes of each net's time."""
    import statistics

    runs = []
    for _ in range(processes):
        code = CHILD.format(threads=threads, files=[str(f) for f in files], repeats=repeats, shape=tuple(shape))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {b: [statistics.median(r[b][i] for r in runs) for i in range(len(files))] for b in runs[0]}


def page(result: dict) -> str:
    rows, ms = result["rows"], result["ms"]
    lines = [
        "# int8 on top of pruning: the main job's nets quantised",
        "",
        f"Made by `python benchmarks/int8.py {result['run']}` ({result['processes']} fresh processes, "
        f"{result['repeats']} rounds at batch 64, 3x that at batch 1; {result['threads']} thread(s)) on "
        f"{result['machine']}, {result['date']}. What and why: the script's docstring. Each int8 net is what "
        "`entroprune export --int8` writes (QDQ, weights per channel, ranges from the run's calibration images); "
        "accuracy on the test split, agreement: top-1 agreement with the same net in float. Speed-up: against "
        "the float original on onnxruntime, in the same processes.",
        "",
        "| net | file (bytes) | test acc (%) | agreement with float (%) | batch 1 (ms) | batch 64 (ms) | "
        "speed-up b1 | speed-up b64 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        agree = "-" if r["agreement_with_float"] is None else f"{r['agreement_with_float']:.2f}"
        lines.append(f"| {r['net']} | {r['bytes']:,} | {r['test_accuracy']:.2f} | {agree} | {ms['b1'][i]:.3f} | "
                     f"{ms['b64'][i]:.2f} | {ms['b1'][0] / ms['b1'][i]:.2f}x | {ms['b64'][0] / ms['b64'][i]:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from entroprune.utils import machine_description

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "measurements" / "int8")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        rows, files, shape = export_all(args.run_dir, Path(tmp))
        ms = time_all(files, shape, args.processes, args.repeats, args.threads)
    result = {"run": str(args.run_dir), "rows": rows, "ms": ms, "processes": args.processes, "repeats": args.repeats,
              "threads": args.threads, "machine": machine_description(), "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(page(result))
    print(page(result))


if __name__ == "__main__":
    main()
