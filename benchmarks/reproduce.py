"""Run the reproduction grid: search -> prune -> fine-tune -> evaluate per cell, resumable.

    python benchmarks/reproduce.py [--grid benchmarks/reproduce.yaml] [--only vgg] [--sources S ...] [--max-cells N]
        [--max-minutes M] [--baselines-only]

Each finished cell appends one row to the grid's ``results`` CSV (tracked in git, so the grid
can run in parts over several sessions); rerunning skips the cells already there. Each part's
wall time is appended to the ``parts`` CSV. ``make_results.py`` turns both into docs/results.md.

Sources: ``entropy`` and ``accuracy`` are DDPG searches with that reward; ``uniform`` keeps the
same fraction of every group; ``random`` is one random policy under the same MACs wall (the
floor any search must beat). The grid's ``followup`` adds sources for some models after its
cells: ``entropy-last`` searches with the tool's default entropy reward (the grid's ``entropy``
source keeps the variant it was pinned to).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_row, load_grid, read_rows, write_rows  # noqa: E402

from entroprune.api import (  # noqa: E402
    build_structure,
    evaluate_checkpoint,
    finetune_checkpoint,
    load_model,
    prune_checkpoint,
    search_checkpoint,
    train_baseline,
)
from entroprune.errors import ConfigError  # noqa: E402
from entroprune.latency import FRESH_PROCESSES  # noqa: E402
from entroprune.search import SearchConfig  # noqa: E402
from entroprune.search.rewards import RewardConfig  # noqa: E402
from entroprune.settings import UNNAMED_IMPORTANCE  # noqa: E402
from entroprune.utils import machine_description  # noqa: E402

FIELDS = ["model", "target", "source", "seed", "baseline_accuracy", "accuracy_before_finetune", "test_accuracy",
          "macs_fraction", "params_fraction", "speedup_torch_b64", "search_time_s", "search_episodes",
          "finetune_time_s", "finetune_epochs", "cell_time_s", "search_reward", "policy", "machine", "date"]
# source -> (agent, reward kind, episodes or None for the grid's search_episodes)
SOURCES = {"entropy": ("ddpg", "entropy", None), "accuracy": ("ddpg", "accuracy", None),
           "uniform": ("uniform", "entropy", 1), "random": ("random", "entropy", 1), "global": ("global", "entropy", 1),
           "entropy-last": ("ddpg", "entropy", None)}
# Sources whose entropy reward is not the grid's pinned one: `entropy-last` is the tool's default
# (co-occurrence entropy of the last conv layer with a spatial map), which the reward study chose after
# the grid's `entropy` source was pinned; run as a follow-up (the grid's ``followup``) beside it.
REWARD_VARIANTS = {"entropy-last": ("cooccurrence", "last")}

#: A source with this suffix prunes its policy with the least-squares refit of the kept weights.
REFIT = "-refit"
#: ... and with the refitted filters scaled back to the plain cut's norms (``PruneConfig.refit_norms``).
REFIT_NORMS = "-refit-norms"
#: ... and with the layers whose outputs the model returns (the classifier) left as cut (``PruneConfig.refit_head``).
REFIT_BODY = "-refit-body"
#: Each suffix's value in the results' ``refit`` column ("" for a plain prune).
REFIT_KINDS = {REFIT_NORMS: "norms", REFIT_BODY: "body", REFIT: "yes"}


def refit_suffix(source: str) -> str:
    """The source's refit suffix (one of :data:`REFIT_KINDS`), or "" for a plain prune."""
    return next((s for s in REFIT_KINDS if source.endswith(s)), "")


def refit_kind(source: str) -> str:
    """The results' ``refit`` column: "" (plain prune), "yes" (refit), "norms" (refit, norms matched) or "body"
    (refit, the head left as cut)."""
    return REFIT_KINDS.get(refit_suffix(source), "")


BASELINE_FIELDS = ["model", "test_accuracy", "train_time_s", "epochs", "torch_threads", "machine"]


def record_baseline(base: Path, results: Path) -> None:
    """Write one trained baseline's accuracy and training time into the tracked baselines.csv."""
    path = results.with_name("baselines.csv")
    m = json.loads((base / "metrics.json").read_text())
    rows = [r for r in read_rows(path) if r["model"] != base.name]
    rows.append({"model": base.name, "test_accuracy": m["test_accuracy"], "train_time_s": round(m["train_time_s"], 1),
                 "epochs": m["epochs"], "torch_threads": m.get("torch_threads"), "machine": machine_description()})
    write_rows(path, BASELINE_FIELDS, rows)


def ensure_baseline(grid: dict, model: str, strict: bool = True) -> Path:
    """The model's baseline folder (tracked in git: model.pt + metrics.json), trained if missing.

    Training is deterministic for one CPU and thread count, but another CPU or thread count
    rounds floats differently and can end in another net: later parts of the grid, on other
    machines, must reuse the same file. A baseline retrained for a model that already has cells is refused (``strict``) or
    flagged, never silently mixed with them.
    """
    base = Path((grid.get("baseline_from") or {}).get(model, grid["baselines"])) / model
    if (base / "model.pt").exists():
        return base
    results = Path(grid["results"])
    has_cells = any(r["model"] == model for r in read_rows(results))
    recorded = {r["model"]: r for r in read_rows(results.with_name("baselines.csv"))}.get(model)
    if has_cells and strict:
        raise SystemExit(f"{base / 'model.pt'} is missing, but {model} has cells measured against it; restore it "
                         f"(git checkout -- {base}) or remove {model}'s rows from {results} to start the model over")
    print(f"training baseline {model} ({grid['baseline_epochs']} epochs)", flush=True)
    train_baseline(model, grid["dataset"], base, epochs=grid["baseline_epochs"], seed=0, quiet=True, force=True,
                   width_mult=float(grid.get("widths", {}).get(model, 1.0)))
    acc = json.loads((base / "metrics.json").read_text())["test_accuracy"]
    if has_cells and abs(acc - float(recorded["test_accuracy"])) > 1e-6:
        print(f"warning: {model} retrained to {acc:.2f}%, not the {float(recorded['test_accuracy']):.2f}% its grid "
              "cells used (another machine); fine for studies, not for more cells", flush=True)
    elif not has_cells:
        record_baseline(base, results)
    return base


def search_config(grid: dict, model: str, target: float, source: str, seed: int) -> SearchConfig:
    """The grid's search settings for one cell."""
    agent, reward, episodes = SOURCES[source]
    variant, layers = REWARD_VARIANTS.get(source, (grid["entropy_variant"], grid["entropy_layers"]))
    return SearchConfig(macs_target=target, agent=agent, episodes=episodes or grid["search_episodes"], seed=seed,
                        warmup=grid["warmup"], min_keep=grid["min_keep"], round_to=grid["round_to"],
                        val_size=grid["accuracy_val_size"], band=None, rerank_top_k=0, importance="l1",  # AMC's protocol
                        reward=RewardConfig(kind=reward, variant=variant, layers=layers,
                                            physical=bool(grid.get("physical_scoring", False))))


def ranking_of(row: dict) -> str:
    """The channel ranking a recorded cell pruned with (its search settings'; rows without them: L1, the only
    one before ``importance`` came in, as for any file that names none)."""
    return json.loads(row.get("search_settings") or "{}").get("importance", UNNAMED_IMPORTANCE)


_NORMS: dict[tuple[str, str], str] = {}


def norm_of(grid: dict, model: str, importance: str) -> str:
    """The norm a channel ranking settles to on the grid's baseline of ``model``: ``auto`` depends on the net
    (L2 on a plain chain), so a cell ranked ``auto`` prunes the net an ``l1`` or ``l2`` cell of the same policy did."""
    if importance != "auto":
        return importance
    key = (str(grid.get("baselines")), model)
    if key not in _NORMS:
        net, ckpt = load_model(ensure_baseline(grid, model) / "model.pt")
        _NORMS[key] = build_structure(net, ckpt.spec, "auto").norm
    return _NORMS[key]


def cell_folder(out: Path, model: str, target: float, source: str, seed: int) -> Path:
    """Where a cell's artefacts live under the grid's ``out`` (benchmarks/agent_logs.py reads its search logs)."""
    return out / "cells" / f"{model}-{target}-{source}-s{seed}"


def search_cell(path: Path, folder: Path, cfg: SearchConfig, source: str):
    """A cell's search: the tool's, with the source's settings (the arena's fixed policies replace it)."""
    return search_checkpoint(path, folder, cfg, quiet=True, force=True)


def run_cell(grid: dict, out: Path, model: str, target: float, source: str, seed: int,
             configure=search_config, earlier=lambda model, policy, seed, refit, importance: None, search=search_cell,
             prune_kind=refit_kind) -> dict:
    """Search -> prune -> fine-tune -> evaluate one cell; ``configure`` gives its SearchConfig.

    ``earlier(model, policy, seed, refit, importance)`` may return a row that already fine-tuned this policy with
    this seed and the same pruning (refit and channel ranking; the fine-tune is deterministic): its results are taken instead of fine-tuning again.
    A source named ``*-refit`` prunes with the least-squares refit (``entroprune prune --refit``), ``*-refit-norms``
    with the refitted filters scaled back to the plain cut's norms too (``PruneConfig.refit_norms``); every other
    prunes without it, as the cells recorded before the refit came in (``prune_kind(source)`` says how: the
    results' ``refit`` column). ``search`` writes the cell's policy.json and returns its SearchResult.
    """
    base = ensure_baseline(grid, model)
    t_cell = time.perf_counter()  # a cell's time leaves out its model's baseline (counted on its own)
    baseline_acc = json.loads((base / "metrics.json").read_text())["test_accuracy"]
    cell = cell_folder(out, model, target, source, seed)
    cfg = configure(grid, model, target, source, seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    res = search(base / "model.pt", cell / "search", cfg, source)
    search_time = time.perf_counter() - t0
    refit = prune_kind(source)  # the grid's sources and the arena's first ones were pruned without
    same = earlier(model, res.policy, seed, refit, cfg.importance)
    if same is not None:
        finetuned = {k: float(same[k]) if same.get(k) not in (None, "") else None
                     for k in ("accuracy_before_finetune", "test_accuracy", "macs_fraction", "params_fraction",
                               "speedup_torch_b64", "finetune_time_s")}
        finetuned["finetune_from"] = f"{same['source']} seed {same['seed']} ({same['date']})"
    else:
        prune_checkpoint(base / "model.pt", cell / "search" / "policy.json", cell / "pruned", force=True,
                         refit=bool(refit), refit_norms=refit == "norms", refit_head=refit != "body")
        ft = finetune_checkpoint(cell / "pruned" / "model.pt", cell / "finetuned", epochs=grid["finetune_epochs"],
                                 lr=float(grid.get("finetune_lr", 0.01)), distill=grid["finetune_distill"],
                                 seed=seed, quiet=True, force=True)
        rows = evaluate_checkpoint(cell / "finetuned" / "model.pt", latency=grid["latency_repeats"] > 0,
                                   repeats=max(1, grid["latency_repeats"]), processes=grid.get("latency_processes", FRESH_PROCESSES))
        finetuned = {"accuracy_before_finetune": ft["test_accuracy_before"], "test_accuracy": rows[1]["test_accuracy"],
                     "macs_fraction": rows[1]["macs"] / rows[0]["macs"],
                     "params_fraction": rows[1]["params"] / rows[0]["params"],
                     "speedup_torch_b64": rows[1].get("speedup_torch_b64"),
                     "finetune_time_s": round(ft["finetune_time_s"], 1)}
    return {"model": model, "target": target, "source": source, "seed": seed, "baseline_accuracy": baseline_acc,
            **finetuned, "search_time_s": round(search_time, 1), "search_episodes": res.episodes,
            "finetune_epochs": grid["finetune_epochs"], "cell_time_s": round(time.perf_counter() - t_cell, 1),
            "search_reward": res.reward, "policy": json.dumps(res.policy), "machine": machine_description(),
            "date": time.strftime("%Y-%m-%d"), "chosen": res.summary.get("chosen", "search"),
            "refit": refit}


def grid_cells(grid: dict) -> list[tuple[str, float, str, int]]:
    """Every (model, target, source, seed) of the grid, cheapest sources first within a model."""
    cells = [(m, float(t), s, int(seed)) for m in grid["models"] for t in grid["targets"]
             for seed in grid["seeds"] for s in grid["sources"]]
    followup = grid.get("followup") or {}  # extra sources for some models, after the grid's cells
    return cells + [(m, float(t), s, int(seed)) for m in grid["models"] for s, ms in followup.items() if m in ms
                    for t in grid["targets"] for seed in grid["seeds"]]


def machine_references(todo: list[tuple], per_machine: set[str], pairs_here: set[tuple]) -> list[tuple]:
    """Keep a ``per_machine`` source's cells (the reference every other cell is paired with, e.g. uniform)
    only for pairs this machine has cells of, recorded or to run: each machine that fine-tunes a pair's
    cells gets the pair's reference fine-tuned on it too, and no other machine reruns it."""
    active = pairs_here | {(m, t) for m, t, s, _ in todo if s not in per_machine}
    return [c for c in todo if c[2] not in per_machine or (c[0], c[1]) in active]


def stop_on_sigterm() -> None:
    """Make SIGTERM end the run like Ctrl-C, through ``finally``: a part stopped to free the machine
    still writes its row to the parts CSV (its finished cells are already in the results)."""
    def _stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _stop)


def main(argv: list[str] | None = None, doc: str = __doc__, default_grid: str = "reproduce.yaml",
         sources: dict = SOURCES, cells_of=grid_cells, configure=search_config, fields: list[str] = FIELDS,
         prepare=lambda grid: grid, extra=lambda cfg: {}, is_current=lambda grid, row: True,
         reuse_finetunes: bool = False, search=search_cell, prune_kind=refit_kind) -> None:
    """Run the cells not yet in the results CSV (the arena reuses this with its own sources).

    ``is_current(grid, row)``: whether a recorded cell still stands for its source (a changed default makes
    it stale, and the cell runs again). ``reuse_finetunes``: a policy some earlier cell already fine-tuned
    with the same seed on this machine takes that cell's results instead of a second identical fine-tune.
    The grid's ``per_machine`` sources (the reference the others are paired with) run once on every machine
    that has cells of the pair (:func:`machine_references`).
    """
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--grid", default=str(Path(__file__).with_name(default_grid)))
    ap.add_argument("--only", nargs="*", default=None, help="restrict to these models")
    ap.add_argument("--sources", nargs="*", default=None, help="restrict to these sources (a study run first)")
    ap.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    ap.add_argument("--max-minutes", type=float, default=None, help="start no new cell after this long")
    ap.add_argument("--baselines-only", action="store_true",
                    help="only train the missing baselines (e.g. for benchmarks/reward_study.py)")
    args = ap.parse_args(argv)
    grid = prepare(load_grid(args.grid))
    torch.set_num_threads(grid["threads"])
    out, results = Path(grid["out"]), Path(grid["results"])
    if args.baselines_only:
        for model in grid["models"]:
            if not args.only or model in args.only:
                print(f"{model}: {ensure_baseline(grid, model, strict=False) / 'model.pt'}", flush=True)
        return
    recorded = read_rows(results)
    here = machine_description()
    per_machine = set(grid.get("per_machine") or [])
    done = {(r["model"], float(r["target"]), r["source"], int(r["seed"])) for r in recorded
            if is_current(grid, r) and (r["source"] not in per_machine or r.get("machine") == here)}

    def earlier(model: str, policy: dict, seed: int, refit: str, importance: str) -> dict | None:
        # the fine-tune is deterministic on one machine only (another CPU moves it about as much as a seed)
        if not reuse_finetunes:
            return None
        return next((r for r in recorded if r["model"] == model and int(r["seed"]) == seed and r.get("policy")
                     and json.loads(r["policy"]) == policy and r.get("finetune_epochs") == str(grid["finetune_epochs"])
                     and not r.get("finetune_from") and r.get("machine") == here
                     and (r.get("refit") or "") == refit
                     and norm_of(grid, model, ranking_of(r)) == norm_of(grid, model, importance)), None)
    # cells the grid's settings make impossible (e.g. a target below what min_keep allows): recorded once
    skipped_path = results.with_name("skipped.csv")
    skipped = {(r["model"], float(r["target"])) for r in read_rows(skipped_path)}
    cells = cells_of(grid)
    unknown = sorted({c[2] for c in cells} - set(sources))
    if unknown:
        raise SystemExit(f"{args.grid}: unknown source(s) {', '.join(unknown)}; known: {', '.join(sources)}")
    if args.only:
        cells = [c for c in cells if c[0] in args.only]
    if args.sources:
        cells = [c for c in cells if c[2] in args.sources]
    todo = [c for c in cells if c not in done and (c[0], c[1]) not in skipped]
    todo = machine_references(todo, per_machine, {(r["model"], float(r["target"])) for r in recorded
                                                  if r.get("machine") == here})
    print(f"{len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run", flush=True)
    start, started_at, new = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M"), 0
    n_baselines = len(list(Path(grid["baselines"]).glob("*/model.pt")))
    torch.set_num_threads(grid["threads"])
    stop_on_sigterm()
    try:
        for model, target, source, seed in todo:
            if args.max_cells is not None and new >= args.max_cells:
                break
            if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
                break
            if (model, target) in skipped:
                continue
            try:
                row = run_cell(grid, out, model, target, source, seed, configure, earlier, search, prune_kind)
                row.update(extra(configure(grid, model, target, source, seed)))
            except ConfigError as exc:  # the settings rule this (model, target) out; say why, go on
                append_row(skipped_path, ["model", "target", "reason"], {"model": model, "target": target,
                                                                          "reason": str(exc)})
                skipped.add((model, target))
                print(f"{model} {target}: not run: {exc}", flush=True)
                continue
            append_row(results, fields, {k: row.get(k) for k in fields})
            recorded.append({k: "" if row.get(k) is None else str(row.get(k)) for k in fields})
            new += 1
            print(f"[{time.perf_counter() - start:6.0f} s] {model} {target} {source} seed {seed}: "
                  f"{row['test_accuracy']:.2f}% (baseline {row['baseline_accuracy']:.2f}%), "
                  f"{row['macs_fraction']:.1%} MACs, search {row['search_time_s']:.0f} s, "
                  f"cell {row['cell_time_s']:.0f} s", flush=True)
    finally:
        if new or len(list(Path(grid["baselines"]).glob("*/model.pt"))) > n_baselines:  # a baseline counts too
            append_row(Path(grid["parts"]), ["started", "cells", "wall_time_s", "machine"],
                       {"started": started_at, "cells": new, "wall_time_s": round(time.perf_counter() - start),
                        "machine": machine_description()})


if __name__ == "__main__":
    main()
