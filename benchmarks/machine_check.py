"""How much does the machine move an arena cell? The same policy and seed, fine-tuned on two CPUs.

    python benchmarks/arena.py --grid benchmarks/machine_check.yaml   # on a second machine: arena cells
                                                                      # rerun into results of their own
    python benchmarks/machine_check.py [--grid benchmarks/arena.yaml] [--check docs/measurements/arena/machine_check.csv]
        [--out docs/measurements/arena_machines.md]

The fine-tune is deterministic on one machine, not across machines (another CPU's kernels round
differently, and 3 epochs amplify it). This page sets every cell of the check's results beside the arena's
cell of the same (model, target, policy, seed) fine-tuned on another machine: the difference is what a
machine moves a cell, to compare with what a seed moves it. Where the check reran a search (``default``),
its policy may differ from the arena's: the page sets its difference to the same machine's uniform beside
the arena's difference to the arena machine's uniform (does the search's advantage replicate on another CPU?).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import load_grid, read_rows, write_page  # noqa: E402
from make_arena import Reference, fine_tuned_on, fmt, short  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def shown(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def key(r: dict) -> tuple:
    return r["model"], float(r["target"]), json.dumps(json.loads(r["policy"]), sort_keys=True), int(r["seed"])


def pairs(arena: list[dict], check: list[dict]) -> list[dict]:
    """Every cell fine-tuned on a second machine (the check's, and the arena's own per-machine reruns of
    uniform) beside the first machine's cell of the same policy and seed."""
    first: dict[tuple, dict] = {}
    for r in arena:  # the arena's first reading of each (policy, seed)
        first.setdefault(key(r), r)
    rerun = [r for r in arena if r["machine"] != first[key(r)]["machine"]] + check
    seen, out = set(), []
    for c in rerun:
        other = first.get(key(c))
        if other is not None and other["machine"] != c["machine"] and (key(c), c["machine"]) not in seen:
            seen.add((key(c), c["machine"]))
            out.append({"check": c, "arena": other, "diff": float(c["test_accuracy"]) - float(other["test_accuracy"])})
    return out


def by_pair(found: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for p in found:
        out.setdefault(f"{p['check']['model']} {float(p['check']['target']):.0%}", []).append(p["diff"])
    return out


def seed_spread(arena: list[dict]) -> list[float]:
    """What a seed moves a cell on one machine: each policy's std over its seeds (three-seed policies only)."""
    by: dict[tuple, list[float]] = {}
    for r in arena:
        by.setdefault((*key(r)[:3], r["machine"]), []).append(float(r["test_accuracy"]))
    return [statistics.stdev(v) for v in by.values() if len(v) >= 3]


def covariance(arena: list[dict]) -> list[dict]:
    """Does pairing by seed remove noise? Per pair, over the policies fine-tuned with every one of uniform's
    seeds on uniform's machine: mean variance over the seeds of the policy, of uniform, of their paired
    difference, and the policy's covariance with uniform (pairing helps only if that is well above 0)."""
    out = []
    for model, target in sorted({(r["model"], r["target"]) for r in arena}):
        cell = [r for r in arena if (r["model"], r["target"]) == (model, target)]
        ref = Reference(cell)
        for machine in sorted(ref.by):
            uni = ref.by[machine]
            u_key = key(next(r for r in cell if r["source"] == "uniform"))[2]
            by: dict[str, dict[int, float]] = {}
            for r in cell:
                if r["machine"] == machine and key(r)[2] != u_key:
                    by.setdefault(key(r)[2], {})[int(r["seed"])] = float(r["test_accuracy"])
            full = [[a[s] for s in sorted(uni)] for a in by.values() if set(a) >= set(uni)]
            if len(uni) < 3 or not full:
                continue
            u = [uni[s] for s in sorted(uni)]
            out.append({"pair": f"{model} {float(target):.0%}", "machine": machine, "policies": len(full),
                        "seeds": len(u), "var_policy": statistics.mean(statistics.variance(x) for x in full),
                        "var_uniform": statistics.variance(u),
                        "var_delta": statistics.mean(statistics.variance([a - b for a, b in zip(x, u, strict=True)])
                                                     for x in full),
                        "cov": statistics.mean(statistics.covariance(x, u) for x in full)})
    return out


def against_uniform(rows: list[dict], row: dict) -> float | None:
    """``row``'s test accuracy minus uniform's with the same seed on the same machine (None: no such uniform)."""
    u = next((float(r["test_accuracy"]) for r in rows if r["source"] == "uniform" and
              (r["model"], r["target"], r["seed"], r["machine"]) == (row["model"], row["target"], row["seed"], row["machine"])), None)
    return None if u is None else float(row["test_accuracy"]) - u


def replication(arena: list[dict], check: list[dict], source: str = "default") -> list[str]:
    """The check's reruns of a search source, each against uniform on its own machine, beside the arena's."""
    lines = []
    for r in sorted((r for r in check if r["source"] == source), key=lambda r: (r["model"], r["target"], int(r["seed"]))):
        a = next((x for x in arena if (x["model"], x["target"], x["source"], x["seed"]) ==
                  (r["model"], r["target"], source, r["seed"])), None)
        mine, theirs = against_uniform(check, r), against_uniform(arena, a) if a else None
        lines.append(f"| {r['model']} {float(r['target']):.0%} | {source} | {r['seed']} | "
                     f"{'the same' if a and key(a) == key(r) else 'another'} | "
                     f"{'-' if theirs is None else f'{theirs:+.2f}'} ({short(a['machine']) if a else '-'}) | "
                     f"{'-' if mine is None else f'{mine:+.2f}'} ({short(r['machine'])}) |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(ROOT / "benchmarks" / "arena.yaml"))
    ap.add_argument("--check", default=str(ROOT / "docs" / "measurements" / "arena" / "machine_check.csv"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "arena_machines.md"))
    args = ap.parse_args()
    grid = load_grid(args.grid)
    arena = fine_tuned_on(read_rows(Path(grid["results"])))
    check = fine_tuned_on(read_rows(Path(args.check)))
    if not check:
        raise SystemExit(f"{args.check}: no cells yet; run benchmarks/arena.py with a grid writing there")
    found = pairs(arena, check)
    spread = seed_spread(arena)
    diffs = [p["diff"] for p in found]
    lines = ["# How much does the machine move an arena cell?", "",
             f"Generated by `python benchmarks/machine_check.py` from `{shown(args.check)}` (cells "
             "rerun on a second machine by `python benchmarks/arena.py` with a grid of their own) and the arena's "
             "`docs/measurements/arena/results.csv`. Same model, target, policy, fine-tune seed and code; only the "
             "CPU differs. Test accuracy after the main job's fine-tune (3 epochs, distillation).", "",
             "| pair | found by | seed | arena (machine) | rerun (machine) | rerun - arena |", "|---|---|---|---|---|---|"]
    for p in found:
        a, c = p["arena"], p["check"]
        lines.append(f"| {c['model']} {float(c['target']):.0%} | {c['source']} | {c['seed']} | {float(a['test_accuracy']):.2f} "
                     f"({short(a['machine'])}) | {float(c['test_accuracy']):.2f} ({short(c['machine'])}) | {p['diff']:+.2f} |")
    summary = {"cells": len(found), "diffs": diffs}
    if diffs:
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        lines += ["", f"Over {len(diffs)} cells, rerun minus arena: {fmt(diffs, sign=True)} points (mean ± std; standard "
                  f"error of the mean {se:.2f}; {sum(d < 0 for d in diffs)} of {len(diffs)} below 0), mean absolute "
                  f"{statistics.mean(abs(d) for d in diffs):.2f}. Per pair: " + ", ".join(
                      f"{pair} {fmt(ds, sign=True)} ({len(ds)} cells)" for pair, ds in by_pair(found).items())
                  + ". A shift shared by every fine-tune of a machine cancels "
                  "when a cell is compared with uniform fine-tuned on the same machine (`per_machine` in arena.yaml)."
                  + (f" What a seed moves a cell on one machine (std over the seeds of each of the arena's "
                     f"{len(spread)} policies fine-tuned with three or more): median {statistics.median(spread):.2f}."
                     if spread else "")]
        summary.update(mean=statistics.mean(diffs), abs_mean=statistics.mean(abs(d) for d in diffs),
                       seed_std_median=statistics.median(spread) if spread else None)
    cov = covariance(arena)
    if cov:
        lines += ["", "Does pairing by seed remove noise? Over the policies the arena fine-tuned with each of uniform's "
                  "seeds on uniform's machine: the mean variance over the seeds of a policy's test accuracy, of "
                  "uniform's, of their paired difference, and their covariance (pairing removes noise only where it "
                  "is well above 0; where it is near 0, var(difference) is about var(policy) + var(uniform), and one "
                  "cell is better compared with uniform's mean over its seeds on the same machine, as docs/arena.md "
                  "also does).", "",
                  "| pair | machine | policies | seeds | var(policy) | var(uniform) | var(difference) | cov |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c['pair']} | {short(c['machine'])} | {c['policies']} | {c['seeds']} | {c['var_policy']:.4f} | "
                  f"{c['var_uniform']:.4f} | {c['var_delta']:.4f} | {c['cov']:+.4f} |" for c in cov]
        summary["covariance"] = cov
    rep = replication(arena, check)
    if rep:
        lines += ["", "The default's search rerun on the second machine (its policy may differ: the search's own "
                  "numerics move too), each against uniform fine-tuned on its own machine with the same seed:", "",
                  "| pair | source | seed | policy | arena: Δ uniform (machine) | rerun: Δ uniform (machine) |",
                  "|---|---|---|---|---|---|", *rep]
    write_page(Path(args.out).with_suffix(""), lines, summary)


if __name__ == "__main__":
    main()
