"""Which grid cells crushed the layers an entropy reward cannot see, and what that cost.

    python benchmarks/blind_layers.py [--grid benchmarks/reproduce.yaml] [--out docs/measurements/blind_layers.md]

A conv whose output map is 1x1 has constant spatial entropy, so the entropy reward (every
variant, every layer selection) is blind to it: a search picks its keep ratio without any
signal. VGG-16 on 28x28 inputs ends in three such convs. This reads the grid's results CSV and,
for every model with such groups, splits its cells by the smallest keep ratio they gave those
groups, beside their test accuracy after fine-tuning. Nothing is run; the numbers are the grid's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import load_grid, read_rows  # noqa: E402

from entroprune.models import build_model, min_input_size  # noqa: E402
from entroprune.structure import Structure  # noqa: E402


def flat_groups(model: str, width: float, side: int = 28, channels: int = 1) -> list[str]:
    """Groups whose producing conv has a 1x1 output map at this input size."""
    s = max(side, min_input_size(model))
    net = build_model(model, 10, channels, width_mult=width).eval()
    return Structure(net, torch.zeros(1, channels, s, s)).flat_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(Path(__file__).with_name("reproduce.yaml")))
    ap.add_argument("--out", default="docs/measurements/blind_layers.md")
    ap.add_argument("--crushed", type=float, default=0.1, help="a keep ratio at or below this counts as crushed")
    args = ap.parse_args()
    grid = load_grid(args.grid)
    rows = read_rows(Path(grid["results"]))
    widths = grid.get("widths") or {}
    md = ["# Layers the entropy reward cannot see", "",
          f"Made by `python benchmarks/blind_layers.py` on {time.strftime('%Y-%m-%d')} from `{grid['results']}` "
          "(no new runs). A conv with a 1x1 output map has constant spatial entropy: no entropy variant or layer "
          "selection can tell its keep ratios apart. Per model with such convs: each cell's smallest keep ratio "
          f"over them (crushed: <= {args.crushed}) and its test accuracy after the grid's fine-tune.", ""]
    flats = {m: flat_groups(m, float(widths.get(m, 1.0))) for m in grid["models"]}
    clear = [m for m, f in flats.items() if not f]
    if clear:
        md.append(f"No conv with a 1x1 map, nothing the reward cannot see: {', '.join(clear)}.")
    for model, flat in flats.items():
        if not flat:
            continue
        cells = [r for r in rows if r["model"] == model]
        md += ["", f"## {model} (1x1 convs: {', '.join(flat)})", "",
               "| target | source | seed | smallest keep ratio of the 1x1 convs | test accuracy (%) |",
               "|---|---|---|---|---|"]
        split: dict[bool, list[float]] = {True: [], False: []}
        by_source: Counter = Counter()
        for r in sorted(cells, key=lambda r: (-float(r["target"]), r["source"], int(r["seed"]))):
            policy = json.loads(r["policy"])
            low = min(float(policy[g]) for g in flat)
            crushed = low <= args.crushed
            split[crushed].append(float(r["test_accuracy"]))
            by_source[(r["source"], crushed)] += 1
            md.append(f"| {float(r['target']):.0%} | {r['source']} | {r['seed']} | {low:.2f}"
                      f"{' (crushed)' if crushed else ''} | {float(r['test_accuracy']):.2f} |")
        sources = sorted({s for s, _ in by_source})
        md += ["", "| cells | count | test accuracy: min / median / max (%) |", "|---|---|---|"]
        for crushed in (True, False):
            a = split[crushed]
            stats = f"{min(a):.2f} / {np.median(a):.2f} / {max(a):.2f}" if a else "n/a"
            md.append(f"| {'crushed' if crushed else 'not crushed'} | {len(a)} | {stats} |")
        md += ["", "Crushed cells per source: " + ", ".join(
            f"{s} {by_source[(s, True)]} of {by_source[(s, True)] + by_source[(s, False)]}" for s in sources) + "."]
    Path(args.out).write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
