"""Run the reproduction grid: search -> prune -> fine-tune -> evaluate per cell, resumable.

    python benchmarks/reproduce.py [--grid benchmarks/reproduce.yaml] [--only vgg] [--max-cells N]

Each finished cell appends one row to ``<out>/results.csv``; rerunning skips the cells
already there, so the grid may run in several parts. ``make_results.py`` turns the CSV
into docs/results.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
import yaml

from entroprune.api import (
    evaluate_checkpoint,
    finetune_checkpoint,
    machine_description,
    prune_checkpoint,
    search_checkpoint,
    train_baseline,
)
from entroprune.rewards import RewardConfig
from entroprune.search import SearchConfig

FIELDS = ["model", "target", "source", "seed", "baseline_accuracy", "accuracy_before_finetune", "test_accuracy",
          "macs_fraction", "params_fraction", "speedup_torch_b64", "search_time_s", "finetune_time_s",
          "search_reward", "policy", "machine", "date"]
SOURCES = {"entropy": ("ddpg", "entropy"), "accuracy": ("ddpg", "accuracy"), "uniform": ("uniform", "entropy"),
           "random": ("random", "accuracy")}  # random: best of N by validation accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(Path(__file__).with_name("reproduce.yaml")))
    ap.add_argument("--only", nargs="*", default=None, help="restrict to these models")
    ap.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    args = ap.parse_args()
    grid = yaml.safe_load(Path(args.grid).read_text())
    out = Path(grid["out"])
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    done = set()
    if csv_path.exists():
        with open(csv_path) as fh:
            done = {(r["model"], float(r["target"]), r["source"], int(r["seed"])) for r in csv.DictReader(fh)}
    cells = [(m, float(t), s, int(seed)) for m in grid["models"] for t in grid["targets"]
             for s in grid["sources"] for seed in grid["seeds"]]
    if args.only:
        cells = [c for c in cells if c[0] in args.only]
    todo = [c for c in cells if c not in done]
    print(f"{len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run")
    new = 0
    for model, target, source, seed in todo:
        if args.max_cells is not None and new >= args.max_cells:
            break
        base = out / "baselines" / model
        if not (base / "model.pt").exists():
            print(f"training baseline {model}")
            train_baseline(model, grid["dataset"], base, epochs=grid["baseline_epochs"], seed=0, quiet=True)
        baseline_acc = json.loads((base / "metrics.json").read_text())["test_accuracy"]
        cell = out / "cells" / f"{model}-{target}-{source}-s{seed}"
        agent, reward = SOURCES[source]
        cfg = SearchConfig(flops_target=target, agent=agent, episodes=grid["search_episodes"], seed=seed,
                           warmup=grid["warmup"], min_keep=grid["min_keep"], round_to=grid["round_to"],
                           reward=RewardConfig(kind=reward))
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        res = search_checkpoint(base / "model.pt", cell / "search", cfg, quiet=True, force=True)
        search_time = time.perf_counter() - t0
        prune_checkpoint(base / "model.pt", cell / "search" / "policy.json", cell / "pruned", force=True)
        ft = finetune_checkpoint(cell / "pruned" / "model.pt", cell / "finetuned", epochs=grid["finetune_epochs"],
                                 distill=grid["finetune_distill"], seed=seed, quiet=True, force=True)
        rows = evaluate_checkpoint(cell / "finetuned" / "model.pt", latency=True, repeats=grid["latency_repeats"])
        row = {"model": model, "target": target, "source": source, "seed": seed, "baseline_accuracy": baseline_acc,
               "accuracy_before_finetune": ft["test_accuracy_before"], "test_accuracy": rows[1]["test_accuracy"],
               "macs_fraction": rows[1]["macs"] / rows[0]["macs"], "params_fraction": rows[1]["params"] / rows[0]["params"],
               "speedup_torch_b64": rows[1]["speedup_torch_b64"], "search_time_s": search_time,
               "finetune_time_s": ft["finetune_time_s"], "search_reward": res.reward, "policy": json.dumps(res.policy),
               "machine": machine_description(), "date": time.strftime("%Y-%m-%d")}
        new_file = not csv_path.exists()
        with open(csv_path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        new += 1
        print(f"{model} {target} {source} seed {seed}: {row['test_accuracy']:.2f}% (baseline {baseline_acc:.2f}%), "
              f"{row['macs_fraction']:.1%} MACs, search {search_time:.0f} s")


if __name__ == "__main__":
    main()
