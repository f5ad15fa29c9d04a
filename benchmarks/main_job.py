"""Record a `make run` folder as the main-job measurement: docs/measurements/main_job.{md,json}
and the README's main-job block, so that every number there comes from the run itself.

usage: python benchmarks/main_job.py [RUN_DIR] [--wall SECONDS]

RUN_DIR defaults to the newest runs/run-*; --wall is the whole `make run` (set-up included) as
timed by the caller, e.g. `/usr/bin/time -f %e make run`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import yaml

from entroprune.latency import ratio_key
from entroprune.report import reference_cut, timing_note, uniform_gain_cause

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- main-job:begin -->", "<!-- main-job:end -->"


def ranked_by(importance: str) -> str:
    """The config line's channel ranking (``auto`` names what it settles to)."""
    if importance == "auto":
        return "channels ranked by the norm `auto` settles (L2 on a plain chain, else L1)"
    return f"channels ranked by their {importance.upper()} norm"


def trace(run_dir: Path, warmup: int, last: int = 100) -> dict:
    """What the agent did: where the best policy came from and how often the end repeated it."""
    eps = [json.loads(line) for line in (run_dir / "search" / "episodes.jsonl").read_text().splitlines() if line]
    key = [json.dumps(e["policy"], sort_keys=True) for e in eps]
    best = max(range(len(eps)), key=lambda i: (eps[i]["reward"], -i))  # first of equal rewards
    tail = key[-last:]
    top, top_n = Counter(tail).most_common(1)[0]
    return {"episodes": len(eps), "best_episode": best, "best_in_warmup": best < warmup, "warmup": warmup,
            "distinct_after_warmup": len(set(key[warmup:])), "last": len(tail),
            "last_equal_best": sum(k == key[best] for k in tail), "last_most_common": top_n,
            "first_better_after_warmup": next((i for i in range(warmup, len(eps))
                                               if eps[i]["reward"] > max(e["reward"] for e in eps[:warmup])), None)}


def trace_sentence(t: dict) -> str:
    where = (f"episode {t['best_episode']} of the random warm-up" if t["best_in_warmup"]
             else f"episode {t['best_episode']}, after the {t['warmup']}-episode warm-up")
    text = (f"the best reward came at {where}; after the warm-up DDPG tried {t['distinct_after_warmup']} distinct "
            f"policies, and {t['last_most_common']} of the last {t['last']} episodes were one and the same policy")
    text += " (the best one)." if t["last_equal_best"] == t["last_most_common"] else ", not the best one."
    if t["first_better_after_warmup"] is None:
        text += " No episode after the warm-up beat the warm-up's best."
    return text


#: Runtimes in the block, by the column prefix evaluation rows use.
RUNTIMES = {"torch": "torch eager", "ts": "TorchScript", "ort": "ORT"}


def on_refit(config: dict) -> str:
    """Where the re-ranking read its scores, for the README block (a search before the option: plain cuts)."""
    return " on its refitted net" if config.get("rerank_refit") else ""


def after_steps(steps: int) -> str:
    return f" after {steps} recovery steps" if steps else " with no recovery steps"


def fmt_s(s: float) -> str:
    return f"{int(s // 60)} min {int(round(s % 60))} s" if s >= 60 else f"{s:.0f} s"


def readme_block(report: dict, t: dict, wall: float | None) -> str:
    ev = report["evaluation"]
    base, pruned = ev["rows"]
    tm = ev.get("timings_s", {})
    rts = [rt for rt in RUNTIMES if f"{rt}_b64_ms" in base]  # runs from before TorchScript was timed lack it
    rows = [
        "| model | test acc (%) | params | MACs | MACs reduction | " + " | ".join(f"{RUNTIMES[rt]} b64 (ms)" for rt in rts)
        + " | " + " | ".join(f"{RUNTIMES[rt]} speed-up b64" for rt in rts) + " |",
        "|---|---|---|---|---|" + "---|" * 2 * len(rts),
        f"| original {ev['model']} | {base['test_accuracy']:.2f} | {base['params']:,} | {base['macs']:,} | - | "
        + " | ".join(f"{base[f'{rt}_b64_ms']:.2f}" for rt in rts) + " |" + " - |" * len(rts),
        f"| pruned + fine-tuned | {pruned['test_accuracy']:.2f} | {pruned['params']:,} | {pruned['macs']:,} | "
        f"{pruned['macs_reduction']:.2f}x | " + " | ".join(f"{pruned[f'{rt}_b64_ms']:.2f}" for rt in rts) + " | "
        + " | ".join(f"{pruned[f'speedup_{rt}_b64']:.2f}x" for rt in rts) + " |",
    ]
    ref = ev.get("uniform_reference")
    if ref:
        plain = "" if ref.get("refit") is not False else f", plain {ref['importance'].upper()} cut" \
            if "importance" in ref else ", plain cut"
        rows.append(f"| uniform policy{plain}, same fine-tune (reference) | {ref['test_accuracy']:.2f} | {ref['params']:,} | "
                    f"{ref['macs']:,} | {base['macs'] / ref['macs']:.2f}x |" + " - |" * 2 * len(rts))
    ratios = ", ".join(f"{pruned[ratio_key(rt)]:.2f} ({RUNTIMES[rt]})" for rt in rts)
    took = (f"The whole `make run`, set-up and baseline training included, took {fmt_s(wall)}" if wall
            else f"The run took {fmt_s(tm.get('total', 0))} after set-up")
    parts = ", ".join(f"{name} {tm[k]:.0f} s" for k, name in
                      (("baseline", "baseline"), ("search", "search"), ("finetune", "fine-tuning"),
                       ("uniform_reference", "uniform reference")) if k in tm)
    text = (f"Accuracy change {pruned['test_accuracy'] - base['test_accuracy']:+.2f} points; batch-64 speed-up / "
            f"MACs reduction {ratios}. {took} ({parts}; search of {t['episodes']} episodes). Latencies: "
            f"{timing_note(pruned)}. Search trace: {trace_sentence(t)}")
    search = report.get("search") or {}
    if search.get("rerank"):
        n = sum(c["source"] == "search" for c in search["rerank"])
        text += (f" Re-ranking: the search's {n} best distinct policies, the uniform and the global policy, each scored "
                 f"by `{search['config']['rerank_reward']}`{on_refit(search['config'])}"
                 f"{after_steps(search['config']['recovery_steps'])} "
                 f"({search.get('rerank_time_s', 0):.0f} s): the **{search['chosen']}** policy won.")
    if ref:
        gain = pruned["test_accuracy"] - ref["test_accuracy"]
        cut, cause = reference_cut(ref), uniform_gain_cause(ev, report.get("policy"))
        text += (f" Against the uniform policy{' ' + cut if cut else ''} with the same fine-tune: {gain:+.2f} points"
                 + (" (the search chose the uniform policy itself)." if ref.get("same_as_searched") else
                    f" (the search chose the uniform policy: the difference is {cause})." if cause else "."))
    return "\n".join([f"Machine: {ev['machine']}; {ev.get('date', '')}.", "", *rows, "", text])


def with_block(path: Path, block: str) -> str:
    """The README's text with the block between the markers replaced (checked before writing anything)."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{path} has no {BEGIN} ... {END} markers; add them where the main-job table goes")
    head, rest = text.split(BEGIN, 1)
    return head + BEGIN + "\n" + block + "\n" + END + rest.split(END, 1)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", help="a `make run` folder (default: the newest runs/run-*)")
    ap.add_argument("--wall", type=float, help="seconds the whole `make run` took, set-up included")
    ap.add_argument("--out-dir", default=str(ROOT / "docs" / "measurements"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--variant", default="",
                    help="how the run differs from `make run` (e.g. `--config configs/main_job_l2.yaml`): named in "
                         "the page's title, and the README's block is left alone")
    ap.add_argument("--machine", default="",
                    help="a `make run` on another machine than the README's block (e.g. `an Intel Xeon VM`): named in "
                         "the page's title, and the README's block is left alone")
    args = ap.parse_args()
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        found = sorted((ROOT / "runs").glob("run-*"))
        if not found:
            sys.exit("no runs/run-* folder; run `make run` first or name the folder")
        run_dir = found[-1]
    if not (run_dir / "report.json").exists():
        sys.exit(f"{run_dir} has no report.json; is it a finished `entroprune run` folder?")
    report = json.loads((run_dir / "report.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    t = trace(run_dir, int(config["search"]["warmup"]))
    readme = None if args.variant or args.machine else with_block(Path(args.readme), readme_block(report, t, args.wall))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "report.json", out / "main_job.json")
    s, r = config["search"], config["search"]["reward"]
    variant = f' RUN_ARGS="{args.variant}"' if args.variant else ""
    report_md = (run_dir / "report.md").read_text().split("\n## Plots")[0].replace("\n## ", "\n### ")
    md = [
        f"# Main job: `make run{variant}` (= `entroprune run`), "
        f"{report['evaluation'].get('date', '')}" + (f", on {args.machine}" if args.machine else ""),
        "",
        f"Written by `python benchmarks/main_job.py {args.run_dir or run_dir}"
        + (f" --variant '{args.variant}'" if args.variant else "")
        + (f" --machine '{args.machine}'" if args.machine else "")
        + (f" --wall {args.wall:.0f}`" if args.wall else "`")
        + (f" after `make run` on a clean clone ({fmt_s(args.wall)}, set-up included)." if args.wall else "."),
        f"Config: {config['model']} on {config['dataset']}, seed {config['seed']}; {s['agent']} with the "
        f"{r['kind']} reward (variant `{r['variant']}`, layers `{r['layers']}`, "
        f"{'pruned copies' if r.get('physical') else 'zero-masks'}), {s['episodes']} episodes ({s['warmup']} "
        f"warm-up), {s.get('macs_target', s.get('flops_target')):.0%} of the MACs, channels rounded to {s['round_to']}; "
        + ranked_by(s.get("importance", "l1")) + "; "
        f"{'kept weights refitted; ' if (config.get('prune') or {}).get('refit') else ''}"
        f"{config['finetune']['epochs']} fine-tuning epochs{' with distillation' if config['finetune']['distill'] else ''}."
        " The machine-readable report is `main_job.json`"
        + ("." if args.variant or args.machine else " (`benchmarks/make_results.py` reads the fine-tune drop from it)."),
        "",
        f"Search trace (`{run_dir.name}/search/episodes.jsonl`): {trace_sentence(t)}",
        "",
        "Report of this run, verbatim (plots left out):",
        "",
        report_md.strip().replace("# entroprune report", "## entroprune report", 1),
        "",
    ]
    (out / "main_job.md").write_text("\n".join(md))
    if readme is not None:
        Path(args.readme).write_text(readme)
    print(f"wrote {out / 'main_job.md'}, {out / 'main_job.json'}"
          + ("" if readme is None else f" and the main-job block of {args.readme}"))


if __name__ == "__main__":
    main()
