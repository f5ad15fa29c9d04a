import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from entroprune.cli import app

runner = CliRunner()


def test_train_and_evaluate_cli(tmp_path):
    out = tmp_path / "r"
    res = runner.invoke(app, ["train", "--model", "resnet20", "--dataset", "digits", "--epochs",
                              "1", "--width-mult", "0.25", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (out / "model.pt").exists() and (out / "metrics.json").exists()
    raw = torch.load(out / "model.pt", weights_only=True)
    assert raw["spec"]["model"] == "resnet20"
    res = runner.invoke(app, ["evaluate", str(out / "model.pt")])
    assert res.exit_code == 0
    assert "test acc (%)" in res.output and "MACs" in res.output and "params" in res.output
    # an existing result is never overwritten silently
    res = runner.invoke(app, ["train", "--dataset", "digits", "--out", str(out), "--epochs", "1"])
    assert res.exit_code == 2 and "--force" in res.output


@pytest.mark.parametrize("args", [
    ["train", "--model", "vgg", "--dataset", "nosuch", "--out", "{tmp}/x"],
    ["train", "--model", "nosuch", "--dataset", "digits", "--out", "{tmp}/x"],
    ["evaluate", "{tmp}/missing.pt"],
    # click's own usage errors (a five-line panel before): a mistyped flag, a missing argument, a wrong type
    ["evaluate", "{tmp}/missing.pt", "--jsn", "{tmp}/x"],
    ["prune", "--out", "{tmp}/x"],
    ["search", "{tmp}/missing.pt", "--episodes", "many", "--out", "{tmp}/x"],
    ["serach", "{tmp}/missing.pt"],
])
def test_bad_input_exits_2_with_one_line(tmp_path, args):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", *args], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error:")
    assert not (tmp_path / "x").exists()


def test_trained_digits_model_learns(digits_ckpt):
    import json

    metrics = json.loads((digits_ckpt.parent / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 70


@pytest.mark.parametrize("steps", range(1, 10))
def test_training_of_a_few_steps_runs_on_either_schedule(steps):
    """A small dataset makes few steps: at 4 steps in all (240 volumes, 2 epochs) torch's OneCycleLR divided by
    zero, a traceback from `train`. Every short training runs and ends finite."""
    from entroprune.train import TrainConfig, train_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    batches = [(torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,))) for _ in range(steps)]
    for schedule in ("onecycle", "cosine"):
        history = train_model(net, None, TrainConfig(epochs=1, lr=0.1, schedule=schedule, augment="none"),
                              quiet=True, train_loader=batches, val_loader=batches[:1])
        assert len(history) == 1 and all(torch.isfinite(p).all() for p in net.parameters())
