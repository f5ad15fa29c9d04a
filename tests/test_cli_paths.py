"""The commands' success paths and their --force rules, through the CLI: what each writes is checked
against what it came from, and an existing output is never replaced without --force."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from entroprune.api import build_structure, inspect_checkpoint, load_model
from entroprune.cli import app
from entroprune.structure import count_macs_params

runner = CliRunner()


def ok(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    return res


def refused(words: str, *args) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, (res.stdout, res.stderr, res.exception)
    assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def searched(digits_ckpt, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_paths")
    ok("search", digits_ckpt, "--agent", "uniform", "--macs-target", "0.5", "--out", root / "s", "--quiet")
    return root


def test_prune_refuses_an_existing_output_and_is_deterministic(digits_ckpt, searched, tmp_path):
    policy = searched / "s" / "policy.json"
    ok("prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "p")
    first = digest(tmp_path / "p" / "model.pt")
    refused("model.pt already exists; pass --force", "prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "p")
    assert digest(tmp_path / "p" / "model.pt") == first
    ok("prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "p", "--force")
    ok("prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "q")
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"] for d in "pq")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same policy, same net


def test_prune_refits_by_default_and_cuts_plainly_when_told(digits_ckpt, searched, tmp_path):
    policy = searched / "s" / "policy.json"
    # digits' calibration split is too small for the classifier's kept inputs (refit.REFIT_HEAD_ROWS)
    with pytest.warns(UserWarning, match=r"the refit left `classifier` as cut: \d+ equations for its \d+ kept"):
        said = ok("prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "r").stdout
    plain = ok("prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "n", "--no-refit").stdout
    assert "kept weights refitted" in said and "refitted" not in plain
    r, n = (load_model(tmp_path / d / "model.pt") for d in "rn")
    assert (r[1].pruning["refit"], n[1].pruning["refit"]) == (True, False)
    assert any(not torch.equal(a, b) for a, b in zip(r[0].state_dict().values(), n[0].state_dict().values(), strict=True))
    ok("prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "m", "--refit", "--refit-norms")
    m = load_model(tmp_path / "m" / "model.pt")
    assert (m[1].pruning["refit_norms"], r[1].pruning["refit_norms"]) == (True, False)
    ok("prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "h", "--refit", "--no-refit-head")
    h = load_model(tmp_path / "h" / "model.pt")
    assert (h[1].pruning["refit_head"], r[1].pruning["refit_head"], n[1].pruning["refit_head"]) == (False, True, False)
    # the head as cut, asked for or left by the guard: the plain prune's classifier, the refit's convs
    assert torch.equal(h[0].classifier.weight, n[0].classifier.weight)
    assert torch.equal(r[0].classifier.weight, n[0].classifier.weight)
    convs = [k for k, v in n[0].state_dict().items() if k.endswith("weight") and v.dim() == 4][1:]
    assert all(torch.equal(h[0].state_dict()[k], r[0].state_dict()[k]) for k in convs)
    assert any(not torch.equal(h[0].state_dict()[k], n[0].state_dict()[k]) for k in convs)


def test_finetune_refuses_an_existing_output_and_is_deterministic(pruned_ckpt, tmp_path):
    args = ("finetune", pruned_ckpt, "--epochs", "1", "--quiet", "--seed", "3")
    ok(*args, "--out", tmp_path / "a")
    first = digest(tmp_path / "a" / "model.pt")
    refused("pass --force", *args, "--out", tmp_path / "a")
    assert digest(tmp_path / "a" / "model.pt") == first
    ok(*args, "--out", tmp_path / "b")
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert ma["test_accuracy"] == mb["test_accuracy"]


def test_export_refuses_an_existing_output(pruned_ckpt, tmp_path):
    out = tmp_path / "m.onnx"
    ok("export", pruned_ckpt, "--out", out)
    first = digest(out)
    refused("already exists; pass --force", "export", pruned_ckpt, "--out", out)
    assert digest(out) == first
    ok("export", pruned_ckpt, "--out", out, "--force")
    (tmp_path / "folder").mkdir()
    refused("is a folder", "export", pruned_ckpt, "--out", tmp_path / "folder", "--force")


def test_export_names_its_file_by_format(pruned_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for fmt, name in [("pt2", "model.pt2"), ("torchscript", "model.ts")]:
        ok("export", pruned_ckpt, "--format", fmt)
        assert (tmp_path / name).stat().st_size > 0
    # without --format the suffix names the format; a suffix naming another format than --format is refused
    # (ONNX bytes in a .ts file fail only where it is deployed)
    ok("export", pruned_ckpt, "--out", "named.ts")
    assert isinstance(torch.jit.load(tmp_path / "named.ts"), torch.jit.ScriptModule)
    refused("--out wrong.ts has the suffix of torchscript, but --format is onnx", "export", pruned_ckpt,
            "--format", "onnx", "--out", "wrong.ts")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2", "model.ts", "named.ts"]


def test_export_takes_an_opset_and_a_fixed_batch(pruned_ckpt, tmp_path, monkeypatch):
    """Accelerator toolchains read only older opsets or want static shapes: `--opset` writes that opset,
    `--batch N` fixes the batch axis (ONNX, pt2), each checked as written; what does not apply is refused."""
    import onnx
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)
    assert "onnx opset 11:" in ok("export", pruned_ckpt, "--opset", "11", "--batch", "2", "--out", "s.onnx").stdout
    proto = onnx.load("s.onnx")
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [11]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == 2 and all(dims)  # static: no symbolic batch
    session = ort.InferenceSession("s.onnx", providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # another batch is the runtime's error, as fixed
        session.run(None, {"input": np.zeros([3, *dims[1:]], np.float32)})
    ok("export", pruned_ckpt, "--out", "d.onnx")  # the default: opset 17, any batch
    proto = onnx.load("d.onnx")
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    ok("export", pruned_ckpt, "--batch", "3", "--out", "s.pt2")
    program = torch.export.load("s.pt2")
    assert program.module()(torch.zeros(3, *dims[1:])).shape[0] == 3
    with pytest.raises(Exception, match="(?i)expected|shape|size"):  # fixed at 3, as asked
        program.module()(torch.zeros(2, *dims[1:]))
    for args, said in ((["--opset", "8"], "--opset must lie in 9-20"), (["--opset", "21"], "--opset must lie in 9-20"),
                       (["--format", "pt2", "--opset", "13"], "--opset is ONNX's; leave it out to export pt2"),
                       (["--format", "torchscript", "--batch", "4"], "a traced TorchScript net takes any batch"),
                       (["--batch", "-1"], "--batch must be >= 0")):
        refused(said, "export", pruned_ckpt, *args, "--out", "x" + {"pt2": ".pt2", "torchscript": ".ts"}.get(
            args[1] if args[0] == "--format" else "", ".onnx"))
    assert not any(p.name.startswith("x") for p in tmp_path.iterdir())


def test_export_int8_quantises_calibrates_and_checks(pruned_ckpt, tmp_path, monkeypatch):
    """`export --int8`: int8 ONNX (QDQ) calibrated on the checkpoint's dataset, checked on its test split against
    the float net, any batch or a fixed one; refused for other formats and opsets before 13."""
    import onnx
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)
    said = ok("export", pruned_ckpt, "--int8").stdout
    assert re.search(r"onnx int8 opset 17: model\.int8\.onnx \([\d,]+ bytes, any batch\), [\d.]+x smaller than float; "
                     r"top-1 agreement with the float net [\d.]+% on 359 test outputs, test accuracy [\d.]+% "
                     r"\(float [\d.]+%\)", " ".join(said.split())), said
    ops = {n.op_type for n in onnx.load("model.int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    model, ckpt = load_model(pruned_ckpt)
    session = ort.InferenceSession("model.int8.onnx", providers=["CPUExecutionProvider"])
    from entroprune.api import load_data_for_spec

    x, _ = next(iter(load_data_for_spec(ckpt.spec).loader("test", 100)))  # images as the model sees them
    with torch.no_grad():
        ref = model(x)
    got = session.run(None, {"input": x.numpy()})[0]
    assert got.shape == tuple(ref.shape) and (got.argmax(1) == ref.argmax(1).numpy()).mean() > 0.9
    ok("export", pruned_ckpt, "--int8", "--batch", "4", "--opset", "13", "--out", "b.onnx")
    dims = [d.dim_value for d in onnx.load("b.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == 4
    from entroprune import export
    from entroprune.api import export_checkpoint

    monkeypatch.setattr(export, "INT8_AGREEMENT_WARNING", 100.5)  # no net agrees that well: the warning is said
    with pytest.warns(UserWarning, match=r"the int8 net agrees with the float one on [\d.]+% of the test outputs"):
        export_checkpoint(pruned_ckpt, "w.onnx", int8=True)
    def fails(*_):
        raise RuntimeError("Unsupported op FancyConv\nstack...")

    monkeypatch.setattr(export, "quantize_onnx", fails)  # an op onnxruntime's quantiser does not know: one line
    refused("onnxruntime cannot quantise this model (RuntimeError: Unsupported op FancyConv); export it in float",
            "export", pruned_ckpt, "--int8", "--out", "c.onnx")
    refused("an int8 export needs --opset >= 13", "export", pruned_ckpt, "--int8", "--opset", "12", "--out", "c.onnx")
    refused("an int8 export is ONNX (QDQ)", "export", pruned_ckpt, "--int8", "--format", "pt2", "--out", "c.pt2")
    assert not any(p.name.startswith("c.") for p in tmp_path.iterdir())


def test_search_refuses_a_folder_holding_a_search(digits_ckpt, searched):
    before = digest(searched / "s" / "policy.json")
    refused("pass --resume", "search", digits_ckpt, "--agent", "uniform", "--macs-target", "0.5",
            "--out", searched / "s", "--quiet")
    assert digest(searched / "s" / "policy.json") == before


def test_inspect_prints_the_groups_and_the_counted_macs(digits_ckpt, tmp_path):
    res = ok("inspect", digits_ckpt, "--calib-size", "16")
    model, ckpt = load_model(digits_ckpt)
    macs, params = count_macs_params(model, ckpt.spec.example_input())
    assert f"{int(macs):,} MACs, {int(params):,} params" in res.stdout
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(name in res.stdout for name in convs[:-1])  # every group's root is listed
    assert "per-layer spatial entropy on 16 calibration images" in res.stdout
    # each group's share of the MACs it scales, said to overlap (a conv between two groups counts in both)
    structure = build_structure(model, ckpt.spec)
    shares = [g.macs / structure.total_macs for g in structure.groups]
    assert all(f"{share:.1%}" in res.stdout for share in shares) and sum(shares) > 1
    assert "so the shares add up to more than 100%" in " ".join(res.stdout.split())
    # the lowest target a search reaches, as the search's own refusal computes it: a target under it is refused
    floors = [structure.macs(structure.keep_counts(0.2, step)) / structure.total_macs for step in (8, 1)]
    assert floors[0] > floors[1]  # the digits net's 16- and 32-channel groups keep more when rounded to 8
    assert (f"lowest reachable --macs-target: {floors[0]:.1%} (every group at --min-keep 0.2, channels rounded to 8); "
            f"{floors[1]:.1%} with --round-to 1") in res.stdout
    below = f"{floors[0] * 0.9:.4f}"
    refused(f"--macs-target {below} is unreachable", "search", digits_ckpt, "--macs-target", below, "--out",
            tmp_path / "low")
    # the same for the parameters: each group's share of those it scales, and the lowest --params-target
    out = " ".join(res.stdout.split())
    pfloors = [structure.params(structure.keep_counts(0.2, step)) / structure.total_params for step in (8, 1)]
    assert (f"lowest reachable --params-target: {pfloors[0]:.1%} (every group at --min-keep 0.2, channels rounded "
            f"to 8); {pfloors[1]:.1%} with --round-to 1") in out
    below = f"{pfloors[0] * 0.9:.4f}"
    refused(f"--params-target {below} is unreachable", "search", digits_ckpt, "--params-target", below, "--out",
            tmp_path / "low_params")
    # a conv's parameters scale with its own group and the one before it: each a share, together more than all
    last, before = structure.groups[-1], structure.groups[-2]
    info = inspect_checkpoint(digits_ckpt, calib_size=4)
    shares = {g["name"]: g["params_share"] for g in info["groups"]}
    assert 0 < shares[before.name] < 1 and 0 < shares[last.name] < 1 and sum(shares.values()) > 1
    assert all(f"{share:.1%}" in res.stdout for share in shares.values())


def test_report_of_a_search_folder_matches_its_log(digits_ckpt, tmp_path):
    said = ok("search", digits_ckpt, "--macs-target", "0.5", "--episodes", "6", "--warmup", "3", "--calib-size", "32",
       "--rerank-top-k", "0", "--out", tmp_path / "s", "--quiet")
    summary = json.loads((tmp_path / "s" / "search.json").read_text())
    assert f"best entropy reward {summary['reward']:.5f} at" in said.stdout
    ok("report", tmp_path / "s")
    log = [json.loads(line) for line in (tmp_path / "s" / "episodes.jsonl").read_text().splitlines()]
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    policy = json.loads((tmp_path / "s" / "policy.json").read_text())
    best = max(log, key=lambda e: e["reward"])
    assert report["policy"]["policy"] == policy["policy"] == best["policy"]
    md = (tmp_path / "s" / "report.md").read_text()
    assert f"{len(log)} episodes" in md
    assert (tmp_path / "s" / "plots" / "reward.png").stat().st_size > 1000


def test_a_re_ranked_search_says_its_reward_and_the_re_ranking_score_apart(digits_ckpt, tmp_path):
    """The search's reward (here accuracy, ~0.5) and the re-ranking's score (minus a KL, ~-0.01) are on
    different scales: printed as one "best reward", the returned policy's score read as the search's."""
    res = ok("search", digits_ckpt, "--macs-target", "0.5", "--episodes", "6", "--warmup", "3", "--calib-size", "32",
             "--reward", "accuracy", "--rerank-top-k", "2", "--recovery-steps", "2", "--confirm-seeds", "0",
             "--out", tmp_path / "s", "--quiet")
    summary = json.loads((tmp_path / "s" / "search.json").read_text())
    assert summary["best_search_reward"] > 0 > summary["reward"]  # an accuracy, then minus a KL
    said = " ".join(res.stdout.split())
    assert (f"search: best accuracy reward {summary['best_search_reward']:.5f} "
            f"(episode {summary['best_episode']} of 6)") in said
    assert (f"the {summary['chosen']} policy won (score {summary['reward']:.5f}), "
            f"{summary['achieved']:.1%} of the MACs (target 50.0%)") in said


class _Note:
    """A harmless custom object: loading it needs the pickle module, which weights_only refuses."""

    def __init__(self, text: str):
        self.text = text


def test_trust_pickle_loads_what_it_promises(digits_ckpt, tmp_path):
    raw = torch.load(digits_ckpt, weights_only=True)
    path = tmp_path / "pickled.pt"
    torch.save({**raw, "metrics": {"note": _Note("from an older tool")}}, path)
    refused("--trust-pickle", "evaluate", path)
    ok("evaluate", path, "--trust-pickle", "--json", tmp_path / "trusted.json")
    ok("evaluate", digits_ckpt, "--json", tmp_path / "plain.json")
    trusted, plain = (json.loads((tmp_path / f).read_text()) for f in ("trusted.json", "plain.json"))
    assert trusted[0]["test_accuracy"] == plain[0]["test_accuracy"] and trusted[0]["macs"] == plain[0]["macs"]


def test_a_failed_write_leaves_the_old_output_whole(digits_ckpt, searched, tmp_path, monkeypatch):
    """A disk that fills up halfway through a checkpoint: the old file survives, no temporary file is
    left, and the user reads one line (exit 1: the machine failed, not the input)."""
    policy = searched / "s" / "policy.json"
    ok("prune", digits_ckpt, "--policy", policy, "--out", tmp_path / "p")
    before = {p.name: digest(p) for p in (tmp_path / "p").iterdir()}

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    res = runner.invoke(app, ["prune", str(digits_ckpt), "--policy", str(policy), "--out", str(tmp_path / "p"),
                              "--force"])
    assert res.exit_code == 1 and "No space left on device" in res.stderr, (res.stderr, res.exception)
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert {p.name: digest(p) for p in (tmp_path / "p").iterdir()} == before


@pytest.mark.parametrize("raised,says", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 25600000000 bytes. Error code 12 (Cannot allocate memory)"), "25.6 GB"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79 GiB"),
     "20.00 GiB on the GPU"),
    (MemoryError(), "Python could not allocate")])
def test_running_out_of_memory_is_one_line_naming_the_batch(raised, says, digits_ckpt, tmp_path, monkeypatch):
    """A batch too large for the machine (`latency --batch 100000000` asked torch for 25.6 GB): one line naming
    the command's batch option, exit 1 (the machine's limit, as a full disk), no folder left behind."""
    import entroprune.api

    def allocate(checkpoint, out_dir, *args, **kwargs):
        from entroprune.utils import check_writable_dir

        check_writable_dir(out_dir)  # as the command does before it times anything
        raise raised

    monkeypatch.setattr(entroprune.api, "fit_latency_checkpoint", allocate)
    res = runner.invoke(app, ["latency", str(digits_ckpt), "--out", str(tmp_path / "lat")])
    assert res.exit_code == 1, (res.stderr, res.exception)
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "Traceback" not in res.stderr
    assert f"out of memory ({'one tensor needed ' if 'Python' not in says else ''}{says})" in res.stderr
    assert "use a smaller --batch," in res.stderr
    assert not (tmp_path / "lat").exists()


def test_a_runtime_error_that_is_no_allocation_failure_is_not_called_one(digits_ckpt, tmp_path, monkeypatch):
    import entroprune.api

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x16 and 8x10)")

    monkeypatch.setattr(entroprune.api, "fit_latency_checkpoint", broken)
    res = runner.invoke(app, ["latency", str(digits_ckpt), "--out", str(tmp_path / "lat")])
    assert isinstance(res.exception, RuntimeError) and "out of memory" not in res.stderr


@pytest.mark.parametrize("command", ["train", "prune", "finetune"])
def test_ctrl_c_leaves_no_folder_it_created(command, digits_ckpt, pruned_ckpt, searched, tmp_path, monkeypatch):
    import entroprune.api
    import entroprune.prune

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(entroprune.api, "train_model", interrupted)
    monkeypatch.setattr(entroprune.prune, "prune_model", interrupted)
    out = tmp_path / "new" / "out"
    args = {"train": ["train", "--dataset", "digits", "--epochs", "1"],
            "prune": ["prune", digits_ckpt, "--policy", searched / "s" / "policy.json"],
            "finetune": ["finetune", pruned_ckpt, "--epochs", "1"]}[command]
    res = runner.invoke(app, [str(a) for a in [*args, "--out", out]])
    assert res.exit_code == 130 and res.stderr.strip() == "interrupted", (res.stderr, res.exception)
    assert list(tmp_path.iterdir()) == []  # neither out nor its new parent is left behind


def test_version_names_the_tool_and_the_libraries_results_depend_on():
    from importlib.metadata import version

    import entroprune

    res = ok("--version")
    line = res.stdout.strip()
    assert line.startswith(f"entroprune {entroprune.__version__} (torch {torch.__version__}, "), line
    assert f"torch-pruning {version('torch-pruning')}" in line and len(res.stdout.strip().splitlines()) == 1
    assert version("entroprune") == entroprune.__version__  # the package metadata reads the one declaration


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    """A sweep of seeds started in parallel: each run claims its folder by creating it. Two runs that found the
    name free and then made it shared one folder, each writing over the other's stages."""
    from entroprune import pipeline

    monkeypatch.setattr(pipeline.time, "strftime", lambda fmt: "20261206-120000")
    taken = tmp_path / "run-20261206-120000"
    taken.mkdir()  # another run's, made after this one found the name free
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self == taken else real_exists(self))
    assert pipeline.fresh_dir(tmp_path, None) == tmp_path / "run-20261206-120000-2"
    assert pipeline.fresh_dir(tmp_path, None) == tmp_path / "run-20261206-120000-3"


def test_every_command_that_computes_takes_seed_device_and_threads(digits_ckpt, searched, tmp_path, monkeypatch):
    """The README's promise: --seed, --device and --threads on every command that computes (latency times the CPU,
    so it takes no --device). prune, wrap and run took no --threads and wrap no --device: a user pinning threads for
    a benchmark got "No such option"."""
    import typer

    import entroprune.pipeline

    commands = typer.main.get_command(app).commands
    for name in ("train", "wrap", "evaluate", "inspect", "search", "prune", "finetune", "run", "latency"):
        options = {opt for p in commands[name].params for opt in p.opts}
        wanted = {"--seed", "--threads"} | ({"--device"} if name != "latency" else set())
        assert wanted <= options, (name, wanted - options)
    before = torch.get_num_threads()
    try:  # the flag is applied, not only accepted
        ok("prune", digits_ckpt, "--policy", searched / "s" / "policy.json", "--out", tmp_path / "p", "--threads", 2)
        assert torch.get_num_threads() == 2
        weights = tmp_path / "weights.pt"
        torch.save(torch.load(digits_ckpt, weights_only=True)["state_dict"], weights)
        ok("wrap", weights, "--model", "vgg", "--dataset", "digits", "--width-mult", "0.5", "--out", tmp_path / "w.pt",
           "--device", "cpu", "--threads", 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    seen = {}

    def fake_run(cfg, **kwargs):
        seen["threads"] = cfg.threads
        raise KeyboardInterrupt

    monkeypatch.setattr(entroprune.pipeline, "run_pipeline", fake_run)
    runner.invoke(app, ["run", "--quick", "--threads", "1", "--out-root", str(tmp_path / "runs")])
    assert seen == {"threads": 1}


def test_finetune_epochs_reach_the_run_and_the_sweep_over_the_config(tmp_path, monkeypatch):
    """`run` and `sweep --finetune-epochs N` fine-tune N epochs, over a config file's `finetune.epochs`, and
    leave the other fine-tune settings as they were; without the flag the config's (or the default) stand."""
    import entroprune.pipeline
    import entroprune.sweep
    from entroprune.config import FinetuneConfig

    seen = []

    def fake(cfg, *args, **kwargs):
        seen.append(cfg.finetune)
        raise KeyboardInterrupt

    monkeypatch.setattr(entroprune.pipeline, "run_pipeline", fake)
    monkeypatch.setattr(entroprune.sweep, "run_sweep", fake)
    (tmp_path / "c.yaml").write_text("finetune:\n  epochs: 4\n  lr: 0.01\n")
    out = ["--out-root", str(tmp_path / "runs")]
    for command in ("run", "sweep"):
        runner.invoke(app, [command, "--finetune-epochs", "7", *out])
        runner.invoke(app, [command, "--config", str(tmp_path / "c.yaml"), "--finetune-epochs", "9", *out])
        runner.invoke(app, [command, "--config", str(tmp_path / "c.yaml"), *out])
        runner.invoke(app, [command, *out])
    expected = [(7, FinetuneConfig.lr), (9, 0.01), (4, 0.01), (FinetuneConfig.epochs, FinetuneConfig.lr)] * 2
    assert [(f.epochs, f.lr) for f in seen] == expected


def test_ctrl_c_inside_a_string_exec_still_exits_130(tmp_path):
    """A Ctrl-C that lands while library code runs a string `exec` (dataclasses and scipy build functions
    that way; DDPG's first act imports scipy.stats) makes CPython's `python -m` kill itself with SIGINT at
    exit even after the CLI handled it: the search's double Ctrl-C test saw exit -2 once in nine CI runs."""
    import subprocess
    import sys
    import textwrap

    plugin = tmp_path / "boom.py"
    plugin.write_text(textwrap.dedent("""
        from entroprune.data import register_dataset

        @register_dataset("boom")
        def boom(data_dir, image_size, in_channels):
            exec("raise KeyboardInterrupt")
    """))
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "--plugin", str(plugin), "train", "--dataset",
                           "boom", "--epochs", "1", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130 and proc.stderr.strip() == "interrupted", (proc.returncode, proc.stderr)
