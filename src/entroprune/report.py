"""The Markdown + JSON + PNG report of a run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .search.free_channels import steps_summary
from .search.rerank import mean_reading
from .settings import PROGRESS_FILE, busy_warning
from .utils import atomic_write, count_text, read_json, shape_text, shell_arg, write_json, write_text


def pyplot():
    """matplotlib's pyplot on the file-only backend (reports are written where no display may be)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """``fig`` as a PNG at ``path``, written whole or not at all, and closed."""
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    pyplot().close(fig)


def _plots(run_dir: Path, entries: list[dict], policy: dict | None, uniform: dict | None) -> list[str]:
    plt = pyplot()
    made = []
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)

    def save(fig, name):
        save_figure(fig, plot_dir / name)
        made.append(f"plots/{name}")

    if policy:
        names = list(policy["policy"])
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names)), 3.6))
        xs = np.arange(len(names))
        ax.bar(xs - 0.2, [policy["policy"][n] for n in names], 0.4, label=f"found ({policy.get('reward_kind')})")
        if uniform:
            ax.bar(xs + 0.2, [uniform[n] for n in names], 0.4, label="uniform")
        ax.set_xticks(xs, names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("keep ratio")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"keep ratio per group at {policy['achieved']:.1%} of the MACs")
        ax.legend()
        save(fig, "keep_ratios.png")
    if entries:
        ep = [e["episode"] for e in entries if e["finite"]]
        rw = [e["reward"] for e in entries if e["finite"]]
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.plot(ep, rw, ".", ms=3, alpha=0.6, label="episode")
        ax.plot(ep, np.maximum.accumulate(rw), "-", label="best so far")
        ax.set_xlabel("episode")
        ax.set_ylabel("reward")
        ax.legend()
        save(fig, "reward.png")
        diag = [(e["entropy"], e["accuracy"]) for e in entries
                if e["finite"] and e.get("accuracy") is not None and e.get("entropy") is not None]
        if diag:
            fig, ax = plt.subplots(figsize=(4.6, 3.6))
            ax.scatter([d[0] for d in diag], [100 * d[1] for d in diag], s=12)
            ax.set_xlabel("entropy (reward = minus this)")
            ax.set_ylabel("validation accuracy (%), no fine-tuning")
            ax.set_title(f"{len(diag)} diagnosed episodes")
            save(fig, "entropy_vs_accuracy.png")
    return made


def format_value(v: Any) -> str:
    """One table cell, the same in report.md and on the terminal."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _score(v: float | None) -> str:
    """A re-ranking score: close candidates differ in the third significant digit (KL near 0.002), which
    fixed decimals would print as a tie."""
    return "-" if v is None else f"{v:.4g}"


def _confirmed(candidate: dict[str, Any]) -> float | None:
    """The mean the re-ranking decided on, where the candidate was confirmed (None: not, or a reading failed)."""
    if not candidate.get("confirm_rewards"):
        return None
    mean = mean_reading(candidate)
    return mean if math.isfinite(mean) else None


# without labels (an unlabelled dataset) a run's quality is top-1 agreement with its original
SCORES = {"test_accuracy": "test accuracy", "test_agreement": "top-1 agreement with the original"}


def score_key(row: dict[str, Any]) -> str:
    """Which of :data:`SCORES` a row or metrics record holds."""
    return "test_accuracy" if "test_accuracy" in row else "test_agreement"


TABLE_COLUMNS = [("name", "model"), ("test_accuracy", "test acc (%)"), ("test_agreement", "agreement (%)"),
                 ("params", "params"), ("macs", "MACs"),
                 ("macs_reduction", "MACs reduction (x)"), ("torch_b1_ms", "torch b1 (ms)"),
                 ("torch_b64_ms", "torch b64 (ms)"), ("ts_b64_ms", "TorchScript b64 (ms)"), ("ort_b1_ms", "ORT b1 (ms)"),
                 ("ort_b64_ms", "ORT b64 (ms)"), ("speedup_torch_b64", "torch speed-up b64 (x)"),
                 ("speedup_ts_b64", "TorchScript speed-up b64 (x)"), ("speedup_ort_b64", "ORT speed-up b64 (x)"),
                 ("speedup_vs_macs_b64", "torch speed-up / MACs red.")]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cols = [(k, title) for k, title in TABLE_COLUMNS if any(k in r for r in rows)]
    lines = ["| " + " | ".join(t for _, t in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(format_value(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def _read_episodes(path: Path) -> list[dict]:
    from .errors import ConfigError

    if not path.exists():
        return []
    entries = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            e = json.loads(line)
            ok = isinstance(e, dict) and isinstance(e.get("episode"), int) and isinstance(e.get("finite"), bool) and (
                not e["finite"] or isinstance(e.get("reward"), (int, float)))
        except (json.JSONDecodeError, RecursionError):
            ok = False
        if not ok:
            raise ConfigError(f"{path} line {i} is not an episode record (a truncated write?); resume the search "
                              "with `resume=True`, which rewrites the log from its saved state")
        entries.append(e)
    return entries


def speedup_sentence(pr: dict[str, Any]) -> str:
    """The pruned net's batch-64 speed-ups on each runtime, and each as a fraction of its MACs reduction."""
    from .latency import RUNTIME_NAMES, ratio_key

    parts = [f"{name} {pr[f'speedup_{rt}_b64']:.2f}x (ratio {pr[ratio_key(rt)]:.2f})"
             for rt, name in RUNTIME_NAMES.items() if f"speedup_{rt}_b64" in pr]
    return (f"Batch-64 CPU speed-up for a {pr['macs_reduction']:.2f}x MACs reduction: " + ", ".join(parts)
            + " (ratio: speed-up / MACs reduction, 1 when time falls as fast as the MACs).")


def timing_note(row: dict[str, Any]) -> str:
    """How a row's latencies were taken, in words (runs from before fresh processes lack the key)."""
    n = row.get("latency_processes") or 0
    where = f" in each of {n} fresh processes" if n > 1 else " in a fresh process" if n == 1 else ""
    over = ", then the median over the processes" if n > 1 else ""
    eager = ("the net as `entroprune.export.deployed_eager` prepares it (batch norms folded, channels-last)"
             if row.get("eager_deployed") else "the net as loaded")
    return (f"the two models timed in alternation{where} with glibc's heap kept (the original's median, the pruned "
            f"net's median ratio to it round by round{over}); torch eager: {eager}; TorchScript: the exported net "
            "loaded with `torch.jit.optimize_for_inference`")


def _params_lines(evaluation: dict, summary: dict | None) -> list[str]:
    """A search bounded in parameters: the target beside the pruned net's measured count."""
    if not summary or summary.get("params_target") is None:
        return []
    base, pr = evaluation["rows"][0], evaluation["rows"][-1]
    return [f"Parameter target {summary['params_target']:.1%} of the original: {pr['params'] / base['params']:.1%} "
            f"kept ({pr['params']:,} of {base['params']:,}).", ""]


def _latency_lines(evaluation: dict, summary: dict | None) -> list[str]:
    """A latency-targeted search: the latency its model predicted for the result beside the one measured."""
    if not summary or "latency_fraction" not in summary:
        return []
    base, pr = evaluation["rows"][0], evaluation["rows"][-1]
    model = summary.get("latency_model") or {}
    from .latency import RUNTIMES, in_fresh

    rt = RUNTIMES.get((summary.get("config") or {}).get("latency_backend", "torch"), "torch")
    key = f"{rt}_b64_ms"
    measured = f"{pr[key] / base[key]:.1%} measured ({'TorchScript' if rt == 'ts' else rt}, batch 64)" \
        if key in pr and key in base else "not measured"
    fresh = f", each timed{in_fresh(model['fit_processes'])}" if model.get("fit_processes") else ""
    err = f"; the model's median error on random pruned nets{fresh}: {model['median_error']:.1%}" \
        if model.get("median_error") is not None else ""
    lines = [f"Latency target {summary['latency_target']:.0%} of the original: {summary['latency_fraction']:.1%} "
             f"predicted, {measured}{err}."]
    freed = summary.get("free_channels")
    if freed:
        table = summary.get("table_latency_with_free_channels")
        priced = f"; the latency model prices the net with them at {table:.1%}" \
            if any(t["kept"] for t in freed) and table is not None else ""
        lines.append(f"Free channels (each one-step-wider net timed in alternation with the chosen policy, the "
                     f"prediction above; kept where no slower): "
                     f"{steps_summary(summary)}{priced}.")
    ref = evaluation.get("macs_reference")
    if ref:
        this = f"{pr[key] / base[key]:.1%}, " if key in pr and key in base else ""
        score = score_key(pr)
        lines.append(f"MACs-targeted reference (the default search at {ref['macs_target']:.1%} of the MACs, the MACs "
                     "target whose uniform policy the latency model predicts at the same latency; same fine-tune): "
                     f"{ref['latency_fraction']:.1%} of the original's latency measured, {SCORES[score]} "
                     f"{ref[score]:.2f}% (this run: {this}{pr[score]:.2f}%, {pr[score] - ref[score]:+.2f} points).")
    return [" ".join(lines), ""]


def _check_shapes(run_dir: Path, search_dir: Path | None, evaluation: Any, policy: Any, summary: Any) -> None:
    """The fields the report reads, checked before it writes anything."""
    from .errors import ConfigError

    def bad(path: Path, what: str) -> ConfigError:
        return ConfigError(f"{path} {what}; the file was edited or comes from another version, "
                           "rerun the command that wrote it")

    if evaluation is not None:
        rows = evaluation.get("rows") if isinstance(evaluation, dict) else None
        if not (isinstance(rows, list) and rows and all(isinstance(r, dict) and isinstance(
                r.get(score_key(r)), (int, float)) for r in rows)):
            raise bad(run_dir / "evaluation.json", "lacks its 'rows' of evaluated models")
        if not _export_ok(evaluation.get("export")):
            raise bad(run_dir / "evaluation.json", "has a malformed 'export' record")
    if policy is not None and not (isinstance(policy, dict) and isinstance(policy.get("policy"), dict)
                                   and isinstance(policy.get("achieved"), (int, float))):
        raise bad(search_dir / "policy.json", "lacks its 'policy' mapping or 'achieved' fraction")
    if summary is not None and not (isinstance(summary, dict) and {"agent", "reward_kind", "episodes"} <= set(summary)):
        raise bad(search_dir / "search.json", "lacks the search's summary fields")


def _export_ok(exported: Any) -> bool:
    from .export import LOADERS

    if exported is None:  # runs before the record
        return True
    numbers = lambda v: isinstance(v, list) and all(  # noqa: E731
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    return (isinstance(exported, dict) and isinstance(exported.get("file"), str)
            and exported.get("format") in LOADERS and isinstance(exported.get("bytes"), int)
            and isinstance(exported.get("max_abs_diff"), (int, float)) and numbers(exported.get("input_size"))
            and len(exported["input_size"]) in (2, 3, 4) and numbers(exported.get("mean")) and numbers(exported.get("std"))
            and all(isinstance(exported[k], int) and not isinstance(exported[k], bool)
                    for k in ("batch", "opset") if exported.get(k) is not None)
            and (exported.get("int8") is None or _int8_ok(exported["int8"]))
            and (exported.get("classes") is None or (isinstance(exported["classes"], list)
                                                     and all(isinstance(c, str) for c in exported["classes"]))))


def _int8_ok(int8: Any) -> bool:
    return (isinstance(int8, dict) and isinstance(int8.get("file"), str) and isinstance(int8.get("bytes"), int)
            and isinstance(int8.get("float_bytes"), int) and isinstance(int8.get("agreement"), (int, float))
            and all(isinstance(int8.get(k), (int, float, type(None))) for k in ("test_accuracy", "float_test_accuracy")))


def _search_lines(summary: dict[str, Any], policy: dict[str, Any] | None, search_dir: Path | None) -> list[str]:
    """The report's search section: the agent, the re-ranking and its candidates."""
    md: list[str] = []
    target = summary.get("macs_target", summary.get("flops_target"))  # the key's name before the rename
    target = f"{target:.0%}" if isinstance(target, (int, float)) else "?"
    md += ["## Search", "",
           f"- agent `{summary['agent']}`, reward `{summary['reward_kind']}` (variant `{summary['variant']}`, "
           f"layers `{summary['layers']}`), {summary['episodes']} episodes, seed {summary['seed']}",
           f"- best reward {summary['reward']:.5f} at episode {summary['best_episode']}, "
           f"{summary['achieved']:.2%} of the MACs (target {target})"
           if not summary.get("rerank") else
           f"- re-ranked the search's {sum(c['source'] == 'search' for c in summary['rerank'])} best distinct "
           f"policies with the uniform and global ones by `{summary['config']['rerank_reward']}`"
           f"{' on their refitted nets' if summary['config'].get('rerank_refit') else ''} after "
           f"{summary['config']['recovery_steps']} recovery steps; the **{summary['chosen']}** policy won "
           f"(score {summary['reward']:.5f}, {summary['achieved']:.2%} of the MACs, target "
           f"{target})",
           "- mean time per episode (s): " + ", ".join(f"{k} {v:.3f}" for k, v in summary["mean_time_split_s"].items())]
    step = summary.get("config", {}).get("round_to")
    if step and search_dir and (search_dir / "rounding.json").exists():  # `round_to: auto`: say it was measured, and where
        md.append(f"- channels rounded to multiples of {step}, the step measured to pay most on this machine "
                  "(`search/rounding.json`)")
    elif isinstance(step, int):  # what a deployment's kernels see: blocked layouts run multiples of 8 faster
        md.append(f"- channels rounded to multiples of {step} (`round_to`; a group of at most {step} channels is "
                  "not rounded)" if step > 1 else "- channel counts not rounded (`round_to: 1`)")
    if summary.get("rerank"):
        md += ["", "| candidate | search reward | re-rank score | confirmed | MACs kept |", "|---|---|---|---|---|"]
        returned = (policy or {}).get("policy")
        md += [f"| {c['candidate']}{' (within the uniform margin)' if c.get('beaten_by_margin') else ''}"
               f"{' **(returned)**' if returned and c.get('policy') == returned else ''} | "
               f"{format_value(c['search_reward'])} | {_score(c['reward'])} | {_score(_confirmed(c))} | "
               f"{c['achieved']:.2%} |" for c in summary["rerank"]]
        readings = max((len(c.get("confirm_rewards") or []) for c in summary["rerank"]), default=0)
        if readings:  # the decision is made on these means, not on the first reading
            margin = summary["config"].get("uniform_margin", 0)
            md += ["", f"Re-rank scores: higher is better. The best searched policy and the fixed ones were read "
                       f"under {readings} recovery seeds (confirmed: the mean); the searched one stands only if its "
                       f"mean beats theirs" + (f"; the winner replaces uniform only if it beats uniform's by {margin:.0%} "
                                               "of uniform's |score|" if margin else "") + "."]
        md.append("")
    if summary.get("spearman_reward_accuracy") is not None:
        md.append(f"- Spearman(reward, validation accuracy without fine-tuning) over "
                  f"{summary['diagnosed_episodes']} diagnosed episodes: {summary['spearman_reward_accuracy']:+.3f}")
    md.append("")
    return md


def _export_lines(exported: dict[str, Any] | None) -> list[str]:
    """Where the exported net is and how a deployment feeds it (runs before this record say nothing)."""
    if not exported:
        return []
    from .export import LOADERS, output_names

    shape = shape_text(exported["input_size"])
    outputs = output_names(exported.get("outputs", 1))  # runs from before the count was recorded: their export took one output only
    listed = ", ".join(f"`{n}`" for n in outputs)
    names = "" if exported["format"] != "onnx" else (
        f", input `input`, output {listed}" if len(outputs) == 1 else f", input `input`, outputs {listed} (the first the main head)")
    rate, dims = exported.get("sample_rate"), len(exported["input_size"])
    if dims == 3:
        inputs, raw = "images", "the pixels scaled to [0, 1]"
    elif dims == 4:
        inputs, raw = "volumes (channels x depth x height x width)", "the values as stored (uint8 volumes divided by 255)"
    elif isinstance(rate, int):
        inputs, raw = f"audio clips at {rate} Hz (channels x samples)", "the samples scaled to [-1, 1] (16-bit PCM divided by 32768)"
    else:
        inputs, raw = "signals (channels x samples)", "the samples as stored"
    opset, batch = exported.get("opset"), exported.get("batch") or 0  # neither recorded before they were options
    fmt = f"{exported['format']} opset {opset}" if opset else exported["format"]
    return [f"Exported `{exported['file']}` ({fmt}, {exported['bytes']:,} bytes; outputs within "
            f"{exported['max_abs_diff']:.1e} of torch's): load it with `{LOADERS[exported['format']].format(file=exported['file'])}`"
            f"{names}; it takes {f'a batch of exactly {batch}' if batch else 'a batch of any size'} of {shape} {inputs} "
            "normalised as in training: (x - mean) / std "
            f"per channel with mean {_short(exported['mean'])} and std {_short(exported['std'])}, x {raw} "
            f"(as entroprune's dataset readers give them).{_classes_text(exported.get('classes'), exported['format'])}",
            "", *_int8_lines(exported.get("int8"))]


#: Classes the report's per-class table lists: the most changed ones, where a dataset has more.
PER_CLASS_ROWS = 10


def _per_class_lines(original: dict[str, Any], pruned: dict[str, Any], names: list[str] | None) -> list[str]:
    """Each class's test accuracy before and after, the largest losses first: a mean drop of half a point can be
    one class losing five (runs before the record, and rows without it, give none)."""
    before, after = original.get("per_class_accuracy"), pruned.get("per_class_accuracy")
    if not before or not after or len(before) != len(after):
        return []
    shown = sorted((a - b, i, b, a) for i, (b, a) in enumerate(zip(before, after, strict=True))
                   if a is not None and b is not None)[:PER_CLASS_ROWS]
    label = (lambda i: f"{i} {names[i]}") if names and len(names) == len(before) else str
    more = f" ({len(shown)} of {len(before)} classes, the largest losses first)" if len(shown) < len(before) else \
        " (the largest losses first)"
    return [f"Test accuracy per class{more}:", "", "| class | original (%) | pruned (%) | change (points) |",
            "|---|---|---|---|", *(f"| {label(i)} | {b:.2f} | {a:.2f} | {change:+.2f} |" for change, i, b, a in shown), ""]


def _classes_text(classes: list[str] | None, fmt: str) -> str:
    """Which class each output is, where the data named them (runs before the record, and unnamed labels: none)."""
    if not classes:
        return ""
    where = " (also in the file's metadata, key `classes`)" if fmt == "onnx" else ""
    return f" Its outputs are the classes {', '.join(f'{i} {c}' for i, c in enumerate(classes))}{where}."


def _int8_lines(int8: dict[str, Any] | None) -> list[str]:
    """The int8 export (`export_int8`): what quantisation cost, as a deployment would see it."""
    if not int8:
        return []
    accuracy = (f"; test accuracy {int8['test_accuracy']:.2f}% (float {int8['float_test_accuracy']:.2f}%)"
                if int8.get("test_accuracy") is not None else "")
    return [f"Quantised: `{int8['file']}` (int8 ONNX in the QDQ format, {int8['bytes']:,} bytes, "
            f"{int8['float_bytes'] / int8['bytes']:.1f}x smaller than the float ONNX), fed as the float export is; "
            f"its top-1 agrees with the float net's on {int8['agreement']:.2f}% of the test split{accuracy}.", ""]


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def finetune_text(run_dir: Path) -> str:
    """`` (N epochs, distilled from the original; more with `finetune.epochs`)`` from the run's fine-tune record:
    what the accuracy cost was measured after, and the knob that moves it."""
    m = read_json(run_dir / "finetuned" / "metrics.json")
    if not isinstance(m, dict) or not isinstance(m.get("epochs"), int):
        return ""
    how = ", distilled from the original" if m.get("distill") else ""
    start = ""
    key = next((k for k in ("test_accuracy_before", "test_agreement_before") if isinstance(m.get(k), (int, float))), None)
    if key:  # where the fine-tune started: the refit's share of the result (prune.json says whether it ran)
        record = read_json(run_dir / "pruned" / "prune.json")
        refit = record.get("refit") if isinstance(record, dict) else None
        start = f", from {m[key]:.2f}% right after the cut" + (" with the kept weights refitted" if refit else
                                                               " (no refit)" if refit is False else "")
    return f" ({count_text(m['epochs'], 'epoch')}{how}{start}; more with `finetune.epochs`)"


def uniform_gain_cause(evaluation: dict[str, Any], policy: dict[str, Any] | None) -> str:
    """Where the search returned the uniform policy, which the reference line cut plainly, what alone tells the
    searched net from it: the refit, and the channel ranking where the run ranked by another norm than the
    reference's L1 ("" where the search chose another policy; ``policy``: the run's policy.json)."""
    ref = evaluation.get("uniform_reference") or {}
    if ref.get("refit") is not False or evaluation.get("uniform_policy") != (policy or {}).get("policy"):
        return ""
    return "the refit's" if ref.get("ranked_alike", True) else "the refit's and the channel ranking's"


def reference_cut(ref: dict[str, Any]) -> str:
    """How the reference line was cut, as a phrase ("" for a net pruned as the searched one)."""
    if ref.get("refit") is not False:
        return ""
    return f"cut by {ref['importance'].upper()} without the refit" if "importance" in ref else "cut without the refit"


def write_report(run_dir: str | Path) -> Path:
    """Write report.md, report.json and plots/ for a run folder (or a search folder)."""
    from .errors import ConfigError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a run folder" if run_dir.exists() else "does not exist"
        raise ConfigError(f"run folder {run_dir} {what}; pass the folder `entroprune run` printed")
    search_dir = run_dir / "search" if (run_dir / "search").is_dir() else (
        run_dir if (run_dir / "episodes.jsonl").exists() else None)
    evaluation = read_json(run_dir / "evaluation.json")
    if search_dir is None and evaluation is None:
        raise ConfigError(f"{run_dir} holds neither a search log nor evaluation.json; "
                          "pass a folder written by `entroprune run` or `entroprune search`")
    policy = read_json(search_dir / "policy.json") if search_dir else None
    summary = read_json(search_dir / "search.json") if search_dir else None
    entries = _read_episodes(search_dir / "episodes.jsonl") if search_dir else []
    _check_shapes(run_dir, search_dir, evaluation, policy, summary)
    uniform = evaluation.get("uniform_policy") if evaluation else None
    plots = _plots(run_dir, entries, policy, uniform)
    md = [f"# entroprune report: {run_dir.name}", ""]
    if not evaluation and (run_dir / PROGRESS_FILE).exists():  # a run stopped after its search said nothing of it
        md += [f"**Unfinished run:** it stopped before its evaluation (no evaluation.json), so this report holds its "
               f"search alone; continue the run with `entroprune run --resume {shell_arg(run_dir)}`.", ""]
    if evaluation:
        given = f" (your checkpoint `{evaluation['checkpoint']}`)" if evaluation.get("checkpoint") else ""
        md += [f"Model `{evaluation.get('model')}` on `{evaluation.get('dataset')}`{given}; "
               f"MACs target {evaluation.get('macs_target', evaluation.get('flops_target'))}; machine: {evaluation.get('machine', '?')}."
               + (f" Interrupted and resumed {evaluation['resumes']}x (`entroprune run --resume`: finished stages "
                  "kept, the rest run in the later session)." if evaluation.get("resumes") else ""), "",
               markdown_table(evaluation["rows"]), ""]
        pr = evaluation["rows"][-1]
        if "speedup_vs_macs_b64" in pr:
            md.append(speedup_sentence(pr) + " Latencies: " + timing_note(pr) + ".")
            busy = busy_warning(pr, f"`entroprune evaluate {shell_arg(run_dir / 'finetuned' / 'model.pt')} --latency`")
            md += [f"**Warning:** {busy}."] if busy else []
        md += _params_lines(evaluation, summary) + _latency_lines(evaluation, summary) + _export_lines(evaluation.get("export"))
        score = score_key(pr)
        if score == "test_accuracy":
            change = pr["test_accuracy"] - evaluation["rows"][0]["test_accuracy"]  # (-drop printed -0.00 for none)
            md += [f"Test accuracy change after fine-tuning{finetune_text(run_dir)}: {change:+.2f} points.", ""]
            md += _per_class_lines(evaluation["rows"][0], pr, (evaluation.get("export") or {}).get("classes"))
        else:
            md += [f"No labels: the pruned net, fine-tuned{finetune_text(run_dir)}, agrees with the original's top-1 "
                   f"prediction on {pr[score]:.2f}% of the held-out images (test accuracy needs labels).", ""]
        ref = evaluation.get("uniform_reference")
        if ref:
            gain = pr[score] - ref[score]
            cause = uniform_gain_cause(evaluation, policy)
            same = "; the search chose the uniform policy itself" if ref.get("same_as_searched") else \
                f"; the search chose the uniform policy, so the difference is {cause}" if cause else ""
            what = "" if score == "test_accuracy" else f" {SCORES[score]}"
            cut = f", {how}," if (how := reference_cut(ref)) else ""
            md += [f"Reference: the uniform policy (one keep ratio for every group){cut} with the same fine-tune reached "
                   f"{ref[score]:.2f}%{what} at {ref['macs'] / evaluation['rows'][0]['macs']:.1%} of the MACs; "
                   f"the searched policy {pr[score]:.2f}% ({gain:+.2f} points{same}).", ""]
    if summary:
        md += _search_lines(summary, policy, search_dir)
    if plots:
        md += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    report = {"run_dir": str(run_dir), "evaluation": evaluation, "search": summary, "policy": policy,
              "plots": plots}
    write_json(run_dir / "report.json", report)
    return write_text(run_dir / "report.md", "\n".join(md))


__all__ = ["write_report", "uniform_gain_cause", "reference_cut", "markdown_table", "format_value", "score_key", "finetune_text", "SCORES", "TABLE_COLUMNS"]
