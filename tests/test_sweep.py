"""The trade-off sweep: the main job at several MACs targets, compared in one table."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from entroprune.cli import app
from entroprune.sweep import SweepConfig, recommended

runner = CliRunner()


def _row(name: str, macs: int, change: float) -> dict:
    return {"name": name, "macs": macs, "change": change}


def test_the_recommendation_is_the_fewest_macs_within_the_drop():
    rows = [_row("macs-0.1", 10, -1.4), _row("macs-0.15", 15, -1.0), _row("macs-0.2", 20, -0.3)]
    assert recommended(rows, 1.0)["name"] == "macs-0.15"  # a loss of exactly max_drop is within it
    assert recommended(rows, 2.0)["name"] == "macs-0.1"
    assert recommended(rows, 0.5)["name"] == "macs-0.2"
    assert recommended(rows, 0.1) is None
    # a pruned net above the original (a regularising fine-tune) is within any drop
    assert recommended([_row("macs-0.5", 50, +0.2), _row("macs-0.3", 30, -0.6)], 0.0)["name"] == "macs-0.5"


def test_the_default_targets_span_five_to_ten_times_fewer_macs():
    SweepConfig().validate()
    assert min(SweepConfig().macs_targets) == 0.1 and max(SweepConfig().macs_targets) == 0.2


def _digests(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_interrupted_sweep_resumes_keeping_its_finished_runs(tmp_path, monkeypatch):
    """Ctrl-C in the second run's fine-tune: one line naming the command that continues; the resume leaves the
    finished run as it was, finishes the other, and the table holds each run's own evaluation."""
    import entroprune.pipeline as pipeline
    from entroprune.config import load_config
    from entroprune.errors import SweepInterrupted
    from entroprune.sweep import run_sweep

    real = pipeline._finetune_like_run

    def interrupted(folder, *args, **kwargs):
        if folder.name == "macs-0.4":
            raise KeyboardInterrupt
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_finetune_like_run", interrupted)
    for where in ("started", "resumed"):
        (tmp_path / where).mkdir()
    monkeypatch.chdir(tmp_path / "started")
    cfg = load_config(None, quick=True, overrides={"out_root": "runs"})  # relative to where it started
    said: list[str] = []
    with pytest.raises(SweepInterrupted, match=r"sweep stopped during the fine-tune of its run macs-0.4; .* "
                                               r"entroprune.resume_sweep") as stopped:
        run_sweep(cfg, SweepConfig(macs_targets=[0.5, 0.3, 0.4], max_drop=1.5), quiet=True, say=said.append)
    folder = tmp_path / "started" / "runs" / stopped.value.sweep_dir.rsplit("/", 1)[-1]
    # the sweep's own resume command, said once; a run's `run --resume` would leave the sweep unfinished
    assert sum("`entroprune sweep --resume" in m for m in said) == 1 and not any("run --resume" in m for m in said)
    assert any(m.startswith(f"run folder: {folder / 'macs-0.3'}") for m in said), said
    assert not (folder / "macs-0.5").exists()
    assert "`entroprune sweep --resume" in stopped.value.command_line()
    finished = _digests(folder / "macs-0.3")
    assert not (folder / "sweep.md").exists()
    unfinished = runner.invoke(app, ["report", str(folder)])
    assert unfinished.exit_code == 2 and "macs-0.4 holds no finished run" in unfinished.stderr, unfinished.stderr
    monkeypatch.setattr(pipeline, "_finetune_like_run", real)

    monkeypatch.chdir(tmp_path / "resumed")  # the run not yet started finds the baseline where the sweep began
    res = runner.invoke(app, ["sweep", "--resume", str(folder), "--quiet"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    assert list((tmp_path / "resumed").iterdir()) == []
    assert _digests(folder / "macs-0.3") == finished
    record = json.loads((folder / "sweep.json").read_text())
    for row in record["rows"]:
        pruned = json.loads((folder / row["name"] / "evaluation.json").read_text())["rows"][-1]
        assert row["score"] == pruned["test_accuracy"] and row["macs"] == pruned["macs"]
        assert f"| {row['name']} | {row['macs_fraction']:.1%} |" in res.stdout
    assert [r["name"] for r in record["rows"]] == ["macs-0.3", "macs-0.4", "macs-0.5"]
    best = recommended(record["rows"], 1.5)
    assert record["recommended"] == (best and best["name"])
    report = (folder / "sweep.md").read_text()
    assert "fine-tuned (1 epoch, distilled from the original, from " in report
    assert "% right after the cut with the kept weights refitted; more with `finetune.epochs`)" in report
    assert (folder / "plots" / "tradeoff.png").stat().st_size > 0 and "plots/tradeoff.png" in report
    assert (f"`{best['name']}/`" in report) if best else "No run within 1.5 points" in report
    assert f"sweep folder: {folder}" in res.stdout
    again = runner.invoke(app, ["report", str(folder)])  # written again from the run folders: the same page
    assert again.exit_code == 0 and (folder / "sweep.md").read_text() == report, again.stderr

    # the benchmark that records a sweep for the docs and the README
    import subprocess
    import sys
    from pathlib import Path

    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- sweep:begin -->old<!-- sweep:end -->\nafter\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_page.py"
    done = subprocess.run([sys.executable, str(script), str(folder), "--wall", "600", "--out-dir", str(tmp_path / "docs"),
                           "--readme", str(readme)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("before\n<!-- sweep:begin -->\nMachine: ") and text.endswith("<!-- sweep:end -->\nafter\n")
    assert "| macs-0.4 |" in text and "the command took 10 min" in text and "old" not in text
    assert (tmp_path / "docs" / "sweep" / "tradeoff.png").exists() and "](sweep/tradeoff.png)" in (
        tmp_path / "docs" / "sweep.md").read_text()
