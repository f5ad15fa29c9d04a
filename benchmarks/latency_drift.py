"""Does MobileNetV2's slow mode follow the machine's memory bandwidth? One process times, round after round for
``--minutes``, a large tensor copy (memory bandwidth), the unpruned MobileNetV2 and the unpruned VGG (eager
torch as the tool deploys it, batch 64), and reports how the three move together.

    python benchmarks/latency_drift.py [--minutes 5] [--threads 2]

MobileNetV2 (depthwise convs, 6x expansions) moves far more memory per MAC than VGG; if its slow periods are
the host's memory bandwidth, they show in the copy's bandwidth at the same moments and hardly in VGG's time.
Writes docs/measurements/latency_drift.md and .json. Run it on an idle machine: it measures wall-clock time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from entroprune.api import load_model
from entroprune.export import deployed_eager
from entroprune.latency import keep_heap

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "docs" / "measurements" / "arena" / "baselines"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine_description, median_time, write_page

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--copy-mb", type=int, default=256, help="size of the copied tensor")
    ap.add_argument("--baselines", default=str(BASELINES))
    ap.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "latency_drift"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_heap()
    nets = {}
    for name in ("mobilenetv2", "vgg"):
        model, ckpt = load_model(Path(args.baselines) / name / "model.pt")
        x = torch.randn(64, *ckpt.spec.input_size)
        nets[name] = (deployed_eager(model, x[:2]), x)
    src = torch.ones(args.copy_mb * 2 ** 18)  # float32: 4 bytes each
    dst = torch.empty_like(src)
    rows, t_end = [], time.perf_counter() + 60 * args.minutes
    with torch.no_grad():
        for net, x in nets.values():
            net(x)
        while time.perf_counter() < t_end:
            copy_s = median_time(lambda: dst.copy_(src), 3, warmup=0)
            row = {"t": time.time(), "copy_gb_s": 2 * src.numel() * 4 / copy_s / 1e9}  # read + write
            for name, (net, x) in nets.items():
                row[f"{name}_ms"] = 1000 * median_time(lambda net=net, x=x: net(x), 3, warmup=0)
            rows.append(row)
    cols = ["copy_gb_s", "mobilenetv2_ms", "vgg_ms"]
    data = {c: np.array([r[c] for r in rows]) for c in cols}
    corr = np.corrcoef(np.stack([data[c] for c in cols]))
    slow = data["mobilenetv2_ms"] > 1.5 * np.percentile(data["mobilenetv2_ms"], 10)
    lines = ["# Latency drift: MobileNetV2's slow mode against memory bandwidth", "",
             f"Made by `python benchmarks/latency_drift.py{''.join(' ' + a for a in sys.argv[1:])}` on "
             f"{machine_description(threads=False)}, {args.threads} threads: {len(rows)} rounds over "
             f"{args.minutes:g} minutes in one process, each the median of 3 copies of a {args.copy_mb} MB tensor "
             "(bandwidth counts read and write) and of 3 batch-64 forwards of the unpruned MobileNetV2 and VGG "
             "(eager torch as `deployed_eager` prepares them, glibc's heap kept).", "",
             "| quantity | min | 10th pct | median | 90th pct | max |", "|---|---|---|---|---|---|"]
    for c in cols:
        v = data[c]
        lines.append(f"| {c} | " + " | ".join(f"{q:.2f}" for q in (v.min(), *np.percentile(v, [10, 50, 90]), v.max()))
                     + " |")
    lines += ["", "Correlation between the rounds (Pearson): " + ", ".join(
        f"{cols[i]} ~ {cols[j]} {corr[i, j]:+.2f}" for i in range(3) for j in range(i + 1, 3)) + ".", "",
        f"Slow rounds (MobileNetV2 over 1.5x its 10th percentile): {int(slow.sum())} of {len(rows)}"
        + (f"; in them the copy ran at {np.median(data['copy_gb_s'][slow]):.2f} GB/s (median) against "
           f"{np.median(data['copy_gb_s'][~slow]):.2f} GB/s in the others, VGG at "
           f"{np.median(data['vgg_ms'][slow]):.2f} ms against {np.median(data['vgg_ms'][~slow]):.2f} ms."
           if slow.any() and (~slow).any() else ".")]
    write_page(Path(args.out), lines, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
