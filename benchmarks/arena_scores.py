"""Do the re-ranking's scores predict the arena's truth? Spearman over the policies the arena fine-tuned.

    python benchmarks/arena_scores.py [--grid benchmarks/arena.yaml] [--only vgg resnet20]
        [--recovery-seeds 3] [--recovery-steps 40] [--threads 1] [--out docs/measurements/arena_scores.md]

Issue 16 asks for Spearman(score, test accuracy after the main job's fine-tune: 3 epochs with
distillation) for the entropy, accuracy and teacher-agreement scores, before and after recovery. The
arena holds that truth for every policy it fine-tuned: each distinct policy of a pair (any source,
stale rows included) with its mean test accuracy over the seeds it was fine-tuned with. Those are not
random policies but the contenders a search returns (uniform, global, DDPG's with either reward, the
re-ranking's picks), where a score must rank right for the search to beat uniform.

Every policy is scored as the re-ranking scores a candidate (:func:`entroprune.search.rerank.rerank`): a
physically pruned copy of the arena's baseline, BN recalibrated on the search's calibration images,
then the tool's entropy reward (co-occurrence, last spatial layer), the accuracy reward (the search's
validation images: labels) and -KL to the unpruned net's outputs (label-free; the default re-ranking
score), fresh and after ``--recovery-steps`` (the re-ranking's default) on unlabelled training images, averaged
over ``--recovery-seeds`` recovery seeds (the re-ranking's and its confirmation's). Scores are cached
per pair in ``--cache`` (by default ``scores/`` beside the grid's results CSV, tracked in git like the
results: a rerun, on this machine or a clean clone, only scores policies the arena added since; the
cache is of today's recovery and rewards, so a change to either means deleting it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))
from arena import policies_of  # noqa: E402
from common import load_grid, read_rows, write_page  # noqa: E402

from entroprune.api import build_structure, load_data_for_spec, load_model  # noqa: E402
from entroprune.search import SearchConfig  # noqa: E402
from entroprune.search.config import PLAIN_RECOVERY_STEPS  # noqa: E402
from entroprune.search.rerank import CONFIRM_SEED_STEP  # noqa: E402
from entroprune.search.rewards import RewardConfig, RewardEvaluator  # noqa: E402
from entroprune.utils import machine_description  # noqa: E402

SCORES = {"entropy": "-entropy (the paper's reward)", "accuracy": "accuracy (labels: AMC's reward)",
          "kl": "-KL to the unpruned net (label-free; the default re-ranking score)"}


def score_pair(grid: dict, model: str, target: float, policies: list[dict], seeds: int, steps: int,
               cache: Path) -> dict:
    """Each policy's scores, fresh (one reading: no recovery, nothing random) and recovered (mean over seeds)."""
    done = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [p for p in policies if p["key"] not in done]
    if not todo:
        return done
    base = Path((grid.get("baseline_from") or {}).get(model, grid["baselines"])) / model / "model.pt"
    net, ckpt = load_model(base)
    cfg = SearchConfig(importance="l1")  # the ranking the arena's cells were cut with
    data = load_data_for_spec(ckpt.spec, calib_size=None)
    calib = data.normalize(data.calib.x[: cfg.calib_size])
    val = (data.normalize(data.val.x[: cfg.val_size]), data.val.y[: cfg.val_size])
    pool = data.normalize(data.train.x[: cfg.recovery_images])
    structure = build_structure(net, ckpt.spec, cfg.importance)
    # one evaluator per reading for the whole pair, as the re-ranking has: its recovery batches are drawn
    # once from the seed, so every policy recovers on the same ones
    readings = [("fresh", RewardEvaluator(net, structure, RewardConfig(kind="combined"), calib, val))]
    readings += [("recovered", RewardEvaluator(net, structure, RewardConfig(kind="combined", recovery_steps=steps),
                                               calib, val, recovery_images=pool, seed=k * CONFIRM_SEED_STEP))
                 for k in range(seeds)]
    try:
        for p in todo:
            t0 = time.perf_counter()
            counts = structure.policy_counts(p["policy"], grid["round_to"])
            out: dict[str, list[float]] = {}
            for tag, ev in readings:
                res = ev.evaluate(counts, with_accuracy=True)
                for k, v in (("entropy", -res.entropy), ("accuracy", res.accuracy), ("kl", -res.extra["kl"])):
                    out.setdefault(f"{k}_{tag}", []).append(float(v))
            done[p["key"]] = {**{k: statistics.mean(v) for k, v in out.items()}, "seconds": time.perf_counter() - t0}
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(done, indent=1))
            print(f"{model} {target:.0%}: scored {'/'.join(p['sources'])}", flush=True)
    finally:
        for _, ev in readings:
            ev.close()
    return done


def uniform_reading(uniform: dict | None, policy: dict, seed: int | None) -> float | None:
    """Uniform's accuracy to set ``policy``'s truth against: with one seed, uniform fine-tuned with it on the
    machine that gave the policy's reading (another CPU moves a fine-tune about as much as another seed, so
    the arena pairs each cell with its own machine's uniform), else uniform's first reading; over all seeds,
    uniform's mean."""
    if uniform is None:
        return None
    if seed is None:
        return statistics.mean(uniform["acc"].values())
    return uniform["runs"].get((seed, policy["acc_machine"][seed]), uniform["acc"][seed])


def pick(scores: list[float], truth: list[float], uniform: list[float | None]) -> dict:
    """The policy a score ranks first, as a re-ranking over exactly these policies would return it: its
    truth, its rank by the truth (1: the best) and its difference to uniform's (``uniform``: the reading each
    policy is set against, :func:`uniform_reading`)."""
    i = max(range(len(scores)), key=lambda j: scores[j])
    return {"truth": truth[i], "rank": 1 + sum(t > truth[i] for t in truth),
            "vs_uniform": None if uniform[i] is None else truth[i] - uniform[i]}


def pick_cell(p: dict) -> str:
    return f"{p['truth']:.2f}" + ("" if p["vs_uniform"] is None else f" ({p['vs_uniform']:+.2f})") + f", #{p['rank']}"


def main() -> None:
    root = Path(__file__).parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(Path(__file__).parent / "arena.yaml"))
    ap.add_argument("--only", nargs="*", help="restrict to these models")
    ap.add_argument("--recovery-seeds", type=int, default=3)
    ap.add_argument("--min-seeds", type=int, default=1, help="leave out policies fine-tuned with fewer seeds")
    ap.add_argument("--seed", type=int, default=None, help="the truth is the test accuracy with this fine-tune "
                    "seed alone, over the policies fine-tuned with it (the random draws have seed 0 only); "
                    "default: each policy's mean over its seeds")
    ap.add_argument("--recovery-steps", type=int, default=PLAIN_RECOVERY_STEPS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None, help="default: scores/ beside the grid's results CSV")
    ap.add_argument("--out", default=str(root / "docs" / "measurements" / "arena_scores.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.grid)
    rows = read_rows(Path(grid["results"]))
    cache = Path(args.cache) if args.cache else Path(grid["results"]).with_name("scores")
    table, picks, detail, summary = [], [], [], []
    timed: list[float] = []  # each policy's scoring time, kept in the cache (caches from before lack it)
    for model, target in grid["pairs"]:
        if args.only and model not in args.only:
            continue
        target = float(target)
        pols = [p for p in policies_of(rows, model, target)
                if len(p["acc"]) >= args.min_seeds and (args.seed is None or args.seed in p["acc"])]
        if len(pols) < 3:
            continue
        steps = "" if args.recovery_steps == PLAIN_RECOVERY_STEPS else f"-r{args.recovery_steps}"
        scores = score_pair(grid, model, target, pols, args.recovery_seeds, args.recovery_steps,
                            cache / f"{model}-{target}{steps}.json")
        timed += [scores[p["key"]]["seconds"] for p in pols if "seconds" in scores[p["key"]]]
        truth = [p["acc"][args.seed] if args.seed is not None else statistics.mean(p["acc"].values()) for p in pols]
        rho = {}
        for k in SCORES:
            for tag in ("fresh", "recovered"):
                rho[f"{k}_{tag}"] = float(spearmanr([scores[p["key"]][f"{k}_{tag}"] for p in pols], truth).statistic)
        uni = next((p for p in pols if "uniform" in p["sources"]), None)
        uniform = None if uni is None else truth[pols.index(uni)]
        refs = [uniform_reading(uni, p, args.seed) for p in pols]
        chosen = {k: pick([scores[p["key"]][f"{k}_recovered"] for p in pols], truth, refs) for k in SCORES}
        summary.append({"model": model, "target": target, "policies": len(pols), "spearman": rho, "picks": chosen})
        picks.append(f"| {model} {target:.0%} | {len(pols)} | {max(truth):.2f} | "
                     + ("-" if uniform is None else f"{uniform:.2f}") + " | "
                     + " | ".join(pick_cell(chosen[k]) for k in SCORES) + " |")
        table.append(f"| {model} {target:.0%} | {len(pols)} | " + " | ".join(
            f"{rho[f'{k}_fresh']:+.2f} / {rho[f'{k}_recovered']:+.2f}" for k in SCORES) + " |")
        detail += [f"### {model} at {target:.0%}", "",
                   "| policy found by | seeds | test acc (%) | -entropy fresh / recovered | accuracy (%) fresh / recovered "
                   "| -KL fresh / recovered |", "|---|---|---|---|---|---|"]
        for p, acc in sorted(zip(pols, truth, strict=True), key=lambda x: -x[1]):
            s = scores[p["key"]]
            detail.append(f"| {', '.join(p['sources'])} | {len(p['acc'])} | {acc:.2f} | "
                          f"{s['entropy_fresh']:.3f} / {s['entropy_recovered']:.3f} | "
                          f"{100 * s['accuracy_fresh']:.1f} / {100 * s['accuracy_recovered']:.1f} | "
                          f"{s['kl_fresh']:.3f} / {s['kl_recovered']:.3f} |")
        detail.append("")
    echo_flags = ((f" --only {' '.join(args.only)}" if args.only else "")
                  + ("" if args.threads == ap.get_default("threads") else f" --threads {args.threads}")
                + ("" if args.out == ap.get_default("out") else f" --out {os.path.relpath(args.out, root)}"))
    lines = ["# Do the re-ranking's scores predict the fine-tuned model?", "",
             f"Generated by `python benchmarks/arena_scores.py --recovery-seeds {args.recovery_seeds} --recovery-steps "
             f"{args.recovery_steps} --min-seeds "
             f"{args.min_seeds}{'' if args.seed is None else f' --seed {args.seed}'}{echo_flags}` ({sum(timed):.0f} s of scoring for the {len(timed)} policies whose time the cache kept, "
             f"{args.threads} thread(s), {machine_description()}) from `docs/measurements/arena/results.csv`. Per arena pair, every distinct "
             f"policy the arena fine-tuned with at least {args.min_seeds} seed(s)"
             + ("; the truth is its mean test accuracy" if args.seed is None else
                f" and with seed {args.seed}; the truth is its test accuracy with that seed") +
             " after the main job's fine-tune (3 epochs, distillation). Each score as the re-ranking reads it: a "
             "physically pruned copy, BN recalibrated, fresh or after "
             f"{args.recovery_steps} steps of label-free recovery (mean over {args.recovery_seeds} recovery seeds). "
             "Spearman(score, truth), fresh / recovered; few policies per pair, so one swap moves it a lot.", "",
             "| pair | policies | " + " | ".join(SCORES.values()) + " |", "|---|---|" + "---|" * len(SCORES),
             *table, "",
             "What each score picks after recovery: the policy it ranks first among the pair's, as a re-ranking "
             "over exactly these policies would return it; its truth (difference to uniform's"
             + (", fine-tuned with the same seed on the machine that fine-tuned the pick" if args.seed is not None
                else "") + ") and its rank by the truth (#1: the best policy here).", "",
             "| pair | policies | best truth | uniform | " + " | ".join(SCORES.values()) + " |",
             "|---|---|---|---|" + "---|" * len(SCORES), *picks, "", *detail]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_page(Path(args.out), lines, summary)


if __name__ == "__main__":
    main()
