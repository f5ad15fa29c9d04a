"""Turn the reproduction CSVs into docs/results.md (tables, goals, cost, reward study, plot).

    python benchmarks/make_results.py [--grid benchmarks/reproduce.yaml] [--out docs/results.md]

Reads the grid's ``results`` and ``parts`` CSVs, ``baselines.csv`` beside them, and the
reward-study JSONs ``docs/measurements/reward_study_ft_<model>_<target>.json``. Every number on
the page comes from those files; cells that were not run are listed with the reason and
the estimated cost of running them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import load_grid, read_rows, replace_block  # noqa: E402

from entroprune.utils import count_text  # noqa: E402

GOALS = {0.2: 0.5, 0.1: 1.0}  # largest accuracy drop (points) allowed at each MACs target
NOT_RUN = "not run"


def fmt(vals: list[float], digits: int = 2) -> str:
    if not vals:
        return NOT_RUN
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f} (1 seed)"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


MAIN_JOB = Path("docs/measurements/main_job.json")  # the main job's report.json, copied verbatim


def main_job_sentence(path: Path = MAIN_JOB) -> str:
    """What a full fine-tune does, from the last main job recorded (`make run`, 3 epochs, distillation)."""
    if not path.exists():
        return "Drops shrink with longer fine-tuning."
    ev = json.loads(path.read_text())["evaluation"]
    base, pruned = ev["rows"]
    return (f"Drops shrink with longer fine-tuning: the main job (`make run`: 3 epochs with distillation, "
            f"`docs/measurements/main_job.md`) lost {base['test_accuracy'] - pruned['test_accuracy']:.2f} points at "
            f"{pruned['macs_reduction']:.2f}x fewer MACs on the default VGG.")


def scored_with_masks(row: dict, grid: dict) -> bool:
    """Whether the grid's ``mask_scored`` list names this cell (rewards on zero-masked nets, slower)."""
    return any(all(str(row[k]) == str(v) if k != "target" else float(row[k]) == float(v) for k, v in entry.items())
               for entry in grid.get("mask_scored") or [])


def search_speed(e_rows: list[dict], a_rows: list[dict], grid: dict) -> tuple[float, float, int] | None:
    """Mean entropy and accuracy search times over seeds where both ran on one machine with one
    scoring mode (times from different CPUs or scoring modes do not compare); None if no such pair."""
    def key(r: dict) -> tuple:
        return r["seed"], r["machine"], scored_with_masks(r, grid)

    acc = {key(r): float(r["search_time_s"]) for r in a_rows}
    pairs = [(float(r["search_time_s"]), acc[key(r)]) for r in e_rows if key(r) in acc]
    if not pairs:
        return None
    return float(np.mean([p[0] for p in pairs])), float(np.mean([p[1] for p in pairs])), len(pairs)


def model_macs(models: list[str], dataset: str, widths: dict[str, float] | None = None) -> dict[str, float]:
    """MACs of each untrained model at the dataset's input size and its grid width (for cost estimates)."""
    import torch

    from entroprune import count_macs_params
    from entroprune.models import build_model, min_input_size

    sizes = {"fashion-mnist": (1, 28), "mnist": (1, 28), "digits": (1, 8), "cifar10": (3, 32)}
    ch, side = sizes.get(dataset, (1, 28))
    out = {}
    for m in models:
        s = max(side, min_input_size(m))
        net = build_model(m, 10, ch, width_mult=(widths or {}).get(m, 1.0)).eval()
        out[m] = float(count_macs_params(net, torch.zeros(1, ch, s, s))[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(Path(__file__).with_name("reproduce.yaml")))
    ap.add_argument("--out", default="docs/results.md")
    ap.add_argument("--studies", default="docs/measurements", help="folder of reward_study_ft_*.json")
    ap.add_argument("--readme", default="docs/paper.md", help="page whose results markers get the summary "
                    "('' to leave it alone)")
    args = ap.parse_args()
    grid = load_grid(args.grid)
    grid_name = Path(args.grid).resolve().relative_to(Path.cwd()) if Path(args.grid).resolve().is_relative_to(
        Path.cwd()) else Path(args.grid)
    results_path = Path(grid["results"])
    rows = read_rows(results_path)
    parts = read_rows(Path(grid["parts"]))
    baselines = {r["model"]: r for r in read_rows(results_path.with_name("baselines.csv"))}
    skipped = {(r["model"], float(r["target"])): r["reason"] for r in read_rows(results_path.with_name("skipped.csv"))}
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["model"], float(r["target"]), r["source"])].append(r)
    models, targets, sources, seeds = grid["models"], [float(t) for t in grid["targets"]], grid["sources"], grid["seeds"]
    total = len(models) * len(targets) * len(sources) * len(seeds)
    # follow-up sources (e.g. the tool's default entropy reward) for some models, beside the grid's cells
    followup = {s: [m for m in ms if m in models] for s, ms in (grid.get("followup") or {}).items()}
    grid_rows = [r for r in rows if r["source"] in sources]
    f_rows = [r for r in rows if r["source"] in followup]
    f_planned = {s: sum((m, t) not in skipped for m in ms for t in targets) * len(seeds) for s, ms in followup.items()}
    f_done = {s: sum(r["source"] == s for r in f_rows) for s in followup}

    # ---- cost: measured per (model, source) cell times; other models scaled by their MACs
    lost = [m for m in models if any(r["model"] == m for r in rows)
            and not (Path(grid["baselines"]) / m / "model.pt").exists()]
    widths = {m: float(w) for m, w in (grid.get("widths") or {}).items() if float(w) != 1.0}
    macs = model_macs(models, grid["dataset"], widths)
    full_macs = model_macs(list(widths), grid["dataset"])
    measured = {(m, s): [float(r["cell_time_s"]) for t in targets for r in cells.get((m, t, s), [])]
                for m in models for s in sources}
    ref_model = next((m for m in models if all(measured[(m, s)] for s in sources)), None)

    def cell_cost(m: str, s: str) -> float | None:
        if measured[(m, s)]:
            return float(np.mean(measured[(m, s)]))
        if ref_model is None:
            return None
        return float(np.mean(measured[(ref_model, s)])) * macs[m] / macs[ref_model]

    def baseline_cost(m: str) -> float | None:
        if m in baselines:
            return float(baselines[m]["train_time_s"])
        ref = next((b for b in baselines.values()), None)
        return None if ref is None else float(ref["train_time_s"]) * macs[m] / macs[ref["model"]]

    done = {(r["model"], float(r["target"]), r["source"], int(r["seed"])) for r in rows}
    est_total, est_left = 0.0, 0.0
    for m in models:
        b = baseline_cost(m) or 0.0
        est_total += b
        if m not in baselines:
            est_left += b
        for t in targets:
            for s in sources:
                if (m, t) in skipped:
                    continue
                c = cell_cost(m, s) or 0.0
                est_total += c * len(seeds)
                est_left += c * sum((m, t, s, seed) not in done for seed in seeds)
    actual = sum(float(p["wall_time_s"]) for p in parts)
    rerun = max(0, sum(int(p["cells"]) for p in parts) - len(rows))  # rows replaced by a rerun are not kept

    by_machine: dict[str, list[str]] = defaultdict(list)  # machine -> models it ran cells of (times differ by CPU)
    for r in rows:
        if r["model"] not in by_machine[r["machine"]]:
            by_machine[r["machine"]].append(r["model"])
    n_on = {k: sum(r["machine"] == k for r in rows) for k in by_machine}
    machine = "; ".join(f"{k} ({n_on[k]} cell{'s' * (n_on[k] != 1)}: {', '.join(v)})"
                        for k, v in by_machine.items()) or "n/a"
    machine_note = (" Times (search, fine-tune, speed-ups) are comparable within one machine only; the grid ran in "
                    "parts on whichever machine each session had." if len(by_machine) > 1 else "")
    dates = sorted({r["date"] for r in rows})
    md = ["# Reproduction results", "",
          "Does minimising the spatial entropy of conv activations find pruning policies as good as an "
          "accuracy reward, 5-10x cheaper in MACs at little accuracy cost (Musat & Andonie, arXiv 2312.04918)? "
          "Measured on Fashion-MNIST, whatever it shows.", "",
          f"- Grid `{grid_name}`: {len(grid_rows)} of {total} cells run ({len(models)} models x {len(targets)} targets "
          f"x {len(sources)} policy sources x {len(seeds)} seeds). Sources: `entropy` and `accuracy` are DDPG "
          f"searches of {grid['search_episodes']} episodes ({grid['warmup']} warm-up) with that reward (entropy: "
          f"`{grid['entropy_variant']}` over {grid['entropy_layers']} conv layers; accuracy "
          f"on {grid['accuracy_val_size']} validation images); `uniform` keeps the same fraction of every group (the largest within "
          "the budget once channels are rounded; the action wall may raise the last groups to fill it); "
          "`random` is one random policy under the same MACs wall. Every policy is pruned, BN-recalibrated and "
          f"fine-tuned with the same fixed budget: {grid['finetune_epochs']} epoch(s) of SGD with a cosine schedule"
          f"{' and distillation from the unpruned net' if grid['finetune_distill'] else ''}; channels rounded to "
          f"{grid['round_to']}, smallest keep ratio {grid['min_keep']}. Baselines: {grid['baseline_epochs']} epochs, "
          f"seed 0, kept in `{grid['baselines']}/` so that every part of the grid uses the same net (another CPU "
          "or thread count rounds floats differently)"
          + (f"; those of {', '.join(lost)} were trained before the grid kept them, when the baseline's initial "
             "weights were not yet seeded, and cannot be retrained (their cells were all run first)" if lost else "")
          + ". Test accuracy is measured once, at the end; searches see only validation/calibration images."
          + "".join(f" `{m}` is built at width {w} ({macs[m] / 1e6:.0f}M MACs instead of {full_macs[m] / 1e6:.0f}M "
                    "at full width), to fit the grid on 2 cores; depth and layout unchanged." for m, w in widths.items()),
          *[f"- Follow-up source `{s}` (not counted in the grid's cells; its rows are marked so in the tables): a "
            "DDPG search like `entropy`'s, with the tool's default entropy reward (`cooccurrence` over the last conv "
            "layer with a spatial map), which the reward study below chose after the grid's `entropy` source was "
            f"pinned; for {', '.join(ms)}: {f_done[s]} of {f_planned[s]} cells run (targets the grid's "
            "settings rule out left aside). It tells whether the default variant closes the gap "
            "to the accuracy reward." for s, ms in followup.items()],
          *[f"- {note}" for note in grid.get("notes") or []],
          f"- Machine{'s' if len(by_machine) > 1 else ''}: {machine}.{machine_note} Runs dated {', '.join(dates) or 'n/a'}; page made {time.strftime('%Y-%m-%d')}.",
          "- Regenerate: `python benchmarks/reproduce.py` (resumable: skips finished cells; `--only MODEL`, "
          "`--max-minutes M` to run in parts), then `python benchmarks/make_results.py`.",
          f"- Cost: {len(parts)} part(s) of the grid ran for {actual / 3600:.2f} h in all"
          + (f" (follow-up cells: {sum(float(r['cell_time_s']) for r in f_rows) / 3600:.2f} h of it)" if f_rows
             else "") + ". " + (
              f"Every cell the settings allow is run: the grid cells' and baselines' own times add up to "
              f"{est_total / 3600:.1f} h (what the page estimated from the mean cell time per model and source "
              f"while cells were missing); the parts' wall time is higher by {rerun} cell(s) rerun after a fix "
              f"({sum(int(p['cells']) for p in parts)} cells finished in the parts, {len(rows)} rows kept; see the "
              "notes above), cells cut off by the end of a session before they finished"
              + (", each part's start-up and the follow-up cells." if f_rows else " and each part's start-up.")
              if est_left == 0 else
              f"Estimated cost of the whole grid on the machine(s) above: {est_total / 3600:.1f} h (baselines "
              f"included), of which {est_left / 3600:.1f} h not yet run. Estimate: the mean measured time of a cell "
              f"per model and source; for models with no measured cell, {ref_model or 'the first complete model'}'s "
              "times scaled by the model's MACs."), ""]

    # ---- per model and target
    verdicts, f_verdicts = [], defaultdict(list)
    for m in models:
        base = baselines.get(m)
        base_acc = f"{float(base['test_accuracy']):.2f}%" if base else NOT_RUN
        md += [f"## {m}{f' at width {widths[m]}' if m in widths else ''} (baseline test accuracy {base_acc})", ""]
        ran_any = any(cells.get((m, t, s)) for t in targets for s in sources)
        if not ran_any:
            cost = sum((cell_cost(m, s) or 0) for s in sources) * len(seeds) * len(targets) + (baseline_cost(m) or 0)
            md += [f"Not run: the compute budget of the sessions so far (2-core CPU) went to the models above; "
                   f"estimated {cost / 3600:.1f} h on the machine(s) above. Run `python benchmarks/reproduce.py --only {m}`.", ""]
            continue
        for t in targets:
            md += [f"### {m}, {t:.0%} of the MACs ({1 / t:.0f}x fewer)", "",
                   "| source | test acc after fine-tune (%) | drop vs baseline (points) | acc before fine-tune (%) "
                   "| MACs fraction | params fraction | torch speed-up b64 | search time (s) |",
                   "|---|---|---|---|---|---|---|---|"]
            for s in sources + [s for s, ms in followup.items() if m in ms]:
                rs = cells.get((m, t, s), [])
                acc = [float(r["test_accuracy"]) for r in rs]
                drop = [float(r["baseline_accuracy"]) - float(r["test_accuracy"]) for r in rs]
                note = "" if len(rs) in (0, len(seeds)) else f" ({len(rs)} of {len(seeds)} seeds)"
                md.append(f"| {s}{' (follow-up)' * (s in followup)}{note} | {fmt(acc)} | {fmt(drop)} "
                          f"| {fmt([float(r['accuracy_before_finetune']) for r in rs])} "
                          f"| {fmt([float(r['macs_fraction']) for r in rs], 3)} "
                          f"| {fmt([float(r['params_fraction']) for r in rs], 3)} "
                          f"| {fmt([float(r['speedup_torch_b64']) for r in rs])} "
                          f"| {fmt([float(r['search_time_s']) for r in rs], 0)} |")
            if (m, t) in skipped:
                md += ["", f"Not run: the grid's settings rule it out: {skipped[(m, t)]}"]
            elif not any(cells.get((m, t, s)) for s in sources):
                md.append("")
                md.append("Not run yet (compute budget); `python benchmarks/reproduce.py --only "
                          f"{m}` continues the grid.")
            md.append("")
            mean = {s: np.mean([float(r["test_accuracy"]) for r in cells[(m, t, s)]])
                    for s in sources if cells.get((m, t, s))}
            n = {s: len(cells.get((m, t, s), [])) for s in sources}
            if "entropy" in mean:
                drop, vs_acc, vs_uniform = goal_checks(m, t, "entropy", cells, mean, n)
                verdicts += [drop] + ([vs_acc] if vs_acc else [])
                sp = search_speed(cells[(m, t, "entropy")], cells[(m, t, "accuracy")], grid) if vs_acc else None
                if sp is not None:
                    te, ta, k = sp
                    verdicts.append((m, t, f"entropy search {ta / te:.1f}x faster than accuracy search ({te:.0f} s vs "
                                     f"{ta:.0f} s, same episodes, seeds run on one machine with one scoring mode; "
                                     "goal >= 3x)", ta / te >= 3, k))
                verdicts += [vs_uniform] if vs_uniform else []
            if "entropy" in mean and "random" in mean:
                verdicts.append((m, t, f"entropy {mean['entropy']:.2f}% vs one random policy {mean['random']:.2f}%",
                                 mean["entropy"] > mean["random"], min(n["entropy"], n["random"])))
            for f in followup:
                if cells.get((m, t, f)):
                    fm = float(np.mean([float(r["test_accuracy"]) for r in cells[(m, t, f)]]))
                    f_verdicts[f] += [c for c in goal_checks(m, t, f, cells, mean, n) if c]
                    if "entropy" in mean:
                        f_verdicts[f].append((m, t, f"{f} {fm:.2f}% vs the grid's entropy source {mean['entropy']:.2f}% "
                                              f"({fm - mean['entropy']:+.2f} points)", None,
                                              min(len(cells[(m, t, f)]), n["entropy"])))

    # ---- goals
    md += ["## Against the goals", "",
           "Means over the seeds run (the count is given; fewer than 3 seeds is a weak result). "
           "'met' / 'NOT met' is read off the numbers above, nothing else.", ""]
    if verdicts:
        md += ["| model | target | measured | verdict | seeds |", "|---|---|---|---|---|"]
        md += [f"| {m} | {t:.0%} | {text} | {'met' if ok else '**NOT met**'} | {k} |" for m, t, text, ok, k in verdicts]
    else:
        md.append("No cell run yet.")
    md.append("")

    if verdicts:
        met = sum(v[3] for v in verdicts)
        md += ["Where the claim holds, goal by goal (entropy-reward policies; pairs = model and target run):", "",
               *claim_summary(verdicts), "",
               f"{met} of {len(verdicts)} checks met. Caveats that bear on them:", "",
               f"- Fine-tuning budget: {grid['finetune_epochs']} epoch(s) for every policy, what the grid costs on 2 "
               f"cores. {main_job_sentence()} The drop goals assume a full fine-tune; the comparisons between "
               "sources share one budget and are fair.",
               f"- Search time: the accuracy reward scores {grid['accuracy_val_size']} validation images here; its "
               "cost grows with that number (at the CLI default of 5,000, `benchmarks/search_speed.py` measured an "
               "entropy episode 13.7x cheaper; `docs/measurements/search_speed.md`). Some cells ran while tests shared "
               "the 2 cores, which inflates their search times (the spread in the tables).",
               "- Three seeds of the search and fine-tune, one baseline per model: differences below about two "
               "standard deviations of the table entries are not resolved.", ""]

    for f, ms in followup.items():
        md += [f"## Follow-up: `{f}`, the tool's default entropy reward", "",
               f"{f_done[f]} of {f_planned[f]} follow-up cells run (for {', '.join(ms)}). "
               "The same goals, and the grid's `entropy` source beside it (same search, older reward).", ""]
        mine = f_verdicts[f]
        if mine:
            md += ["| model | target | measured | verdict | seeds |", "|---|---|---|---|---|"]
            md += [f"| {m} | {t:.0%} | {text} | {'met' if ok is True else '**NOT met**' if ok is False else '-'} "
                   f"| {k} |" for m, t, text, ok, k in mine]
            checks = [v for v in mine if v[3] is not None]
            md += ["", f"{sum(v[3] for v in checks)} of {len(checks)} checks met.", ""]
        else:
            md += ["No follow-up cell run yet.", ""]

    # ---- reward study after fine-tuning
    studies = sorted(Path(args.studies).glob("reward_study_ft_*.json"))
    md += ["## Reward study: does low entropy predict accuracy after fine-tuning?", ""]
    if studies:
        md += ["`benchmarks/reward_study.py --finetune-images N`: random policies under the MACs wall; for each, every "
               "entropy variant on every conv layer (BN recalibrated, as in the search) and the validation accuracy "
               "after a short fine-tune of the physically pruned net. Spearman rank correlation with that accuracy "
               "(positive = the reward ranks policies the right way); normalised per layer, as the search does.", "",
               "| model | target | policies | fine-tune | " + " | ".join(
                   ["distribution", "cooccurrence", "distribution-avg", "cooccurrence-avg"]) +
               " | cooccurrence, last layer (default) | accuracy reward | smallest keep ratio |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for path in studies:
            st = json.loads(path.read_text())

            def rho(variant: str, layers: str = "all", st=st) -> str:
                r = next((x for x in st["results"] if x["variant"] == variant and x["layers"] == layers
                          and x["normalize"]), None)
                return "n/a" if r is None or r["spearman"] != r["spearman"] else f"{r['spearman']:+.2f}"

            acc_r = st.get("spearman_accuracy_reward")
            naive = st["spearman_min_keep_baseline"]  # NaN when every policy has the same smallest ratio
            md.append(f"| {st['model']} | {st['target']:.0%} | {st['policies']} | {st['finetune_epochs']} epoch on "
                      f"{st['finetune_images']} images | "
                      + " | ".join(rho(v) for v in ["distribution", "cooccurrence", "distribution-avg",
                                                    "cooccurrence-avg"])
                      + f" | {rho('cooccurrence', 'last')} | {'n/a' if acc_r is None else f'{acc_r:+.2f}'} "
                      f"| {'n/a' if naive != naive else f'{naive:+.2f}'} |")
        loaded = [json.loads(p.read_text()) for p in studies]
        md += ["", *variant_ranking(loaded)]
        md += ["", "Full tables (every variant x layer selection x normalisation): "
               + ", ".join(f"`{p.with_suffix('.md')}`" for p in studies) + ". How these (and the study before "
               "fine-tuning) chose the default variant: `docs/method.md`.", ""]
    else:
        md += ["Not run yet.", ""]

    # ---- plot
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4))
        markers = dict(zip(models, "osD^v", strict=False))
        for i, s in enumerate(sources + list(followup)):
            for m in models:
                rs = [r for r in rows if r["source"] == s and r["model"] == m]
                if rs:
                    ax.scatter([float(r["macs_fraction"]) for r in rs],
                               [float(r["test_accuracy"]) - float(r["baseline_accuracy"]) for r in rs],
                               color=f"C{i}", marker=markers.get(m, "o"), s=22, alpha=0.8,
                               label=f"{s} ({m})")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("fraction of the baseline's MACs kept")
        ax.set_ylabel("test accuracy change after fine-tuning (points)")
        ax.legend(fontsize=7, ncol=2)
        plot = Path(args.out).with_name("results_accuracy_vs_macs.png")
        fig.savefig(plot, dpi=110, bbox_inches="tight")
        md += ["## Accuracy against MACs", "", f"![accuracy change vs MACs fraction]({plot.name})", ""]
    Path(args.out).write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}")
    if args.readme:
        update_readme(Path(args.readme), summary_table(cells, models, targets, sources, baselines, len(seeds), grid,
                                                       followup), args.out)


def variant_ranking(studies: list[dict], top: int = 6) -> list[str]:
    """Every entropy variant x layer selection (normalised, as the search runs) ranked by its mean
    Spearman over all studies: what the default variant should be chosen by."""
    keys = sorted({(r["variant"], r["layers"]) for st in studies for r in st["results"] if r["normalize"]})
    names = [f"{st['model']} {st['target']:.0%}" for st in studies]
    table = []
    for variant, layers in keys:
        vals = [next((r["spearman"] for r in st["results"] if r["variant"] == variant and r["layers"] == layers
                      and r["normalize"]), float("nan")) for st in studies]
        table.append((float(np.nanmean(vals)), variant, layers, vals))
    acc = [st.get("spearman_accuracy_reward") for st in studies]
    table.sort(key=lambda t: -t[0])
    out = [f"Entropy variants ranked by their mean Spearman over the {len(studies)} studies (normalised per layer; "
           f"the top {top}, and `cooccurrence-avg` over all layers, the default before this ranking and the grid's "
           "`entropy` source):", "",
           "| rank | variant | layers | mean | " + " | ".join(names) + " |",
           "|---|---|---|---|" + "---|" * len(names)]
    for rank, (mean, variant, layers, vals) in enumerate(table, 1):
        if rank <= top or (variant, layers) == ("cooccurrence-avg", "all"):
            out.append(f"| {rank} | {variant} | {layers} | {mean:+.2f} | "
                       + " | ".join(f"{v:+.2f}" for v in vals) + " |")
    if all(a is not None for a in acc):
        out.append(f"| - | accuracy reward | - | {np.mean(acc):+.2f} | " + " | ".join(f"{a:+.2f}" for a in acc) + " |")
    return out


def summary_table(cells: dict, models: list[str], targets: list[float], sources: list[str], baselines: dict,
                  n_seeds: int, grid: dict, followup: dict[str, list[str]] | None = None) -> list[str]:
    """The results table of docs/paper.md: mean test accuracy after fine-tuning per source (follow-up sources
    in their own columns, '-' for models they are not run on), run cells only."""
    followup = followup or {}
    cols = sources + [f"{f} (follow-up)" for f in followup]
    lines = ["| model | MACs kept | baseline | " + " | ".join(cols) + " | entropy search vs accuracy search |",
             "|---|---|---|" + "---|" * len(cols) + "---|"]
    for m in models:
        for t in targets:
            if not any(cells.get((m, t, s)) for s in sources):
                continue
            accs = []
            for s in sources + list(followup):
                if s in followup and m not in followup[s]:
                    accs.append("-")
                    continue
                rs = cells.get((m, t, s), [])
                seeds = "" if len(rs) == n_seeds else f" ({count_text(len(rs), 'seed')})"
                accs.append(f"{np.mean([float(r['test_accuracy']) for r in rs]):.2f}{seeds}" if rs else NOT_RUN)
            e, a = cells.get((m, t, "entropy")), cells.get((m, t, "accuracy"))
            sp = search_speed(e, a, grid) if e and a else None
            speed = "n/a" if sp is None else f"{sp[1] / sp[0]:.1f}x faster" + (
                f" ({sp[2]} seed{'s' * (sp[2] != 1)})" if sp[2] != n_seeds else "")
            base = f"{float(baselines[m]['test_accuracy']):.2f}" if m in baselines else "n/a"
            lines.append(f"| {m} | {t:.0%} | {base} | " + " | ".join(accs) + f" | {speed} |")
    return lines


CLAIMS = [("drop", "accuracy drop within the goal (0.5 points at 5x, 1.0 at 10x)"),
          ("vs accuracy reward", "within 0.3 points of the accuracy reward"),
          ("search", "search at least 3x faster than the accuracy search"),
          ("vs uniform", "better than `uniform`")]


def claim_summary(verdicts: list[tuple]) -> list[str]:
    """One plain line per goal: in which (model, target) pairs it holds."""
    out = []
    for key, goal in CLAIMS:
        vs = [v for v in verdicts if key in v[2]]
        held = [f"{m} {t:.0%}" for m, t, _, ok, _ in vs if ok]
        out.append(f"- {goal}: holds in {len(held)} of {len(vs)} pairs" + (f" ({', '.join(held)})." if held else "."))
    return out


def goal_checks(m: str, t: float, src: str, cells: dict, mean: dict, n: dict) -> tuple:
    """An entropy-reward source's (the grid's or a follow-up) drop, gap to the accuracy reward and
    comparison with `uniform`, as verdict rows; the last two None when that source has no cells."""
    rs = cells[(m, t, src)]
    acc = float(np.mean([float(r["test_accuracy"]) for r in rs]))
    d = float(np.mean([float(r["baseline_accuracy"]) - float(r["test_accuracy"]) for r in rs]))
    drop = (m, t, f"{src}-policy drop {d:.2f} points (goal <= {GOALS.get(t, 1.0)})", d <= GOALS.get(t, 1.0), len(rs))
    vs_acc = vs_uniform = None
    if "accuracy" in mean:
        gap = float(mean["accuracy"]) - acc
        vs_acc = (m, t, f"{src} {acc:.2f}% vs accuracy reward {mean['accuracy']:.2f}% (gap {gap:+.2f} points; goal: "
                  "within 0.3)", gap <= 0.3, min(len(rs), n["accuracy"]))
    if "uniform" in mean:
        vs_uniform = (m, t, f"{src} {acc:.2f}% vs uniform {mean['uniform']:.2f}% (goal: better)",
                      acc > float(mean["uniform"]), min(len(rs), n["uniform"]))
    return drop, vs_acc, vs_uniform


def update_readme(readme: Path, table: list[str], page: str) -> None:
    replace_block(readme, "results", [
        "", f"Test accuracy (%) after pruning and the same fixed fine-tune, mean over seeds; from `{page}` "
        "(generated by `python benchmarks/make_results.py`, which also writes this table).", "", *table, ""])
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
