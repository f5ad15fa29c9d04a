"""Prune for measured latency: does a latency-targeted search hit its target, and is its model at least as
good as a MACs-targeted one of the same measured latency?

    python benchmarks/latency_target.py [--models vgg mobilenetv2] [--target 0.25] [--backend torch]
        [--batch 64] [--episodes 300] [--finetune-epochs 3] [--seed 0] [--finetune-seeds 0 1 2]
        [--match-tolerance 0.03] [--match-rounds 4] [--work runs/latency_target]
        [--out docs/measurements/latency_target.md]

``--target`` takes one value per model where one target does not suit all (MobileNetV2's smallest policy
keeps 26.5% of its latency at batch 64 with torch: a 25% target is refused as unreachable).

Per model (the arena's baselines, Fashion-MNIST): (1) ``search --latency-target T --macs-target 1`` fits a
latency model on this machine and searches under it; (2) the MACs target whose uniform policy the same
latency model predicts at the same latency is found by bisection, and the tool's default MACs search runs at
it; (3) the unpruned net and both pruned nets are timed in alternation, in ``--processes`` fresh processes
(the median kept: the same nets' latency fraction moves more between processes than within one,
docs/measurements/latency_noise.md); (4) MACs searches aimed at the latency-targeted net's *measured* latency,
each timed beside it in the same fresh processes and re-aimed by the gap still measured, until the two time within
``--match-tolerance`` (at most ``--match-rounds``); (5) the latency-targeted net and both MACs-targeted ones get the
main job's fine-tune (3 epochs, distillation) with every ``--finetune-seeds``. Every
step is skipped when its output exists, so an interrupted run continues. Run it on an idle machine: it measures wall-clock latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from entroprune.api import (
    build_structure,
    finetune_checkpoint,
    load_model,
    prune_checkpoint,
    search_checkpoint,
)
from entroprune.latency import LatencyModel
from entroprune.search import SearchConfig, fixed_policy_counts, uniform_ratio
from entroprune.utils import machine_description

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import fresh_latencies  # noqa: E402

BASELINES = ROOT / "docs" / "measurements" / "arena" / "baselines"


def matching_macs_target(structure, lm: LatencyModel, latency: float, min_keep: float, round_to: int) -> float:
    """The MACs target whose uniform policy the latency model predicts at ``latency`` (bisection)."""
    def predicted(m: float) -> float:
        cfg = SearchConfig(macs_target=m, min_keep=min_keep, round_to=round_to)
        counts = fixed_policy_counts(structure, cfg, [uniform_ratio(structure, cfg)] * len(structure.groups))[0]
        return float(lm.fraction(np.asarray(counts)[None])[0])

    floor = structure.macs(structure.keep_counts(min_keep, round_to))
    lo, hi = floor / structure.total_macs + 1e-6, 1.0  # below the floor no target is reachable
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predicted(mid) < latency else (lo, mid)
    return round(lo, 4)


def step(path: Path, make) -> dict:
    """``make()``'s result, cached in ``path`` (a JSON file) so a rerun continues where it stopped."""
    if path.exists():
        return json.loads(path.read_text())
    res = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    return res


def run_model(name: str, target: float, args: argparse.Namespace) -> dict:
    baselines = Path(args.baselines)
    ckpt = baselines / name / "model.pt"
    work = Path(args.work) / name
    base = dict(min_keep=args.min_keep, round_to=args.round_to, seed=args.seed, episodes=args.episodes,
                warmup=min(SearchConfig.warmup, args.episodes // 3), latency_backend=args.backend,
                latency_batch=args.batch)

    def search(kind: str, cfg: SearchConfig) -> dict:
        t0 = time.perf_counter()
        res = search_checkpoint(ckpt, work / kind / "search", cfg, force=True, quiet=args.quiet)
        prune_checkpoint(ckpt, work / kind / "search" / "policy.json", work / kind / "pruned", force=True)
        return {"achieved": res.achieved, "chosen": res.summary.get("chosen"), "round_to": res.summary["config"]["round_to"],
                "predicted_latency": res.summary.get("latency_fraction"),
                "search_time_s": time.perf_counter() - t0}

    def latency_search() -> dict:
        res = search("latency", SearchConfig(macs_target=1.0, latency_target=target, **base))
        return {**res, "latency_model": json.loads((work / "latency" / "search" / "latency_model.json").read_text())}

    lat = step(work / "latency" / "step.json", latency_search)
    lm = LatencyModel.from_dict(lat["latency_model"])
    model, loaded = load_model(ckpt)
    structure = build_structure(model, loaded.spec)
    macs_target = matching_macs_target(structure, lm, lat["predicted_latency"], args.min_keep, args.round_to)
    mac = step(work / "macs" / "step.json", lambda: {**search("macs", SearchConfig(macs_target=macs_target, **base)),
                                                      "macs_target": macs_target})

    def fractions(kinds: list[str]) -> tuple[list[float], float, list[list[float]]]:
        """Each pruned net's latency as a fraction of the unpruned one's, timed in alternation in each of
        ``--processes`` fresh processes: the median per net, and every process's fractions."""
        runs = fresh_latencies([ckpt] + [work / k / "pruned" / "model.pt" for k in kinds], args.backend, args.batch,
                               args.repeats, args.threads, args.processes)
        per = [[t / ms[0] for t in ms[1:]] for ms in runs]
        return [float(np.median(col)) for col in zip(*per, strict=True)], float(np.median([ms[0] for ms in runs])), per

    def timing() -> dict:
        (lat_f, macs_f), unpruned, per = fractions(["latency", "macs"])
        return {"latency_fraction": lat_f, "macs_latency_fraction": macs_f, "per_process": per,
                "unpruned_ms": unpruned, "repeats": args.repeats, "threads": args.threads}

    measured = step(work / "timing.json", timing)

    def finetuned(kind: str, seed: int) -> float:
        return step(work / kind / f"finetune-s{seed}.json", lambda: finetune_checkpoint(
            work / kind / "pruned" / "model.pt", work / kind / f"finetuned-s{seed}", epochs=args.finetune_epochs,
            distill=True, seed=seed, force=True, quiet=args.quiet)["test_accuracy"])

    def matched_round(k: int, goal: float) -> dict:
        """One MACs-targeted search aimed at ``goal`` (in the latency model's predicted units), timed beside the
        latency-targeted net in the same fresh processes."""
        kind, macs_target = f"macs-matched-{k}", matching_macs_target(structure, lm, goal, args.min_keep, args.round_to)
        res = step(work / kind / "step.json", lambda: {
            **search(kind, SearchConfig(macs_target=macs_target, **base)), "macs_target": macs_target, "goal": goal})

        def timed() -> dict:
            (lat_f, matched_f), _, per = fractions(["latency", kind])
            return {"latency_fraction": lat_f, "matched_fraction": matched_f, "per_process": per}
        return {**res, "kind": kind, "measured": step(work / kind / "timing.json", timed)}

    def gap(r: dict) -> float:
        """The latency-targeted net's measured latency minus the round's net's, relative to the former."""
        m = r["measured"]
        return (m["latency_fraction"] - m["matched_fraction"]) / m["latency_fraction"]

    # The MACs-targeted policy of the latency-targeted net's *measured* latency: the first goal shifts the
    # bisection's by the first MACs-targeted net's measured-minus-predicted gap; each further round shifts it by
    # the gap still measured, until the two nets time within --match-tolerance of each other (a search's policy
    # moves with its target in steps, so a round can overshoot); the closest round is kept.
    goal = measured["latency_fraction"] - (measured["macs_latency_fraction"] - lat["predicted_latency"])
    rounds = []
    for k in range(args.match_rounds):
        rounds.append(matched_round(k, goal))
        if abs(gap(rounds[-1])) <= args.match_tolerance:
            break
        goal += gap(rounds[-1]) * rounds[-1]["measured"]["latency_fraction"]
    matched = {**min(rounds, key=lambda r: abs(gap(r))), "rounds": len(rounds), "gaps": [gap(r) for r in rounds]}
    kinds = {"latency": "latency", "macs": "macs", "macs-matched": matched["kind"]}
    accuracy = {label: [finetuned(kind, seed) for seed in args.finetune_seeds] for label, kind in kinds.items()}
    # MACs-targeted runs: the main job's rounding (8 channels) against the measured one (round_to: auto)
    rounding = {label: step(work / f"rounding-{label}" / "step.json", lambda label=label, rt=rt: search(
        f"rounding-{label}", SearchConfig(macs_target=args.macs_target, **{**base, "round_to": rt})))
        for label, rt in (("8", 8), ("auto", "auto"))}

    def rounding_timing() -> dict:
        frac, _, _ = fractions([f"rounding-{k}" for k in rounding])
        return {k: 1 / f for k, f in zip(rounding, frac, strict=True)}

    speedup = step(work / "timing_rounding.json", rounding_timing)
    rounding = {k: {**r, "speedup": speedup[k], "accuracy": finetuned(f"rounding-{k}", args.finetune_seeds[0])} for k, r in rounding.items()}
    # the fit's own check (error on random pruned nets, their measured fractions) without its tables
    lat = {**{k: v for k, v in lat.items() if k != "latency_model"}, "fit_report": lat["latency_model"]["meta"]["report"]}
    return {"model": name, "target": target, "latency": lat, "macs": mac, "matched": matched, "measured": measured,
            "accuracy": accuracy, "rounding": rounding}


def spread(measured: dict, i: int) -> str:
    """The range of one net's latency fraction over the fresh processes (none for a single process, or for
    timings cached before they were taken in several)."""
    vals = [p[i] for p in measured.get("per_process", [])]
    return f" [{min(vals):.1%}-{max(vals):.1%}]" if len(vals) > 1 else ""


def mean_std(vals: list[float], sign: bool = False) -> str:
    mean = f"{np.mean(vals):{'+' if sign else ''}.2f}"
    return f"{mean} ± {np.std(vals):.2f}" if len(vals) > 1 else mean


def paired(a: list[float], b: list[float]) -> str:
    return mean_std([x - y for x, y in zip(a, b, strict=True)], sign=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vgg", "mobilenetv2"])
    ap.add_argument("--target", type=float, nargs="+", default=[0.25],
                    help="latency target, one for every model or one per model (a net whose fixed costs are large "
                         "cannot reach a low one)")
    ap.add_argument("--macs-target", type=float, default=0.2, help="the MACs-targeted runs' target (rounding)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--processes", type=int, default=3, help="fresh processes the final nets are timed in (median)")
    ap.add_argument("--episodes", type=int, default=SearchConfig.episodes)
    ap.add_argument("--min-keep", type=float, default=0.2)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="the searches' seed")
    ap.add_argument("--finetune-seeds", type=int, nargs="+", default=[0],
                    help="fine-tune seeds of the latency-targeted net and the MACs-targeted ones (the rounding runs take "
                         "the first)")
    ap.add_argument("--match-tolerance", type=float, default=0.03,
                    help="how close (relative) the matched MACs-targeted net must time to the latency-targeted one")
    ap.add_argument("--match-rounds", type=int, default=4, help="MACs searches at most to reach that match")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--baselines", default=str(BASELINES), help="a folder of MODEL/model.pt checkpoints")
    ap.add_argument("--work", default=str(ROOT / "runs" / "latency_target"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "latency_target.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if len(args.target) not in (1, len(args.models)):
        ap.error("--target takes one value, or one per model")
    targets = args.target * len(args.models) if len(args.target) == 1 else args.target
    rows = [run_model(m, t, args) for m, t in zip(args.models, targets, strict=True)]
    lines = ["# Prune for measured latency", "",
             "Generated by `python benchmarks/latency_target.py" + "".join(f" {a}" for a in sys.argv[1:]) + "` on "
             f"{machine_description()}. Latency: {args.backend}, batch {args.batch}, the "
             f"unpruned and both pruned nets timed in alternation ({args.repeats} rounds, median per-round ratio) "
             f"in each of {args.processes} fresh processes, the median over the processes kept (their range in "
             f"brackets). Fine-tune: {args.finetune_epochs} epochs with distillation, seeds "
             f"{', '.join(map(str, args.finetune_seeds))} (mean ± std; Δ acc: the latency-targeted net's minus the "
             "other's, paired by seed); test accuracy on Fashion-MNIST's test images. The MACs-targeted net of the "
             f"same measured latency: up to {args.match_rounds} MACs searches, each aimed by the latency still "
             f"measured between the two nets, until they time within {args.match_tolerance:.0%} of each other "
             "(rounds: how many ran; the closest kept).", "",
             "| model | latency target | latency-targeted: predicted / measured latency, MACs, test acc | MACs-"
             "targeted at the same predicted latency: MACs target, measured latency, test acc | Δ acc | MACs-targeted "
             "at the same measured latency: MACs target, measured latency (the latency-targeted net's beside it), "
             "rounds, test acc | Δ acc |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lat, mac, ms, acc, mt = r["latency"], r["macs"], r["measured"], r["accuracy"], r["matched"]
        lines.append(f"| {r['model']} | {r['target']:.0%} | {lat['predicted_latency']:.1%} / "
                     f"{ms['latency_fraction']:.1%}{spread(ms, 0)}, {lat['achieved']:.1%}, {mean_std(acc['latency'])}% | "
                     f"{mac['macs_target']:.1%}, {ms['macs_latency_fraction']:.1%}{spread(ms, 1)}, "
                     f"{mean_std(acc['macs'])}% | {paired(acc['latency'], acc['macs'])} | {mt['macs_target']:.1%}, "
                     f"{mt['measured']['matched_fraction']:.1%}{spread(mt['measured'], 1)} "
                     f"({mt['measured']['latency_fraction']:.1%}), {mt['rounds']}, {mean_std(acc['macs-matched'])}% | "
                     f"{paired(acc['latency'], acc['macs-matched'])} |")
    lines += ["", "Per fine-tune seed (test acc, %): latency-targeted / same predicted latency / same measured latency.",
              "", "| model | " + " | ".join(f"seed {s}" for s in args.finetune_seeds) + " |",
              "|---|" + "---|" * len(args.finetune_seeds)]
    for r in rows:
        acc = r["accuracy"]
        lines.append(f"| {r['model']} | " + " | ".join(
            f"{a:.2f} / {b:.2f} / {c:.2f}" for a, b, c in zip(acc["latency"], acc["macs"], acc["macs-matched"],
                                                              strict=True)) + " |")
    lines += ["", "Goal (issue 20): measured latency within 10% of the target, and test accuracy at least the "
              "MACs-targeted policy's of the same measured latency.", "",
              f"MACs-targeted runs (the default search at {args.macs_target:.0%} of the MACs) with the main job's "
              "rounding and with `round_to: auto` (the step measured to pay most, `search/rounding.json`); speed-up "
              f"measured as above, in alternation with the unpruned net ({args.backend}, batch {args.batch}). Goal (issue "
              "20): speed-up at least 0.6 of the MACs reduction, i.e. speed-up x MACs kept >= 0.6.", "",
              "| model | rounding | step | MACs kept | speed-up | speed-up x MACs kept | test acc |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for label, x in r["rounding"].items():
            lines.append(f"| {r['model']} | {label} | {x['round_to']} | {x['achieved']:.1%} | {x['speedup']:.2f}x | "
                         f"{x['speedup'] * x['achieved']:.2f} | {x['accuracy']:.2f}% |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
