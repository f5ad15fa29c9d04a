"""Which channels a layer keeps: does the ranking matter after the main job's fine-tune? (issue 16)

The arena compares allocations (how many channels each group keeps) and finds little room above the uniform
allocation: the best allocation of any pair is worth about +0.2-0.3 points after the main job's 3-epoch
distilled fine-tune (docs/arena.md). The other half of a pruning policy is *which* channels each group keeps;
the tool ranks them by the L1 norm of their weights (torch-pruning's own default is L2). This study holds the
allocation fixed (the arena's uniform policy of a pair) and changes only the ranking:

- ``l1``: the tool's ranking (the arena's uniform cell, re-run here as a check that it reproduces);
- ``random``: a seeded random ranking, the floor any ranking should beat;
- ``bn``: the magnitude of the group's BatchNorm scales (Network Slimming's criterion);
- ``activation``: the mean post-ReLU activation of the group's channels on the calibration images
  (label-free, data-driven);
- ``l2``: the L2 norm of the weights (the tool's other ranking, ``--importance l2``);
- ``taylor``: first-order Taylor (Molchanov et al., ICLR 2017): the loss change when a channel's activation
  is zeroed, |activation x gradient| summed over the calibration images, with the net's own top-1 as the
  target, so no label is read.
- ``l2-plain``: L2 in groups one conv produces (a plain chain's), L1 in groups several convs share (a
  residual stream) or a depthwise conv is in: L2 won on the three VGG pairs, whose groups are all plain, and
  lost on ResNet-20 and MobileNetV2, whose streams and depthwise groups are not.

Every pruned net gets the arena's fine-tune (3 epochs, distillation, lr 0.02) with the given seeds, and the
page gives each ranking's test accuracy and its paired difference to ``l1`` (same seed). Resumable: each
(pair, ranking, seed) cell is one row of the results CSV and is skipped when there.

    python benchmarks/channel_ranking.py --pairs vgg:0.1 vgg:0.2 --rankings l1 l2 --seeds 0 1 2
    python benchmarks/channel_ranking.py --page-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import append_row, arena_reruns, load_grid, mean_sd, pair_heading, read_rows, write_page  # noqa: E402
from reproduce import ensure_baseline  # noqa: E402

import entroprune.api as api  # noqa: E402
from entroprune.api import evaluate_checkpoint, finetune_checkpoint, load_data_for_spec, load_model  # noqa: E402
from entroprune.search.config import PLAIN_RECOVERY_STEPS  # noqa: E402
from entroprune.structure import plain_group  # noqa: E402
from entroprune.utils import machine_description  # noqa: E402

RANKINGS = ("l1", "random", "bn", "activation", "l2", "taylor", "l2-plain")
FIELDS = ["model", "target", "ranking", "seed", "accuracy_before_finetune", "test_accuracy", "macs_fraction",
          "finetune_time_s", "machine", "date", "from_arena"]


def uniform_policy(arena: list[dict], pair: str) -> tuple[str, float, dict[str, float]]:
    """A ``model:target`` pair's model, target and the arena's uniform keep ratios for it (every seed's)."""
    model, target = pair.split(":")[0], float(pair.split(":")[1])
    row = next(r for r in arena if r["model"] == model and float(r["target"]) == target and r["source"] == "uniform")
    return model, target, json.loads(row["policy"])


def bn_members(structure, group, mods: dict) -> list[tuple[nn.BatchNorm2d, list[int]]]:
    return [(mods[n], idxs) for n, idxs in group.member_idxs.items() if isinstance(mods.get(n), nn.BatchNorm2d)]


def rank_orders(model: nn.Module, structure, ranking: str, calib: torch.Tensor, seed: int) -> dict[str, list[int]]:
    """Each group's channel positions, best first, under ``ranking`` (``l1``: the structure's own)."""
    mods = dict(model.named_modules())
    orders: dict[str, list[int]] = {}
    if ranking == "activation":
        sums: dict[nn.Module, torch.Tensor] = {}
        hooks = [m.register_forward_hook(lambda mod, i, o: sums.__setitem__(
            mod, sums.get(mod, 0) + torch.relu(o).mean(dim=(0, 2, 3)) * o.shape[0]))
            for g in structure.groups for m, _ in bn_members(structure, g, mods)]
        model.eval()
        with torch.no_grad():
            for x in calib.split(256):
                model(x)
        for h in hooks:
            h.remove()
    elif ranking == "taylor":
        sums = taylor_scores(model, [m for g in structure.groups for m, _ in bn_members(structure, g, mods)], calib)
    gen = torch.Generator().manual_seed(1000 + seed)
    for g in structure.groups:
        if ranking in ("l1", "l2") or g.step != 1:  # l2: the structure is built with it
            orders[g.name] = list(g.order)
            continue
        if ranking == "random":
            orders[g.name] = torch.randperm(g.channels, generator=gen).tolist()
            continue
        score = torch.zeros(g.channels, dtype=torch.float64)
        for bn, idxs in bn_members(structure, g, mods):
            per = bn.weight.detach().abs() if ranking == "bn" else sums[bn]  # activation or taylor
            score += per.double()[idxs]
        if not bn_members(structure, g, mods):  # no BN in the group: the tool's ranking
            orders[g.name] = list(g.order)
            continue
        orders[g.name] = torch.argsort(score, descending=True).tolist()
    return orders


def taylor_scores(model: nn.Module, layers: list[nn.Module], calib: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """|activation x gradient| per image and channel of each layer's output, summed over the calibration
    images; the loss is the cross-entropy against the net's own top-1, so no label is read."""
    outs: dict[nn.Module, torch.Tensor] = {}
    sums: dict[nn.Module, torch.Tensor] = {}

    def keep(mod: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        out.retain_grad()
        outs[mod] = out
        return out.clone()  # the net goes on with a copy, which an in-place ReLU may overwrite

    hooks = [m.register_forward_hook(keep) for m in layers]
    model.eval()
    for x in calib.split(256):
        logits = model(x)
        nn.functional.cross_entropy(logits, logits.argmax(1).detach()).backward()
        for m, o in outs.items():
            sums[m] = sums.get(m, 0) + (o * o.grad).sum(dim=(2, 3)).abs().sum(0).detach()
        model.zero_grad()
    for h in hooks:
        h.remove()
    return sums


def ranked_structure(model: nn.Module, spec, ranking: str, calib: torch.Tensor, seed: int, ignored=()):
    """The structure `prune` builds, with every group's channel order replaced by ``ranking``'s."""
    structure = api.build_structure(model, spec, "l2" if ranking == "l2" else "l1", ignored)
    if ranking == "l2-plain":  # L2 where one conv produces the group's channels, L1 where several are coupled
        l2 = {g.name: g.order for g in api.build_structure(model, spec, "l2", ignored).groups}
        mods = dict(model.named_modules())
        orders = {g.name: l2[g.name] if plain_group(g, mods) else g.order for g in structure.groups}
    else:
        orders = rank_orders(model, structure, ranking, calib, seed)
    for g in structure.groups:
        g.order = orders[g.name]
    return structure


def prune_ranked(base: Path, policy: dict, out: Path, ranking: str, seed: int) -> None:
    """prune_checkpoint with the groups' channel order replaced by ``ranking``'s."""
    model, ckpt = load_model(base)
    data = load_data_for_spec(ckpt.spec)
    orders = {g.name: g.order for g in ranked_structure(model, ckpt.spec, ranking, data.normalize(data.calib.x),
                                                         seed).groups}
    build = api.build_structure

    def build_ranked(m, spec, importance="l1", ignored=()):
        structure = build(m, spec, importance, ignored)  # on prune_checkpoint's own load of the same net
        for g in structure.groups:
            g.order = orders[g.name]
        return structure

    api.build_structure = build_ranked
    try:
        api.prune_checkpoint(base, policy, out, force=True, refit=False)  # rankings of plain cuts
    finally:
        api.build_structure = build


def score_rankings(grid: dict, arena_rows: list[dict], pairs: list[str], rankings: list[str], out: Path) -> None:
    """The default re-ranking's score of each ranking's pruned net (the pair's uniform allocation): minus the
    KL to the unpruned net on the search's calibration images, fresh and after the search's label-free
    recovery, read by the search's own RewardEvaluator with the re-ranking's settings (seed 0, as the main
    job's search reads its candidates). Can the search tell the rankings apart?"""
    from arena import search_config

    from entroprune.search.rewards import RewardEvaluator

    scores = json.loads(out.read_text()) if out.exists() else {}
    for pair in pairs:
        model_name, target, uniform = uniform_policy(arena_rows, pair)
        cfg = search_config(grid, model_name, target, "default", 0)
        net, ckpt = load_model(ensure_baseline(grid, model_name) / "model.pt")
        data = load_data_for_spec(ckpt.spec)
        calib = data.normalize(data.calib.x[: cfg.calib_size])
        pool = data.normalize(data.train.x[: cfg.recovery_images])
        for ranking in rankings:
            key = f"{model_name}:{target}:{ranking}"
            if key in scores:
                continue
            # ranked on the whole calibration split, as prune_ranked ranks the fine-tuned cells' nets
            structure = ranked_structure(net, ckpt.spec, ranking, data.normalize(data.calib.x), 0, cfg.ignored_layers)
            counts = structure.keep_counts(uniform, grid["round_to"])
            read = {}
            for name, steps in (("fresh_kl", 0), ("recovered_kl", PLAIN_RECOVERY_STEPS)):
                ev = RewardEvaluator(net, structure, replace(cfg.rerank_reward_config(), recovery_steps=steps, refit=False),
                                     calib, None, recovery_images=pool, seed=0)
                try:
                    read[name] = -ev.evaluate(counts).reward  # the kl reward is minus the KL
                finally:
                    ev.close()
            scores[key] = read
            out.write_text(json.dumps(scores, indent=1) + "\n")
            print(f"{key}: KL fresh {read['fresh_kl']:.3f}, recovered {read['recovered_kl']:.3f}", flush=True)


def run(args: argparse.Namespace) -> None:
    grid = load_grid(args.grid)
    torch.set_num_threads(grid["threads"])
    results = Path(args.results)
    rows = read_rows(results)
    arena = read_rows(ROOT / grid["results"])
    if args.scores:
        score_rankings(grid, arena, args.pairs, args.rankings, results.with_name("channel_ranking_scores.json"))
        return
    score_file = results.with_name("channel_ranking_scores.json")
    scores = json.loads(score_file.read_text()) if score_file.exists() else None
    if args.page_only:
        write_page(Path(args.out), page(rows, arena, scores), rows)
        return
    for pair in args.pairs:
        model, target, uniform = uniform_policy(arena, pair)
        policy = {"policy": uniform, "round_to": grid["round_to"]}
        base = ensure_baseline(grid, model) / "model.pt"  # the arena's, tracked in git
        for seed in args.seeds:  # seed-major: every ranking's first reading comes early
            for ranking in args.rankings:
                if any(r["model"] == model and float(r["target"]) == target and r["ranking"] == ranking
                       and int(r["seed"]) == seed for r in rows):
                    continue
                same = [r for r in arena if r["model"] == model and float(r["target"]) == target
                        and r["source"] == "uniform" and int(r["seed"]) == seed
                        and r.get("machine") == machine_description()]
                if ranking == "l1" and args.l1_from_arena and same:  # the same cell, already fine-tuned
                    row = {k: same[0][k] for k in FIELDS if k in same[0]} | {"ranking": "l1", "from_arena": "yes"}
                    append_row(results, FIELDS, row)
                    rows.append(row)
                    continue
                cell = Path(args.work) / f"{model}-{target}-{ranking}-s{seed}"
                torch.manual_seed(seed)
                prune_ranked(base, policy, cell / "pruned", ranking, seed)
                ft = finetune_checkpoint(cell / "pruned" / "model.pt", cell / "finetuned",
                                         epochs=grid["finetune_epochs"], lr=float(grid["finetune_lr"]),
                                         distill=grid["finetune_distill"], seed=seed, quiet=True, force=True)
                ev = evaluate_checkpoint(cell / "finetuned" / "model.pt")
                row = {"model": model, "target": target, "ranking": ranking, "seed": seed,
                       "accuracy_before_finetune": ft["test_accuracy_before"],
                       "test_accuracy": ev[1]["test_accuracy"], "macs_fraction": ev[1]["macs"] / ev[0]["macs"],
                       "finetune_time_s": round(ft["finetune_time_s"], 1), "machine": machine_description(),
                       "date": time.strftime("%Y-%m-%d")}
                append_row(results, FIELDS, row)
                rows.append({k: str(v) for k, v in row.items()})
                print(f"{model} {target} {ranking} seed {seed}: {row['accuracy_before_finetune']:.2f} -> "
                      f"{row['test_accuracy']:.2f}", flush=True)
    write_page(Path(args.out), page(rows, arena, scores), rows)


def reruns(rows: list[dict], arena: list[dict]) -> str:
    """The check that taking the arena's cell is taking this one (:func:`common.arena_reruns`)."""
    n, same = arena_reruns([r for r in rows if r["ranking"] == "l1" and not r.get("from_arena")], arena)
    return f"of the {n} l1 cells this script ran that the arena has too, {same} came out the same"


def page(rows: list[dict], arena: list[dict], scores: dict | None = None) -> list[str]:
    lines = ["# Which channels a group keeps: the ranking under the main job's fine-tune", "",
             "Cells filled by `python benchmarks/channel_ranking.py --pairs P... --rankings R...` (resumable: each "
             "cell is a row of `docs/measurements/channel_ranking.csv`, skipped when there); this page written from "
             "those rows by `python benchmarks/channel_ranking.py --page-only`. What and why: the script's "
             "docstring. l1 cells marked * are the arena's uniform cells of that seed (`--l1-from-arena`: the "
             f"same pruned net and fine-tune on the same machine; {reruns(rows, arena)}). The allocation is the arena's uniform policy of each pair; only the channels each group keeps change. "
             "Δ l1: paired difference to the tool's L1 ranking with the same fine-tune seed (mean ± std over "
             "the seeds). KL fresh / recovered: the default re-ranking's score of each ranking's net, read as "
             "`entroprune search` reads a candidate (its RewardEvaluator: the net pruned, BatchNorm statistics "
             "recalibrated, KL to the unpruned net on the search's 256 calibration images), right after pruning "
             "and after the re-ranking's 40 label-free recovery steps (seed 0); lower reads better; `--scores`.", ""]
    machines = sorted({r["machine"] for r in rows})
    lines += [f"Machine: {'; '.join(machines)}.", ""]
    for model, target in dict.fromkeys((r["model"], r["target"]) for r in rows):
        cells = [r for r in rows if r["model"] == model and r["target"] == target]
        ref = {r["seed"]: float(r["test_accuracy"]) for r in cells if r["ranking"] == "l1"}
        lines += [*pair_heading(model, target, arena),
                  "| ranking | seeds | before fine-tune (%) | test acc (%) | Δ l1 (points) | KL fresh | KL recovered |",
                  "|---|---|---|---|---|---|---|"]
        for ranking in dict.fromkeys(r["ranking"] for r in cells):
            rs = [r for r in cells if r["ranking"] == ranking]
            acc = [float(r["test_accuracy"]) for r in rs]
            before = statistics.mean(float(r["accuracy_before_finetune"]) for r in rs)
            diffs = [float(r["test_accuracy"]) - ref[r["seed"]] for r in rs if r["seed"] in ref]
            d = "-" if ranking == "l1" or not diffs else mean_sd(diffs, sign=True)
            star = "*" if any(r.get("from_arena") for r in rs) else ""
            sc = (scores or {}).get(f"{model}:{float(target)}:{ranking}")
            kl = f"{sc['fresh_kl']:.3f} | {sc['recovered_kl']:.3f}" if sc else "- | -"
            lines.append(f"| {ranking}{star} | {len(rs)} | {before:.1f} | {mean_sd(acc)} | {d} "
                         f"| {kl} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default=str(ROOT / "benchmarks" / "arena.yaml"),
                   help="the arena's settings: fine-tune, rounding, baselines and the results holding its uniform policies")
    p.add_argument("--pairs", nargs="+", default=["vgg:0.1", "vgg:0.2"], help="model:target, the arena's pairs")
    p.add_argument("--rankings", nargs="+", default=list(RANKINGS), choices=RANKINGS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--work", default=str(ROOT / "runs" / "channel_ranking"), help="per-cell folders (not tracked)")
    p.add_argument("--results", default=str(ROOT / "docs" / "measurements" / "channel_ranking.csv"))
    p.add_argument("--l1-from-arena", action="store_true",
                   help="take l1 from the arena's uniform cell of the same seed fine-tuned on this machine (the same "
                        "pruned net and fine-tune: deterministic on one machine) instead of fine-tuning it again")
    p.add_argument("--scores", action="store_true",
                   help="score each ranking's pruned net as the default re-ranking would (KL to the unpruned net, "
                        "fresh and after recovery) into channel_ranking_scores.json beside the results; no fine-tune")
    p.add_argument("--page-only", action="store_true", help="rewrite the page from the results CSV, run nothing")
    p.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "channel_ranking.md"))
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
