"""Prune for measured latency: does a latency-targeted search hit its target, and is its model at least as
good as a MACs-targeted one of the same measured latency?

    python benchmarks/latency_target.py [--models vgg mobilenetv2] [--target 0.25] [--backend torch]
        [--batch 64] [--episodes 300] [--finetune-epochs 3] [--seed 0] [--finetune-seeds 0 1 2]
        [--match-tolerance 0.03] [--match-rounds 4] [--one-order] [--work runs/latency_target]
        [--out docs/measurements/latency_target.md]

``--target`` takes one value per model where one target does not suit all (MobileNetV2's smallest policy
keeps 26.5% of its latency at batch 64 with torch: a 25% target is refused as unreachable).

Per model (the arena's baselines, Fashion-MNIST): (1) ``search --latency-target T --macs-target 1`` fits a
latency model on this machine and searches under it; (2) the MACs target whose uniform policy the same
latency model predicts at the same latency is found by bisection, and the tool's default MACs search runs at
it; (3) the unpruned net and both pruned nets are timed in alternation, in both orders (the second of two
identical nets timed up to 3% faster), in ``--processes`` fresh processes
(the median kept: the same nets' latency fraction moves more between processes than within one,
docs/measurements/latency_noise.md); (4) MACs searches aimed at the latency-targeted net's *measured* latency,
each timed beside it in the same fresh processes and re-aimed by the gap still measured, until the two time within
``--match-tolerance`` (at most ``--match-rounds``); (5) the latency-targeted net and both MACs-targeted ones get the
main job's fine-tune (3 epochs, distillation) with every ``--finetune-seeds``. Every
step is skipped when its output exists, so an interrupted run continues. Run it on an idle machine: it measures wall-clock latency.
"""

from __future__ import annotations

import argparse
import functools
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
from entroprune.latency import LatencyModel, in_fresh
from entroprune.search import SearchConfig, matching_macs_target
from entroprune.search.config import PLAIN_RECOVERY_STEPS
from entroprune.search.free_channels import steps_summary
from entroprune.utils import machine_description

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import fresh_latencies, write_page  # noqa: E402

BASELINES = ROOT / "docs" / "measurements" / "arena" / "baselines"


def step(path: Path, make) -> dict:
    """``make()``'s result, cached in ``path`` (a JSON file) so a rerun continues where it stopped."""
    if path.exists():
        return json.loads(path.read_text())
    res = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    return res


@functools.cache
def _pruned_net(path: Path, mtime_ns: int) -> dict:
    """A pruned checkpoint's contents, loaded once per file version (every seed compares the same candidates)."""
    return torch.load(path, weights_only=True)


def _load(path: Path) -> dict:
    return _pruned_net(path.resolve(), path.stat().st_mtime_ns)


def same_net_finetuned(pruned: Path, seed: int, dirs: list[Path]) -> Path | None:
    """The fine-tune result (``finetune-s{seed}.json``) of a pruned net identical to ``pruned`` (same spec, same
    tensors) in another kind's folder under ``dirs``: two searches that return the same policy share it."""
    mine = _load(pruned)
    for d in dirs:
        for other in sorted(d.glob("*/pruned/model.pt")):
            res = other.parent.parent / f"finetune-s{seed}.json"
            if other.resolve() == pruned.resolve() or not res.exists():
                continue
            theirs = _load(other)
            if theirs["spec"] == mine["spec"] and theirs["state_dict"].keys() == mine["state_dict"].keys() and all(
                    torch.equal(theirs["state_dict"][k], v) for k, v in mine["state_dict"].items()):
                return res
    return None


def chosen_policy(policy_file: Path, free_channels: list[dict]) -> dict:
    """The search's policy as the re-ranking chose it, before its free channels (each widened group back at
    the width its first kept step started from)."""
    pol = json.loads(policy_file.read_text())
    full = {g: round(c / pol["policy"][g]) for g, c in pol["counts"].items()}
    for t in reversed([t for t in free_channels if t["kept"]]):  # the earliest kept step of a group wins
        pol["counts"][t["group"]] = t["from"]
    return {**pol, "policy": {g: c / full[g] for g, c in pol["counts"].items()}, "round_to": 1}


def run_model(name: str, target: float, args: argparse.Namespace) -> dict:
    baselines = Path(args.baselines)
    ckpt = baselines / name / "model.pt"
    work = Path(args.work) / name
    base = dict(min_keep=args.min_keep, round_to=args.round_to, seed=args.seed, episodes=args.episodes,
                warmup=min(SearchConfig.warmup, args.episodes // 3), latency_backend=args.backend,
                latency_batch=args.batch, recovery_steps=args.recovery_steps,
                rerank_refit=False, importance="l1")  # measured with plain cuts and L1, the defaults it ran with

    def search(kind: str, cfg: SearchConfig) -> dict:
        t0 = time.perf_counter()
        res = search_checkpoint(ckpt, work / kind / "search", cfg, force=True, quiet=args.quiet)
        prune_checkpoint(ckpt, work / kind / "search" / "policy.json", work / kind / "pruned", force=True, refit=False)
        return {"achieved": res.achieved, "chosen": res.summary.get("chosen"), "round_to": res.summary["config"]["round_to"],
                "predicted_latency": res.summary.get("latency_fraction"),
                "free_channels": res.summary.get("free_channels"),
                **{k: res.summary.get(k) for k in ("free_channels_confirmation", "free_channels_confirming_processes")},
                "table_latency_with_free_channels": res.summary.get("table_latency_with_free_channels"),
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
                               args.repeats, args.threads, args.processes, both_orders=args.both_orders)
        per = [[t / ms[0] for t in ms[1:]] for ms in runs]
        return [float(np.median(col)) for col in zip(*per, strict=True)], float(np.median([ms[0] for ms in runs])), per

    def timing() -> dict:
        (lat_f, macs_f), unpruned, per = fractions(["latency", "macs"])
        return {"latency_fraction": lat_f, "macs_latency_fraction": macs_f, "per_process": per,
                "unpruned_ms": unpruned, "repeats": args.repeats, "threads": args.threads}

    measured = step(work / "timing.json", timing)
    freed_timing = None
    if any(t["kept"] for t in lat.get("free_channels") or []):
        # what the free channels bought: the chosen policy without them, timed and fine-tuned alike
        def prune_chosen() -> dict:
            pol = chosen_policy(work / "latency" / "search" / "policy.json", lat["free_channels"])
            prune_checkpoint(ckpt, pol, work / "latency-chosen" / "pruned", force=True, refit=False)
            return {"counts": pol["counts"]}

        def chosen_timing() -> dict:
            (widened, chosen), _, per = fractions(["latency", "latency-chosen"])
            return {"latency_fraction": widened, "chosen_fraction": chosen, "per_process": per}
        step(work / "latency-chosen" / "step.json", prune_chosen)
        freed_timing = step(work / "latency-chosen" / "timing.json", chosen_timing)

    def finetuned(kind: str, seed: int) -> float:
        def make() -> float:
            pruned = work / kind / "pruned" / "model.pt"
            src = same_net_finetuned(pruned, seed, [work, *(Path(d) / name for d in args.reuse_finetunes)])
            if src is not None:  # deterministic on one machine: the same net and seed give the same result
                taken = step(work / kind / "finetune_from.json", dict)
                taken[str(seed)] = str(src)
                (work / kind / "finetune_from.json").write_text(json.dumps(taken, indent=1))
                return json.loads(src.read_text())
            return finetune_checkpoint(pruned, work / kind / f"finetuned-s{seed}", epochs=args.finetune_epochs,
                                       distill=True, seed=seed, force=True, quiet=args.quiet)["test_accuracy"]
        return step(work / kind / f"finetune-s{seed}.json", make)

    def matched_round(macs_target: float) -> dict:
        """One MACs-targeted search at ``macs_target``, timed beside the latency-targeted net in the same fresh
        processes (cached by its target, so a rerun retraces the same rounds)."""
        kind = f"macs-matched-{macs_target:.4f}"
        res = step(work / kind / "step.json", lambda: {
            **search(kind, SearchConfig(macs_target=macs_target, **base)), "macs_target": macs_target})

        def timed() -> dict:
            (lat_f, matched_f), _, per = fractions(["latency", kind])
            return {"latency_fraction": lat_f, "matched_fraction": matched_f, "per_process": per}
        return {**res, "kind": kind, "measured": step(work / kind / "timing.json", timed)}

    def gap(r: dict) -> float:
        """The latency-targeted net's measured latency minus the round's net's, relative to the former
        (positive: the round's net is faster, so it may keep more MACs)."""
        m = r["measured"]
        return (m["latency_fraction"] - m["matched_fraction"]) / m["latency_fraction"]

    # The MACs-targeted policy of the latency-targeted net's *measured* latency. The first round aims at the
    # bisection's goal shifted by the first MACs-targeted net's measured-minus-predicted gap; later rounds
    # bisect the MACs target between the closest rounds found faster and slower than the latency-targeted net
    # (a shift by the gap while all lie on one side), until one times within --match-tolerance of it, the
    # bracket is narrower than a hundredth of a point, or --match-rounds ran. Timings between sets of processes
    # move a few percent, so each round is judged by its ratio to the latency-targeted net in its own processes.
    goal = measured["latency_fraction"] - (measured["macs_latency_fraction"] - lat["predicted_latency"])
    aim = matching_macs_target(structure, lm, goal, args.min_keep, args.round_to)
    rounds: list[dict] = []
    for _ in range(args.match_rounds):
        rounds.append(matched_round(aim))
        if abs(gap(rounds[-1])) <= args.match_tolerance:
            break
        faster = [r["macs_target"] for r in rounds if gap(r) > 0]
        slower = [r["macs_target"] for r in rounds if gap(r) <= 0]
        if faster and slower:
            lo, hi = max(faster), min(slower)
            if hi - lo < 1e-4:
                break
            aim = round((lo + hi) / 2, 4)
        else:
            goal += gap(rounds[-1]) * rounds[-1]["measured"]["latency_fraction"]
            aim = matching_macs_target(structure, lm, goal, args.min_keep, args.round_to)
    matched = {**min(rounds, key=lambda r: abs(gap(r))), "rounds": len(rounds), "gaps": [gap(r) for r in rounds],
               "targets": [r["macs_target"] for r in rounds]}
    # every timing before the first fine-tune, so that a run's timing phases come first and can be kept idle
    rounding = rounding_runs(work, search, fractions, base, args) if args.rounding else None
    kinds = {"latency": "latency", "macs": "macs", "macs-matched": matched["kind"]}
    accuracy = {label: [finetuned(kind, seed) for seed in args.finetune_seeds] for label, kind in kinds.items()}
    # The MACs search's policies move in coarse steps (it often returns the uniform policy, whose 8-channel steps
    # are several percent of latency apart), so the closest round can stay a few percent off. The closest rounds
    # faster and slower than the latency-targeted net are both fine-tuned, and their accuracy interpolated
    # linearly at its latency, seed by seed: the MACs-targeted accuracy at the same measured latency.
    faster = [r for r in rounds if gap(r) > 0]
    slower = [r for r in rounds if gap(r) <= 0]
    if faster and slower:
        f, sl = min(faster, key=gap), max(slower, key=gap)
        w = gap(f) / (gap(f) - gap(sl))  # 0 at the faster net, 1 at the slower one
        acc_f, acc_s = ([finetuned(r["kind"], seed) for seed in args.finetune_seeds] for r in (f, sl))
        accuracy["macs-interpolated"] = [a + w * (b - a) for a, b in zip(acc_f, acc_s, strict=True)]
        matched["bracket"] = [{"kind": r["kind"], "macs_target": r["macs_target"], "achieved": r["achieved"],
                               "gap": gap(r), "accuracy": acc} for r, acc in ((f, acc_f), (sl, acc_s))]
    if freed_timing is not None:
        accuracy["latency-chosen"] = [finetuned("latency-chosen", seed) for seed in args.finetune_seeds]
    lat = {**{k: v for k, v in lat.items() if k != "latency_model"}, "fit_report": lat["latency_model"]["meta"]["report"]}
    row = {"model": name, "target": target, "latency": lat, "macs": mac, "matched": matched, "measured": measured,
           "accuracy": accuracy, "free_channel_timing": freed_timing}
    if rounding is None:
        return row
    return {**row, "rounding": {k: {**r, "accuracy": finetuned(f"rounding-{k}", args.finetune_seeds[0])}
                                for k, r in rounding.items()}}


def rounding_runs(work: Path, search, fractions, base: dict, args: argparse.Namespace) -> dict:
    """MACs-targeted runs at ``--macs-target``: the main job's rounding (8 channels) against the measured one
    (``round_to: auto``), timed in alternation with the unpruned net (the caller fine-tunes them with the first
    seed)."""
    rounding = {label: step(work / f"rounding-{label}" / "step.json", lambda label=label, rt=rt: search(
        f"rounding-{label}", SearchConfig(macs_target=args.macs_target, **{**base, "round_to": rt})))
        for label, rt in (("8", 8), ("auto", "auto"))}

    def rounding_timing() -> dict:
        frac, _, _ = fractions([f"rounding-{k}" for k in rounding])
        return {k: 1 / f for k, f in zip(rounding, frac, strict=True)}

    speedup = step(work / "timing_rounding.json", rounding_timing)
    return {k: {**r, "speedup": speedup[k]} for k, r in rounding.items()}


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
    ap.add_argument("--recovery-steps", type=int, default=PLAIN_RECOVERY_STEPS,
                    help="recovery steps before each re-ranked policy is scored (fewer: a quicker, noisier pick)")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="the searches' seed")
    ap.add_argument("--finetune-seeds", type=int, nargs="+", default=[0],
                    help="fine-tune seeds of the latency-targeted net and the MACs-targeted ones (the rounding runs take "
                         "the first)")
    ap.add_argument("--match-tolerance", type=float, default=0.03,
                    help="how close (relative) the matched MACs-targeted net must time to the latency-targeted one")
    ap.add_argument("--match-rounds", type=int, default=4, help="MACs searches at most to reach that match")
    ap.add_argument("--no-rounding", dest="rounding", action="store_false",
                    help="skip the MACs-targeted runs comparing the 8-channel rounding with round_to: auto")
    ap.add_argument("--reuse-finetunes", nargs="*", default=[], metavar="WORK",
                    help="--work folders of earlier runs on this machine: a pruned net identical to one fine-tuned "
                         "there takes that result (a fine-tune is deterministic on one machine, not across machines)")
    ap.add_argument("--one-order", dest="both_orders", action="store_false",
                    help="time the pruned nets in one order only, as runs before both orders did (in alternation the "
                         "second of two identical nets timed up to 3%% faster)")
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
             f"unpruned and both pruned nets timed in alternation ({args.repeats} rounds, median per-round ratio"
             f"{'; in both orders, geometric mean' if args.both_orders else ''}) "
             f"{in_fresh(args.processes).strip()}"
             + (", the median over the processes kept (their range in brackets)" if args.processes > 1 else "")
             + f". Fine-tune: {args.finetune_epochs} epochs with distillation, seeds "
             f"{', '.join(map(str, args.finetune_seeds))} (mean ± std; Δ acc: the latency-targeted net's minus the "
             "other's, paired by seed); test accuracy on Fashion-MNIST's test images. The MACs-targeted net of the "
             f"same measured latency: up to {args.match_rounds} MACs searches, each aimed by the latency measured "
             "between earlier ones and the latency-targeted net in the same processes (bisecting the MACs target "
             f"once rounds lie on both sides), until one times within {args.match_tolerance:.0%} of it (rounds: how "
             "many ran; the closest kept).", "",
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
    for r in rows:
        freed = r["latency"].get("free_channels")
        if freed is not None:
            kept = [t for t in freed if t["kept"]]
            priced = (f"; the latency table prices the net with them at {r['latency']['table_latency_with_free_channels']:.1%}"
                      if kept else "")
            without = ""
            if "latency-chosen" in r["accuracy"]:
                a, ft = r["accuracy"], r.get("free_channel_timing")
                timed = (f", measured {ft['chosen_fraction']:.1%}{spread(ft, 1)} beside the net with them at "
                         f"{ft['latency_fraction']:.1%}{spread(ft, 0)} in the same processes" if ft else "")
                without = (f" Without them (the chosen policy, pruned, timed and fine-tuned alike{timed}): "
                           f"{mean_std(a['latency-chosen'])}%; the free channels bought "
                           f"{paired(a['latency'], a['latency-chosen'])} points.")
            steps = ", ".join(f"{t['group']} {t['from']}->{t['to']} {t['time_ratio']:.3f}x" for t in freed
                              if t["kept"] or t.get("dropped"))
            lines += ["", f"{r['model']}: free channels (`free_channels`, each one-step-wider net timed in alternation "
                      f"with the chosen policy, kept where no slower, the widened net then timed against it once "
                      f"more): {steps_summary(r['latency'])}{priced}; the predicted latency above is the chosen "
                      f"policy's." + (f" Each step's own timing: {steps}." if steps else "") + without]
        reused = sum(len(json.loads(f.read_text())) for f in (Path(args.work) / r["model"]).glob("*/finetune_from.json"))
        if reused:
            lines += ["", f"{r['model']}: {reused} fine-tunes taken from an identical pruned net's fine-tune with the "
                      "same seed on this machine (`finetune_from.json` in the work folder)."]
    lines += ["", "Per fine-tune seed (test acc, %): latency-targeted / same predicted latency / same measured latency.",
              "", "| model | " + " | ".join(f"seed {s}" for s in args.finetune_seeds) + " |",
              "|---|" + "---|" * len(args.finetune_seeds)]
    for r in rows:
        acc = r["accuracy"]
        lines.append(f"| {r['model']} | " + " | ".join(
            f"{a:.2f} / {b:.2f} / {c:.2f}" for a, b, c in zip(acc["latency"], acc["macs"], acc["macs-matched"],
                                                              strict=True)) + " |")
    bracketed = [r for r in rows if "bracket" in r["matched"]]
    if bracketed:
        lines += ["", "The MACs search's policies move in coarse steps, so the closest round may stay a few percent "
                  "off. Interpolated at equal measured latency: the closest MACs-targeted rounds faster and slower "
                  "than the latency-targeted net (their time relative to it, timed in the same processes), each "
                  "fine-tuned with every seed, their accuracy interpolated linearly at the latency-targeted net's "
                  "latency seed by seed; Δ acc paired by seed.", "",
                  "| model | faster: MACs target, MACs kept, time, test acc | slower: MACs target, MACs kept, time, "
                  "test acc | interpolated test acc | latency-targeted test acc | Δ acc |", "|---|---|---|---|---|---|"]
        for r in bracketed:
            f, sl = r["matched"]["bracket"]
            cell = lambda b: (f"{b['macs_target']:.1%}, {b['achieved']:.1%}, {1 - b['gap']:.3f}x, "  # noqa: E731
                              f"{mean_std(b['accuracy'])}%")
            acc = r["accuracy"]
            lines.append(f"| {r['model']} | {cell(f)} | {cell(sl)} | {mean_std(acc['macs-interpolated'])}% | "
                         f"{mean_std(acc['latency'])}% | {paired(acc['latency'], acc['macs-interpolated'])} |")
    lines += ["", "Goal (issue 20): measured latency within 10% of the target, and test accuracy at least the "
              "MACs-targeted policy's of the same measured latency."]
    if args.rounding:
        lines += rounding_lines(rows, args)
    write_page(Path(args.out), lines, rows)


def rounding_lines(rows: list[dict], args: argparse.Namespace) -> list[str]:
    lines = ["", f"MACs-targeted runs (the default search at {args.macs_target:.0%} of the MACs) with the main job's "
              "rounding and with `round_to: auto` (the step measured to pay most, `search/rounding.json`); speed-up "
              f"measured as above, in alternation with the unpruned net ({args.backend}, batch {args.batch}). Goal (issue "
              "20): speed-up at least 0.6 of the MACs reduction, i.e. speed-up x MACs kept >= 0.6.", "",
              "| model | rounding | step | MACs kept | speed-up | speed-up x MACs kept | test acc |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for label, x in r["rounding"].items():
            lines.append(f"| {r['model']} | {label} | {x['round_to']} | {x['achieved']:.1%} | {x['speedup']:.2f}x | "
                         f"{x['speedup'] * x['achieved']:.2f} | {x['accuracy']:.2f}% |")
    return lines


if __name__ == "__main__":
    main()
