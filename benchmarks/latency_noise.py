"""Why CPU latency with torch swings between runs: one pruned net and its unpruned original, timed in
alternation in several fresh processes, under glibc's default allocator settings and with its heap kept
(no trimming, no mmap for large blocks), through the environment or as entroprune does (``keep_heap``).

    python benchmarks/latency_noise.py [--models vgg mobilenetv2] [--processes 4] [--keep 0.35]

Each process loads the arena's baseline, prunes it to the uniform policy at ``--keep`` (channels rounded
to 8) and times both nets in alternation (torch, batch 64, 21 rounds, median per-round ratio). Writes
docs/measurements/latency_noise.md and .json. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "docs" / "measurements" / "arena" / "baselines"

#: Allocator settings compared: glibc's defaults (entroprune's own :func:`~entroprune.latency.keep_heap` off),
#: the heap kept through glibc's environment variables, and entroprune's default (the heap kept by mallopt).
SETTINGS = {
    "glibc default": ({}, False),
    "heap kept (environment)": ({"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "2000000000"}, False),
    "entroprune (keep_heap)": ({}, True),
}

CHILD = """
import json, sys, torch
import entroprune.latency
from entroprune.api import build_structure, load_model
from entroprune.latency import wall_pair_timer
from entroprune.prune import prune_model
torch.set_num_threads({threads})
entroprune.latency.KEEP_HEAP = {keep_heap}
model, loaded = load_model({ckpt!r})
structure = build_structure(model, loaded.spec)
counts = structure.keep_counts({keep}, 8)
net = prune_model(model, structure, counts)[0].eval()
t = wall_pair_timer({batch}, "torch", {repeats})([model.eval(), net], tuple(loaded.spec.input_size))
print(json.dumps({{"unpruned_ms": t[0] * 1e3, "pruned_ms": t[1] * 1e3,
                   "macs": structure.macs(counts) / structure.total_macs}}))
"""


def run_child(name: str, env_extra: dict[str, str], keep_heap: bool, args: argparse.Namespace) -> dict:
    code = CHILD.format(threads=args.threads, ckpt=str(Path(args.baselines) / name / "model.pt"), keep=args.keep,
                        batch=args.batch, repeats=args.repeats, keep_heap=keep_heap)
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine_description

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vgg", "mobilenetv2"])
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--keep", type=float, default=0.35)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baselines", default=str(BASELINES))
    ap.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "latency_noise"))
    args = ap.parse_args()
    t0, rows = time.perf_counter(), []
    for name in args.models:
        for _ in range(args.processes):  # settings interleaved, so a slow spell of the VM hits both
            for label, (env, keep) in SETTINGS.items():
                r = run_child(name, env, keep, args)
                rows.append({"model": name, "setting": label, **r})
                print(f"{name} {label}: unpruned {r['unpruned_ms']:.1f} ms, pruned {r['pruned_ms']:.1f} ms, "
                      f"fraction {r['pruned_ms'] / r['unpruned_ms']:.3f}", flush=True)
    lines = ["# Latency noise: the same nets timed in fresh processes", "",
             f"Made by `python benchmarks/latency_noise.py{''.join(' ' + a for a in sys.argv[1:])}` on {machine_description(threads=False)}, {args.threads} "
             f"threads, in {time.perf_counter() - t0:.0f} s. Each process: the arena's baseline and its uniform "
             f"policy at keep {args.keep} (channels rounded to 8), timed in alternation (torch, batch {args.batch}, "
             f"{args.repeats} rounds, median per-round ratio); {args.processes} processes per model and setting, "
             "settings interleaved.", "",
             "Settings: *glibc default* (entroprune's `keep_heap` off); *heap kept (environment)*: `"
             + " ".join(f"{k}={v}" for k, v in SETTINGS["heap kept (environment)"][0].items())
             + "` (large blocks stay in the heap instead of fresh mmaps that page-fault on every forward); "
             "*entroprune (keep_heap)*: the same through `mallopt`, what every entroprune timing does.", "",
             "| model | MACs kept | setting | unpruned (ms), min-max | pruned (ms), min-max | latency fraction, min-max |",
             "|---|---|---|---|---|---|"]
    for name in args.models:
        for label in SETTINGS:
            rs = [r for r in rows if r["model"] == name and r["setting"] == label]
            u, p = [r["unpruned_ms"] for r in rs], [r["pruned_ms"] for r in rs]
            f = [r["pruned_ms"] / r["unpruned_ms"] for r in rs]
            lines.append(f"| {name} | {rs[0]['macs']:.1%} | {label} | {min(u):.1f}-{max(u):.1f} | {min(p):.1f}-{max(p):.1f} "
                         f"| {min(f):.3f}-{max(f):.3f} |")
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"settings": {k: {"environment": e, "keep_heap": h} for k, (e, h)
                                                                in SETTINGS.items()}, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
