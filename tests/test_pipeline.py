import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from entroprune.api import (
    evaluate_checkpoint,
    export_checkpoint,
    finetune_checkpoint,
    load_model,
    prune_checkpoint,
    search_checkpoint,
)
from entroprune.search import SearchConfig
from entroprune.structure import count_macs_params


@pytest.fixture(scope="module")
def pruned(digits_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    search_checkpoint(digits_ckpt, root / "search", SearchConfig(macs_target=0.4, episodes=6, warmup=2,
                                                                 calib_size=64, val_size=64), quiet=True)
    prune_checkpoint(digits_ckpt, root / "search" / "policy.json", root / "pruned", refit=False)  # accuracy to win back
    return root


def test_train_baseline_does_not_depend_on_the_global_rng(tmp_path):
    # The main job and the benchmarks call the API without the CLI's seeding: the initial
    # weights must still follow `seed`, or the same run gives a different baseline every time.
    from entroprune.api import train_baseline

    states = []
    for i, outside in enumerate((1, 2)):
        torch.manual_seed(outside)
        train_baseline("vgg", "digits", tmp_path / str(i), epochs=1, width_mult=0.25, seed=0,
                       train_limit=128, quiet=True)
        states.append(torch.load(tmp_path / str(i) / "model.pt", weights_only=True)["state_dict"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_pruned_checkpoint_reloads_safely(pruned, digits_ckpt):
    raw = torch.load(pruned / "pruned" / "model.pt", weights_only=True)
    assert raw["pruning"]["history"] and raw["pruning"]["original"] == str(digits_ckpt.resolve())
    model, ckpt = load_model(pruned / "pruned" / "model.pt")
    x = torch.randn(3, *ckpt.spec.input_size)
    again, _ = load_model(pruned / "pruned" / "model.pt")
    assert torch.equal(model(x), again(x))
    policy = json.loads((pruned / "search" / "policy.json").read_text())
    assert ckpt.pruning["counts"] == policy["counts"]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    orig = [m for m in load_model(digits_ckpt)[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(c.out_channels for c in convs) < sum(c.out_channels for c in orig)


def test_side_by_side_evaluation(pruned, monkeypatch):
    rows = evaluate_checkpoint(pruned / "pruned" / "model.pt", latency=True, repeats=2)
    assert [r["name"] for r in rows] == ["original", "pruned"]
    assert rows[1]["macs_reduction"] > 2.0
    assert rows[1]["macs"] / rows[0]["macs"] == pytest.approx(0.4, rel=0.03)
    # timed in fresh processes (the checkpoint's classes are importable there), as a deployment starts
    assert [r["latency_processes"] for r in rows] == [3, 3]
    for key in ("torch_b1_ms", "torch_b64_ms", "ts_b1_ms", "ts_b64_ms", "ort_b1_ms", "ort_b64_ms",
                "speedup_vs_macs_b64", "ts_speedup_vs_macs_b64", "ort_speedup_vs_macs_b64"):
        assert rows[1][key] > 0
    # each column is what it says: counted MACs, the ratio of the latencies, speed-up over MACs reduction
    orig, pr = rows
    model, ckpt = load_model(pruned / "pruned" / "model.pt")
    assert pr["macs"] == count_macs_params(model, ckpt.spec.example_input())[0]
    assert pr["macs_reduction"] == pytest.approx(orig["macs"] / pr["macs"])
    assert pr["speedup_torch_b64"] == pytest.approx(orig["torch_b64_ms"] / pr["torch_b64_ms"], rel=1e-3)
    assert pr["speedup_vs_macs_b64"] == pytest.approx(pr["speedup_torch_b64"] / pr["macs_reduction"], rel=1e-3)
    for rt in ("ts", "ort"):
        assert pr[f"speedup_{rt}_b64"] == pytest.approx(orig[f"{rt}_b64_ms"] / pr[f"{rt}_b64_ms"], rel=1e-3)
        assert pr[f"{rt}_speedup_vs_macs_b64"] == pytest.approx(pr[f"speedup_{rt}_b64"] / pr["macs_reduction"])
    from entroprune.api import load_data_for_spec

    data = load_data_for_spec(ckpt.spec, calib_size=None)
    with torch.no_grad():
        hits = (model.eval()(data.normalize(data.test.x)).argmax(1) == data.test.y).float().mean()
    assert pr["test_accuracy"] == pytest.approx(100 * float(hits), abs=1e-3)
    # timed while other processes kept 2 cores busy (CPU accounting faked): the command says its numbers are not
    # this machine's, after the table
    from typer.testing import CliRunner

    from entroprune import latency
    from entroprune.cli import app

    readings = iter([(10.0, 100.0, 5.0), (12.0, 106.0, 7.0)])
    monkeypatch.setattr(latency, "_cpu_seconds", lambda: next(readings))
    res = CliRunner().invoke(app, ["evaluate", str(pruned / "pruned" / "model.pt"), "--latency", "--processes", "0"])
    assert res.exit_code == 0 and "warning: other processes kept 2.00 cores busy on average while the latencies were " \
        "timed" in res.output and "rerun this command" in res.output, res.output


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_matches_torch(pruned, tmp_path, fmt):
    res = export_checkpoint(pruned / "pruned" / "model.pt", tmp_path / f"m.{fmt}", fmt)
    assert res["max_abs_diff"] <= 1e-4 and (tmp_path / f"m.{fmt}").stat().st_size > 0
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
        # the written file itself, in onnxruntime, at several batch sizes (the batch axis is dynamic)
        model, ckpt = load_model(pruned / "pruned" / "model.pt")
        session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for batch in (1, 3, 16):
            x = torch.randn(batch, *ckpt.spec.input_size, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                expected = model(x).numpy()
            got = session.run(None, {name: x.numpy()})[0]
            assert got.shape == expected.shape and abs(got - expected).max() <= 1e-4
    elif fmt == "pt2":
        model, ckpt = load_model(pruned / "pruned" / "model.pt")
        program = torch.export.load(str(tmp_path / "m.pt2"))
        # the pruned widths, not the unpruned net's, and any batch size (batch 1 included: not specialised to 2)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        widths = {tuple(t.shape) for t in program.state_dict.values()}
        assert all(tuple(c.weight.shape) in widths for c in convs)
        for batch in (1, 5):
            x = torch.randn(batch, *ckpt.spec.input_size, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                assert torch.allclose(program.module()(x), model(x), atol=1e-5)
    else:
        model, ckpt = load_model(pruned / "pruned" / "model.pt")
        x = torch.randn(2, *ckpt.spec.input_size)
        loaded = torch.jit.load(str(tmp_path / "m.torchscript"))
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
        # frozen: the weights are constants, batch norms folded into the convs, nothing left to train
        assert not list(loaded.parameters())
        assert "batch_norm" not in str(loaded.inlined_graph)
        # and loadable the way the docs say a CPU deployment should, with the same outputs
        with torch.no_grad():
            assert torch.allclose(torch.jit.optimize_for_inference(loaded)(x), model(x), atol=1e-5)


class _TwoHeads(torch.nn.Module):
    """Inception-style: the main head's logits and an auxiliary head's."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head, self.aux = torch.nn.Linear(8, 10), torch.nn.Linear(8, 4)

    def forward(self, x):
        f = self.body(x)
        return self.head(f), {"aux": self.aux(f)}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_a_model_with_several_outputs_exports_and_deploys_every_one(tmp_path, fmt):
    """A net with an auxiliary head (which search, prune and fine-tune take) failed in the main job's last stages:
    the export compared `model(x).numpy()` of a tuple, the eager deployment `model(x).abs()` (an AttributeError
    traceback). Every output is exported and checked; ONNX names them, each with a dynamic batch."""
    from entroprune.export import deployed_eager, export_model, flat_outputs

    torch.manual_seed(0)
    model, x = _TwoHeads().eval(), torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected = flat_outputs(model(x))
        fast = flat_outputs(deployed_eager(model, x[:1])(x))
    assert [e.shape for e in expected] == [(5, 10), (5, 4)]
    assert all(torch.allclose(f, e, atol=1e-5) for f, e in zip(fast, expected, strict=True))
    res = export_model(model, x[:1], tmp_path / f"m.{fmt}", fmt)
    assert res["outputs"] == 2 and res["max_abs_diff"] <= 1e-4
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["logits", "output1"]
        got = session.run(None, {"input": x.numpy()})  # batch 5 where it was traced at 1
        assert all(abs(g - e.numpy()).max() <= 1e-4 for g, e in zip(got, expected, strict=True))
    from entroprune.report import _export_lines

    lines = _export_lines({"file": "model.onnx", "format": "onnx", "bytes": 1, "max_abs_diff": 0.0, "outputs": 2,
                           "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25], "sample_rate": None})
    assert "outputs `logits`, `output1` (the first the main head)" in lines[0]


def test_a_failed_export_check_leaves_an_earlier_file_whole(tmp_path, monkeypatch):
    """The file was written, then compared and deleted: `export --force` of a model that fails its check destroyed
    the earlier export it was to replace."""
    import numpy as np

    import entroprune.export as export
    from entroprune.errors import ConfigError

    model = _TwoHeads().eval()
    (tmp_path / "m.onnx").write_bytes(b"earlier export")
    monkeypatch.setattr(export, "onnx_session", lambda data: type("S", (), {"run": lambda self, names, feed: [
        np.full((4, 10), 9.0, np.float32), np.zeros((4, 4), np.float32)]})())
    with pytest.raises(ConfigError, match="differs from torch"):
        export.export_model(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx", "onnx")
    assert (tmp_path / "m.onnx").read_bytes() == b"earlier export"


def test_a_model_torch_export_cannot_capture_is_one_line_and_no_file(tmp_path):
    from entroprune.errors import ConfigError
    from entroprune.export import export_model

    class Branchy(torch.nn.Module):  # control flow on a value: traceable once, not capturable by torch.export
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return y.mean((2, 3)) if y.sum() > 0 else -y.mean((2, 3))

    with pytest.raises(ConfigError, match=r"^torch.export cannot capture this model \(.*\); export it as onnx or "
                                          r"torchscript instead$"):
        export_model(Branchy(), torch.zeros(1, 1, 8, 8), tmp_path / "m.pt2", "pt2")
    assert not list(tmp_path.iterdir())


def test_finetune_recovers_accuracy(pruned, tmp_path):
    import hashlib

    src = pruned / "pruned" / "model.pt"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()  # taken before the call
    res = finetune_checkpoint(src, tmp_path / "ft", epochs=2, distill=True, quiet=True)
    # a no-op fine-tune (or one that only recalibrates BN) fails this: it must train
    assert res["test_accuracy"] >= res["test_accuracy_before"] + 10, res  # measured: 79.7% -> 96.1%
    raw = torch.load(tmp_path / "ft" / "model.pt", weights_only=True)
    start = torch.load(src, weights_only=True)
    conv = next(k for k, v in start["state_dict"].items() if k.endswith("weight") and v.dim() == 4)
    assert not torch.equal(raw["state_dict"][conv], start["state_dict"][conv])  # the weights moved
    assert raw["pruning"]["counts"]  # still knows how it was pruned
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest  # input untouched


def _quick_run(root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "run", "--quick", "--quiet", "--seed", "0",
                           "--out-root", str(root)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    runs = [p for p in root.iterdir() if p.name.startswith("run-")]
    assert len(runs) == 1
    return proc, runs[0]


def test_label_free_prune_and_finetune_on_unlabelled_images(digits_ckpt, tmp_path):
    """Without labels the whole chain still runs: BN recalibrated on the images, the fine-tune distils from
    the unpruned net (its outputs the only target), and the net it makes is better on the labelled test set."""
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from entroprune.cli import app
    from entroprune.data import load_dataset

    flat = tmp_path / "flat"  # the digits' training images as a flat folder: no class sub-folders, no labels
    flat.mkdir()
    for i, img in enumerate(load_dataset("digits").train.x[:900]):
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(flat / f"{i}.png")
    model, ckpt = load_model(digits_ckpt)
    policy = {"policy": {g: 0.3 for g in search_groups(model, ckpt)}}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    runner, images = CliRunner(), ["--dataset", "imagefolder", "--data-dir", str(flat)]
    res = runner.invoke(app, ["prune", str(digits_ckpt), "--policy", str(tmp_path / "policy.json"), "--out",
                              str(tmp_path / "pruned"), *images])
    assert res.exit_code == 0, res.stderr
    res = runner.invoke(app, ["finetune", str(tmp_path / "pruned" / "model.pt"), "--no-distill", "--out",
                              str(tmp_path / "nd"), *images])
    assert res.exit_code == 2 and "has no labels: fine-tune it by distillation" in res.stderr
    res = runner.invoke(app, ["finetune", str(tmp_path / "pruned" / "model.pt"), "--epochs", "2", "--out",
                              str(tmp_path / "ft"), "--quiet", *images])
    assert res.exit_code == 0, res.stderr
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert "test_accuracy" not in metrics and metrics["dataset"] == "imagefolder"
    assert metrics["test_agreement"] >= metrics["test_agreement_before"] + 5, metrics
    assert "agreement with the teacher" in res.stdout
    # evaluate without labels: the pruned net's agreement with its original, the fine-tune's own figure
    rows = evaluate_checkpoint(tmp_path / "ft" / "model.pt", dataset="imagefolder", data_dir=flat)
    assert [r["test_agreement"] for r in rows] == [100.0, pytest.approx(metrics["test_agreement"])]
    # labels were never read, yet the labelled test set (the checkpoint's own dataset) says it learned
    before, after = (evaluate_checkpoint(tmp_path / d / "model.pt")[-1]["test_accuracy"] for d in ("pruned", "ft"))
    assert after >= before + 5, (before, after)


def search_groups(model, ckpt) -> list[str]:
    from entroprune.api import build_structure

    return [g.name for g in build_structure(model, ckpt.spec).groups]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return _quick_run(tmp_path_factory.mktemp("quick"))


def test_run_is_deterministic_through_an_interruption(quick_run, tmp_path):
    """Same seed, same result (the policy, the fine-tuned weights and every accuracy; latencies aside), even for
    a run stopped by Ctrl-C in the middle of its search and continued with `run --resume`."""
    import signal
    import time

    _, first = quick_run
    cmd = [sys.executable, "-m", "entroprune.cli", "run", "--quick", "--quiet", "--seed", "0", "--out-root",
           str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("run-*/search/search_state.pt")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the search saves its state after this episode
    _, stderr = proc.communicate(timeout=300)
    (second,) = tmp_path.glob("run-*")
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"run stopped during its search; the stages it finished are kept in {second}: continue with "
        f"`entroprune run --resume {second}`")
    assert f"run folder: {second} (if the run stops part-way: `entroprune run --resume {second}` continues it)" in stderr
    assert not (second / "evaluation.json").exists()
    again = subprocess.run([sys.executable, "-m", "entroprune.cli", "run", "--quiet", "--resume", str(second)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "baseline: finished before the interruption, kept" in again.stderr
    # the resumed search scored each remaining episode once, as the uninterrupted one did
    episodes = [[json.loads(line)["episode"] for line in (r / "search" / "episodes.jsonl").read_text().splitlines()]
                for r in (first, second)]
    assert episodes[0] == episodes[1]
    for rel in ("search/policy.json", "uniform/policy.json"):
        if (first / rel).exists() or (second / rel).exists():
            # the base checkpoint's path differs, nothing else: its file too (its metrics hold training times),
            # not its weights' hash
            a, b = (json.loads((r / rel).read_text()) for r in (first, second))
            for d in (a, b):
                d.pop("checkpoint", None)
            assert a == b, rel
    a = torch.load(first / "finetuned" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(second / "finetuned" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ev1, ev2 = (json.loads((r / "evaluation.json").read_text()) for r in (first, second))
    assert [r["test_accuracy"] for r in ev1["rows"]] == [r["test_accuracy"] for r in ev2["rows"]]
    assert ev1["uniform_reference"]["test_accuracy"] == ev2["uniform_reference"]["test_accuracy"]
    assert (ev1["resumes"], ev2["resumes"]) == (0, 1)


def test_resume_keeps_finished_stages_and_refuses_what_it_cannot_continue(quick_run, tmp_path, monkeypatch):
    """A resume redoes nothing a run finished (the search and the pruning are not run again), starts an
    interrupted fine-tune over to the same weights, and refuses in one line a folder that is no run, a run
    that is complete, a baseline that changed since, and settings beside --resume."""
    import shutil

    from typer.testing import CliRunner

    from entroprune import pipeline
    from entroprune.cli import app
    from entroprune.errors import ConfigError

    _, done = quick_run
    with pytest.raises(ConfigError, match="is complete"):
        pipeline.resume_run(done)
    with pytest.raises(ConfigError, match="holds no run to resume"):
        pipeline.resume_run(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        pipeline.resume_run(tmp_path / "nope")
    res = CliRunner().invoke(app, ["run", "--resume", str(done), "--seed", "1", "--macs-target", "0.5"])
    assert res.exit_code == 2 and "continues a run with the settings in its config.yaml; drop --seed, --macs-target" \
        in res.output
    # the run as a Ctrl-C in its fine-tune leaves it: every later output gone, the record without those stages
    run = shutil.copytree(done, tmp_path / "run")
    for rel in ("evaluation.json", "report.md", "finetuned/metrics.json", "finetuned/model.pt"):
        (run / rel).unlink()
    record = json.loads((run / pipeline.PROGRESS_FILE).read_text())
    for stage in ("finetune", "evaluate", "export", "uniform_reference"):
        record["timings_s"].pop(stage, None)
    (run / pipeline.PROGRESS_FILE).write_text(json.dumps({**record, "baseline_sha256": "0" * 64,
                                                          "baseline_weights_sha256": "0" * 64}))
    with pytest.raises(ConfigError, match="changed since run .* started"):
        pipeline.resume_run(run, quiet=True)
    # the cache removed and retrained with the same seed: the same weights in a file of other training times,
    # which the resume takes (it refused it as "changed")
    retrained = tmp_path / "cache" / "model.pt"
    retrained.parent.mkdir()
    raw = torch.load(record["baseline"], weights_only=True)
    torch.save({**raw, "metrics": {**raw["metrics"], "train_time_s": -1.0}}, retrained)
    (run / pipeline.PROGRESS_FILE).write_text(json.dumps({**record, "baseline": str(retrained)}))

    def never(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(pipeline, "search_checkpoint", never)
    monkeypatch.setattr(pipeline, "prune_checkpoint", never)
    said: list[str] = []
    assert pipeline.resume_run(run, quiet=True, say=said.append) == run
    assert {"search: finished before the interruption, kept", "prune: finished before the interruption, kept"} <= \
        set(said)
    a = torch.load(done / "finetuned" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "finetuned" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["resumes"] == 1 and ev["timings_s"]["search"] == record["timings_s"]["search"]
    summary = json.loads((run / "search" / "search.json").read_text())  # a search reward and a re-ranking score,
    assert summary["rerank"] and (ev["search_reward"], ev["rerank_score"]) == (  # each under its own name
        summary["best_search_reward"], summary["reward"]) and summary["reward"] != summary["best_search_reward"]
    assert "Interrupted and resumed 1x (`entroprune run --resume`" in (run / "report.md").read_text()
    assert "Interrupted and resumed" not in (done / "report.md").read_text()


def test_run_config_records_absolute_input_paths(tmp_path, monkeypatch):
    """config.yaml reads relative paths from its own folder (the run folder), so the run writes the paths the
    user typed relative to the working directory as absolute ones: a rerun or a resume finds the same files."""
    from entroprune import pipeline
    from entroprune.config import RunConfig

    monkeypatch.chdir(tmp_path)
    cfg = RunConfig(data_dir="images")
    cfg.search.latency_model = "lat/latency_model.json"
    pipeline._absolute_paths(cfg)
    assert (cfg.data_dir, cfg.search.latency_model) == (str(tmp_path / "images"),
                                                        str(tmp_path / "lat" / "latency_model.json"))


def test_the_cached_baseline_is_named_by_every_setting_its_weights_depend_on(tmp_path, monkeypatch):
    """A run with another learning rate, batch size, augmentation, training subset or data folder reused the
    baseline cached by a run without them (the name held model, dataset, width, epochs and seed alone)."""
    from dataclasses import replace

    from entroprune import pipeline
    from entroprune.config import RunConfig

    monkeypatch.chdir(tmp_path)
    base = RunConfig()
    assert pipeline._cache_name(base, "fashion-mnist") == "vgg-fashion-mnist-w1.0-e3-s0"  # as the docs name it
    variants = [replace(base, baseline=replace(base.baseline, **change)) for change in (
        {"lr": 0.05}, {"batch_size": 64}, {"augment": "shift"}, {"train_limit": 1000}, {"epochs": 2},
        {"width_mult": 0.5}, {"image_size": 64})] + [replace(base, seed=1), replace(base, model="resnet20"),
                                 replace(base, data_dir="a"), replace(base, data_dir="b")]
    names = [pipeline._cache_name(c, "fashion-mnist") for c in [base, *variants]]
    assert len(set(names)) == len(names), names
    # the same folder however it is written (the run reads data_dir relative to where it starts)
    assert pipeline._cache_name(replace(base, data_dir=str(tmp_path / "a")), "npz") == pipeline._cache_name(
        replace(base, data_dir="a"), "npz")


def test_run_quick_cli(quick_run, tmp_path):
    proc, run = quick_run
    for rel in ("finetuned/model.pt", "pruned/model.pt", "model.onnx", "report.md", "report.json",
                "plots/keep_ratios.png", "plots/reward.png", "search/policy.json", "config.yaml"):
        assert (run / rel).exists(), rel
    report = (run / "report.md").read_text()
    assert "| original |" in report and "| pruned |" in report and "speed-up" in report
    assert "run folder" in proc.stdout
    assert "- channels rounded to multiples of 8 (`round_to`" in report  # the quick preset rounds as the main job
    # what the accuracy change was measured after (the quick preset: 1 epoch), and the key that buys more
    start = json.loads((run / "finetuned" / "metrics.json").read_text())["test_accuracy_before"]
    assert ("Test accuracy change after fine-tuning (1 epoch, distilled from the original, from "
            f"{start:.2f}% right after the cut with the kept weights refitted; more with `finetune.epochs`): ") in report
    counts = json.loads((run / "search" / "policy.json").read_text())["counts"]
    assert all(c % 8 == 0 for c in counts.values()), counts
    # the reference line: the uniform policy cut plainly (the trivial choice), fine-tuned like the searched one
    ev = json.loads((run / "evaluation.json").read_text())
    assert [r["latency_processes"] for r in ev["rows"]] == [1, 1]  # the quick preset's, not the default's 3
    ref, searched = ev["uniform_reference"], ev["rows"][1]
    assert f"Reference: the uniform policy (one keep ratio for every group), cut by L1 without the refit, with the " \
           f"same fine-tune reached {ref['test_accuracy']:.2f}%" in report
    assert not ref["same_as_searched"] and ref["refit"] is False  # never the searched net: that one is refitted
    uniform_cut = json.loads((run / "uniform" / "pruned" / "prune.json").read_text())
    searched_cut = json.loads((run / "pruned" / "prune.json").read_text())
    assert (uniform_cut["refit"], searched_cut["refit"]) == (False, True), (uniform_cut, searched_cut)
    # ranked by L1, the arena's uniform, while the run ranks this plain chain by L2 (`auto`, the default)
    norms = [torch.load(run / d / "pruned" / "model.pt", weights_only=True)["pruning"]["norm"] for d in (".", "uniform")]
    assert norms == ["l2", "l1"] and ref["importance"] == "l1" and ref["ranked_alike"] is False, (norms, ref)
    chose = json.loads((run / "report.json").read_text())["search"]["chosen"]
    said = "; the search chose the uniform policy, so the difference is the refit's and the channel ranking's)" \
        if chose == "uniform" else ")"
    assert f"({searched['test_accuracy'] - ref['test_accuracy']:+.2f} points{said}" in report, report
    # the table and the speed-up sentence are the evaluation's numbers, row by row
    from entroprune.report import markdown_table

    assert markdown_table(ev["rows"]) in report
    pr = ev["rows"][1]
    assert f"torch eager {pr['speedup_torch_b64']:.2f}x (ratio {pr['speedup_vs_macs_b64']:.2f})" in report
    assert f"TorchScript {pr['speedup_ts_b64']:.2f}x (ratio {pr['ts_speedup_vs_macs_b64']:.2f})" in report
    assert f"onnxruntime {pr['speedup_ort_b64']:.2f}x (ratio {pr['ort_speedup_vs_macs_b64']:.2f})" in report
    assert f"{pr['test_accuracy'] - ev['rows'][0]['test_accuracy']:+.2f} points" in report
    assert json.loads((run / "report.json").read_text())["evaluation"] == ev
    # where the exported net is and how to feed it: the file's size, the spec's input size and normalisation
    exported, spec = ev["export"], torch.load(run / "finetuned" / "model.pt", weights_only=True)["spec"]
    assert exported["file"] == "model.onnx" and exported["bytes"] == (run / "model.onnx").stat().st_size
    c, h, w = spec["input_size"]
    assert (f"Exported `model.onnx` (onnx opset 17, {exported['bytes']:,} bytes; outputs within" in report
            and 'load it with `onnxruntime.InferenceSession("model.onnx")`, input `input`, output `logits`' in report
            and f"it takes a batch of any size of {c}x{h}x{w} images normalised as in training" in report
            and f"with mean [{spec['mean'][0]:.4g}] and std [{spec['std'][0]:.4g}]" in report), report
    # each class's accuracy before and after, the largest loss first (the mean hides a class that loses far more)
    before, after = (r["per_class_accuracy"] for r in ev["rows"])
    assert len(before) == len(after) == spec["num_classes"] and abs(sum(after) / len(after) - pr["test_accuracy"]) < 2
    worst = min(range(len(after)), key=lambda i: (after[i] - before[i], i))
    name = f"{worst} {spec['classes'][worst]}" if spec["classes"] else str(worst)
    assert f"| class | original (%) | pruned (%) | change (points) |\n|---|---|---|---|\n| {name} | {before[worst]:.2f} | " \
           f"{after[worst]:.2f} | {after[worst] - before[worst]:+.2f} |" in report, report
    if spec["classes"]:  # Fashion-MNIST's names (the digits fallback has none): what each output is, in the file too
        import onnxruntime as ort

        assert f"Its outputs are the classes 0 {spec['classes'][0]}, 1 {spec['classes'][1]}, " in report
        meta = ort.InferenceSession(str(run / "model.onnx")).get_modelmeta().custom_metadata_map
        assert json.loads(meta["classes"]) == spec["classes"] == exported["classes"]
    # the re-ranking's table marks what the search returned, with scores to four significant digits
    summary = json.loads((run / "report.json").read_text())["search"]
    winners = [c for c in summary["rerank"] if c["policy"] == json.loads((run / "search" / "policy.json").read_text())["policy"]]
    assert winners and all(f"| {c['candidate']} **(returned)** | " in report for c in winners), report
    assert report.count("**(returned)**") == len(winners)
    assert f"| {winners[0]['reward']:.4g} |" in report
    for cand in (c for c in summary["rerank"] if c.get("confirm_rewards")):  # the means the decision was made on
        mean = sum(cand["confirm_rewards"]) / len(cand["confirm_rewards"])
        assert f"| {mean:.4g} | {cand['achieved']:.2%} |" in report
    if not ref["same_as_searched"]:
        assert json.loads((run / "uniform" / "finetuned" / "metrics.json").read_text())["test_accuracy"] == \
            ref["test_accuracy"]
        assert json.loads((run / "uniform" / "policy.json").read_text())["policy"] == ev["uniform_policy"]

    # how busy other processes kept the machine while it timed is recorded; a busy machine's timings are flagged
    # (a test suite beside a run read its pruned net 0.34x as fast as the original, 1.54x alone, and nothing said so)
    import shutil

    from entroprune.report import write_report
    from entroprune.settings import BUSY_CORES

    assert all("others_busy_cores" in r for r in ev["rows"])
    busy = tmp_path / "busy run"  # a space: the commands the report gives are quoted to be copied whole
    shutil.copytree(run, busy)
    for cores, flagged in ((BUSY_CORES, False), (1.2, True)):
        ev_busy = {**ev, "rows": [{**r, "others_busy_cores": cores} for r in ev["rows"]]}
        (busy / "evaluation.json").write_text(json.dumps(ev_busy))
        text = write_report(busy).read_text()
        assert (f"**Warning:** other processes kept {cores:.2f} cores busy on average while the latencies were "
                f"timed" in text) == flagged
    assert f"`entroprune evaluate '{busy / 'finetuned' / 'model.pt'}' --latency`" in text
    assert "Unfinished run" not in text
    # an export with a fixed batch (`export_batch`) says so; a pt2 one names no opset
    (busy / "evaluation.json").write_text(json.dumps({**ev, "export": {**exported, "batch": 4}}))
    assert f"it takes a batch of exactly 4 of {c}x{h}x{w} images" in write_report(busy).read_text()
    (busy / "evaluation.json").write_text(json.dumps({**ev, "export": {**exported, "format": "pt2", "opset": None}}))
    assert f"(pt2, {exported['bytes']:,} bytes;" in write_report(busy).read_text()
    # a run stopped after its search: its report says so and how to continue (it read as a search's alone)
    (busy / "evaluation.json").unlink()
    assert (f"**Unfinished run:** it stopped before its evaluation (no evaluation.json), so this report holds its "
            f"search alone; continue the run with `entroprune run --resume '{busy}'`.") in write_report(busy).read_text()
    from entroprune.errors import RunInterrupted

    assert f"continue with `entroprune run --resume '{busy}'`" in RunInterrupted(str(busy), "search").command_line()


def test_a_run_with_export_int8_writes_and_reports_the_quantised_net(quick_run, tmp_path):
    """`export_int8: true` also writes model.int8.onnx (calibrated on the run's calibration images, checked on its
    test split), records it in the export record and reports it; the float export is as without it."""
    import shutil

    import onnx

    from entroprune.config import RunConfig
    from entroprune.pipeline import _export
    from entroprune.report import write_report

    run = tmp_path / "run"
    shutil.copytree(quick_run[1], run)
    cfg = RunConfig(dataset="digits", export_int8=True)
    cfg.validate()
    record = _export(run, cfg)
    int8 = record["int8"]
    assert int8["file"] == "model.int8.onnx" and int8["bytes"] == (run / "model.int8.onnx").stat().st_size
    assert int8["float_bytes"] > 2 * int8["bytes"] and int8["agreement"] > 90
    assert {n.op_type for n in onnx.load(str(run / "model.int8.onnx")).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    ev = json.loads((run / "evaluation.json").read_text())
    assert {k: v for k, v in record.items() if k != "int8"} == {k: v for k, v in ev["export"].items() if k != "int8"}
    (run / "evaluation.json").write_text(json.dumps({**ev, "export": record}))
    text = write_report(run).read_text()
    assert (f"Quantised: `model.int8.onnx` (int8 ONNX in the QDQ format, {int8['bytes']:,} bytes, "
            f"{int8['float_bytes'] / int8['bytes']:.1f}x smaller than the float ONNX)") in text
    assert f"agrees with the float net's on {int8['agreement']:.2f}% of the test split; test accuracy " \
           f"{int8['test_accuracy']:.2f}% (float {int8['float_test_accuracy']:.2f}%)" in text
    assert int8["float_test_accuracy"] == pytest.approx(ev["rows"][1]["test_accuracy"])  # the run's own number
    for bad in ({"int8": {**int8, "agreement": "99%"}}, {"int8": {**int8, "bytes": None}}):
        (run / "evaluation.json").write_text(json.dumps({**ev, "export": {**record, **bad}}))
        with pytest.raises(Exception, match="malformed 'export' record"):
            write_report(run)


def test_the_main_job_on_one_dimensional_signals(tmp_path):
    """The one command on 1-D signals: the zoo's kws trained on a signals .npz, searched, pruned, fine-tuned,
    exported and reported (inputs described as signals); a model for images on signals is one line."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1500)
    x = rng.normal(0, 0.3, (1500, 2, 48)).astype(np.float32)
    x[:, 0] += np.sin(np.arange(48) * (0.2 + 0.3 * y[:, None]))  # the class is the first channel's frequency
    np.savez(tmp_path / "sig.npz", x=x, y=y)
    run, ev = _quick_run_and_a_refused_image_model(tmp_path, "kws", "signals", "sig.npz", 4, "1-D signals of 2x48")
    assert (ev["model"], ev["dataset"]) == ("kws", "signals")
    assert "of 2x48 signals (channels x samples) normalised as in training" in (run / "report.md").read_text()


def _quick_run_and_a_refused_image_model(tmp_path, model: str, dataset: str, data: str, epochs: int, inputs: str,
                                         *options: str):
    """`run --quick` from a config naming a model, a dataset of other inputs than images and ``tmp_path / data``:
    the run folder and its evaluation (pruned to at most 30% of the MACs from a baseline that learnt); then the
    zoo's vgg asked to train on the same data, refused in one line naming the ``inputs``, nothing written."""
    # unrounded: the plugin nets are 16-24 channels wide
    (tmp_path / "c.yaml").write_text(f"model: {model}\ndataset: {dataset}\ndata_dir: {tmp_path / data}\n"
                                     f"baseline: {{epochs: {epochs}}}\nsearch: {{round_to: 1}}\n")
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", *options, "run", "--quick", "--quiet", "--config",
                           str(tmp_path / "c.yaml"), "--out-root", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("run-")]
    ev = json.loads((run / "evaluation.json").read_text())
    original, pruned = ev["rows"][:2]
    assert pruned["macs"] <= 0.3 * original["macs"] + 1 and original["test_accuracy"] > 60, ev["rows"]
    res = subprocess.run([sys.executable, "-m", "entroprune.cli", "train", "--model", "vgg", "--dataset", dataset,
                          "--data-dir", str(tmp_path / data), "--out", str(tmp_path / "vgg")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and res.stderr.startswith(f"error: model 'vgg' cannot run on dataset {dataset}'s "
                                                         f"{inputs}") and not (tmp_path / "vgg").exists()
    return run, ev



VIDEO_PLUGIN = """
import torch.nn as nn

import entroprune as ep


@ep.register_model("clip3d")
def clip3d(num_classes, in_channels, width_mult):
    return nn.Sequential(nn.Conv3d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm3d(16), nn.ReLU(),
                         nn.Conv3d(16, 24, 3, stride=(1, 2, 2), padding=1, bias=False), nn.BatchNorm3d(24), nn.ReLU(),
                         nn.Conv3d(24, 24, 3, padding=1, bias=False), nn.BatchNorm3d(24), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(24, num_classes))
"""


def test_the_main_job_on_volumes(tmp_path):
    """The one command on volumes (short videos, scans): a plugin's net of 3-D convs trained on a volumes .npz,
    searched (the entropy reward reads its maps slice by slice), pruned, fine-tuned, exported and reported; a zoo
    model for images on volumes is one line."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = rng.integers(0, 60, (600, 4, 12, 12)).astype(np.uint8)
    for i, c in enumerate(y):  # the class is where a bright square moves over the frames
        for t in range(4):
            r = 2 + 2 * t if c == 1 else 2
            col = 2 + 2 * t if c == 2 else 2
            x[i, t, r:r + 4, col:col + 4] = 250
    np.savez(tmp_path / "clips.npz", x=x, y=y)
    (tmp_path / "clip3d.py").write_text(VIDEO_PLUGIN)
    run, _ = _quick_run_and_a_refused_image_model(tmp_path, "clip3d", "volumes", "clips.npz", 3, "volumes of 1x4x12x12",
                                                  "--plugin", str(tmp_path / "clip3d.py"))
    episodes = (run / "search" / "episodes.jsonl").read_text().splitlines()
    assert len({json.loads(e)["reward"] for e in episodes}) > 1  # the entropy reward sees the 3-D maps
    assert "of 1x4x12x12 volumes (channels x depth x height x width) normalised" in (run / "report.md").read_text()


def test_a_folder_of_wav_files_trains_evaluates_and_keeps_its_rate(tmp_path):
    """Raw audio through the command line: class folders of WAV clips train the zoo's kws, the checkpoint
    records the rate, the same clips at another rate are refused in one line, and the report tells a
    deployment the rate and the scale the exported net expects."""
    import numpy as np
    from scipy.io import wavfile

    from entroprune.report import _export_lines

    rng = np.random.default_rng(0)
    for rate in (8000, 16000):
        for c, freq in enumerate((0.05, 0.2)):
            folder = tmp_path / str(rate) / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(30):
                t = np.arange(int(rng.integers(150, 200)))
                clip = 0.5 * np.sin(freq * t + rng.uniform(0, 6)) + 0.05 * rng.standard_normal(len(t))
                wavfile.write(folder / f"{i}.wav", rate, (clip * 32767).astype(np.int16))
    out = tmp_path / "kws"
    train = subprocess.run([sys.executable, "-m", "entroprune.cli", "train", "--model", "kws", "--dataset", "wavfolder",
                            "--data-dir", str(tmp_path / "8000"), "--epochs", "2", "--width-mult", "0.25", "--out",
                            str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    spec = torch.load(out / "model.pt", weights_only=True)["spec"]
    lengths = sorted(len(wavfile.read(f)[1]) for f in (tmp_path / "8000").rglob("*.wav"))
    assert (spec["sample_rate"], spec["input_size"]) == (8000, [1, lengths[30]])  # the median clip's
    ok = subprocess.run([sys.executable, "-m", "entroprune.cli", "evaluate", str(out / "model.pt")],
                        capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0 and "test acc (%)" in ok.stdout, ok.stderr
    other = subprocess.run([sys.executable, "-m", "entroprune.cli", "evaluate", str(out / "model.pt"), "--data-dir",
                            str(tmp_path / "16000")], capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and other.stderr.strip() == (
        "error: dataset wavfolder is audio sampled at 16000 Hz but the model was trained at 8000 Hz; resample the "
        "files to 8000 Hz")
    exported = {"file": "model.onnx", "format": "onnx", "bytes": 1, "max_abs_diff": 0.0, "input_size": [1, 199],
                "mean": [0.0], "std": [0.3], "sample_rate": 8000}
    assert "1x199 audio clips at 8000 Hz (channels x samples) normalised as in training" in _export_lines(exported)[0]
    assert "of 1x199 signals (channels x samples)" in _export_lines({**exported, "sample_rate": None})[0]

def test_run_from_a_users_checkpoint(digits_ckpt, tmp_path):
    """An engineer's one command: their checkpoint in, pruned, fine-tuned, exported model and report out; no
    baseline trained, the checkpoint untouched, and the run's config reruns it from anywhere."""
    import entroprune as ep
    from entroprune.config import load_config
    from entroprune.models import build_model

    raw = torch.load(digits_ckpt, weights_only=True)  # weights trained elsewhere, as a plain state_dict
    spec = raw["spec"]
    net = build_model("vgg", 10, 1, spec["width_mult"])
    net.load_state_dict(raw["state_dict"])
    mine = tmp_path / "mine.pt"
    ep.save_checkpoint(mine, ep.ModelSpec("vgg", 10, 1, spec["width_mult"], "digits", spec["mean"], spec["std"],
                                          spec["input_size"]), net)
    before = mine.read_bytes()
    # a spec that does not describe the net made a file no command could load: refused, nothing written
    wrong = tmp_path / "wrong.pt"
    for spec_given, message in (
            (ep.ModelSpec("vgg", 5, 1, spec["width_mult"], "digits", spec["mean"], spec["std"], spec["input_size"]),
             "the model does not fit its spec, model 'vgg' built for 5 classes and 1 input channel(s) at width "
             f"{spec['width_mult']} (other shapes: classifier.weight [10, "),
            (ep.ModelSpec("vgg", 10, 3, spec["width_mult"], "digits"), "the spec is invalid: mean must hold 3"),
            ({"model": "vgg"}, "`spec` must be a ModelSpec (ep.ModelSpec(**spec) makes one of a dict)")):
        with pytest.raises(ep.ConfigError, match=re.escape(message)):
            ep.save_checkpoint(wrong, spec_given, net)
        assert not wrong.exists()
    # a baseline's setting, which a checkpoint replaces; and the channel ranking, which the run prunes by
    (tmp_path / "c.yaml").write_text("model: resnet20\nsearch:\n  importance: l2\n")
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "run", "--quick", "--quiet", "--config",
                           str(tmp_path / "c.yaml"), "--checkpoint", str(mine), "--macs-target", "0.5", "--out-root",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"baseline: {mine}, the checkpoint's vgg on digits (no baseline trained)" in proc.stderr
    assert mine.read_bytes() == before
    (run,) = [p for p in (tmp_path / "runs").iterdir()]  # a run folder and no baseline cache beside it
    assert run.name.startswith("run-")
    for rel in ("finetuned/model.pt", "model.onnx", "report.md", "search/policy.json"):
        assert (run / rel).exists(), rel
    ev = json.loads((run / "evaluation.json").read_text())
    assert (ev["checkpoint"], ev["model"], ev["dataset"], ev["macs_target"]) == (str(mine.resolve()), "vgg", "digits",
                                                                                0.5)
    assert ev["rows"][0]["test_accuracy"] == ep.evaluate_checkpoint(digits_ckpt)[0]["test_accuracy"]
    assert f"(your checkpoint `{mine.resolve()}`)" in (run / "report.md").read_text()
    again = load_config(run / "config.yaml")
    assert (again.checkpoint, again.model, again.dataset) == (str(mine.resolve()), "vgg", "digits")
    # the searched net is cut by the configured channel ranking, not the default
    assert json.loads((run / "search" / "policy.json").read_text())["importance"] == "l2"
    assert torch.load(run / "pruned" / "model.pt", weights_only=True)["pruning"]["importance"] == "l2"


def test_uniform_reference_is_cut_by_l1_whatever_the_search_ranks_by(digits_ckpt, tmp_path):
    """The report's reference line is the arena's `uniform` (issue 16's yardstick): the uniform policy cut plainly
    by L1, whatever ranking the run searched and pruned with; only a run that cut that very net (uniform, L1, no
    refit) reuses its own fine-tune as the reference."""
    from types import SimpleNamespace

    from entroprune import pipeline
    from entroprune.api import build_structure, load_model
    from entroprune.config import load_config

    cfg = load_config(None, quick=True, overrides={"checkpoint": str(digits_ckpt), "search": {"importance": "l2"},
                                                   "prune": {"refit": False}})
    model, ckpt = load_model(digits_ckpt)
    uniform = pipeline._uniform_policy(build_structure(model, ckpt.spec, "l2"), cfg.search, None)
    searched = SimpleNamespace(policy=uniform)  # the search returned uniform, but ranked by L2: another net
    ref = pipeline._uniform_reference(digits_ckpt, tmp_path / "uniform", uniform, cfg, searched, "l2", "cpu", True,
                                      lambda m: None)
    record = torch.load(tmp_path / "uniform" / "pruned" / "model.pt", weights_only=True)["pruning"]
    assert (record["importance"], record["norm"], record["policy"], record["refit"]) == ("l1", "l1", uniform, False)
    assert (ref["same_as_searched"], ref["importance"], ref["ranked_alike"]) == (False, "l1", False), ref
    # searched and cut by L1 without the refit: the reference is the searched net, fine-tuned once
    (tmp_path / "run" / "finetuned").mkdir(parents=True)
    (tmp_path / "run" / "finetuned" / "metrics.json").write_text(json.dumps(
        {"test_accuracy": 90.0, "macs": 1, "params": 2}))
    same = pipeline._uniform_reference(digits_ckpt, tmp_path / "run" / "uniform", uniform, cfg, searched, "l1", "cpu",
                                       True, lambda m: None)
    assert same == {"test_accuracy": 90.0, "macs": 1, "params": 2, "same_as_searched": True}
    assert not (tmp_path / "run" / "uniform").exists()


def test_a_policy_naming_no_ranking_is_cut_by_l1(digits_ckpt, tmp_path):
    """Policy files written before the ranking could be chosen name none and were all scored by L1: they are
    cut so, not by today's default (`auto`, L2 on this plain chain); one that names `auto` is cut by L2."""
    from entroprune.api import prune_checkpoint

    policy = {"policy": {f"features.{i}": 0.5 for i in (0, 3, 7, 10, 14, 17)}}
    for name, pol, norm in (("unnamed", policy, "l1"), ("auto", {**policy, "importance": "auto"}, "l2")):
        (tmp_path / f"{name}.json").write_text(json.dumps(pol))
        prune_checkpoint(digits_ckpt, tmp_path / f"{name}.json", tmp_path / name, refit=False)
        record = torch.load(tmp_path / name / "model.pt", weights_only=True)["pruning"]
        assert record["norm"] == norm and record["importance"] == pol.get("importance", "l1"), record


def test_run_without_labels(digits_ckpt, tmp_path):
    """The reward needs no labels, and neither does the main job: a checkpoint run on a flat folder of images
    runs end to end, fine-tunes by distillation, and reports top-1 agreement with the original (the searched
    net's and the uniform reference's) where it would report test accuracy."""
    import numpy as np
    from PIL import Image

    from entroprune.config import load_config
    from entroprune.data import load_dataset

    flat = tmp_path / "flat"  # the digits' training images with no class sub-folders: no labels anywhere
    flat.mkdir()
    for i, img in enumerate(load_dataset("digits").train.x[:900]):
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(flat / f"{i}.png")
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "run", "--quick", "--quiet", "--checkpoint",
                           str(digits_ckpt), "--dataset", "imagefolder", "--data-dir", str(flat), "--macs-target",
                           "0.3", "--out-root", str(tmp_path / "runs")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "no labels in imagefolder: the fine-tune distils from the original" in proc.stderr
    (run,) = (tmp_path / "runs").iterdir()
    again = load_config(run / "config.yaml")  # reruns on the same images
    assert (again.dataset, again.data_dir) == ("imagefolder", str(flat))
    ev = json.loads((run / "evaluation.json").read_text())
    original, pruned = ev["rows"]
    assert "test_accuracy" not in original and "test_accuracy" not in pruned
    assert original["test_agreement"] == 100.0  # the original against itself
    finetuned = json.loads((run / "finetuned" / "metrics.json").read_text())
    assert finetuned["distill"] and pruned["test_agreement"] == pytest.approx(finetuned["test_agreement"])
    # nets that learned from the original's outputs alone: far above chance (10%), and the reference, cut
    # plainly (the searched net is refitted and starts near its end), above where it started
    assert pruned["test_agreement"] >= 50.0, finetuned
    plain = json.loads((run / "uniform" / "finetuned" / "metrics.json").read_text())
    assert plain["test_agreement"] >= max(50.0, plain["test_agreement_before"] + 5), plain
    ref = ev["uniform_reference"]
    assert "test_accuracy" not in ref and 0 <= ref["test_agreement"] <= 100
    report = (run / "report.md").read_text()
    assert "| agreement (%) |" in report and "test acc (%)" not in report
    assert (f"fine-tuned ({finetuned['epochs']} epoch{'s' if finetuned['epochs'] > 1 else ''}, distilled from the "
            f"original, from {finetuned['test_agreement_before']:.2f}% right after the cut with the kept weights "
            f"refitted; more with "
            f"`finetune.epochs`), agrees with the original's top-1 prediction on "
            f"{pruned['test_agreement']:.2f}% of the held-out images") in report
    assert f"{ref['test_agreement']:.2f}% top-1 agreement with the original" in report
    assert f"top-1 agreement with the original {pruned['test_agreement']:.2f}%" in proc.stdout


def test_run_config_scales_out(tmp_path):
    """workers and finetune.nproc in the main job's config reach the search and the fine-tune."""
    pytest.importorskip("ray")
    # no uniform reference line: a second data-parallel fine-tune would show nothing the first does not
    (tmp_path / "c.yaml").write_text("workers: 2\nfinetune:\n  nproc: 2\nreference_uniform: false\n")
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "run", "--quick", "--quiet", "--config",
                           str(tmp_path / "c.yaml"), "--out-root", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = next(p for p in tmp_path.iterdir() if p.name.startswith("run-"))
    search = json.loads((run / "search" / "search.json").read_text())
    assert search["workers"] == 2 and search["config"]["episode_batch"] == 2  # the batch follows workers
    assert json.loads((run / "finetuned" / "metrics.json").read_text())["processes"] == 2
    # reference_uniform: false is honoured: no second fine-tune, no reference line
    assert not (run / "uniform").exists() and json.loads((run / "evaluation.json").read_text())["uniform_reference"] is None
    assert "Reference: the uniform policy" not in (run / "report.md").read_text()


def test_workers_set_the_episode_batch_unless_given():
    from entroprune.config import parse_config

    assert parse_config({"workers": 3}).search.episode_batch == 3
    assert parse_config({"workers": 3, "search": {"episode_batch": 1}}).search.episode_batch == 1
    assert parse_config({}).search.episode_batch == 1
    assert parse_config({"seed": 4}).search.seed == 4  # one seed for every stage


def test_config_file_flags_and_quick_preset(tmp_path):
    """Flags (as overrides) win over the file; the quick preset's digits are its baseline's, so a quick run of a
    checkpoint keeps the checkpoint's images unless the file or a flag names others."""
    from entroprune.config import ZOO_DATASET, load_config

    (tmp_path / "c.yaml").write_text("seed: 3\ndataset: mnist\nsearch:\n  macs_target: 0.4\n")
    cfg = load_config(tmp_path / "c.yaml", overrides={"seed": 5, "search": {"latency_target": 0.5}})
    assert (cfg.seed, cfg.search.seed, cfg.dataset) == (5, 5, "mnist")
    assert (cfg.search.macs_target, cfg.search.latency_target) == (0.4, 0.5)
    assert load_config(None).dataset is None and ZOO_DATASET == "fashion-mnist"  # the zoo baseline's default
    assert load_config(None, quick=True).dataset == "digits"
    assert load_config(None, quick=True, overrides={"checkpoint": "m.pt"}).dataset is None  # the checkpoint's own
    assert load_config(tmp_path / "c.yaml", quick=True, overrides={"checkpoint": "m.pt"}).dataset == "mnist"
    assert load_config(None, quick=True, overrides={"checkpoint": "m.pt", "dataset": "npz"}).dataset == "npz"
    # a file's relative input paths are read from its folder, a flag's from where the command runs
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text("checkpoint: m.pt\ndata_dir: imgs\nout_root: runs\nsearch:\n"
                                             "  latency_model: lm.json\n")
    cfg = load_config(tmp_path / "sub" / "d.yaml", overrides={"data_dir": "flag_imgs"})
    assert (cfg.checkpoint, cfg.data_dir, cfg.search.latency_model, cfg.out_root) == (
        str(tmp_path / "sub" / "m.pt"), "flag_imgs", str(tmp_path / "sub" / "lm.json"), "runs")


class _NoLen:
    """Re-iterable, without a length."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)


def test_python_api_on_any_module(tmp_path):
    """A user's own CNN (not from the zoo), a torch DataLoader, and the module-level API."""
    from torch.utils.data import DataLoader, TensorDataset

    import entroprune as ep
    from entroprune.train import evaluate

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                torch.nn.Conv2d(16, 24, 3, padding=1), torch.nn.BatchNorm2d(24), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
            self.head = torch.nn.Linear(24, 3)

        def forward(self, x):
            return self.head(self.body(x))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 10, 10, generator=g)
    y = torch.randint(0, 3, (96,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    net = Net().eval()
    cfg = ep.SearchConfig(macs_target=0.5, episodes=5, warmup=2, calib_size=64, val_size=64)
    res = ep.search_module(net, x[:1], loader, tmp_path / "s", cfg, val=loader)
    assert res.summary["within_tolerance"] and set(res.policy) == {"body.0", "body.6"}
    pruned, history = ep.prune_module(net, x[:1], res, calib=loader)
    macs, _ = ep.count_macs_params(pruned, x[:1])
    full, _ = ep.count_macs_params(net, x[:1])
    # measured on the pruned module: what the search promised (within tolerance may mean as full as the
    # rounding allows, below 95% of the target on a net this small), never over the target
    assert macs / full == pytest.approx(res.achieved, rel=1e-4) and macs / full <= 0.5 + 1e-6 and history
    # a policy computed with numpy prunes as its floats do (np.float32 ratios were refused as outside (0, 1])
    as_numpy, _ = ep.prune_module(net, x[:1], {k: np.float32(v) for k, v in res.policy.items()})
    assert ep.count_macs_params(as_numpy, x[:1])[0] == macs
    # numpy numbers in a config are stored as Python's (np.float32 was refused as outside (0, 1], and search.json
    # could not have been written with it)
    numpy_cfg = ep.SearchConfig(macs_target=np.float32(0.5), episodes=np.int64(5))
    numpy_cfg.validate()
    assert (type(numpy_cfg.macs_target), type(numpy_cfg.episodes)) == (float, int)
    hist = ep.finetune_module(pruned, loader, epochs=1, val_loader=loader)
    assert len(hist) == 1 and "val_accuracy" in hist[0]
    # unlabelled images (batches of images alone): distillation from the unpruned net, as the CLI does; the
    # student moves toward the teacher, and its agreement is what it can measure of itself
    images = DataLoader(x, batch_size=32)
    student, _ = ep.prune_module(net, x[:1], res, calib=loader)
    with torch.no_grad():
        before = torch.nn.functional.kl_div(student.eval()(x).log_softmax(1), net(x).softmax(1), reduction="batchmean")
    hist = ep.finetune_module(student, images, epochs=10, lr=0.05, teacher=net, val_loader=images)
    with torch.no_grad():
        after = torch.nn.functional.kl_div(student.eval()(x).log_softmax(1), net(x).softmax(1), reduction="batchmean")
    assert "val_agreement" in hist[-1] and "val_accuracy" not in hist[-1] and after < 0.2 * before
    # distilled on unlabelled images, judged by accuracy on labelled ones (it was refused): the accuracy is the
    # labels', not the agreement's; labelled training batches with an unlabelled validation the other way round
    hist = ep.finetune_module(student, images, epochs=1, teacher=net, val_loader=loader)
    assert "val_agreement" not in hist[-1] and hist[-1]["val_accuracy"] == pytest.approx(evaluate(student, loader)["accuracy"])
    hist = ep.finetune_module(student, loader, epochs=1, teacher=net, val_loader=images)
    assert "val_agreement" in hist[-1] and "val_accuracy" not in hist[-1]
    for call, message in (
            (lambda: ep.finetune_module(student, images, epochs=1), "train_loader yields images without labels; "
             "pass teacher="),
            (lambda: ep.finetune_module(student, loader, val_loader=images), "val_loader yields images without "
             "labels; pass teacher="),
            (lambda: ep.finetune_module(student, [], epochs=1), "got no batch"),
            # a one-shot iterator trained its first epoch short of the batch peeked, then on nothing (loss 0.0)
            (lambda: ep.finetune_module(student, iter(loader), epochs=2), "train_loader is a one-shot iterator"),
            (lambda: ep.finetune_module(student, (b for b in loader)), "train_loader is a one-shot iterator"),
            (lambda: ep.finetune_module(student, loader, val_loader=iter(loader)), "val_loader is a one-shot"),
            (lambda: ep.finetune_module(student, _NoLen(loader)), "train_loader has no len()")):
        with pytest.raises(ep.EntropruneError, match=re.escape(message)):
            call()
    # what no checkpoint load checked: a NaN weight (which the entropy would read as a constant 0 and the search
    # rank as if it meant something), a float64 or half model, NaN or Inf images; one line each, nothing written
    broken = Net().eval()
    broken.body[0].weight.data[0, 0, 0, 0] = float("nan")
    bad_x = x.clone()
    bad_x[5, 0, 3, 3] = float("inf")
    for call, message in (
            (lambda: ep.search_module(broken, x[:1], loader, tmp_path / "b", cfg), "the model's tensor body.0.weight "
             "contains NaN or Inf"),
            (lambda: ep.prune_module(broken, x[:1], res), "body.0.weight contains NaN or Inf"),
            (lambda: ep.finetune_module(broken, loader, epochs=1), "body.0.weight contains NaN or Inf"),
            (lambda: ep.search_module(Net().double(), x[:1], loader, tmp_path / "b", cfg), "the model's weights are "
             "torch.float64; entroprune prunes float32 models: pass model.float()"),
            (lambda: ep.prune_module(Net().half(), x[:1], res), "torch.float16"),
            (lambda: ep.search_module(Net().eval(), x[:1], bad_x, tmp_path / "b", cfg), "the calibration images "
             "contain NaN or Inf"),
            # a string is not a fraction, and the message shows it as one (it printed "got 0.5")
            (lambda: ep.search_module(net, x[:1], loader, tmp_path / "b", ep.SearchConfig(macs_target="0.5")),
             "got '0.5'"),
            # the API's settings of the wrong type (the YAML loader checks a file's): a TypeError or AttributeError
            # deep in the search before
            (lambda: ep.search_module(net, x[:1], loader, tmp_path / "b", ep.SearchConfig(episodes="300")),
             "`episodes`: input should be a valid integer, got '300'"),
            (lambda: ep.search_module(net, x[:1], loader, tmp_path / "b", ep.SearchConfig(reward="accuracy")),
             "`reward` must be a RewardConfig (RewardConfig(kind='accuracy') names a kind)"),
            (lambda: ep.finetune_module(student, loader, epochs="3"), "`epochs`: input should be a valid integer"),
            (lambda: ep.search_module(net, x[:1], loader, tmp_path / "b", {"macs_target": 0.5}),
             "`config` must be a SearchConfig (ep.SearchConfig(**settings) makes one of a dict), got dict"),
            (lambda: ep.run_pipeline({"checkpoint": str(tmp_path / "b" / "model.pt")}),
             "`cfg` must be a RunConfig (ep.load_config(None, overrides=settings) makes one of a dict)"),
            # batches the readers cannot take, named instead of failing in torch.cat or a conv's forward
            (lambda: ep.search_module(net, x[:1], [{"image": x, "label": y}], tmp_path / "b", cfg),
             "`calib` batches must hold torch tensors (images, or (images, labels)), got a dict (keys image, label)"),
            (lambda: ep.search_module(net, x[:1], [(x.numpy(), y)], tmp_path / "b", cfg), "torch.from_numpy"),
            (lambda: ep.search_module(net, x[:1], x.expand(-1, 3, -1, -1), tmp_path / "b", cfg),
             "the `calib` images are shaped (64, 3, 10, 10), the example input (1, 1, 10, 10)"),
            # another size: a Flatten + Linear head failed in its matmul (this net pools, and searched at a size the
            # structure's MACs were not found at)
            (lambda: ep.search_module(net, x[:1], torch.nn.functional.interpolate(x, size=12), tmp_path / "b", cfg),
             "the `calib` images are shaped (64, 1, 12, 12), the example input (1, 1, 10, 10): pass images of the "
             "shape the model takes"),
            (lambda: ep.search_module(net, x[:1], loader, tmp_path / "b", cfg, val=[(x,)]),
             "`val` batches must be (images, labels) pairs, got a tuple of 1"),
            (lambda: ep.prune_module(net, x[:1], res, calib=[(x[:, 0], y)]), "the `calib` images are shaped (96, 10, 10)"),
            (lambda: ep.prune_module(net, x[:1], res, calib=(b for b in [])), "a one-shot iterator such as a "
             "generator is empty once read"),
            # pixels as stored (uint8) or float64 failed deep in the first conv with a dtype mismatch
            (lambda: ep.search_module(net, x[:1], (x * 50).to(torch.uint8), tmp_path / "b", cfg),
             "the `calib` images are uint8, the model's weights float32: pass them as it was trained on them "
             "(x.float() / 255, then the normalisation"),
            (lambda: ep.prune_module(net, x[:1], res, calib=[(x.double(), y)]), "the `calib` images are float64"),
            (lambda: ep.search_module(net, x[:1], loader, tmp_path / "b", cfg, val=(x.double(), y)),
             "the `val` images are float64, the model's weights float32: pass them as it was trained on them (x.float())"),
            (lambda: ep.finetune_module(student, [((x * 50).to(torch.uint8), y)], epochs=1),
             "the `train_loader` images are uint8"),
            (lambda: ep.finetune_module(student, [x], epochs=1, teacher=torch.nn.Sequential(net, torch.nn.Linear(3, 5))),
             "the teacher's outputs are shaped (5,), the model's (3,)"),
            (lambda: ep.finetune_module(student, [{"image": x, "label": y}], epochs=1, teacher=net),
             "train_loader must yield (images, labels) batches or batches of images alone, got a dict (keys image, "
             "label)"),
            # labels the accuracy cannot read: one-hot rows (a RuntimeError in its comparison), labels beyond the
            # outputs (every policy scored 0%; a fine-tune's IndexError), floats where training needs indices
            (lambda: ep.search_module(net, x[:1], loader, tmp_path / "b", cfg,
                                      val=(x, torch.nn.functional.one_hot(y, 3).float())),
             "the `val` labels must be one class index per image, shaped (64,), got (64, 3) (one-hot rows: pass "
             "y.argmax(1))"),
            (lambda: ep.search_module(net, x[:1], loader, tmp_path / "b", cfg, val=(x, y + 1)),
             "the `val` labels run from 1 to 3, but the model has 3 outputs (classes 0 to 2)"),
            (lambda: ep.finetune_module(student, [(x, y + 1)], epochs=1), "the `train_loader` labels run from 1 to 3"),
            (lambda: ep.finetune_module(student, [(x, y.float())], epochs=1), "the `train_loader` labels must be "
             "integer class indices, got torch.float32: pass y.long()"),
            # a device entroprune does not run on (and CUDA without a GPU) failed in torch's own assertion
            (lambda: ep.finetune_module(student, loader, epochs=1, device="mps"), "unknown device 'mps'; use auto, "
             "cpu or cuda")):
        with pytest.raises(ep.EntropruneError, match=re.escape(message)):
            call()
    assert not (tmp_path / "b").exists()


def test_the_original_rewritten_with_the_same_weights_is_still_the_original(digits_ckpt, tmp_path):
    """A pruned checkpoint's original re-saved with the same weights (a removed cache retrained with the same seed:
    only its training times differ) stays its teacher and reference; one with other weights is refused."""
    import entroprune as ep

    original = tmp_path / "original.pt"
    original.write_bytes(digits_ckpt.read_bytes())
    model, ckpt = load_model(original)
    ep.prune_checkpoint(original, {"policy": {g: 0.5 for g in search_groups(model, ckpt)}}, tmp_path / "p")
    raw = torch.load(original, weights_only=True)
    torch.save({**raw, "metrics": {**raw["metrics"], "train_time_s": -1.0}}, original)
    rows = ep.evaluate_checkpoint(tmp_path / "p" / "model.pt")
    assert [r["name"] for r in rows] == ["original", "pruned"]
    torch.save({**raw, "state_dict": {k: v * 2 if v.is_floating_point() else v for k, v in raw["state_dict"].items()}},
               original)
    with pytest.raises(ep.CheckpointError, match="has changed since the pruning read it"):
        ep.evaluate_checkpoint(tmp_path / "p" / "model.pt")


def test_api_arguments_hold_their_declared_types(digits_ckpt, tmp_path):
    """The stage functions' flags, numbers and paths are checked as the configs' fields are: `force="no"` was true and
    overwrote the output, `batch_size="64"` a TypeError in the data loader. Numpy numbers and pathlib paths pass."""
    import hashlib

    import entroprune as ep

    model, ckpt = load_model(digits_ckpt)
    policy = {"policy": {g: 0.5 for g in search_groups(model, ckpt)}}
    out = tmp_path / "p"
    ep.prune_checkpoint(digits_ckpt, policy, out)
    before = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    with pytest.raises(ep.ConfigError, match=re.escape("`force`: input should be a valid boolean, got 'no'")):
        ep.prune_checkpoint(digits_ckpt, policy, out, force="no")
    assert hashlib.sha256((out / "model.pt").read_bytes()).hexdigest() == before
    with pytest.raises(ep.ConfigError, match=re.escape("`batch_size`: input should be a valid integer, got '64'")):
        ep.evaluate_checkpoint(digits_ckpt, batch_size="64")
    with pytest.raises(ep.ConfigError, match=re.escape("`path`: input should be a valid string, got 3")):
        ep.load_model(3)
    rows = ep.evaluate_checkpoint(Path(digits_ckpt), batch_size=np.int64(500))
    assert rows[0]["test_accuracy"] == pytest.approx(ckpt.metrics["test_accuracy"])
    with pytest.raises(TypeError, match="batchsize"):  # a misspelt argument stays Python's own error
        ep.evaluate_checkpoint(digits_ckpt, batchsize=64)


def test_finetune_module_scores_a_segmentation_net_per_pixel():
    """Labels per output position (a segmentation's (N, H, W) for its (N, C, H, W) logits) train as cross-entropy
    reads them, and the accuracy is per pixel (it counted pixels over images: 1634%)."""
    import entroprune as ep
    from entroprune.train import evaluate

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32, 8, 8))
    hist = ep.finetune_module(net, [(x[:16], y[:16]), (x[16:], y[16:])], epochs=1, val_loader=[(x, y)])
    with torch.no_grad():
        pixels = 100.0 * (net.eval()(x).argmax(1) == y).float().mean().item()
    assert hist[-1]["val_accuracy"] == pytest.approx(pixels) and evaluate(net, [(x, y)])["accuracy"] == pytest.approx(pixels)
    with pytest.raises(ep.EntropruneError, match=re.escape("one class index per output position, shaped (32, 8, 8)")):
        ep.finetune_module(net, [(x, y[:, 0])], epochs=1)


def test_finetune_module_trains_a_net_with_an_auxiliary_head_on_its_main_head():
    """A net returning (logits, aux) is searched and pruned on its main head; its fine-tune failed on the tuple
    (cross_entropy got a tuple), with labels or by distillation from a teacher of the same kind."""
    import entroprune as ep

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head, self.aux = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)

        def forward(self, x):
            f = torch.relu(self.conv(x)).mean((2, 3))
            return self.head(f), self.aux(f)

    torch.manual_seed(0)
    net, x, y = TwoHeads(), torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))
    hist = ep.finetune_module(net, [(x, y)], epochs=1, val_loader=[(x, y)])
    with torch.no_grad():
        main = 100.0 * (net.eval()(x)[0].argmax(1) == y).float().mean().item()
    assert hist[-1]["val_accuracy"] == pytest.approx(main)
    hist = ep.finetune_module(TwoHeads(), [x], epochs=1, teacher=net, val_loader=[x])
    assert 0 <= hist[-1]["val_agreement"] <= 100


def _small_cnn():
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1),
                         nn.BatchNorm2d(24), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 3))


def test_python_api_prunes_frozen_and_compiled_modules(tmp_path):
    """A model frozen for inference (requires_grad False: torch-pruning's autograd trace saw no group in it)
    is searched and pruned as the trainable one; torch.compile's wrapper is unwrapped; the user's module
    keeps every submodule's mode."""
    import entroprune as ep

    x = torch.randn(96, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    cfg = ep.SearchConfig(macs_target=0.5, episodes=4, warmup=2, calib_size=64, rerank_top_k=2, recovery_steps=3,
                          recovery_images=32)
    plain = ep.search_module(_small_cnn().eval(), x[:1], x, tmp_path / "plain", cfg)
    frozen_net = _small_cnn().train().requires_grad_(False)
    frozen_net[4].eval()  # a BN the user keeps in eval mode inside a net in train mode
    frozen = ep.search_module(frozen_net, x[:1], x, tmp_path / "frozen", cfg)
    assert (frozen.policy, frozen.reward) == (plain.policy, plain.reward)
    assert [m.training for m in frozen_net] == [True] * 4 + [False] + [True] * 4
    pruned, _ = ep.prune_module(frozen_net, x[:1], frozen)
    assert ep.count_macs_params(pruned, x[:1])[0] < ep.count_macs_params(frozen_net, x[:1])[0]
    assert not any(p.requires_grad for p in pruned.parameters())  # as frozen as the model it came from
    assert frozen_net[0].weight.shape[0] == 16 and pruned(x[:2]).shape == (2, 3)
    with pytest.raises(ep.EntropruneError, match=re.escape("every parameter of the model is frozen")):
        ep.finetune_module(pruned, [(x[:8], torch.zeros(8, dtype=torch.long))], epochs=1)
    compiled = torch.compile(_small_cnn().eval())
    res = ep.search_module(compiled, x[:1], x, tmp_path / "compiled", cfg)
    assert res.policy == plain.policy
    pruned, _ = ep.prune_module(compiled, x[:1], res)
    assert isinstance(pruned, torch.nn.Sequential)


@pytest.mark.parametrize("arch, shape", [("TCResNet", (1, 64)), ("Video3D", (1, 6, 12, 12))])
def test_python_api_prunes_one_and_three_dimensional_nets(tmp_path, arch, shape):
    """A keyword-spotting net on 1-D signals, a video net of 3-D convs, through the default two-stage search (the
    entropy reward reads their Conv1d maps, their Conv3d maps slice by slice; the re-ranking recovers and scores
    the candidates), pruning, fine-tuning and export."""
    import entroprune as ep
    import tests.archs
    from entroprune.export import export_model

    torch.manual_seed(0)
    net = getattr(tests.archs, arch)().eval()
    x = torch.randn(96, *shape)
    flat = x.flatten(1)
    y = (flat[:, :flat.shape[1] // 2].mean(1) > 0).long() + 2 * (flat[:, flat.shape[1] // 2:].mean(1) > 0).long()
    cfg = ep.SearchConfig(macs_target=0.4, episodes=12, warmup=6, calib_size=32, recovery_steps=4,
                          recovery_images=64, rerank_top_k=3, round_to=1)  # unrounded: the nets are a few channels wide
    res = ep.search_module(net, x[:1], x, tmp_path / "s", cfg)
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "s" / "episodes.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r) for r in rewards) and len(set(rewards)) > 1  # the entropy reward sees 1-D maps
    assert res.summary["chosen"] in ("search", "uniform", "global")
    pruned, _ = ep.prune_module(net, x[:1], res, calib=x)
    macs = ep.count_macs_params(pruned, x[:1])[0] / ep.count_macs_params(net, x[:1])[0]
    assert 0.3 < macs <= 0.4 + 1e-9 and pruned(x[:2]).shape == (2, 10)
    loader = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]
    history = ep.finetune_module(pruned, loader, epochs=2, val_loader=loader)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert export_model(pruned, x[:1], tmp_path / "net.onnx", "onnx")["max_abs_diff"] < 1e-4


def test_python_api_refuses_what_it_cannot_cut_in_one_line(tmp_path):
    """TorchScript and weights computed by a reparametrisation (torch.nn.utils.prune's masks, weight norm old
    and new: a deepcopy of a masked model raised deep inside): one line naming the layer and the fix, nothing
    written."""
    import torch.nn.utils.prune as nn_prune

    import entroprune as ep

    x = torch.randn(4, 1, 10, 10)
    masked = _small_cnn()
    nn_prune.l1_unstructured(masked[3], "weight", 0.3)
    normed = _small_cnn()
    normed[0] = torch.nn.utils.parametrizations.weight_norm(normed[0])
    old_style = _small_cnn()
    torch.nn.utils.weight_norm(old_style[3])
    cases = [(torch.jit.trace(_small_cnn().eval(), x[:1]), x, "the model is TorchScript"),
             (masked, x, "layer '3' computes its 'weight' through torch.nn.utils.prune's mask, which entroprune can "
              "neither prune nor count; bake it in first with torch.nn.utils.prune.remove(layer, 'weight')"),
             (normed, x, "layer '0' computes its 'weight' through a parametrization"),
             (old_style, x, "torch.nn.utils.remove_weight_norm(layer, 'weight')")]
    for model, example, message in cases:
        with pytest.raises(ep.EntropruneError, match=re.escape(message)):
            ep.search_module(model, example[:1], example, tmp_path / "s", ep.SearchConfig(episodes=2))
        with pytest.raises(ep.EntropruneError, match=re.escape(message)):
            ep.prune_module(model, example[:1], {"0": 0.5})
    with pytest.raises(ep.EntropruneError, match="through a parametrization"):
        ep.count_macs_params(normed, x[:1])  # torch-pruning's counter skipped the parametrised conv's MACs
    assert not (tmp_path / "s").exists()


def test_default_config_file_matches_defaults():
    from pathlib import Path

    import yaml

    from entroprune.config import RunConfig, dump_config, load_config

    path = Path(__file__).parent.parent / "configs" / "default.yaml"
    assert load_config(path).to_dict() == RunConfig().to_dict()
    # every key is listed, not just the ones that differ from a default
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(dump_config(RunConfig()))
    # the variants the docs point to load, and each differs from the defaults where it says
    variants = {p.name: load_config(p) for p in path.parent.glob("*.yaml") if p != path}
    assert variants["main_job_l2.yaml"].search.importance == "l2" != RunConfig().search.importance
    assert variants["main_job_l2.yaml"].prune.refit is False  # as measured, before the refit became the default


def test_finetune_defaults_are_declared_once():
    """The CLI's and the API's fine-tune defaults are FinetuneConfig's (the main job's recipe)."""
    import inspect

    from entroprune import cli
    from entroprune.api import finetune_checkpoint, finetune_module
    from entroprune.config import FinetuneConfig

    default = FinetuneConfig()
    for fn in (cli.finetune, finetune_checkpoint):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in ("epochs", "lr", "batch_size", "distill")} == \
            {k: getattr(default, k) for k in ("epochs", "lr", "batch_size", "distill")}, fn
    params = inspect.signature(finetune_module).parameters  # any nn.Module: its loader sets the batch
    assert (params["epochs"].default, params["lr"].default) == (default.epochs, default.lr)


def test_prune_defaults_are_declared_once():
    """The CLI's and the API's prune defaults are PruneConfig's, and the main job passes its config's on."""
    import dataclasses
    import inspect

    from entroprune import cli
    from entroprune.api import prune_checkpoint, prune_module
    from entroprune.config import PruneConfig

    fields = {f.name for f in dataclasses.fields(PruneConfig)}
    assert fields == {"refit", "refit_norms", "refit_head", "bn_recalibration"}  # each one below
    default = PruneConfig()
    for fn in (cli.prune, prune_checkpoint):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in fields} == dataclasses.asdict(default), fn
    params = inspect.signature(prune_module).parameters
    assert ({k: params[k].default for k in ("refit", "refit_norms", "refit_head")}
            == {"refit": default.refit, "refit_norms": default.refit_norms, "refit_head": default.refit_head})


def test_the_main_job_prunes_with_its_config(monkeypatch, tmp_path):
    from entroprune import pipeline
    from entroprune.config import PruneConfig, RunConfig

    seen = {}
    monkeypatch.setattr(pipeline, "prune_checkpoint", lambda *a, **k: seen.update(k))
    keys = ("refit", "refit_norms", "refit_head", "bn_recalibration")
    cfg = RunConfig(prune=PruneConfig(refit=False, refit_norms=False, refit_head=False, bn_recalibration=False))
    pipeline._prune(tmp_path / "model.pt", tmp_path, cfg, "cpu", resume=False)
    assert tuple(seen[k] for k in keys) == (False, False, False, False)
    cfg = RunConfig(prune=PruneConfig(refit=True, refit_norms=True))
    pipeline._prune(tmp_path / "model.pt", tmp_path, cfg, "cpu", resume=False)
    assert tuple(seen[k] for k in keys) == (True, True, True, True)


def test_search_defaults_are_declared_once():
    """Every `entroprune search` option that sets a SearchConfig or RewardConfig field defaults to that field."""
    import dataclasses
    import inspect

    from entroprune import cli
    from entroprune.search import RewardConfig, SearchConfig

    search, reward = SearchConfig(), RewardConfig()
    params = inspect.signature(cli.search).parameters
    renamed = {"reward": "kind", "entropy_layers": "layers", "physical_scoring": "physical"}  # flag -> reward field
    checked = []
    for name, p in params.items():
        field = renamed.get(name, name)
        if name in ("episode_batch", "band", "round_to", "macs_target", "seed"):  # --workers / strings / deprecated
            continue
        if name in {f.name for f in dataclasses.fields(SearchConfig)} - {"reward"}:
            assert p.default == getattr(search, name), name
            checked.append(name)
        elif field in {f.name for f in dataclasses.fields(RewardConfig)}:
            assert p.default == getattr(reward, field), name
            checked.append(name)
    assert cli._parse_band(params["band"].default) == search.band
    assert cli._parse_round_to(params["round_to"].default) == search.round_to
    assert len(checked) >= 20, checked  # the check sees the options, not an empty set
    # the main job, the step-by-step command and the API search alike: the rounding differed until 2026-12-06
    # (8 in the main job, none elsewhere, whose nets ran 1.7x slower on onnxruntime at the same MACs)
    from entroprune.config import RunConfig

    assert RunConfig().search == search and search.round_to == 8
    assert inspect.signature(cli.latency).parameters["round_to"].default == search.step  # what a table is fitted at
    # the latency fit's and the rounding choice's search space, through the API too
    from entroprune.api import choose_rounding_checkpoint, evaluate_checkpoint, fit_latency_checkpoint

    fit, choose = (inspect.signature(f).parameters for f in (fit_latency_checkpoint, choose_rounding_checkpoint))
    assert (fit["min_keep"].default, fit["round_to"].default) == (search.min_keep, search.step)
    assert (choose["macs_target"].default, choose["min_keep"].default) == (search.macs_target, search.min_keep)
    assert inspect.signature(evaluate_checkpoint).parameters["repeats"].default == RunConfig().latency_repeats


def test_train_defaults_are_declared_once():
    """`entroprune train` and train_baseline default to BaselineConfig, the main job's baseline recipe."""
    import inspect

    from entroprune import cli
    from entroprune.api import train_baseline
    from entroprune.config import BaselineConfig

    keys = ("epochs", "lr", "batch_size", "width_mult", "augment", "train_limit")
    for fn in (cli.train, train_baseline):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in keys} == {k: getattr(BaselineConfig(), k) for k in keys}, fn


def test_deployed_eager_folds_norms_and_switches_layout(pruned):
    from entroprune.export import deployed_eager

    model, ckpt = load_model(pruned / "pruned" / "model.pt")
    x = torch.randn(3, *ckpt.spec.input_size, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deployed = deployed_eager(model, x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())
    seen = []
    for m in deployed.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.append(
                out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()))
    with torch.no_grad():
        assert torch.allclose(deployed(x), model.eval()(x), atol=1e-4)
    assert seen and all(seen)
    # a copy: the caller's net keeps its norms and weights
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_deployed_eager_keeps_what_a_net_cannot_take():
    from entroprune.export import deployed_eager

    class Flat(torch.nn.Module):
        """Data-dependent control flow (torch.fx cannot trace it) and a view of the conv's output as flat
        (which a channels-last tensor refuses): neither step may be applied."""

        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(64, 2)

        def forward(self, x):
            y = self.bn(self.conv(x))
            if y.sum() > 0:
                y = y + 1
            return self.fc(y.view(y.size(0), -1))

    net = Flat().eval()
    x = torch.randn(2, 2, 6, 6)
    deployed = deployed_eager(net, x)
    assert isinstance(deployed.bn, torch.nn.BatchNorm2d) and deployed.conv.weight.is_contiguous()
    with torch.no_grad():
        assert torch.equal(deployed(x), net(x))


def test_deployed_eager_drops_a_step_that_changes_the_outputs(monkeypatch):
    """A fold that runs but computes something else (here: outputs 1% off) is not kept: each step is checked
    against the net's own outputs, to float noise."""
    import entroprune.export as export

    fold = export._fold_batch_norms

    def off_by_one_percent(model):
        folded = fold(model)
        with torch.no_grad():
            folded.fc.weight.mul_(1.01)
        return folded

    monkeypatch.setattr(export, "_fold_batch_norms", off_by_one_percent)
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).mean((2, 3)))

    net = Net().eval()
    x = torch.randn(2, 2, 6, 6)
    deployed = export.deployed_eager(net, x)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())
    with torch.no_grad():
        assert torch.allclose(deployed(x), net(x), atol=1e-6)


def test_the_report_says_where_the_fine_tune_started(tmp_path):
    from entroprune.report import finetune_text

    (tmp_path / "finetuned").mkdir()
    (tmp_path / "pruned").mkdir()
    (tmp_path / "finetuned" / "metrics.json").write_text(json.dumps({"epochs": 3, "distill": True,
                                                                      "test_accuracy_before": 26.08}))
    assert finetune_text(tmp_path) == " (3 epochs, distilled from the original, from 26.08% right after the cut; " \
                                      "more with `finetune.epochs`)"  # a run from before the refit: no record
    for refit, said in ((True, " with the kept weights refitted"), (False, " (no refit)")):
        (tmp_path / "pruned" / "prune.json").write_text(json.dumps({"refit": refit}))
        assert f"from 26.08% right after the cut{said}; more" in finetune_text(tmp_path)


def test_the_main_jobs_reranking_scores_the_nets_its_prune_makes(monkeypatch, tmp_path):
    """A run that turns the refit off re-ranks plain cuts after recovery; with it on, refitted nets as they are,
    refitted with the prune's options; a re-ranking setting the config gives stands."""
    from entroprune import pipeline
    from entroprune.config import PruneConfig, RunConfig
    from entroprune.search import RewardConfig
    from entroprune.search.config import PLAIN_RECOVERY_STEPS

    seen = []
    monkeypatch.setattr(pipeline, "search_checkpoint", lambda path, out, config, **k: seen.append(config))
    for prune, search in ((PruneConfig(), SearchConfig()), (PruneConfig(refit=False), SearchConfig()),
                          (PruneConfig(refit=False), SearchConfig(rerank_refit=True)),
                          (PruneConfig(refit_head=False, refit_norms=True), SearchConfig()),
                          (PruneConfig(refit_head=False), SearchConfig(reward=RewardConfig(refit_head=True)))):
        cfg = RunConfig(prune=prune, search=search)
        pipeline._search(tmp_path / "model.pt", tmp_path / "s", cfg.search, cfg, "cpu", quiet=True, resume=False)
    assert [(c.rerank_refit, c.recovery_steps) for c in seen] == [(True, 0), (False, PLAIN_RECOVERY_STEPS), (True, 0),
                                                                   (True, 0), (True, 0)]
    assert [c.rerank_reward_config().refit_options() for c in seen] == [(False, True)] * 3 + [(True, False), (False, True)]
