"""Turn the reproduction CSV into docs/results.md (tables, goals, plot).

    python benchmarks/make_results.py [--grid benchmarks/reproduce.yaml] [--out docs/results.md]
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml


def fmt(vals: list[float], digits: int = 2) -> str:
    if not vals:
        return "not run"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f} (1 seed)"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(Path(__file__).with_name("reproduce.yaml")))
    ap.add_argument("--out", default="docs/results.md")
    args = ap.parse_args()
    grid = yaml.safe_load(Path(args.grid).read_text())
    csv_path = Path(grid["out"]) / "results.csv"
    rows = list(csv.DictReader(open(csv_path))) if csv_path.exists() else []
    cell: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        cell[(r["model"], float(r["target"]), r["source"])].append(r)
    total = len(grid["models"]) * len(grid["targets"]) * len(grid["sources"]) * len(grid["seeds"])
    md = ["# Reproduction results", "",
          f"Grid `{args.grid}`: {len(rows)} of {total} cells run. Regenerate with "
          "`python benchmarks/reproduce.py` (resumable) then `python benchmarks/make_results.py`.",
          f"Machine: {rows[0]['machine'] if rows else 'n/a'}. Page made {time.strftime('%Y-%m-%d')}.", ""]
    for model in grid["models"]:
        for target in grid["targets"]:
            md += [f"## {model}, {target:.0%} of the MACs", "",
                   "| source | test acc after fine-tune (%) | drop vs baseline | MACs fraction | params fraction "
                   "| speed-up b64 | search time (s) |", "|---|---|---|---|---|---|---|"]
            for source in grid["sources"]:
                rs = cell.get((model, float(target), source), [])
                acc = [float(r["test_accuracy"]) for r in rs]
                drop = [float(r["baseline_accuracy"]) - float(r["test_accuracy"]) for r in rs]
                md.append(f"| {source} | {fmt(acc)} | {fmt(drop)} | {fmt([float(r['macs_fraction']) for r in rs], 3)} "
                          f"| {fmt([float(r['params_fraction']) for r in rs], 3)} "
                          f"| {fmt([float(r['speedup_torch_b64']) for r in rs])} "
                          f"| {fmt([float(r['search_time_s']) for r in rs], 0)} |")
            md.append("")
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for source in grid["sources"]:
            rs = [r for r in rows if r["source"] == source]
            ax.scatter([float(r["macs_fraction"]) for r in rs],
                       [float(r["test_accuracy"]) - float(r["baseline_accuracy"]) for r in rs], label=source, s=14)
        ax.set_xlabel("MACs fraction kept")
        ax.set_ylabel("accuracy change after fine-tuning (points)")
        ax.legend()
        plot = Path(args.out).with_name("results_accuracy_vs_macs.png")
        fig.savefig(plot, dpi=110, bbox_inches="tight")
        md += [f"![accuracy vs MACs]({plot.name})", ""]
    Path(args.out).write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
