"""What a longer fine-tune buys, and whether pruning in steps beats pruning at once with the same epochs.

The main job prunes once and fine-tunes 3 epochs with distillation (the arena's fine-tune). An engineer who can
afford more training asks what more epochs win back, most at the low end of "5-10x cheaper", where the sweep
loses a point (docs/measurements/sweep.md); and gradual pruning (torch-pruning's ``iterative_steps``, NNI's AGP)
is the field's other habit: cut part of the way, fine-tune, cut again, so that each cut starts from a net that
has recovered and channels are ranked on weights that have adapted.

Variants, each on the arena's uniform policy of a pair (the allocation held fixed) and the arena's baseline:

- ``k1-eE``: prune at once to the policy, then E epochs (``k1-e3`` is the arena's uniform cell);
- ``kK-eE``: K steps, each group's keep ratio r reached along r**(i/K) (rounded as the tool rounds; the last
  step the policy itself), the E epochs split over the steps (the remainder to the last), BatchNorm statistics
  re-estimated after each cut, channels ranked by L1 on the weights of the step before, each step a cosine
  schedule from lr 0.02 with distillation from the unpruned net;
- ``kK-eE-cubic``: the same along AGP's cubic schedule (Zhu & Gupta, 2017: the removed fraction
  (1 - r) * (1 - (1 - i/K)**3)), which cuts most at first and little at the end, so that the last, shortest
  fine-tune has the least to recover;
- ``...-refit``: each cut refits the kept weights by least squares first (``prune --refit``, seed 0 as the
  arena's ``*-refit`` cells); ``...-lrX``: the cosine schedule starts from lr X instead of the grid's. A refitted
  net starts near the unpruned one, and the arena's ``*-refit-norms`` cells (larger effective steps on the
  refitted filters) ended 1.5-3.3 points lower on ResNet-20: does a refitted net want smaller steps, and does
  a plainly cut one?

Resumable: each (pair, variant, seed) cell is a row of the results CSV, skipped when there.

    python benchmarks/finetune_budget.py --pairs vgg:0.1 --variants k1-e3 k1-e6 k1-e10 k3-e3 k3-e6
    python benchmarks/finetune_budget.py --pairs resnet20:0.2 --variants k1-e3 k1-e3-refit k1-e3-refit-lr0.005
    python benchmarks/finetune_budget.py --page-only
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from channel_ranking import uniform_policy  # noqa: E402
from common import append_row, arena_reruns, load_grid, mean_sd, pair_heading, read_rows, write_page  # noqa: E402
from reproduce import ensure_baseline  # noqa: E402

from entroprune.api import build_structure, load_data_for_spec, load_model  # noqa: E402
from entroprune.config import FinetuneConfig  # noqa: E402
from entroprune.prune import prune_model, recalibrate_bn  # noqa: E402
from entroprune.structure import Structure  # noqa: E402
from entroprune.train import TrainConfig, evaluate, train_model  # noqa: E402
from entroprune.utils import machine_description  # noqa: E402

FIELDS = ["model", "target", "variant", "seed", "test_accuracy", "step_accuracies", "macs_fraction",
          "finetune_time_s", "machine", "date"]
#: BatchNorm statistics are re-estimated on the calibration split after each cut and on this many training
#: images after each step's fine-tune, as entroprune's prune and finetune stages do.
FINAL_BN_IMAGES = 2048


def parse_variant(variant: str) -> tuple[int, int, str, bool, float | None]:
    """(steps, epochs, schedule, refit, lr) of ``kK-eE[-cubic][-refit][-lrX]`` (lr None: the grid's)."""
    match = re.fullmatch(r"k(\d+)-e(\d+)(-cubic)?(-refit)?(?:-lr(\d*\.?\d+))?", variant)
    if not match or int(match[1]) < 1 or int(match[2]) < int(match[1]) or (match[5] and float(match[5]) <= 0):
        raise SystemExit(f"variant {variant!r} is not kK-eE[-cubic][-refit][-lrX] with 1 <= K <= E (steps, "
                         "epochs) and X > 0 (the fine-tune's learning rate)")
    return (int(match[1]), int(match[2]), "cubic" if match[3] else "geometric", bool(match[4]),
            float(match[5]) if match[5] else None)


def _ratio(final: float, at: float, schedule: str) -> float:
    """The keep ratio a fraction ``at`` of the way from 1 to ``final``."""
    return final ** at if schedule == "geometric" else 1 - (1 - final) * (1 - (1 - at) ** 3)


def step_counts(structure: Structure, final: np.ndarray, steps: int, round_to: int,
                schedule: str = "geometric") -> list[np.ndarray]:
    """Each step's channels per group: the keep ratio r reached along the schedule, never below the policy's
    count nor above the step before's; the last step is the policy."""
    out, current = [], structure.full_counts()
    for i in range(1, steps + 1):
        if i == steps:
            counts = final.copy()
        else:
            counts = np.array([min(cur, max(int(f), structure.round_group(g, _ratio(f / g.channels, i / steps, schedule),
                                                                          round_to)))
                               for g, f, cur in zip(structure.groups, final, current, strict=True)])
        out.append(counts)
        current = counts
    return out


def run_cell(base: Path, policy: dict[str, float], grid: dict, steps: int, epochs: int, schedule: str,
             refit: bool, lr: float | None, seed: int) -> dict:
    original, ckpt = load_model(base)
    data = load_data_for_spec(ckpt.spec)
    first = build_structure(original, ckpt.spec, "l1")  # the arena's ranking
    final = first.policy_counts(policy, grid["round_to"])
    per = [epochs // steps + (1 if i >= steps - epochs % steps else 0) for i in range(steps)]
    teacher, net = copy.deepcopy(original).eval(), copy.deepcopy(original)
    accuracies, t0 = [], time.perf_counter()
    cuts = step_counts(first, final, steps, grid["round_to"], schedule)
    for i, (counts, n_epochs) in enumerate(zip(cuts, per, strict=True)):
        structure = first if i == 0 else build_structure(net, ckpt.spec, "l1")  # ranked on the weights as they are now
        calib = data.normalize(data.calib.x)
        net, _ = prune_model(net, structure, counts, refit_images=calib if refit else None)
        recalibrate_bn(net, calib)
        config = TrainConfig(epochs=n_epochs, lr=lr or float(grid["finetune_lr"]), batch_size=FinetuneConfig.batch_size,
                             schedule="cosine")
        train_model(net, data, config, seed=seed + 1000 * i, teacher=teacher if grid["finetune_distill"] else None,
                    quiet=True)
        recalibrate_bn(net, data.normalize(data.train.x[:FINAL_BN_IMAGES]))
        accuracies.append(evaluate(net, data.loader("test", 512))["accuracy"])
    return {"test_accuracy": accuracies[-1], "step_accuracies": " ".join(f"{a:.2f}" for a in accuracies),
            "macs_fraction": first.macs(final) / first.total_macs,
            "finetune_time_s": round(time.perf_counter() - t0, 1)}


def run(args: argparse.Namespace) -> None:
    grid = load_grid(args.grid)
    torch.set_num_threads(grid["threads"])
    results = Path(args.results)
    rows = read_rows(results)
    arena = read_rows(ROOT / grid["results"])
    if not args.page_only:
        for pair in args.pairs:
            model, target, uniform = uniform_policy(arena, pair)
            base = ensure_baseline(grid, model) / "model.pt"  # the arena's, tracked in git
            for seed in args.seeds:
                for variant in args.variants:
                    if any(r["model"] == model and float(r["target"]) == target and r["variant"] == variant
                           and int(r["seed"]) == seed for r in rows):
                        continue
                    row = {"model": model, "target": target, "variant": variant, "seed": seed,
                           **run_cell(base, uniform, grid, *parse_variant(variant), seed),
                           "machine": machine_description(), "date": time.strftime("%Y-%m-%d")}
                    append_row(results, FIELDS, row)
                    rows.append({k: str(v) for k, v in row.items()})
                    print(f"{model} {target} {variant} seed {seed}: {row['step_accuracies']}", flush=True)
    write_page(Path(args.out), page(rows, arena, f"k1-e{grid['finetune_epochs']}"), rows)


def _arena_check(rows: list[dict], arena: list[dict], ref: str) -> str:
    """``ref`` is the arena's uniform cell: how many of those run here reproduce the arena's on the same machine."""
    n, same = arena_reruns([r for r in rows if r["variant"] == ref], arena)
    return f"of the {n} {ref} cells the arena ran on the same machine, {same} came out the same"


def _label(variant: str) -> str:
    steps, epochs, schedule, refit, lr = parse_variant(variant)
    return ((f"at once, {epochs} epochs" if steps == 1 else
             f"{steps} steps{' (cubic)' if schedule == 'cubic' else ''}, {epochs} epochs in all")
            + (", refitted" if refit else "") + (f", lr {lr:g}" if lr else ""))


def page(rows: list[dict], arena: list[dict], ref: str) -> list[str]:
    """The page; ``ref`` (the arena's fine-tune, k1-e3) is what every variant is set against."""
    lines = ["# Fine-tune budget: more epochs, or pruning in steps", "",
             "Cells filled by `python benchmarks/finetune_budget.py --pairs P... --variants V...` (resumable: each "
             "cell is a row of `docs/measurements/finetune_budget.csv`); this page by `python "
             "benchmarks/finetune_budget.py --page-only`. What and why: the script's docstring. The allocation is "
             "the arena's uniform policy of each pair, pruned from the arena's baseline; `kK-eE` prunes in K steps "
             f"with E epochs of distilled fine-tuning in all, `-refit` refitting the kept weights at each cut, `-lrX` "
             f"from lr X (`{ref}` is the main job's and the arena's fine-tune: "
             f"{_arena_check(rows, arena, ref)}). Δ {ref}: paired difference to it with the same seed (mean ± std). "
             "Per step: each step's test accuracy after its fine-tune, averaged over the seeds.", ""]
    lines += [f"Machine: {'; '.join(sorted({r['machine'] for r in rows}))}.", ""]
    for model, target in dict.fromkeys((r["model"], r["target"]) for r in rows):
        cells = [r for r in rows if r["model"] == model and r["target"] == target]
        by_seed = {r["seed"]: float(r["test_accuracy"]) for r in cells if r["variant"] == ref}
        lines += [*pair_heading(model, target, arena),
                  f"| variant | | seeds | test acc (%) | Δ {ref} (points) | per step (%) | fine-tune (s) |",
                  "|---|---|---|---|---|---|---|"]
        order = sorted(dict.fromkeys(r["variant"] for r in cells),
                       key=lambda v: (lambda k, e, s, f, lr: (e, k, s, f, lr is not None, -(lr or 0)))(*parse_variant(v)))
        for variant in order:
            rs = [r for r in cells if r["variant"] == variant]
            acc = [float(r["test_accuracy"]) for r in rs]
            diffs = [a - by_seed[r["seed"]] for a, r in zip(acc, rs, strict=True) if r["seed"] in by_seed]
            d = "-" if variant == ref or not diffs else mean_sd(diffs, sign=True)
            steps = np.mean([[float(x) for x in r["step_accuracies"].split()] for r in rs], axis=0)
            secs = statistics.median(float(r["finetune_time_s"]) for r in rs)
            lines.append(f"| {variant} | {_label(variant)} | {len(rs)} | {mean_sd(acc)} | {d} "
                         f"| {' → '.join(f'{s:.2f}' for s in steps)} | {secs:.0f} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default=str(ROOT / "benchmarks" / "arena.yaml"),
                   help="the arena's settings: fine-tune, rounding, baselines and the results holding its uniform policies")
    p.add_argument("--pairs", nargs="+", default=["vgg:0.1"], help="model:target, the arena's pairs")
    p.add_argument("--variants", nargs="+", default=["k1-e3", "k1-e6", "k1-e10", "k3-e3", "k3-e6"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--results", default=str(ROOT / "docs" / "measurements" / "finetune_budget.csv"))
    p.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "finetune_budget.md"))
    p.add_argument("--page-only", action="store_true", help="write the page from the results, run nothing")
    args = p.parse_args(argv)
    for variant in args.variants:
        parse_variant(variant)
    run(args)


if __name__ == "__main__":
    main()
