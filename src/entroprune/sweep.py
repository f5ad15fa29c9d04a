"""A trade-off sweep: the main job at several MACs targets in one folder, then one table and one plot of what each
target costs in accuracy and buys in speed.

An engineer asked for a net "5-10x cheaper" chooses between 5x and 10x on what each loses; one run per guess, each
read from its own report, was the way to find out. Each target's run is the main job, unchanged (its own folder,
report, export and uniform reference line), so a sweep's row is exactly what ``entroprune run`` at that target
gives; the sweep adds the comparison and a recommendation: the fewest MACs within a given accuracy loss.
"""

from __future__ import annotations

import copy
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import ConfigError, RunInterrupted, SweepInterrupted
from .settings import PROGRESS_FILE, checked_args

Say = Callable[[str], object]

#: The sweep's own record in its folder: its settings, then its results.
SWEEP_FILE = "sweep.json"


@dataclass
class SweepConfig:
    """Which MACs targets a sweep runs and how it recommends one.

    :param macs_targets: fractions of the MACs to keep, one main job each; the default spans "5-10x fewer MACs".
    :param max_drop: accuracy points (top-1 agreement with the original, without labels) the recommended net may
        lose against the original: the recommendation is the fewest-MACs net within it.
    """

    macs_targets: list[float] = field(default_factory=lambda: [0.1, 0.15, 0.2])
    max_drop: float = 1.0

    def validate(self) -> None:
        targets = self.macs_targets
        if not isinstance(targets, (list, tuple)) or len(targets) < 2:
            raise ConfigError(f"`macs_targets` takes at least two targets to compare, got {targets!r}; one target "
                              "is a single run of the main job")
        for t in targets:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
                raise ConfigError(f"`macs_targets` holds fractions of the MACs to keep, each in (0, 1], got {t!r}")
        if len({round(float(t), 6) for t in targets}) < len(targets):
            raise ConfigError(f"`macs_targets` names a target twice ({', '.join(map(str, targets))}); each runs once")
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) or not (
                math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ConfigError(f"`max_drop` is the accuracy points the recommended net may lose, a number >= 0, "
                              f"got {self.max_drop!r}")


def run_name(target: float) -> str:
    """A target's run folder inside the sweep's: ``macs-0.15``."""
    return f"macs-{float(target):g}"


@checked_args
def run_sweep(cfg: RunConfig, sweep: SweepConfig | None = None, quiet: bool = False, say: Say = print,
              sweep_dir: str | Path | None = None) -> Path:
    """The main job at each of ``sweep``'s MACs targets (``cfg`` otherwise as is), in a fresh
    ``sweep-<date>-<time>/`` under ``cfg.out_root`` with one run folder per target, then ``sweep.md`` with the
    trade-off table, the recommendation and ``plots/tradeoff.png``. Returns the folder. Stopped part-way, it is
    continued by :func:`resume_sweep`."""
    from .config import dump_config
    from .pipeline import check_run, fresh_dir
    from .settings import given_config
    from .utils import shell_arg, write_json, write_text

    cfg = given_config(cfg, RunConfig, "cfg", from_dict="ep.load_config(None, overrides=settings)")
    sweep = given_config(sweep, SweepConfig, "sweep")
    sweep.validate()
    if cfg.search.latency_target is not None:
        raise ConfigError("a sweep varies the MACs target alone; drop `search.latency_target` (or run each latency "
                          "target with `entroprune run`)")
    for target in sweep.macs_targets:  # each run's settings (a target of 1 with nothing else to bound) ...
        _at_target(cfg, target).search.validate()
    # ... and the lowest target, the one a net may not reach: refused now, not after the other runs
    base = check_run(_at_target(cfg, min(sweep.macs_targets)), say=lambda message: None)
    # as a run's config.yaml, with absolute paths: a resume from another folder finds the inputs and baseline cache
    base.search.macs_target, base.out_root = cfg.search.macs_target, str(Path(base.out_root).resolve())
    sweep_dir = fresh_dir(Path(base.out_root), sweep_dir, kind="sweep")
    write_text(sweep_dir / "config.yaml", dump_config(base))
    write_json(sweep_dir / SWEEP_FILE, {"macs_targets": [float(t) for t in sweep.macs_targets],
                                        "max_drop": float(sweep.max_drop)})
    say(f"sweep folder: {sweep_dir} (if it stops part-way: `entroprune sweep --resume {shell_arg(sweep_dir)}` "
        "continues it)")
    return _run_targets(base, sweep, sweep_dir, quiet, say)


@checked_args
def resume_sweep(sweep_dir: str | Path, quiet: bool = False, say: Say = print) -> Path:
    """Continue a sweep that stopped part-way in its own folder, with its settings: finished runs are kept and the
    interrupted one resumes as :func:`~entroprune.resume_run` resumes a run. Returns the folder."""
    from .config import load_config

    sweep_dir = Path(sweep_dir)
    sweep = _settings(sweep_dir, "to resume")
    if (sweep_dir / "sweep.md").exists():
        raise ConfigError(f"sweep {sweep_dir} is complete (sweep.md); start a new sweep to run it again")
    say(f"resume: {sweep_dir}")
    return _run_targets(load_config(sweep_dir / "config.yaml"), sweep, sweep_dir, quiet, say)


def _settings(sweep_dir: Path, why: str) -> SweepConfig:
    """The settings a sweep folder records, checked."""
    from .utils import read_json

    record = read_json(sweep_dir / SWEEP_FILE) if sweep_dir.is_dir() else None
    if not isinstance(record, dict) or not (sweep_dir / "config.yaml").is_file():
        raise ConfigError(f"{sweep_dir} holds no sweep {why} (no {SWEEP_FILE} and config.yaml written by "
                          "`entroprune sweep`); pass the folder `entroprune sweep` printed")
    sweep = SweepConfig(macs_targets=record.get("macs_targets"), max_drop=record.get("max_drop"))
    try:
        sweep.validate()
    except ConfigError as exc:
        raise ConfigError(f"{sweep_dir / SWEEP_FILE} was edited or damaged: {exc}") from None
    return sweep


def _at_target(cfg: RunConfig, target: float) -> RunConfig:
    at = copy.deepcopy(cfg)  # run_pipeline completes the config it is given in place
    at.search.macs_target = float(target)
    return at


def _run_targets(cfg: RunConfig, sweep: SweepConfig, sweep_dir: Path, quiet: bool, say: Say) -> Path:
    """Each target's run, lowest first; a finished one kept, an interrupted one resumed."""
    from .pipeline import resume_run, start_run
    from .utils import folder_lock

    targets = sorted(float(t) for t in sweep.macs_targets)
    with folder_lock(sweep_dir, "a sweep"):
        for i, target in enumerate(targets, 1):
            folder = sweep_dir / run_name(target)
            if _finished(folder):
                say(f"sweep: {folder.name} finished before, kept")
                continue
            say(f"sweep: run {i} of {len(targets)}, {100 * target:g}% of the MACs")
            try:
                if (folder / PROGRESS_FILE).is_file():
                    resume_run(folder, quiet=quiet, say=say)
                else:
                    if folder.exists():  # made, then stopped before its progress record: nothing to keep
                        shutil.rmtree(folder)
                    start_run(_at_target(cfg, target), quiet, say, folder, resume_hint=False)
            except RunInterrupted as exc:
                raise SweepInterrupted(str(sweep_dir), folder.name, exc.stage) from None
        write_sweep_report(sweep_dir)
    return sweep_dir


def _finished(folder: Path) -> bool:
    return (folder / "evaluation.json").is_file() and (folder / "report.md").is_file()


def sweep_rows(sweep_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The original's row and each target's (its pruned net's, with the uniform reference's score), from the run
    folders' evaluation.json, lowest target first."""
    from .report import score_key
    from .utils import read_json

    sweep_dir = Path(sweep_dir)
    original: dict[str, Any] = {}
    rows = []
    for target in sorted(float(t) for t in _settings(sweep_dir, "to report").macs_targets):
        folder = sweep_dir / run_name(target)
        ev = read_json(folder / "evaluation.json")
        if not isinstance(ev, dict) or not isinstance(ev.get("rows"), list) or len(ev["rows"]) < 2:
            raise ConfigError(f"{folder} holds no finished run (evaluation.json); resume the sweep {sweep_dir} "
                              "to finish it")
        base, pruned = ev["rows"][0], ev["rows"][-1]
        key = score_key(pruned)
        original = original or {"name": "original", "score": base.get(key, 100.0), "params": base["params"],
                                 "macs": base["macs"], "score_key": key, "model": ev.get("model"),
                                 "dataset": ev.get("dataset"), "machine": ev.get("machine"), "seed": ev.get("seed"),
                                 "date": ev.get("date")}
        uniform = ev.get("uniform_reference") or {}
        rows.append({"name": folder.name, "macs_target": target, "score": pruned[key],
                     "change": pruned[key] - original["score"], "uniform_score": uniform.get(key),
                     "params": pruned["params"], "macs": pruned["macs"],
                     "macs_fraction": pruned["macs"] / base["macs"], "macs_reduction": pruned["macs_reduction"],
                     "speedup_torch_b64": pruned.get("speedup_torch_b64"),
                     "speedup_ts_b64": pruned.get("speedup_ts_b64"), "speedup_ort_b64": pruned.get("speedup_ort_b64"),
                     "chosen": ev.get("chosen"), "export": (ev.get("export") or {}).get("file"),
                     "seconds": (ev.get("timings_s") or {}).get("total")})
    return original, rows


def recommended(rows: list[dict[str, Any]], max_drop: float) -> dict[str, Any] | None:
    """The fewest-MACs row that loses at most ``max_drop`` points (None: every row loses more)."""
    within = [r for r in rows if -r["change"] <= max_drop + 1e-9]
    return min(within, key=lambda r: r["macs"]) if within else None


def write_sweep_report(sweep_dir: str | Path) -> Path:
    """``sweep.md`` (the trade-off table, the recommendation, the plot) and the results in ``sweep.json``;
    returns sweep.md's path."""
    from .report import finetune_text, format_value
    from .utils import read_json, write_json, write_text

    sweep_dir = Path(sweep_dir)
    original, rows = sweep_rows(sweep_dir)
    record = read_json(sweep_dir / SWEEP_FILE)
    best = recommended(rows, record["max_drop"])
    metric = "test acc (%)" if original["score_key"] == "test_accuracy" else "agreement with the original (%)"
    took = sum(r["seconds"] or 0 for r in rows)
    spent = f"{took / 60:.0f} min" if took >= 90 else f"{took:.0f} s"
    lines = [f"# Trade-off sweep: {original['model']} on {original['dataset']}, {len(rows)} MACs targets", "",
             f"Machine: {original['machine']}; seed {original['seed']}; {original['date']}. The runs took {spent} in "
             "all.", "",
             "Each row is the main job at that target, in its own folder (its report.md, exported model and uniform "
             f"reference line), fine-tuned{finetune_text(sweep_dir / rows[0]['name'])}; the speed-ups are batch-64 "
             "CPU latencies against the original, timed in each run.", "",
             f"| run | MACs kept | MACs reduction | params | {metric} | change (points) | uniform policy, same "
             "fine-tune | torch eager speed-up | TorchScript speed-up | ORT speed-up | policy returned |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| original | 100% | - | {original['params']:,} | {original['score']:.2f} | - | - | - | - | - | - |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['macs_fraction']:.1%} | {r['macs_reduction']:.2f}x | {r['params']:,} | "
                     f"{r['score']:.2f} | {r['change']:+.2f} | {format_value(r['uniform_score'])} | "
                     + " | ".join(format_value(r[k]) + ("x" if r[k] is not None else "")
                                  for k in ("speedup_torch_b64", "speedup_ts_b64", "speedup_ort_b64"))
                     + f" | {r['chosen'] or '-'} |")
    lines += ["", _recommendation(best, rows, record["max_drop"]), ""]
    plot = _plot(sweep_dir, original, rows, record["max_drop"])
    lines += [f"![{metric} against MACs reduction]({plot})", ""]
    write_json(sweep_dir / SWEEP_FILE, {**record, "original": original, "rows": rows,
                                        "recommended": best["name"] if best else None})
    return write_text(sweep_dir / "sweep.md", "\n".join(lines))


def _recommendation(best: dict[str, Any] | None, rows: list[dict[str, Any]], max_drop: float) -> str:
    if best is None:
        least = max(rows, key=lambda r: r["change"])
        return (f"**No run within {_points(max_drop)} of the original**: the smallest loss is {least['name']}'s, "
                f"{-least['change']:.2f} points; a higher MACs target, or more fine-tuning (`finetune.epochs`), "
                "would lose less.")
    return (f"**Recommended** (the fewest MACs within {_points(max_drop)} of the original): `{best['name']}/`, "
            f"{best['score']:.2f}% at {best['macs_reduction']:.2f}x fewer MACs ({best['change']:+.2f} points); its "
            f"model: `{best['name']}/{best['export']}`, `{best['name']}/finetuned/model.pt`.")


def _points(x: float) -> str:
    return f"{x:g} point{'' if x == 1 else 's'}"


def _plot(sweep_dir: Path, original: dict[str, Any], rows: list[dict[str, Any]], max_drop: float) -> str:
    from .report import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 3.8))
    xs = [r["macs_reduction"] for r in rows]
    ax.plot(xs, [r["score"] for r in rows], "o-", label="pruned + fine-tuned")
    for r in rows:
        ax.annotate(r["name"], (r["macs_reduction"], r["score"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    with_uniform = [r for r in rows if r["uniform_score"] is not None]
    if with_uniform:
        ax.plot([r["macs_reduction"] for r in with_uniform], [r["uniform_score"] for r in with_uniform], "s--",
                alpha=0.7, label="uniform policy, same fine-tune")
    ax.axhline(original["score"], color="grey", lw=1, label="original")
    ax.axhline(original["score"] - max_drop, color="grey", lw=1, ls=":", label=f"original - {_points(max_drop)}")
    ax.set_xlabel("MACs reduction (x)")
    ax.set_ylabel("test accuracy (%)" if original["score_key"] == "test_accuracy" else "agreement (%)")
    ax.legend(fontsize=7)
    save_figure(fig, sweep_dir / "plots" / "tradeoff.png")
    return "plots/tradeoff.png"
