"""Batch-64 CPU latency of pruned VGGs with and without channel counts rounded to 8.

    python benchmarks/latency_rounding.py [--checkpoint runs/base/model.pt]

Times hand-picked policies at equal MACs (the one the unrounded search found and its
rounded neighbour), with torch and onnxruntime, models timed in alternation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, timing_checkpoint  # noqa: E402

from entroprune.api import build_structure, load_model  # noqa: E402
from entroprune.latency import paired_latency  # noqa: E402
from entroprune.prune import prune_model  # noqa: E402

POLICIES = {"found, unrounded": [14, 9, 53, 33, 26, 40], "rounded to 8": [16, 8, 56, 32, 24, 40]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    model, ckpt = load_model(timing_checkpoint("vgg", given=args.checkpoint))
    s = build_structure(model, ckpt.spec)
    shape = tuple(ckpt.spec.input_size)
    nets = [model] + [prune_model(model, s, c)[0] for c in POLICIES.values()]
    print(f"# {machine_description()}")
    print("| policy (channels per group) | MACs fraction | torch b64 (ms) | ORT b64 (ms) |")
    print("|---|---|---|---|")
    t = paired_latency(nets, shape, 64, "torch", args.repeats)
    o = paired_latency(nets, shape, 64, "ort", args.repeats)
    print(f"| original | 1.000 | {t[0]:.2f} | {o[0]:.2f} |")
    for i, (name, counts) in enumerate(POLICIES.items(), 1):
        print(f"| {name} {counts} | {s.macs(counts) / s.total_macs:.3f} | {t[i]:.2f} | {o[i]:.2f} |")


if __name__ == "__main__":
    main()
