"""The reproduction grid's scripts on a tiny digits grid: cells, resume, baselines, results page."""

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from entroprune.search import SearchConfig

ROOT = Path(__file__).parent.parent


def grid(tmp_path: Path, **over) -> Path:
    g = {"dataset": "digits", "models": ["vgg"], "targets": [0.5], "sources": ["uniform", "random"], "seeds": [0],
         "widths": {"vgg": 0.5}, "baseline_epochs": 1, "search_episodes": 2, "warmup": 1, "min_keep": 0.2,
         "round_to": 1, "entropy_variant": "cooccurrence-avg", "entropy_layers": "all", "accuracy_val_size": 64,
         "finetune_epochs": 1, "finetune_distill": True, "latency_repeats": 1, "latency_processes": 1,
         "threads": 1, "out": str(tmp_path / "runs"), "results": str(tmp_path / "m" / "results.csv"),
         "parts": str(tmp_path / "m" / "parts.csv"), "baselines": str(tmp_path / "m" / "baselines")}
    g.update(over)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    return path


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_grid_runs_resumes_and_reports(tmp_path):
    g = grid(tmp_path, followup={"entropy-last": ["vgg", "resnet20"]})  # resnet20 is not in models: ignored
    first = run("reproduce.py", "--grid", str(g), "--max-cells", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    m = tmp_path / "m"
    assert [r["source"] for r in rows(m / "results.csv")] == ["uniform"]
    assert (m / "baselines" / "vgg" / "model.pt").exists() and rows(m / "baselines.csv")[0]["model"] == "vgg"
    base = rows(m / "baselines.csv")[0]
    second = run("reproduce.py", "--grid", str(g))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "3 cells, 1 done, 2 to run" in second.stdout and "training baseline" not in second.stdout
    assert [r["source"] for r in rows(m / "results.csv")] == ["uniform", "random", "entropy-last"]
    assert len(rows(m / "parts.csv")) == 2 and float(base["train_time_s"]) > 0
    # the follow-up searched with the tool's default reward, not the grid's pinned variant
    policy = json.loads((tmp_path / "runs" / "cells" / "vgg-0.5-entropy-last-s0" / "search" / "policy.json").read_text())
    assert policy["agent"] == "ddpg" and policy["variant"] == "cooccurrence"

    page = tmp_path / "results.md"
    made = run("make_results.py", "--grid", str(g), "--out", str(page), "--studies", str(tmp_path), "--readme", "")
    assert made.returncode == 0, made.stderr[-2000:]
    text = page.read_text()
    assert "2 of 2 cells run" in text and "## vgg at width 0.5" in text and "| uniform |" in text
    assert "| entropy-last (follow-up) |" in text and "1 of 1 follow-up cells run (for vgg)" in text
    assert "Every cell the settings allow is run" in text and "3 cells finished in the parts, 3 rows kept" in text
    assert (tmp_path / "results_accuracy_vs_macs.png").exists()


def test_sigterm_ends_a_part_through_its_finally():
    """A part stopped with SIGTERM (to free the machine) must still reach the code that records it."""
    import os
    import signal

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reproduce

    before = signal.getsignal(signal.SIGTERM)
    recorded = []
    try:
        reproduce.stop_on_sigterm()
        with pytest.raises(SystemExit) as stopped:
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode
            finally:
                recorded.append("part")
        assert stopped.value.code == 128 + signal.SIGTERM and recorded == ["part"]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_unknown_followup_source_is_refused(tmp_path):
    res = run("reproduce.py", "--grid", str(grid(tmp_path, followup={"entropy-first": ["vgg"]})))
    assert res.returncode != 0 and "unknown source(s) entropy-first" in res.stderr
    assert not (tmp_path / "m" / "results.csv").exists()


def test_a_grid_with_a_base_takes_its_settings_and_overrides_its_own_keys(tmp_path):
    """The machine check reruns arena cells with the arena's settings by reference, not by a copy that drifts."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import load_grid

    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("epochs: 3\nseeds: [0, 1]\nout: a\n")
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nout: b\nseeds: [2]\n")
    (tmp_path / "grand.yaml").write_text("base: sub/child.yaml\nepochs: 5\n")
    assert load_grid(tmp_path / "sub" / "child.yaml") == {"epochs": 3, "seeds": [2], "out": "b"}
    assert load_grid(tmp_path / "grand.yaml") == {"epochs": 5, "seeds": [2], "out": "b"}
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(SystemExit, match="loops back"):
        load_grid(tmp_path / "loop.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SystemExit, match="a mapping"):
        load_grid(tmp_path / "list.yaml")

    arena, check = load_grid(ROOT / "benchmarks" / "arena.yaml"), load_grid(ROOT / "benchmarks" / "machine_check.yaml")
    own = set(yaml.safe_load((ROOT / "benchmarks" / "machine_check.yaml").read_text())) - {"base"}
    assert own == {"pairs", "sources", "followup", "per_machine", "out", "results", "parts", "notes"}
    assert {k: v for k, v in check.items() if k not in own} == {k: v for k, v in arena.items() if k not in own}


def test_lost_baseline_is_not_silently_retrained(tmp_path):
    g = grid(tmp_path, sources=["uniform", "random"])
    assert run("reproduce.py", "--grid", str(g), "--max-cells", "1").returncode == 0
    base = tmp_path / "m" / "baselines" / "vgg"
    for f in base.iterdir():
        f.unlink()
    res = run("reproduce.py", "--grid", str(g))
    assert res.returncode != 0 and "is missing, but vgg has cells measured against it" in res.stderr
    assert len(rows(tmp_path / "m" / "results.csv")) == 1  # nothing was added from another baseline
    # a study may still retrain it: a warning, and the recorded baseline stays the grid's
    recorded = rows(tmp_path / "m" / "baselines.csv")
    res = run("reproduce.py", "--grid", str(g), "--baselines-only")
    assert res.returncode == 0 and (base / "model.pt").exists()
    assert rows(tmp_path / "m" / "baselines.csv") == recorded


def test_search_speed_compares_only_like_with_like():
    """Search times from another CPU or another scoring mode must not enter the entropy/accuracy ratio."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from make_results import search_speed

    grid_cfg = {"mask_scored": [{"model": "m", "target": 0.2, "source": "entropy", "seed": 0}]}

    def row(source, seed, machine, t):
        return {"model": "m", "target": "0.2", "source": source, "seed": str(seed), "machine": machine,
                "search_time_s": str(t)}

    e = [row("entropy", 0, "A", 1000), row("entropy", 1, "B", 100), row("entropy", 2, "B", 200)]
    a = [row("accuracy", 0, "A", 500), row("accuracy", 1, "B", 300), row("accuracy", 2, "A", 900)]
    te, ta, pairs = search_speed(e, a, grid_cfg)  # seed 0: masks vs pruned copies; seed 2: two machines
    assert (te, ta, pairs) == (100.0, 300.0, 1)
    assert search_speed(e[2:], a[2:], grid_cfg) is None


def test_claim_summary_names_the_pairs_where_each_goal_holds():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from make_results import claim_summary

    verdicts = [("vgg", 0.2, "entropy-policy drop 2.01 points (goal <= 0.5)", False, 3),
                ("vgg", 0.1, "entropy-policy drop 0.80 points (goal <= 1.0)", True, 3),
                ("vgg", 0.1, "entropy 89.51% vs accuracy reward 89.66% (gap +0.15 points; goal: within 0.3)", True, 3),
                ("vgg", 0.1, "entropy 89.51% vs uniform 90.11% (goal: better)", False, 3)]
    lines = claim_summary(verdicts)
    assert lines[0].endswith("holds in 1 of 2 pairs (vgg 10%).")
    assert lines[1].endswith("holds in 1 of 1 pairs (vgg 10%).")
    assert lines[2].endswith("holds in 0 of 0 pairs.") and lines[3].endswith("holds in 0 of 1 pairs.")


def test_main_job_record_comes_from_the_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "run", "--quick", "--quiet", "--out-root",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    run_dir = next((tmp_path / "runs").glob("run-*"))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- main-job:begin -->\nstale\n<!-- main-job:end -->\nrest\n")
    done = run("main_job.py", str(run_dir), "--wall", "75", "--out-dir", str(tmp_path / "m"), "--readme", str(readme))
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("intro\n<!-- main-job:begin -->\n") and text.endswith("<!-- main-job:end -->\nrest\n")
    report = json.loads((run_dir / "report.json").read_text())
    base, pruned = report["evaluation"]["rows"]
    assert "stale" not in text and f"| {pruned['test_accuracy']:.2f} |" in text and "1 min 15 s" in text
    assert json.loads((tmp_path / "m" / "main_job.json").read_text()) == report
    ref = report["evaluation"]["uniform_reference"]
    assert f"| uniform policy, plain L1 cut, same fine-tune (reference) | {ref['test_accuracy']:.2f} |" in text
    assert (f"Against the uniform policy cut by L1 without the refit with the same fine-tune: "
            f"{pruned['test_accuracy'] - ref['test_accuracy']:+.2f}") in text
    assert f"| {base['test_accuracy']:.2f} |" in (tmp_path / "m" / "main_job.md").read_text()
    # one latency and one speed-up column per runtime, each the evaluation's own number
    assert f"{pruned['ts_b64_ms']:.2f} | {pruned['ort_b64_ms']:.2f} | {pruned['speedup_torch_b64']:.2f}x | " \
        f"{pruned['speedup_ts_b64']:.2f}x | {pruned['speedup_ort_b64']:.2f}x |" in text
    assert f"{pruned['ts_speedup_vs_macs_b64']:.2f} (TorchScript)" in text
    assert "timed in alternation in a fresh process" in text  # the quick preset times in one
    # a variant of the main job is recorded beside it, named, and leaves the README's block alone
    before = readme.read_text()
    done = run("main_job.py", str(run_dir), "--variant", "--config my.yaml", "--out-dir", str(tmp_path / "v"),
               "--readme", str(readme))
    assert done.returncode == 0 and readme.read_text() == before, done.stderr
    page = (tmp_path / "v" / "main_job.md").read_text()
    assert page.startswith('# Main job: `make run RUN_ARGS="--config my.yaml"`') and "ranked by the norm `auto` settles" in page
    # so is the main job on another machine
    done = run("main_job.py", str(run_dir), "--machine", "an Intel VM", "--out-dir", str(tmp_path / "i"),
               "--readme", str(readme))
    assert done.returncode == 0 and readme.read_text() == before, done.stderr
    assert (tmp_path / "i" / "main_job.md").read_text().splitlines()[0].endswith(", on an Intel VM")
    readme.write_text("no markers\n")
    missing = run("main_job.py", str(run_dir), "--out-dir", str(tmp_path / "n"), "--readme", str(readme))
    assert missing.returncode != 0 and "markers" in missing.stderr and readme.read_text() == "no markers\n"
    assert not (tmp_path / "n").exists()  # nothing written when it cannot finish
    # what int8 adds: the run's original and pruned nets, float and int8, the float ones at the run's accuracy
    done = run("int8.py", str(run_dir), "--processes", "1", "--repeats", "2", "--out", str(tmp_path / "q" / "int8"))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "q" / "int8.json").read_text())
    by_net = {r["net"]: r for r in result["rows"]}
    assert list(by_net) == ["original float", "original int8", "pruned float", "pruned int8"]
    assert by_net["original float"]["test_accuracy"] == pytest.approx(base["test_accuracy"])
    assert by_net["pruned float"]["test_accuracy"] == pytest.approx(pruned["test_accuracy"])
    assert all(by_net[f"{n} int8"]["bytes"] < by_net[f"{n} float"]["bytes"] for n in ("original", "pruned"))
    assert all(len(v) == 4 and min(v) > 0 for v in result["ms"].values())
    assert f"| pruned int8 | {by_net['pruned int8']['bytes']:,} |" in (tmp_path / "q" / "int8.md").read_text()


def test_tiny_arena_runs_and_reports(tmp_path):
    """The arena on digits: every source runs, the page pairs each with uniform, the README table is written."""
    g = {"dataset": "digits", "pairs": [["vgg", 0.5]], "widths": {"vgg": 0.5}, "seeds": [0],
         "sources": ["uniform", "global", "default", "entropy"], "per_machine": ["uniform"], "baseline_epochs": 1,
         "search_episodes": 3, "default_settings": {"episodes": 12, "warmup": 4, "recovery_steps": 5},
         "warmup": 1, "min_keep": 0.2, "round_to": 1, "accuracy_val_size": 64, "finetune_epochs": 1,
         "finetune_lr": 0.02, "finetune_distill": True, "latency_repeats": 0, "threads": 1,
         "out": str(tmp_path / "runs"), "results": str(tmp_path / "m" / "results.csv"),
         "parts": str(tmp_path / "m" / "parts.csv"), "baselines": str(tmp_path / "m" / "baselines")}
    path = tmp_path / "arena.yaml"
    path.write_text(yaml.safe_dump(g))
    res = run("arena.py", "--grid", str(path))
    assert res.returncode == 0, res.stderr[-2000:]
    got = rows(tmp_path / "m" / "results.csv")
    assert [r["source"] for r in got] == ["uniform", "global", "default", "entropy"]
    default = next(r for r in got if r["source"] == "default")
    settings = json.loads(default["search_settings"])
    assert settings["rerank_top_k"] > 0 and settings["episodes"] == 12 and default["chosen"]  # default_settings
    # the default prunes and re-ranks as the tool's defaults do (refitted); the fixed policies by their names
    assert default["refit"] == "yes" and settings["rerank_refit"] is True and settings["recovery_steps"] == 5
    assert [r["refit"] for r in got if r["source"] != "default"] == ["", "", ""]
    assert next(r for r in got if r["source"] == "entropy")["chosen"] == "search"
    again = run("arena.py", "--grid", str(path))
    assert "4 cells, 4 done, 0 to run" in again.stdout
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- arena:begin -->\n<!-- arena:end -->\ny\n")
    page = tmp_path / "arena.md"
    made = run("make_arena.py", "--grid", str(path), "--out", str(page), "--readme", str(readme))
    assert made.returncode == 0, made.stderr[-2000:]
    text = page.read_text()
    uniform_acc = float(next(r for r in got if r["source"] == "uniform")["test_accuracy"])
    default_acc = float(default["test_accuracy"])
    assert f"| default | 1 | {default_acc:.2f} | {default_acc - uniform_acc:+.2f} |" in text
    assert "## vgg at 50% of the MACs" in text and "Cells: 4 current." in text
    table = readme.read_text()
    assert "| vgg | 50% |" in table and f"{default_acc - uniform_acc:+.2f} |" in table and table.endswith("y\n")
    # a change of the tool's defaults makes the old default cells stale: left out, counted
    rows_text = (tmp_path / "m" / "results.csv").read_text().replace('""rerank_top_k"": 8', '""rerank_top_k"": 5')
    (tmp_path / "m" / "results.csv").write_text(rows_text)
    made = run("make_arena.py", "--grid", str(path), "--out", str(page), "--readme", "")
    assert "Cells: 3 current, 1 stale cells left out" in page.read_text()
    # the stale cell runs again; its policy was fine-tuned with that seed already, so that result is taken
    again = run("arena.py", "--grid", str(path))
    assert again.returncode == 0 and "4 cells, 3 done, 1 to run" in again.stdout, again.stderr[-2000:]
    rerun = rows(tmp_path / "m" / "results.csv")[-1]
    assert rerun["source"] == "default" and rerun["policy"] == default["policy"]
    assert rerun["finetune_from"] == f"default seed 0 ({default['date']})"
    assert rerun["test_accuracy"] == default["test_accuracy"] and rerun["search_settings"] != rows_text
    made = run("make_arena.py", "--grid", str(path), "--out", str(page), "--readme", "")
    assert "Cells: 4 current, 1 stale cells left out" in page.read_text()
    assert "1 took the fine-tune of an earlier cell" in page.read_text()
    # recorded on another machine: its fine-tunes are not reused here, and uniform (a per-machine reference)
    # is fine-tuned again here, since this machine now has a cell of the pair
    text = (tmp_path / "m" / "results.csv").read_text()
    here = rows(tmp_path / "m" / "results.csv")[0]["machine"]
    (tmp_path / "m" / "results.csv").write_text(text.replace(here, "Another CPU").replace(
        '""rerank_top_k"": 8', '""rerank_top_k"": 5'))
    moved = run("arena.py", "--grid", str(path))
    assert moved.returncode == 0 and "4 cells, 2 done, 2 to run" in moved.stdout, moved.stderr[-2000:]
    new = rows(tmp_path / "m" / "results.csv")[-2:]
    assert [r["source"] for r in new] == ["uniform", "default"] and not any(r["finetune_from"] for r in new)


def test_a_refit_source_prunes_its_policy_with_the_refit_and_never_takes_a_plain_fine_tune(tmp_path):
    """uniform-refit: uniform's policy, pruned with the refit (recorded), fine-tuned anew though uniform's policy
    was fine-tuned with that seed; the page sets it against uniform, and the allocation studies leave it out.
    uniform-refit-norms: the same with the norms matched (recorded), fine-tuned anew, set against uniform-refit;
    uniform-refit-body likewise with the classifier left as cut (refit_head false); uniform-l2-refit ranks the
    channels by L2, so it never takes uniform-refit's fine-tune either; uniform-auto-refit ranks by `auto`, L2 on
    this plain chain, so it takes uniform-l2-refit's."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import arena
    import make_arena

    g = {"dataset": "digits", "pairs": [["vgg", 0.5]], "widths": {"vgg": 0.5}, "seeds": [0],
         "sources": ["uniform", "uniform-refit", "uniform-refit-norms", "uniform-refit-body", "uniform-l2-refit",
                     "uniform-auto-refit"], "pinned": {"importance": "l1"},  # as arena.yaml: L1 unless tagged
         "baseline_epochs": 1, "search_episodes": 3, "warmup": 1,
         "min_keep": 0.2, "round_to": 1, "accuracy_val_size": 64, "finetune_epochs": 1, "finetune_lr": 0.02,
         "finetune_distill": True, "latency_repeats": 0, "threads": 1, "out": str(tmp_path / "runs"),
         "results": str(tmp_path / "m" / "results.csv"), "parts": str(tmp_path / "m" / "parts.csv"),
         "baselines": str(tmp_path / "m" / "baselines")}
    path = tmp_path / "arena.yaml"
    path.write_text(yaml.safe_dump(g))
    res = run("arena.py", "--grid", str(path))
    assert res.returncode == 0, res.stderr[-2000:]
    plain, refitted, normed, body, l2, auto = rows(tmp_path / "m" / "results.csv")
    assert auto["finetune_from"] == f"uniform-l2-refit seed 0 ({l2['date']})"
    assert (auto["test_accuracy"], auto["refit"]) == (l2["test_accuracy"], "yes")
    assert (plain["refit"], refitted["refit"], normed["refit"], body["refit"], l2["refit"]) == (
        "", "yes", "norms", "body", "yes")
    assert plain["policy"] == refitted["policy"] == normed["policy"] == body["policy"] == l2["policy"]
    assert not any(r["finetune_from"] for r in (refitted, normed, body, l2))
    assert float(refitted["accuracy_before_finetune"]) != float(plain["accuracy_before_finetune"])
    for source, norms, head in (("uniform-refit", False, True), ("uniform-refit-norms", True, True),
                                ("uniform-refit-body", False, False)):
        pruned = torch.load(tmp_path / "runs" / "cells" / f"vgg-0.5-{source}-s0" / "pruned" / "model.pt",
                            weights_only=True)
        assert pruned["pruning"]["refit"] is True and pruned["pruning"]["refit_norms"] is norms
        assert pruned["pruning"]["refit_head"] is head and pruned["pruning"]["importance"] == "l1"
    pruned = torch.load(tmp_path / "runs" / "cells" / "vgg-0.5-uniform-l2-refit-s0" / "pruned" / "model.pt",
                        weights_only=True)
    assert pruned["pruning"]["importance"] == "l2" and pruned["pruning"]["refit"] is True
    cell = [plain, refitted, normed, body, l2]
    assert [p["sources"] for p in arena.policies_of(cell, "vgg", 0.5)] == [["uniform"]]
    line, goal = make_arena.refit_line(cell, make_arena.Reference([plain]))
    d = float(refitted["test_accuracy"]) - float(plain["test_accuracy"])
    assert f"Δ uniform {d:+.2f}" in line[1] and goal["uniform-refit"] == (pytest.approx(d), 1)
    d = float(normed["test_accuracy"]) - float(refitted["test_accuracy"])
    assert f"Δ uniform-refit {d:+.2f}" in line[1]
    assert goal["uniform-refit-norms against uniform-refit"] == (pytest.approx(d), 1)
    d = float(body["test_accuracy"]) - float(refitted["test_accuracy"])
    assert goal["uniform-refit-body against uniform-refit"] == (pytest.approx(d), 1)
    d = float(l2["test_accuracy"]) - float(refitted["test_accuracy"])  # what L2 is worth to the refit
    assert goal["uniform-l2-refit against uniform-refit"] == (pytest.approx(d), 1)
    # a cell whose prune today's refit no longer makes is relabelled in its refit column: stale, run again,
    # its fine-tune not taken
    results = tmp_path / "m" / "results.csv"
    text = results.read_text()
    assert text.count(",yes\n") == 3
    results.write_text(text.replace(",yes\n", ",head\n", 1))
    assert not arena.is_current(g, rows(results)[1]) and arena.is_current(g, rows(results)[3])
    again = run("arena.py", "--grid", str(path))
    assert again.returncode == 0 and "6 cells, 5 done, 1 to run" in again.stdout, again.stderr[-2000:]
    rerun = rows(results)[-1]
    assert (rerun["source"], rerun["refit"], rerun["finetune_from"]) == ("uniform-refit", "yes", "")


def test_latency_target_benchmark_runs_and_continues(digits_ckpt, tmp_path, monkeypatch):
    """Both searches, the pair timing and both fine-tunes on a tiny digits net; a second run takes every step
    from the cache (a search folder removed in between is not searched again). In-process, with the stepped
    fake timer in place of the clock for the fit, the rounding choice and the fresh-process timing: with wall
    time, a loaded machine (xdist workers beside it) once timed the tiny net's fixed costs so high that its
    smallest policy kept 100% of the latency and the 0.8 target was refused as unreachable."""
    import shutil

    from entroprune.api import load_model
    from tests.test_latency import stepped_clock, stepped_timer

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import latency_target

    def fresh(paths, backend, batch, repeats, threads, processes, both_orders=False):
        nets = [load_model(p) for p in paths]
        ms = [1000 * stepped_timer(net.eval(), tuple(ckpt.spec.input_size)) for net, ckpt in nets]
        return [ms for _ in range(processes)]

    stepped_clock(monkeypatch)
    monkeypatch.setattr(latency_target, "fresh_latencies", fresh)

    def run_benchmark(*extra: str) -> None:
        monkeypatch.setattr(sys, "argv", ["latency_target.py", *args, *extra])
        latency_target.main()

    (tmp_path / "b" / "vgg").mkdir(parents=True)
    shutil.copy(digits_ckpt, tmp_path / "b" / "vgg" / "model.pt")
    args = ["--models", "vgg", "--target", "0.8", "--episodes", "3", "--recovery-steps", "5", "--finetune-epochs", "1",
            "--repeats", "1", "--processes", "2", "--round-to", "1", "--threads", "1", "--quiet", "--baselines", str(tmp_path / "b"),
            "--finetune-seeds", "0", "1", "--match-rounds", "2",
            "--work", str(tmp_path / "w"), "--out", str(tmp_path / "lt.md")]
    run_benchmark()
    rows = json.loads((tmp_path / "lt.json").read_text())
    r = rows[0]
    assert r["latency"]["predicted_latency"] <= 0.8 + 1e-6 and 0 < r["macs"]["macs_target"] < 1
    interpolated = {"macs-interpolated"} if "bracket" in r["matched"] else set()
    # free channels kept (the stepped timer's blocks of 8 leave steps that cost nothing at round_to 1): the chosen
    # policy without them is fine-tuned alike, its counts the result's less every kept step
    kept = [t for t in r["latency"]["free_channels"] if t["kept"]]
    assert kept and "Without them (the chosen policy" in (tmp_path / "lt.md").read_text()
    chosen = json.loads((tmp_path / "w" / "vgg" / "latency-chosen" / "step.json").read_text())["counts"]
    final = json.loads((tmp_path / "w" / "vgg" / "latency" / "search" / "policy.json").read_text())["counts"]
    assert sum(final.values()) - sum(chosen.values()) == sum(t["to"] - t["from"] for t in kept)
    # ... and timed beside the widened net in the same processes, before the fine-tunes: under the timer the
    # pass kept the steps by, the widened net is no slower
    ft = r["free_channel_timing"]
    assert len(ft["per_process"]) == 2 and 0 < ft["latency_fraction"] <= ft["chosen_fraction"] + 1e-9
    assert "timed and fine-tuned alike, measured" in (tmp_path / "lt.md").read_text()
    assert r["measured"]["latency_fraction"] > 0 and set(r["accuracy"]) == {
        "latency", "macs", "macs-matched", "latency-chosen"} | interpolated
    assert all(len(a) == 2 for a in r["accuracy"].values())  # one accuracy per fine-tune seed
    # MACs searches aimed at the latency-targeted net's measured latency, each timed beside that net, until one
    # is within the tolerance or the rounds run out; the closest is kept
    mt = r["matched"]
    assert 0 < mt["macs_target"] < 1 and mt["measured"]["matched_fraction"] > 0 and len(mt["measured"]["per_process"]) == 2
    assert 1 <= mt["rounds"] <= 2 and len(mt["gaps"]) == len(mt["targets"]) == mt["rounds"]
    assert abs(mt["gaps"][-1]) <= 0.03 or mt["rounds"] == 2
    assert mt["kind"] == f"macs-matched-{mt['macs_target']:.4f}" and mt["macs_target"] in mt["targets"]
    assert all(abs(g) >= abs(mt["gaps"][mt["targets"].index(mt["macs_target"])]) for g in mt["gaps"])
    if "bracket" in mt:  # rounds on both sides: the accuracy at equal latency lies between theirs, seed by seed
        f, sl = mt["bracket"]
        assert f["gap"] > 0 >= sl["gap"]
        for a, b, x in zip(f["accuracy"], sl["accuracy"], r["accuracy"]["macs-interpolated"], strict=True):
            assert min(a, b) - 1e-9 <= x <= max(a, b) + 1e-9
    # each net's fraction is the median over the fresh processes, every process's kept
    per = r["measured"]["per_process"]
    assert len(per) == 2 and r["measured"]["latency_fraction"] == pytest.approx((per[0][0] + per[1][0]) / 2)
    assert set(r["rounding"]) == {"8", "auto"} and r["rounding"]["8"]["round_to"] == 8
    assert all(x["speedup"] > 0 and 0 < x["achieved"] <= 0.2 + 1e-6 for x in r["rounding"].values())
    page = (tmp_path / "lt.md").read_text()
    assert "| vgg | 80% |" in page and "| vgg | auto |" in page
    shutil.rmtree(tmp_path / "w" / "vgg" / "latency" / "search")
    run_benchmark()
    assert not (tmp_path / "w" / "vgg" / "latency" / "search").exists()
    assert json.loads((tmp_path / "lt.json").read_text()) == rows
    # without the rounding runs: the same row less its rounding, and no rounding table
    run_benchmark("--no-rounding")
    assert json.loads((tmp_path / "lt.json").read_text()) == [{k: v for k, v in rows[0].items() if k != "rounding"}]
    assert "| vgg | auto |" not in (tmp_path / "lt.md").read_text()
    # a fresh work folder whose searches return the nets fine-tuned above takes their fine-tunes, net by net
    run_benchmark("--no-rounding", "--work", str(tmp_path / "w2"), "--reuse-finetunes", str(tmp_path / "w"))
    again = json.loads((tmp_path / "lt.json").read_text())[0]
    assert again["accuracy"] == rows[0]["accuracy"] and not list((tmp_path / "w2").glob("*/*/finetuned-s*"))
    taken = [json.loads(f.read_text()) for f in (tmp_path / "w2" / "vgg").glob("*/finetune_from.json")]
    assert taken and all(str(tmp_path / "w" / "vgg") in src for t in taken for src in t.values())
    assert "fine-tunes taken from an identical pruned net's fine-tune" in (tmp_path / "lt.md").read_text()


def test_margin_replay_recomputes_the_pick_and_applies_each_margin(tmp_path):
    """A searched winner 6% ahead of uniform stands under margin 0.05, uniform wins under 0.1: each
    margin's pick is read back with its fine-tuned accuracy, minus uniform's."""
    u, s, g = ({"g0": 0.5}, {"g0": 0.3}, {"g0": 0.4})
    pool = [{"source": "uniform", "candidate": "uniform", "policy": u, "reward": -1.0, "confirm_rewards": [-1.0, -1.0]},
            {"source": "global", "candidate": "global", "policy": g, "reward": -1.2, "confirm_rewards": [-1.2, -1.2]},
            {"source": "search", "candidate": "search #1", "policy": s, "reward": -0.9,
             "confirm_rewards": [-0.9, -0.98]}]
    searches = tmp_path / "searches"
    searches.mkdir()
    (searches / "vgg-0.2-default-s0.json").write_text(json.dumps({"rerank": pool}))
    results = tmp_path / "results.csv"
    results.write_text("model,target,seed,source,policy,test_accuracy\n" + "".join(
        f'vgg,0.2,0,{src},"{json.dumps(p).replace(chr(34), chr(34) * 2)}",{acc}\n'
        for src, p, acc in (("uniform", u, 91.0), ("global", g, 90.5), ("default", s, 91.4))))
    g_path = tmp_path / "grid.yaml"
    g_path.write_text(yaml.safe_dump({"results": str(results), "out": str(tmp_path / "runs")}))
    out = tmp_path / "replay.md"
    res = run("margin_replay.py", "--grid", str(g_path), "--searches", str(searches), "--margins", "0", "0.05", "0.1",
              "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    row = next(line for line in out.read_text().splitlines() if line.startswith("| vgg 20% s0"))
    assert row == "| vgg 20% s0 | search | +6% | search +0.40 | search +0.40 | uniform +0.00 |"


def test_arena_scores_ranks_the_arenas_policies_and_caches_their_scores(digits_ckpt, tmp_path):
    """Three fine-tuned policies of one pair, each scored fresh and after recovery; the page holds the pair's
    Spearman row and the per-policy table; a rerun scores nothing again."""
    import shutil

    from entroprune.api import build_structure, load_model

    (tmp_path / "b" / "vgg").mkdir(parents=True)
    shutil.copy(digits_ckpt, tmp_path / "b" / "vgg" / "model.pt")
    net, ckpt = load_model(digits_ckpt)
    names = [g.name for g in build_structure(net, ckpt.spec).groups]
    policies = [dict.fromkeys(names, 0.5), {**dict.fromkeys(names, 0.75), names[0]: 0.25},
                {**dict.fromkeys(names, 0.25), names[-1]: 1.0}]
    results = tmp_path / "results.csv"
    results.write_text("model,target,seed,source,policy,test_accuracy\n" + "".join(
        f'vgg,0.5,{seed},{src},"{json.dumps(p).replace(chr(34), chr(34) * 2)}",{acc + seed / 10}\n'
        for src, p, acc in zip(("uniform", "global", "entropy"), policies, (90.0, 89.0, 85.0), strict=True)
        for seed in (0, 1)))
    g_path = tmp_path / "grid.yaml"
    g_path.write_text(yaml.safe_dump({"pairs": [["vgg", 0.5]], "results": str(results), "round_to": 1,
                                      "baselines": str(tmp_path / "b")}))
    args = ["--grid", str(g_path), "--recovery-seeds", "2", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "scores.md")]
    first = run("arena_scores.py", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("scored") == 3
    page = (tmp_path / "scores.md").read_text()
    assert "| vgg 50% | 3 |" in page and "| uniform | 2 | 90.05 |" in page
    assert "for the 3 policies whose time the cache kept" in page  # a cached rerun still reports the cost
    rho = json.loads((tmp_path / "scores.json").read_text())[0]["spearman"]
    assert set(rho) == {f"{k}_{t}" for k in ("entropy", "accuracy", "kl") for t in ("fresh", "recovered")}
    assert all(-1 <= v <= 1 for v in rho.values())
    picks = json.loads((tmp_path / "scores.json").read_text())[0]["picks"]
    assert all(p["truth"] in (90.05, 89.05, 85.05) and 1 <= p["rank"] <= 3 for p in picks.values())
    assert all(p["vs_uniform"] == pytest.approx(p["truth"] - 90.05) for p in picks.values())
    again = run("arena_scores.py", *args)
    assert again.returncode == 0 and "scored" not in again.stdout.replace("of scoring", "")
    assert "for the 3 policies whose time the cache kept" in (tmp_path / "scores.md").read_text()


def test_arena_ceiling_is_the_mean_over_seeds_of_the_best_policy_against_uniform():
    """Per seed the best fine-tuned policy of any source minus uniform's, averaged; undefined without uniform."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import make_arena

    def row(source, seed, acc, policy):
        return {"model": "vgg", "target": "0.2", "source": source, "seed": str(seed), "test_accuracy": str(acc),
                "policy": json.dumps(policy)}

    rows = [row("uniform", 0, 90.0, {"a": 0.5}), row("uniform", 1, 91.0, {"a": 0.5}),
            row("default", 0, 90.5, {"a": 0.4}), row("entropy", 1, 91.1, {"a": 0.3}),
            row("entropy", 0, 89.0, {"a": 0.3}), row("default", 0, 99.0, {"a": 0.4}) | {"model": "resnet20"}]
    rows.append(row("default", 1, 91.2, {"a": 0.4}))  # default's policy now has both seeds: +0.5, +0.2
    ref = make_arena.Reference([r for r in rows if r["model"] == "vgg"])
    top = make_arena.ceiling(rows, "vgg", 0.2, [0, 1], ref)
    assert top == {"delta": pytest.approx(0.35), "policies": 3, "best_policy": pytest.approx(0.35),
                   "full_policies": 2}  # entropy's policy: -1.0 and +0.1
    assert make_arena.ceiling(rows, "vgg", 0.2, [0, 1, 2], ref) is None  # no uniform cell for seed 2


def test_arena_cells_pair_with_uniform_fine_tuned_on_their_own_machine():
    """A fine-tune moves between CPUs about as much as between seeds: a cell is paired with uniform's run on
    its machine where there is one, else the home machine's (where most cells ran); the ceiling the same."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import make_arena

    def row(source, seed, acc, machine, policy):
        return {"model": "vgg", "target": "0.2", "source": source, "seed": str(seed), "test_accuracy": str(acc),
                "machine": machine, "policy": json.dumps(policy)}

    amd, intel = "AMD EPYC, 2 cores", "Intel Xeon, 2 cores"
    rows = [row("uniform", 0, 90.0, amd, {"a": 0.5}), row("uniform", 1, 91.0, amd, {"a": 0.5}),
            row("default", 0, 90.3, amd, {"a": 0.4}), row("default", 1, 91.3, amd, {"a": 0.4}),
            row("uniform", 0, 89.8, intel, {"a": 0.5}),  # Intel ran uniform with seed 0 only
            row("space-1", 0, 90.1, intel, {"a": 0.3}), row("space-1", 1, 91.1, intel, {"a": 0.3})]
    ref = make_arena.Reference(rows)
    assert ref.home == amd and ref.by[intel] == {0: 89.8}
    # space-1 seed 0 against Intel's uniform (+0.3, not +0.1 against AMD's); seed 1 falls back to AMD's (+0.1)
    assert make_arena.draw_deltas(rows, ref, kind="space-") == pytest.approx([0.3])
    assert make_arena.deltas(rows[5:], ref) == pytest.approx([0.3, 0.1])
    assert ref.own(rows[5]) and not ref.own(rows[6]) and not ref.own(rows[2])
    top = make_arena.ceiling(rows, "vgg", 0.2, [0, 1], ref)
    assert top["best_policy"] == pytest.approx(0.3) and top["delta"] == pytest.approx(0.3)  # default +0.3 both
    assert top["policies"] == 3  # uniform is one policy, run on two machines
    line = " ".join(make_arena.machine_line(rows, ref))
    assert "AMD EPYC 90.50 ± 0.71% (2 seeds, the table's)" in line
    assert "Intel Xeon 89.80% (1 seeds, minus the home machine's per seed -0.20)" in line
    assert "1 cells of Intel Xeon are paired with its own uniform" in line
    assert make_arena.machine_line(rows[:4], make_arena.Reference(rows[:4])) == []
    # one cell against uniform's mean over its seeds on the cell's machine (Intel: 89.8), not its one seed's
    assert "best +0.30, median +0.30," in make_arena.against_mean(rows, ref, "space-")
    assert make_arena.against_mean(rows, ref, "random-") == ""
    amd_only = make_arena.Reference(rows[:4])  # the Intel cell falls back to AMD's mean, 90.5
    assert "best -0.40" in make_arena.against_mean(rows, amd_only, "space-")
    # a cell that took an earlier cell's fine-tune holds that cell's machine's reading
    taken = row("space-2", 0, 90.3, intel, {"a": 0.4}) | {"finetune_from": "default seed 0 (2026-12-01)"}
    dated = [r | {"date": "2026-12-01"} for r in rows] + [taken]
    assert make_arena.fine_tuned_on(dated)[-1]["machine"] == amd
    assert make_arena.fine_tuned_on(dated)[:-1] == dated[:-1]
    assert make_arena.Reference(dated).delta(make_arena.fine_tuned_on(dated)[-1]) == pytest.approx(0.3)  # not +0.5


def test_score_picks_are_set_against_uniform_fine_tuned_on_their_own_machine():
    """arena_scores.py: a pick read on the Intel VM is compared with uniform's Intel fine-tune of that seed,
    not with the first machine's; without such a reading, with uniform's first; over all seeds, its mean."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from arena import policies_of
    from arena_scores import pick, uniform_reading

    def row(source, seed, acc, policy, machine):
        return {"model": "vgg", "target": "0.2", "source": source, "seed": str(seed), "test_accuracy": str(acc),
                "policy": json.dumps(policy), "machine": machine}

    rows = [row("uniform", 0, 90.0, {"a": 0.5}, "amd"), row("uniform", 0, 90.4, {"a": 0.5}, "intel"),
            row("uniform", 1, 91.0, {"a": 0.5}, "amd"), row("space-1", 0, 90.5, {"a": 0.4}, "intel"),
            row("space-2", 0, 90.2, {"a": 0.3}, "amd"), row("space-3", 0, 90.3, {"a": 0.6}, "arm")]
    pols = {p["sources"][0]: p for p in policies_of(rows, "vgg", 0.2)}
    uni = pols["uniform"]
    assert uniform_reading(uni, pols["space-1"], 0) == 90.4  # Intel's uniform, not AMD's first reading
    assert uniform_reading(uni, pols["space-2"], 0) == 90.0
    assert uniform_reading(uni, pols["space-3"], 0) == 90.0  # no uniform on that machine: the first reading
    assert uniform_reading(uni, pols["space-1"], None) == pytest.approx(90.5)
    assert uniform_reading(None, pols["space-1"], 0) is None
    order = [pols[k] for k in ("uniform", "space-1", "space-2")]
    refs = [uniform_reading(uni, p, 0) for p in order]
    assert pick([0.0, 1.0, 0.5], [p["acc"][0] for p in order], refs) == \
        {"truth": 90.5, "rank": 1, "vs_uniform": pytest.approx(0.1)}


def test_a_per_machine_reference_runs_only_where_the_pair_has_cells():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reproduce

    todo = [("vgg", 0.2, "uniform", 0), ("resnet20", 0.2, "uniform", 0), ("resnet20", 0.2, "space-3", 0),
            ("vgg16", 0.2, "uniform", 0)]
    # resnet20 has a cell to run here, vgg16 cells recorded here, vgg none: its uniform is not rerun
    assert reproduce.machine_references(todo, {"uniform"}, {("vgg16", 0.2)}) == todo[1:]
    assert reproduce.machine_references(todo, set(), set()) == todo


def test_arena_sources_but_the_default_keep_the_settings_they_were_recorded_with(tmp_path):
    """The grid's `pinned` settings hold every source but `default` to the defaults its cells ran with, so a
    change of the tool's defaults makes only the default's cells stale; default-refit is the old default's
    policy refitted, default-recovered the old default itself (plain cut)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import arena

    pinned = {"recovery_steps": 40, "rerank_refit": False, "importance": "l1"}
    assert yaml.safe_load((ROOT / "benchmarks" / "arena.yaml").read_text())["pinned"] == pinned
    grid = {"min_keep": 0.2, "round_to": 8, "pinned": pinned}
    cfg = {s: arena.search_config(grid, "vgg", 0.2, s, 0) for s in ("default", "default-recovered", "default-refit",
                                                                   "default-scored-refit", "uniform", "space-3")}
    assert (cfg["default"].rerank_refit, cfg["default"].recovery_steps) == (True, 0)  # the tool's, settled
    assert all((cfg[s].rerank_refit, cfg[s].recovery_steps) == (False, 40)
               for s in ("default-recovered", "default-refit", "uniform", "space-3"))
    assert cfg["default-refit"] == cfg["default-recovered"]
    # the default of parts 46-52 itself (ranking by L1)
    assert arena.settings(cfg["default-scored-refit"]) == arena.settings(replace(cfg["default"], importance="l1"))
    l2 = {s: arena.search_config(grid, "vgg", 0.2, s, 0) for s in ("default-l2", "uniform-l2-refit")}
    assert l2["default-l2"] == replace(cfg["default"], importance="l2") and cfg["default"].importance == "auto"
    assert l2["uniform-l2-refit"] == replace(cfg["uniform"], importance="l2") and cfg["uniform"].importance == "l1"
    # default-l1: the default as it ranked before `auto` became the default (its rows the old `default` rows)
    assert arena.search_config(grid, "vgg", 0.2, "default-l1", 0) == replace(cfg["default"], importance="l1")
    assert arena.prune_kind("default-l1") == "yes"
    assert (arena.prune_kind("default-l2"), arena.prune_kind("uniform-l2-refit")) == ("yes", "yes")
    assert arena.search_config(grid, "vgg", 0.2, "default-auto", 0) == cfg["default"]
    assert arena.prune_kind("default-auto") == "yes"
    assert (arena.prune_kind("default"), arena.prune_kind("default-recovered"), arena.prune_kind("default-refit"),
            arena.prune_kind("uniform")) == ("yes", "", "yes", "")
    row = {"model": "vgg", "target": "0.2", "seed": "0", "source": "default", "refit": "",
           "search_settings": arena.settings(cfg["default"])}
    assert not arena.is_current(grid, row) and arena.is_current(grid, {**row, "refit": "yes"})  # a plain cut: stale
    old = {**row, "source": "default-recovered", "search_settings": arena.settings(cfg["default-recovered"])}
    assert arena.is_current(grid, old) and not arena.is_current(grid, {**old, "source": "default", "refit": "yes"})


def test_arena_random_draws_are_one_policy_per_k_fine_tuned_with_their_own_seeds():
    """random-K searches with K's seed whatever the cell's fine-tune seed; a follow-up's fourth element
    names its seeds; make_arena pairs each draw's seed-0 fine-tune with uniform's."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import arena
    import make_arena

    grid = {"min_keep": 0.2, "round_to": 8, "pairs": [["vgg", 0.2]], "sources": ["uniform"], "seeds": [0, 1],
            "followup": [["vgg", 0.2, "random-1", [0]], ["vgg", 0.2, "random-2"]]}
    one = arena.search_config(grid, "vgg", 0.2, "random-1", 0)
    assert one.agent == "random" and one.episodes == 1 and one.seed == 1 and one.band == SearchConfig().band
    assert arena.search_config(grid, "vgg", 0.2, "random-1", 1) == one  # the same policy for every seed
    assert arena.search_config(grid, "vgg", 0.2, "random-2", 0).seed == 2
    assert arena.cells_of(grid) == [("vgg", 0.2, "uniform", 0), ("vgg", 0.2, "uniform", 1),
                                    ("vgg", 0.2, "random-1", 0), ("vgg", 0.2, "random-2", 0),
                                    ("vgg", 0.2, "random-2", 1)]
    cell = [{"source": "uniform", "seed": "0", "test_accuracy": "90.0"},
            {"source": "random-1", "seed": "0", "test_accuracy": "90.4"},
            {"source": "random-1", "seed": "1", "test_accuracy": "89.0"},  # a confirmation: not a draw
            {"source": "random-2", "seed": "0", "test_accuracy": "89.5"}]
    ref = make_arena.Reference(cell + [{"source": "uniform", "seed": "1", "test_accuracy": "89.5"}])
    assert make_arena.draw_deltas(cell, ref) == pytest.approx([0.4, -0.5])
    only_seed_1 = make_arena.Reference([{"source": "uniform", "seed": "1", "test_accuracy": "89.5"}])
    assert make_arena.draw_deltas(cell, only_seed_1) == []  # no uniform with the draws' seed
    assert make_arena.confirmed_draws(cell, ref, 2) == " With every seed: random-1 89.70% (-0.05)."
    assert make_arena.confirmed_draws(cell, ref, 3) == ""
    assert arena.is_draw("random-3") and not arena.is_draw("default-random")


def test_arena_space_sources_enumerate_the_defaults_search_space_and_prune_as_written(digits_ckpt, tmp_path):
    """space-K is the K-th of the default's policies in sorted order: every one distinct, the uniform policy
    among them, the policy.json prunes to exactly its counts; a K past the space's size stops the part."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import arena
    import make_arena

    from entroprune.api import build_structure, load_model, prune_checkpoint
    from entroprune.search.agents.baselines import UniformAgent
    from entroprune.search.policies import fixed_policy_counts

    grid = {"min_keep": 0.2, "round_to": 8, "pairs": [["vgg", 0.5]], "sources": ["uniform"], "seeds": [0, 1],
            "followup": [["vgg", 0.5, "space-2:4", [0]]]}
    assert arena.expand("space-2:4") == ["space-2", "space-3", "space-4"] and arena.expand("random-1") == ["random-1"]
    assert [c[2] for c in arena.cells_of(grid)] == ["uniform", "uniform", "space-2", "space-3", "space-4"]
    cfg = arena.search_config(grid, "vgg", 0.5, "space-1", 0)
    assert cfg.band == SearchConfig().band and cfg.rerank_top_k == SearchConfig().rerank_top_k  # the default's space
    n = int(arena.space_policy(digits_ckpt, tmp_path / "s1", cfg, 1).summary["chosen"].rpartition(" of ")[2])
    assert 1 < n <= arena.SPACE_MAX
    net, ckpt = load_model(digits_ckpt)
    structure = build_structure(net, ckpt.spec)
    policies = [arena.space_policy(digits_ckpt, tmp_path / f"s{k}", cfg, k) for k in range(1, n + 1)]
    counts = [tuple(p.counts.values()) for p in policies]
    assert counts == sorted(set(counts))  # distinct, in sorted order
    u = UniformAgent.solve(structure, cfg.macs_target, cfg.min_keep, cfg.step)
    assert tuple(int(c) for c in fixed_policy_counts(structure, cfg, [u] * len(structure.groups))[0]) in counts
    prune_checkpoint(digits_ckpt, tmp_path / "s2" / "policy.json", tmp_path / "pruned")
    assert load_model(tmp_path / "pruned" / "model.pt")[1].pruning["counts"] == policies[1].counts
    with pytest.raises(SystemExit, match=f"holds {n} policies"):
        arena.space_policy(digits_ckpt, tmp_path / "past", cfg, n + 1)
    # wide-K: the policies the band leaves out; with space-K, every policy the settings allow
    assert arena.search_config(grid, "vgg", 0.5, "wide-1", 0) == cfg
    first = arena.space_policy(digits_ckpt, tmp_path / "w1", cfg, 1, "wide")
    w = int(first.summary["chosen"].rpartition(" of ")[2])
    wide = [tuple(arena.space_policy(digits_ckpt, tmp_path / f"w{k}", cfg, k, "wide").counts.values())
            for k in range(1, w + 1)]
    whole = arena.enumerate_policies(arena.search_env(structure, replace(cfg, band=None)), arena.SPACE_MAX)
    assert wide == sorted(set(wide)) and set(wide).isdisjoint(counts) and set(wide) | set(counts) == whole
    assert first.summary["chosen"].startswith("wide 1 of ") and arena.is_draw("wide-3")
    cell = [{"source": "uniform", "seed": "0", "test_accuracy": "90.0"},
            {"source": "random-1", "seed": "0", "test_accuracy": "91.0"},
            {"source": "space-1", "seed": "0", "test_accuracy": "90.2", "chosen": f"space 1 of {n}"},
            {"source": "space-2", "seed": "0", "test_accuracy": "89.9", "chosen": f"space 2 of {n}"}]
    ref = make_arena.Reference(cell)
    assert make_arena.draw_deltas(cell, ref, kind="space-") == pytest.approx([0.2, -0.1])
    assert make_arena.draw_deltas(cell, ref) == pytest.approx([1.0])  # random draws apart
    assert make_arena.space_size(cell) == f"it holds {n}"


def test_latency_model_benchmark_reports_random_and_uniform_policy_errors(tmp_path):
    """A tiny net, torch only: the page holds the random policies' error, its noise floor and the uniform
    policies' signed errors (no time is asserted)."""
    res = run("latency_model.py", "--models", "vgg", "--widths", "0.25", "--backends", "torch", "--held-out", "2",
              "--batch", "2", "--threads", "1", "--processes", "1", "--out", str(tmp_path / "lm"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "; in both orders, in a fresh process), and" in (tmp_path / "lm.md").read_text()  # not "each of 1 ... processes"
    row = next(line for line in (tmp_path / "lm.md").read_text().splitlines() if line.startswith("| vgg (width 0.25)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # median error, then the noise floor (each held-out net measured twice), then the uniform policies
    assert cells[1] == "torch" and cells[3].endswith("%") and cells[5].endswith("%"), row
    assert len(cells[6].split(" / ")) == 3, row
    rep = json.loads((tmp_path / "lm.json").read_text())["rows"][0]
    assert len(rep["uniform_errors"]) == 3 and all(e > -1 for e in rep["uniform_errors"])
    assert rep["repeatability"] >= 0 and len(rep["held_out"]) == 2 and rep["fit_processes"] == 1


def test_latency_deploy_benchmark_rows_are_its_timings(tmp_path):
    """One process, one model: a row per runtime, each speed-up the ratio of the timings it keeps (no time is
    asserted)."""
    res = run("latency_deploy.py", "--models", "vgg", "--processes", "1", "--repeats", "2", "--batch", "2",
              "--threads", "1", "--out", str(tmp_path / "ld"))
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads((tmp_path / "ld.json").read_text())["rows"][0]
    lines = [line for line in (tmp_path / "ld.md").read_text().splitlines() if line.startswith("| vgg |")]
    lines, profile = lines[:4], lines[4:]
    assert [line.split("|")[3].strip() for line in lines] == ["torch eager, deployed", "torch eager, as loaded",
                                                               "TorchScript", "onnxruntime"]
    # the eager profile: one row per net and form, shares of its time that add up to the whole; folded, the
    # deployed nets spend nothing on batch norm
    keys = ("unpruned, as loaded", "pruned, as loaded", "unpruned, deployed", "pruned, deployed")
    assert len(profile) == len(keys)
    assert all(rep["eager_profile"][k].get("batch norm", 0) == 0 for k in keys[2:])
    assert all(rep["eager_profile"][k]["batch norm"] > 0 for k in keys[:2])
    for line, key in zip(profile, keys, strict=True):
        shares = rep["eager_profile"][key]
        assert line.split("|")[2].strip() == key and sum(shares.values()) == pytest.approx(1.0)
        assert shares["conv"] > 0 and f"| {shares['conv']:.0%} |" in line
    red = 1 / rep["macs"]
    for line, rt in zip(lines, ("torch", "torch-loaded", "ts", "ort"), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        speedup = rep[rt]["unpruned_ms"] / rep[rt]["pruned_ms"]
        assert cells[1] == f"{red:.2f}x" and cells[5] == f"{speedup:.2f}" and cells[6] == f"{speedup / red:.2f}"


def test_latency_processes_benchmark_rows_are_its_timings(tmp_path):
    """Two fresh processes: one row each, then their median and its ratio to the MACs reduction, every cell
    read from the JSON it keeps (no time is asserted)."""
    import statistics

    res = run("latency_processes.py", "--processes", "2", "--repeats", "1", "--threads", "1",
              "--out", str(tmp_path / "lp"))
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads((tmp_path / "lp.json").read_text())
    page = (tmp_path / "lp.md").read_text()
    assert len(rep["speedups"]) == 2 and 5.0 < rep["macs_reduction"] < 5.2  # the main job's 5.05x
    for i, s in enumerate(rep["speedups"], 1):
        assert f"| {i} | {s['torch']:.2f} | {s['ts']:.2f} | {s['ort']:.2f} |" in page
    med = {rt: statistics.median(s[rt] for s in rep["speedups"]) for rt in ("torch", "ts", "ort")}
    assert f"| median / MACs reduction | {med['torch'] / rep['macs_reduction']:.2f} |" in page


def test_latency_drift_benchmark_rows_are_its_timings(tmp_path):
    """A few seconds of rounds: every round holds the copy's bandwidth and both nets' times, and the page's
    quantiles and correlations are those rounds' (no time is asserted)."""
    import numpy as np

    res = run("latency_drift.py", "--minutes", "0.05", "--threads", "1", "--copy-mb", "8", "--out", str(tmp_path / "ld"))
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads((tmp_path / "ld.json").read_text())["rows"]
    page = (tmp_path / "ld.md").read_text()
    assert len(rows) >= 2 and all(r["copy_gb_s"] > 0 and r["mobilenetv2_ms"] > 0 and r["vgg_ms"] > 0 for r in rows)
    assert f"{len(rows)} rounds over 0.05 minutes" in page
    for c in ("copy_gb_s", "mobilenetv2_ms", "vgg_ms"):
        v = np.array([r[c] for r in rows])
        assert f"| {c} | {v.min():.2f} | {np.percentile(v, 10):.2f} | {np.median(v):.2f} |" in page
    corr = np.corrcoef([[r["copy_gb_s"] for r in rows], [r["mobilenetv2_ms"] for r in rows]])[0, 1]
    assert f"copy_gb_s ~ mobilenetv2_ms {corr:+.2f}" in page


def test_policy_space_counts_every_policy_the_wall_lets_through(digits_ckpt):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import policy_space

    from entroprune.api import build_structure, load_model
    from entroprune.search.policies import search_env

    net, ckpt = load_model(digits_ckpt)
    structure = build_structure(net, ckpt.spec)
    cfg = SearchConfig(macs_target=0.3, min_keep=0.2, round_to=8)
    env = search_env(structure, cfg)
    every = policy_space.enumerate_policies(env, cap=100_000)
    drawn = policy_space.random_draws(env, 3000, seed=0)
    assert every is not None and 1 < len(every) < 500
    # whatever random search reaches is inside the counted set, and on a space this small it reaches nearly all
    # of it (the one it missed here needs four unlikely choices at once: about 1 draw in 3,000)
    assert drawn <= every and len(drawn) >= 0.9 * len(every)
    assert policy_space.enumerate_policies(env, cap=len(every) - 1) is None  # the cap says "more than", not a count


def test_agent_logs_reads_the_arenas_search_logs(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results.csv"
    g = {"pairs": [["vgg", 0.2]], "seeds": [0], "out": str(runs), "results": str(results)}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(g))
    rewards = {"default-kl": [-0.3, -0.1, -0.2, -0.2], "default-kl-random": [-0.3, -0.2, -0.25, -0.05]}
    for source, rs in rewards.items():
        d = runs / "cells" / f"vgg-0.2-{source}-s0" / "search"
        d.mkdir(parents=True)
        (d / "episodes.jsonl").write_text("".join(json.dumps({"reward": r, "policy": {"a": i % 3}}) + "\n"
                                                  for i, r in enumerate(rs)))
        (d / "search.json").write_text(json.dumps({"config": {"warmup": 2}, "chosen": "search", "reward": rs[-1]}))
    results.write_text("model,target,source,seed,test_accuracy\nvgg,0.2,default-kl,0,91.5\n"
                       "vgg,0.2,default-kl-random,0,92.25\n")
    out = run("agent_logs.py", "--grid", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "page"))
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "page.md").read_text()
    # DDPG's best came in its warm-up (-0.1, not beaten after it); random search beat its warm-up with -0.05
    assert "| vgg 20% | default-kl | 0 | -0.1000 | -0.2000 | 1 |" in page and "| no | search | -0.2000 | 91.5 |" in page
    assert "| vgg 20% | default-kl-random | 0 | -0.2000 | -0.0500 | 3 |" in page and "| yes | search |" in page


def test_machine_check_sets_each_rerun_beside_the_same_cell_of_another_machine():
    """Same policy and seed on two CPUs: their difference; a rerun search against its own machine's uniform."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import machine_check

    def row(source, seed, acc, machine, policy):
        return {"model": "vgg", "target": "0.2", "source": source, "seed": str(seed), "test_accuracy": str(acc),
                "machine": machine, "policy": json.dumps(policy)}

    arena = [row("uniform", 0, 90.0, "AMD", {"a": 0.5}), row("default", 0, 90.4, "AMD", {"a": 0.4}),
             row("uniform", 1, 91.0, "AMD", {"a": 0.5})]
    check = [row("uniform", 0, 89.8, "Intel", {"a": 0.5}), row("default", 0, 90.1, "Intel", {"a": 0.3}),
             row("uniform", 2, 89.0, "Intel", {"a": 0.5})]  # no arena cell with seed 2: left out
    found = machine_check.pairs(arena, check)
    assert [(p["check"]["source"], round(p["diff"], 2)) for p in found] == [("uniform", -0.2)]
    # the arena's own per-machine reruns count too, each once
    again = arena + [row("uniform", 1, 91.1, "Intel", {"a": 0.5})]
    found = machine_check.pairs(again, check + [row("uniform", 1, 91.1, "Intel", {"a": 0.5})])
    assert [(p["check"]["seed"], round(p["diff"], 2)) for p in found] == [("1", 0.1), ("0", -0.2)]
    assert machine_check.by_pair(found) == {"vgg 20%": pytest.approx([0.1, -0.2])}
    (line,) = machine_check.replication(arena, check)
    assert line == "| vgg 20% | default | 0 | another | +0.40 (AMD) | +0.30 (Intel) |"
    assert machine_check.seed_spread(arena) == []  # no policy with three seeds
    # a policy that moves with uniform seed by seed: pairing removes all its noise (covariance = both variances)
    three = [row("uniform", s, a, "AMD", {"a": 0.5}) for s, a in enumerate((90.0, 90.2, 89.8))] + \
        [row("default", s, a + 0.3, "AMD", {"a": 0.4}) for s, a in enumerate((90.0, 90.2, 89.8))]
    (c,) = machine_check.covariance(three)
    assert c["policies"] == 1 and c["var_delta"] == pytest.approx(0) and c["cov"] == pytest.approx(c["var_uniform"])
    assert c["var_policy"] == pytest.approx(0.04)


def test_label_free_benchmark_fine_tunes_both_arms_and_resumes(digits_ckpt, tmp_path):
    """Both arms fine-tune the same pruned net; the page's numbers are the cached results; a rerun reuses them.
    With --main-job, the whole main job runs with labels and on the unlabelled copy, the latter reporting
    agreement, and both runs' nets are scored on the labelled test set."""
    (tmp_path / "run.yaml").write_text("search:\n  macs_target: 0.3\n  episodes: 8\n  warmup: 4\n  calib_size: 64\n"
                                       "  val_size: 128\nfinetune:\n  epochs: 1\nlatency_repeats: 2\nlatency_processes: 1\n")
    args = ["--baseline", str(digits_ckpt), "--seeds", "0", "--epochs", "1", "--threads", "1", "--macs", "0.3",
            "--work", str(tmp_path / "w"), "--out", str(tmp_path / "lf"), "--quiet", "--main-job", "--run-config",
            str(tmp_path / "run.yaml")]
    res = run("label_free.py", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads((tmp_path / "lf.json").read_text())
    cached = {arm: json.loads((tmp_path / "w" / f"{arm}-s0" / "result.json").read_text())["test_accuracy"]
              for arm in ("labelled", "label-free")}
    assert rep["accuracy"] == {arm: [acc] for arm, acc in cached.items()}
    assert rep["delta"] == [pytest.approx(cached["label-free"] - cached["labelled"])]
    # distillation alone trains: the labels' test accuracy rises without a label read
    assert cached["label-free"] >= rep["pruned_accuracy"] + 5, rep
    metrics = json.loads((tmp_path / "w" / "label-free-s0" / "metrics.json").read_text())
    assert "test_agreement" in metrics and metrics["dataset"] == "npz"
    page = (tmp_path / "lf.md").read_text()
    assert f"| label-free: distillation alone, labels removed | {cached['label-free']:.2f} |" in page
    # the main job: the label-free run reports agreement, the labelled one accuracy, on the same test images
    lab, free = (rep["main_job"][arm][0] for arm in ("labelled", "label-free"))
    assert (lab["score"], free["score"]) == ("test_accuracy", "test_agreement")
    ev = {arm: json.loads((tmp_path / "w" / f"run-{arm}-s0" / "run" / "evaluation.json").read_text())
          for arm in ("labelled", "label-free")}
    assert lab["searched"] == lab["searched_score"] == ev["labelled"]["rows"][-1]["test_accuracy"]
    assert free["searched_score"] == ev["label-free"]["rows"][-1]["test_agreement"] >= 50
    assert ev["label-free"]["dataset"] == "npz" and free["searched"] >= 50  # labels never read, far above chance
    assert f"| 0 | {lab['searched']:.2f} / {lab['uniform']:.2f}, {lab['searched'] - lab['uniform']:+.2f} | " \
           f"{free['searched_score']:.2f} / {free['uniform_score']:.2f}," in page
    stamps = [(tmp_path / "w" / d / "result.json").stat().st_mtime_ns for d in ("labelled-s0", "run-label-free-s0")]
    assert run("label_free.py", *args).returncode == 0
    assert [(tmp_path / "w" / d / "result.json").stat().st_mtime_ns
            for d in ("labelled-s0", "run-label-free-s0")] == stamps


def test_latency_summary_pools_every_runs_seed_pairs(tmp_path):
    """Goal 1 judged on each run's first timing, goal 2 pooled over every seed pair and over runs' means;
    pages without a matched MACs net (the TorchScript page) are left out."""

    def page(name: str, machine: str, measured: float, lat: list[float], matched: list[float]) -> Path:
        row = {"model": "vgg", "target": 0.25, "latency": {"chosen": "uniform", "predicted_latency": 0.25,
                                                           "achieved": 0.15, "free_channels": [{"kept": True}]},
               "measured": {"latency_fraction": measured, "per_process": [[measured, 0.2], [measured + 0.01, 0.2]]},
               "matched": {"measured": {"latency_fraction": 0.26, "matched_fraction": 0.26}},
               "accuracy": {"latency": lat, "macs": lat, "macs-matched": matched}}
        (tmp_path / f"{name}.md").write_text(f"Generated by `x` on {machine}, 2 cores, torch.\n")
        (tmp_path / f"{name}.json").write_text(json.dumps([row]))
        return tmp_path / f"{name}.json"

    pages = [page("a", "AMD EPYC", 0.26, [92.0, 92.2, 92.1], [91.9, 92.2, 92.0]),
             page("b", "Intel", 0.28, [91.8], [91.9])]
    (tmp_path / "ts.json").write_text(json.dumps([{"model": "vgg", "accuracy": {"latency": 91.9}}]))
    out = tmp_path / "summary.md"
    done = run("latency_summary.py", "--pages", *map(str, pages), str(tmp_path / "ts.json"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["within"] for r in data["runs"]] == [True, False]  # 28% is 12% over a 25% target
    vgg = data["pooled"]["vgg"]
    assert vgg["pairs"] == 4 and vgg["runs"] == 2 and vgg["within"] == 1 and vgg["runs_at_least"] == 1
    assert vgg["pair_mean"][0] == pytest.approx((0.1 + 0.0 + 0.1 - 0.1) / 4)
    assert vgg["run_mean"][0] == pytest.approx((0.2 / 3 - 0.1) / 2)
    text = out.read_text()
    assert "| a | AMD EPYC | vgg | 25% | the search's process | uniform + 1 free |" in text and "| b | Intel |" in text and "missed" in text
    # nothing to pool: one line naming the fix
    done = run("latency_summary.py", "--pages", str(tmp_path / "ts.json"), "--out", str(out))
    assert done.returncode != 0 and "run benchmarks/latency_target.py first" in done.stderr


def test_channel_ranking_changes_only_which_channels_and_pages_the_difference(tmp_path):
    """Every ranking prunes the arena's uniform allocation and fine-tunes it; the rankings keep other
    channels (random differs from l1), the same counts, and the page pairs each with l1 by seed."""
    g = grid(tmp_path, finetune_lr=0.02)
    arena = tmp_path / "m" / "results.csv"
    policy = {n: 0.5 for n in ("features.0", "features.3", "features.7", "features.10", "features.14",
                               "features.17")}
    from entroprune.api import train_baseline

    train_baseline("vgg", "digits", tmp_path / "m" / "baselines" / "vgg", epochs=1, width_mult=0.5, quiet=True)
    with open(arena, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["model", "target", "source", "seed", "policy"])
        w.writeheader()
        w.writerow({"model": "vgg", "target": 0.5, "source": "uniform", "seed": 0, "policy": json.dumps(policy)})
    out, results, work = tmp_path / "cr.md", tmp_path / "cr.csv", tmp_path / "work"
    res = run("channel_ranking.py", "--grid", str(g), "--pairs", "vgg:0.5", "--seeds", "0", "--work", str(work),
              "--results", str(results), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    got = rows(results)
    assert [r["ranking"] for r in got] == ["l1", "random", "bn", "activation", "l2", "taylor", "l2-plain"]
    assert len({r["macs_fraction"] for r in got}) == 1  # one allocation
    import torch

    first = {r: torch.load(work / f"vgg-0.5-{r}-s0" / "pruned" / "model.pt", weights_only=True)
             for r in ("l1", "random")}
    w = [next(v for k, v in ck["state_dict"].items() if k.endswith("features.0.weight")) for ck in first.values()]
    assert w[0].shape == w[1].shape and not torch.equal(w[0], w[1])  # same count, other channels
    # a VGG's groups are all plain (one conv each): l2-plain is l2 there
    plain = [torch.load(work / f"vgg-0.5-{r}-s0" / "pruned" / "model.pt", weights_only=True)["state_dict"]
             for r in ("l2", "l2-plain")]
    assert all(torch.equal(plain[0][k], plain[1][k]) for k in plain[0])
    text = out.read_text()
    l1 = float(got[0]["test_accuracy"])
    rand = float(got[1]["test_accuracy"])
    assert "| random | 1 |" in text and f"{rand - l1:+.2f} ± 0.00" in text
    res = run("channel_ranking.py", "--grid", str(g), "--pairs", "vgg:0.5", "--seeds", "0", "--work", str(work),
              "--results", str(results), "--out", str(out))  # every cell there: nothing runs again
    assert res.returncode == 0 and res.stdout.count("seed 0:") == 0 and len(rows(results)) == 7
    # --l1-from-arena: the arena's uniform cell of this machine and seed stands for l1, nothing fine-tuned
    with open(arena, "a", newline="") as fh:
        csv.writer(fh).writerow(["vgg", 0.5, "uniform", 1, json.dumps(policy), 10.0, 12.34, got[0]["machine"]])
    lines = arena.read_text().splitlines()
    arena.write_text("\n".join([lines[0] + ",accuracy_before_finetune,test_accuracy,machine", *lines[1:]]) + "\n")
    res = run("channel_ranking.py", "--grid", str(g), "--pairs", "vgg:0.5", "--seeds", "1", "--rankings", "l1",
              "--l1-from-arena", "--work", str(work), "--results", str(results), "--out", str(out))
    assert res.returncode == 0 and "seed 1:" not in res.stdout, res.stderr[-2000:]
    taken = rows(results)[-1]
    assert taken["seed"] == "1" and taken["from_arena"] == "yes" and float(taken["test_accuracy"]) == 12.34
    assert "| l1* | 2 |" in out.read_text()
    # --scores: the re-ranking's KL of each ranking's net, which the page then shows
    res = run("channel_ranking.py", "--grid", str(g), "--pairs", "vgg:0.5", "--rankings", "l1", "random", "--scores",
              "--results", str(results))
    assert res.returncode == 0, res.stderr[-2000:]
    scores = json.loads((tmp_path / "channel_ranking_scores.json").read_text())
    assert set(scores) == {"vgg:0.5:l1", "vgg:0.5:random"}
    assert all(0 <= s["recovered_kl"] < s["fresh_kl"] for s in scores.values())  # recovery brings the net back
    run("channel_ranking.py", "--grid", str(g), "--page-only", "--results", str(results), "--out", str(out))
    row = next(line for line in out.read_text().splitlines() if line.startswith("| random |"))
    assert row.rstrip(" |").endswith(f"{scores['vgg:0.5:random']['recovered_kl']:.3f}")


def test_one_d_benchmark_prunes_a_conv1d_net_both_ways_and_resumes(tmp_path):
    """The 1-D benchmark trains its Conv1d net, prunes it by the default search and by the uniform policy through
    the Python API, fine-tunes both, and writes the page from the cached cells; a rerun trains nothing."""
    args = ["--dataset", "digits", "--seeds", "0", "--episodes", "8", "--epochs", "1", "--ft-epochs", "1",
            "--threads", "1", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "od"), "--quiet"]
    res = run("one_d.py", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads((tmp_path / "od.json").read_text())
    cells = {s: json.loads((tmp_path / "w" / f"{s}-s0" / "result.json").read_text()) for s in ("default", "uniform")}
    assert rep["rows"] == [cells["default"], cells["uniform"]]
    for c in cells.values():
        assert 0.15 <= c["macs_fraction"] <= 0.2 + 1e-9 and c["test_accuracy"] > c["before_finetune"], c
    assert cells["default"]["chosen"] in ("search", "uniform", "global")
    assert rep["summary"]["default"]["delta_uniform"] == [
        pytest.approx(cells["default"]["test_accuracy"] - cells["uniform"]["test_accuracy"])]
    page = (tmp_path / "od.md").read_text()
    assert "digits read as signals of 8 channels x 8 samples" in page
    assert f"| uniform: the uniform policy (agent uniform) | 1 | {cells['uniform']['test_accuracy']:.2f} | - |" in page
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "w").rglob("*") if p.is_file()}
    again = run("one_d.py", *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "w").rglob("*") if p.is_file()} == stamps
    assert json.loads((tmp_path / "od.json").read_text())["rows"] == rep["rows"]


def test_finetune_budget_prunes_in_steps_to_the_same_net_and_reproduces_the_main_jobs_fine_tune(tmp_path):
    """k1-e1 is the tool's own prune + fine-tune (the same accuracy as prune_checkpoint then finetune_checkpoint),
    k1-e1-refit-lr0.01 the same pruned with the refit and fine-tuned from lr 0.01; k2-e2 cuts twice, first part
    of the way, and ends at the same channel counts; a rerun runs nothing."""
    g = grid(tmp_path, finetune_lr=0.02)
    arena = tmp_path / "m" / "results.csv"
    policy = {n: 0.25 for n in ("features.0", "features.3", "features.7", "features.10", "features.14",
                                "features.17")}
    from entroprune.api import finetune_checkpoint, prune_checkpoint, train_baseline

    base = tmp_path / "m" / "baselines" / "vgg"
    train_baseline("vgg", "digits", base, epochs=1, width_mult=0.5, quiet=True)
    with open(arena, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["model", "target", "source", "seed", "policy"])
        w.writeheader()
        w.writerow({"model": "vgg", "target": 0.5, "source": "uniform", "seed": 0, "policy": json.dumps(policy)})
    out, results = tmp_path / "fb.md", tmp_path / "fb.csv"
    args = ["--grid", str(g), "--pairs", "vgg:0.5", "--seeds", "0", "--variants", "k1-e1", "k2-e2",
            "k1-e1-refit-lr0.01", "--results", str(results), "--out", str(out)]
    res = run("finetune_budget.py", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    once, steps, refitted = rows(results)
    for refit, lr, row in ((False, 0.02, once), (True, 0.01, refitted)):
        prune_checkpoint(base / "model.pt", {"policy": policy, "round_to": 1}, tmp_path / f"p{lr}", refit=refit)
        ft = finetune_checkpoint(tmp_path / f"p{lr}" / "model.pt", tmp_path / f"f{lr}", epochs=1, lr=lr, seed=0,
                                 quiet=True)
        assert float(row["test_accuracy"]) == ft["test_accuracy"]
    assert "| k1-e1-refit-lr0.01 | at once, 1 epochs, refitted, lr 0.01 | 1 |" in out.read_text()
    assert once["macs_fraction"] == steps["macs_fraction"] and len(steps["step_accuracies"].split()) == 2
    assert f"{float(steps['test_accuracy']):.2f}" == steps["step_accuracies"].split()[-1]
    text = out.read_text()
    assert "| k2-e2 | 2 steps, 2 epochs in all | 1 |" in text
    diff = float(steps["test_accuracy"]) - float(once["test_accuracy"])
    assert f"{diff:+.2f} ± 0.00" in text
    res = run("finetune_budget.py", *args)
    assert res.returncode == 0 and "seed 0:" not in res.stdout and len(rows(results)) == 3


def test_finetune_budget_steps_cut_part_of_the_way_first_and_end_at_the_policy(digits_ckpt):
    """Each step keeps fewer channels than the one before (never fewer than the policy's), MACs fall
    geometrically towards the target, and the last step is the policy itself."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from finetune_budget import parse_variant, step_counts

    from entroprune.api import build_structure, load_model

    model, ckpt = load_model(digits_ckpt)
    structure = build_structure(model, ckpt.spec)
    final = structure.keep_counts(0.25)
    steps = step_counts(structure, final, 3, 1)
    assert np.array_equal(steps[-1], final)
    fractions = [structure.macs(c) / structure.total_macs for c in steps]
    assert 1 > fractions[0] > fractions[1] > fractions[2]
    assert all((a >= b).all() and (b >= final).all() for a, b in zip(steps, steps[1:], strict=False))
    assert fractions[0] > 0.3 and fractions[1] > 0.12  # about 0.25**2 ** (1/3, 2/3): not cut to the end at once
    # AGP's cubic schedule cuts more at first and less at the end than the geometric one
    cubic = step_counts(structure, final, 3, 1, "cubic")
    assert np.array_equal(cubic[-1], final) and cubic[0].sum() < steps[0].sum()
    assert cubic[1].sum() - final.sum() < steps[1].sum() - final.sum()
    assert parse_variant("k3-e10") == (3, 10, "geometric", False, None)
    assert parse_variant("k2-e3-cubic") == (2, 3, "cubic", False, None)
    assert parse_variant("k1-e3-refit-lr0.005") == (1, 3, "geometric", True, 0.005)
    for bad in ("k4-e3", "k1-e3-lr0", "k1-e3-lr", "k1-e3-lr0.01-refit"):
        with pytest.raises(SystemExit):
            parse_variant(bad)


def uniform_vgg_arena(tmp_path, last: float = 0.5) -> Path:
    """A digits VGG baseline (width 0.5) and an arena results CSV holding its uniform policy at 0.5 (the last
    conv at ``last``), for the per-pair studies; the grid's path."""
    from entroprune.api import train_baseline

    policy = {**{n: 0.5 for n in ("features.0", "features.3", "features.7", "features.10", "features.14")},
              "features.17": last}
    train_baseline("vgg", "digits", tmp_path / "m" / "baselines" / "vgg", epochs=1, width_mult=0.5, quiet=True)
    with open(tmp_path / "m" / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["model", "target", "source", "seed", "policy"])
        w.writeheader()
        w.writerow({"model": "vgg", "target": 0.5, "source": "uniform", "seed": 0, "policy": json.dumps(policy)})
    return grid(tmp_path)


def test_refit_norms_lists_the_refitted_convs_and_their_norm_ratios(tmp_path):
    """The stem reads the images (nothing cut upstream) and keeps its filters: never listed; a conv after a cut
    is, with the median ratio of its kept filters' refitted to unpruned norms. The head is refitted (and
    measured) even on fewer equations than the refit itself asks of it, and the page says so."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import refit_norms

    g = uniform_vgg_arena(tmp_path, last=0.75)
    refit_norms.main(["--grid", str(g), "--pairs", "vgg:0.5", "--out", str(tmp_path / "rn.md")])
    found = json.loads((tmp_path / "rn.json").read_text())["vgg:0.5"]
    head = found.pop("head")
    assert "features.0" not in found and {"features.3", "features.17"} <= set(found)
    assert all(r > 0 for r in found.values()) and len(set(found.values())) > 1
    # the classifier reads features.17's kept 48 of 64 channels (width 0.5), one equation an image: the 143
    # calibration images give it under REFIT_HEAD_ROWS each, where the refit proper leaves it as cut
    from entroprune.data import load_dataset
    from entroprune.refit import REFIT_HEAD_ROWS

    calib = len(load_dataset("digits").calib.x)
    assert set(head) == {"classifier"} and calib / 48 < REFIT_HEAD_ROWS
    assert head["classifier"]["equations_per_input"] == pytest.approx(calib / 48)
    assert head["classifier"]["rms_ratio"] > 1  # refitted: the cut (columns zeroed) could only come out smaller
    page = (tmp_path / "rn.md").read_text()
    assert "| features.3 |" in page and "The head `classifier`" in page
    assert "(under 3: the refit leaves it as cut)" in page


def test_refit_speed_times_both_refits_and_checks_they_agree(tmp_path, monkeypatch):
    """The one-pass refit against the partial forwards on the arena's uniform policy: both timed, same weights,
    and the partial forwards run in the second refit only (once a layer)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import refit_speed

    import entroprune.refit as refit_module

    calls = []
    real = refit_module._partial_forwards
    monkeypatch.setattr(refit_module, "_partial_forwards", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = uniform_vgg_arena(tmp_path)
    refit_speed.main(["--grid", str(g), "--pairs", "vgg:0.5", "--out", str(tmp_path / "rs.md")])
    got = json.loads((tmp_path / "rs.json").read_text())["vgg:0.5"]
    assert got["same_weights"] is True and got["traced"] is True and got["layers"] == 7 and got["images"] == 143
    assert got["one_pass_s"] > 0 and got["partial_s"] > 0 and len(calls) == got["layers"]
    assert "| vgg 50% | 7 | 143 |" in (tmp_path / "rs.md").read_text()
