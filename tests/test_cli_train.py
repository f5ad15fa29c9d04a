import subprocess
import sys

import numpy as np
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
    if args[0] == "serach":  # click's suggestion ends a sentence: no "?;" before the help pointer
        assert "Did you mean 'search'? See `" in proc.stderr, proc.stderr


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


def test_evaluate_gives_each_class_its_accuracy_and_the_report_the_largest_losses():
    """A mean drop of half a point can be one class losing five: evaluate counts each class (None for a class the
    batches do not hold), and the report lists the classes that lost most, at most PER_CLASS_ROWS of them."""
    from entroprune.report import PER_CLASS_ROWS, _per_class_lines
    from entroprune.train import evaluate

    class Fixed(torch.nn.Module):  # predicts the class its input's first value names
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0].long(), 4).float()

    x = torch.tensor([[0.0], [0], [1], [1], [1], [3], [3], [0]])
    y = torch.tensor([0, 0, 1, 1, 0, 3, 0, 1])
    res = evaluate(Fixed(), [(x[:4], y[:4]), (x[4:], y[4:])])
    assert res["per_class_accuracy"] == [50.0, 200 / 3, None, 100.0] and res["accuracy"] == 62.5
    before, after = [90.0] * 12, [90.0 - i for i in range(12)]
    lines = _per_class_lines({"per_class_accuracy": before}, {"per_class_accuracy": after}, None)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| class")]
    assert len(rows) == PER_CLASS_ROWS and rows[0] == "| 11 | 90.00 | 79.00 | -11.00 |"
    assert lines[0] == f"Test accuracy per class ({PER_CLASS_ROWS} of 12 classes, the largest losses first):"


def test_wrap_makes_a_checkpoint_of_weights_saved_elsewhere(digits_ckpt, tmp_path):
    """A model trained by another script (its state dict nested beside an optimizer, under DataParallel's
    `module.` prefix) becomes a checkpoint every command takes: the same weights and normalisation give the
    same test accuracy as the original; a normalisation of the user's is recorded as given."""
    import json

    from entroprune.checkpoint import load_checkpoint

    raw = torch.load(digits_ckpt, weights_only=True)
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in raw["state_dict"].items()},
                "optimizer": {"lr": 0.1}}, tmp_path / "weights.pt")
    res = runner.invoke(app, ["wrap", str(tmp_path / "weights.pt"), "--model", "vgg", "--dataset", "digits",
                              "--width-mult", "0.5", "--out", str(tmp_path / "w.pt")])
    assert res.exit_code == 0, res.stderr
    accuracy = raw["metrics"]["test_accuracy"]
    assert f"test accuracy {accuracy:.2f}%" in res.stdout
    wrapped = load_checkpoint(tmp_path / "w.pt")
    assert wrapped.spec == load_checkpoint(digits_ckpt).spec
    assert all(torch.equal(wrapped.state_dict[k], v) for k, v in raw["state_dict"].items())
    assert wrapped.metrics["test_accuracy"] == pytest.approx(accuracy)
    res = runner.invoke(app, ["evaluate", str(tmp_path / "w.pt"), "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0 and json.loads((tmp_path / "e.json").read_text())[0]["test_accuracy"] == \
        pytest.approx(accuracy)
    res = runner.invoke(app, ["wrap", str(tmp_path / "weights.pt"), "--model", "vgg", "--dataset", "digits",
                              "--width-mult", "0.5", "--mean", "0.5", "--std", "0.25", "--out", str(tmp_path / "n.pt")])
    assert res.exit_code == 0, res.stderr
    spec = load_checkpoint(tmp_path / "n.pt").spec
    assert (spec.mean, spec.std) == ([0.5], [0.25])
    # a whole pickled module (torch.save(model)): its weights, only when the user trusts the file
    from entroprune.models import build_model

    net = build_model("vgg", 10, 1, 0.5)
    net.load_state_dict(raw["state_dict"])
    torch.save(net, tmp_path / "module.pt")
    args = ["wrap", str(tmp_path / "module.pt"), "--model", "vgg", "--dataset", "digits", "--width-mult", "0.5",
            "--out", str(tmp_path / "m.pt")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--trust-pickle" in res.stderr and not (tmp_path / "m.pt").exists()
    res = runner.invoke(app, [*args, "--trust-pickle"])
    assert res.exit_code == 0 and f"test accuracy {accuracy:.2f}%" in res.stdout, res.stderr


def test_wrap_takes_weights_named_by_a_training_wrapper(digits_ckpt, tmp_path, recwarn):
    """torch.compile (`_orig_mod.`), a LightningModule's attribute (`model.`, beside a loss's buffers) and an
    AveragedModel (`module.` beside `n_averaged`) rename every weight; wrap was "missing features.0.weight and 40
    more". Each gives the original's accuracy; two whole copies of the model (student and teacher) are refused."""
    raw = torch.load(digits_ckpt, weights_only=True)
    state, accuracy = raw["state_dict"], raw["metrics"]["test_accuracy"]
    layouts = {
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
        "lightning": {"state_dict": {**{f"model.{k}": v for k, v in state.items()},
                                     "loss_fn.weight": torch.ones(10)}, "epoch": 3},
        "ema": {**{f"module.{k}": v for k, v in state.items()}, "n_averaged": torch.tensor(7)},
        "ddp_compiled": {f"module._orig_mod.{k}": v for k, v in state.items()},
    }
    for name, obj in layouts.items():
        recwarn.clear()
        torch.save(obj, tmp_path / f"{name}.pt")
        res = runner.invoke(app, ["wrap", str(tmp_path / f"{name}.pt"), "--model", "vgg", "--dataset", "digits",
                                  "--width-mult", "0.5", "--out", str(tmp_path / f"{name}-w.pt")])
        assert res.exit_code == 0, (name, res.stderr)
        assert f"test accuracy {accuracy:.2f}%" in res.stdout, name
        left_out = {"lightning": "left out 1 other entry (loss_fn.weight)", "ema": "left out 1 other entry (n_averaged)"}
        said = " ".join(str(w.message) for w in recwarn)
        assert (left_out[name] in said) if name in left_out else "left out" not in said, (name, said)
    torch.save({**{f"student.{k}": v for k, v in state.items()}, **{f"teacher.{k}": v for k, v in state.items()}},
               tmp_path / "pair.pt")
    res = runner.invoke(app, ["wrap", str(tmp_path / "pair.pt"), "--model", "vgg", "--dataset", "digits",
                              "--width-mult", "0.5", "--out", str(tmp_path / "pair-w.pt")])
    assert res.exit_code == 2 and "holds 2 copies of the model's weights (under 'student.', 'teacher.')" in res.stderr
    assert not (tmp_path / "pair-w.pt").exists()


def test_train_reads_an_image_folder_at_the_size_asked(tmp_path):
    """Photos far larger than the zoo's nets need are read at `--image-size` (the size most of them have was the
    only choice: a folder of megapixel photos trained at megapixels, or ran out of memory); the checkpoint's
    input is that size, so every later command reads the folder at it. Other datasets have their own size."""
    from PIL import Image

    from entroprune.checkpoint import load_checkpoint

    rng = np.random.default_rng(4)
    for c in ("a", "b"):
        (tmp_path / "big" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "big" / c / f"{i}.png")
    res = runner.invoke(app, ["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "big"), "--image-size",
                              "16", "--epochs", "1", "--width-mult", "0.25", "--out", str(tmp_path / "m"), "--quiet"])
    assert res.exit_code == 0, res.stderr
    assert load_checkpoint(tmp_path / "m" / "model.pt").spec.input_size == [3, 16, 16]
    res = runner.invoke(app, ["evaluate", str(tmp_path / "m" / "model.pt")])
    assert res.exit_code == 0, res.stderr
    res = runner.invoke(app, ["train", "--dataset", "digits", "--image-size", "16", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "--image-size applies to image folders (imagefolder); digits has its own size" \
        in res.stderr and not (tmp_path / "d").exists()


def test_a_checkpoint_names_its_classes_and_checks_another_folders(tmp_path, recwarn):
    """A deployment reads a prediction by its class name, which the checkpoint did not keep (only a count): a
    folder's class sub-folders are recorded, kept through pruning and fine-tuning, written into the ONNX file's
    metadata, and another folder whose classes differ is named when it is read in their place."""
    import json
    import shutil

    import onnxruntime as ort
    from PIL import Image

    from entroprune.checkpoint import load_checkpoint

    rng = np.random.default_rng(5)
    for c in ("cat", "dog", "fox"):
        (tmp_path / "pets" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(tmp_path / "pets" / c / f"{i}.png")
    res = runner.invoke(app, ["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "pets"), "--epochs",
                              "1", "--width-mult", "0.25", "--out", str(tmp_path / "m"), "--quiet"])
    assert res.exit_code == 0, res.stderr
    assert load_checkpoint(tmp_path / "m" / "model.pt").spec.classes == ["cat", "dog", "fox"]
    res = runner.invoke(app, ["search", str(tmp_path / "m" / "model.pt"), "--agent", "uniform", "--macs-target", "0.5",
                              "--out", str(tmp_path / "s"), "--quiet"])
    assert res.exit_code == 0, res.stderr
    res = runner.invoke(app, ["prune", str(tmp_path / "m" / "model.pt"), "--policy", str(tmp_path / "s" / "policy.json"),
                              "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.stderr
    assert load_checkpoint(tmp_path / "p" / "model.pt").spec.classes == ["cat", "dog", "fox"]
    res = runner.invoke(app, ["export", str(tmp_path / "p" / "model.pt"), "--out", str(tmp_path / "p.onnx")])
    assert res.exit_code == 0, res.stderr
    meta = ort.InferenceSession(str(tmp_path / "p.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == ["cat", "dog", "fox"]
    shutil.copytree(tmp_path / "pets", tmp_path / "other")
    (tmp_path / "other" / "fox").rename(tmp_path / "other" / "wolf")
    recwarn.clear()
    res = runner.invoke(app, ["evaluate", str(tmp_path / "m" / "model.pt"), "--data-dir", str(tmp_path / "other")])
    assert res.exit_code == 0, res.stderr
    said = " ".join(str(w.message) for w in recwarn)
    assert "classes are cat, dog, wolf but the model's are cat, dog, fox; its labels are read as the model's " \
           "outputs by position" in said, said


def test_wrap_reads_safetensors_files(digits_ckpt, tmp_path):
    """Weights in the safetensors format (what Hugging Face and timm save; nothing to unpickle), in float32 or
    half precision, make a checkpoint as a torch.save'd state dict does ("is not a PyTorch checkpoint" before);
    a command that needs a checkpoint points such a file to `wrap`."""
    from safetensors.torch import save_file

    from entroprune.checkpoint import load_checkpoint

    raw = torch.load(digits_ckpt, weights_only=True)
    state, accuracy = raw["state_dict"], raw["metrics"]["test_accuracy"]
    save_file({f"_orig_mod.{k}": v for k, v in state.items()}, tmp_path / "w.safetensors", metadata={"format": "pt"})
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "h.safetensors")
    for name in ("w", "h"):
        res = runner.invoke(app, ["wrap", str(tmp_path / f"{name}.safetensors"), "--model", "vgg", "--dataset",
                                  "digits", "--width-mult", "0.5", "--out", str(tmp_path / f"{name}.pt")])
        assert res.exit_code == 0, res.stderr
        wrapped = load_checkpoint(tmp_path / f"{name}.pt")
        assert all(v.dtype == state[k].dtype for k, v in wrapped.state_dict.items())  # float32, as trained
        assert abs(wrapped.metrics["test_accuracy"] - accuracy) < (1e-9 if name == "w" else 1.0)
    assert all(torch.equal(load_checkpoint(tmp_path / "w.pt").state_dict[k], v) for k, v in state.items())
    res = runner.invoke(app, ["evaluate", str(tmp_path / "w.safetensors")])
    assert res.exit_code == 2 and "holds weights in the safetensors format, not an entroprune checkpoint; make " \
        "one of them with `entroprune wrap`" in res.stderr


def test_a_relative_data_folder_is_recorded_so_other_folders_find_it(npz_file, tmp_path, monkeypatch):
    """`train --data-dir data.npz` recorded "data.npz" as given, so every later command run from another folder
    lost the data ("the npz dataset needs --data-dir"); the folder is recorded absolute, and a recorded folder
    that is missing is named in the refusal."""
    import torch

    from entroprune.api import evaluate_checkpoint, train_baseline
    from entroprune.errors import DataError

    monkeypatch.chdir(npz_file.parent)
    train_baseline("vgg", "npz", tmp_path / "m", epochs=1, data_dir=npz_file.name, width_mult=0.25, quiet=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert evaluate_checkpoint(tmp_path / "m" / "model.pt")[0]["test_accuracy"] >= 0
    raw = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    raw["spec"]["data_dir"] = "gone.npz"  # a checkpoint of the old code, or data moved since
    torch.save(raw, tmp_path / "old.pt")
    with pytest.raises(DataError, match="the checkpoint records the folder gone.npz, which does not exist here"):
        evaluate_checkpoint(tmp_path / "old.pt")
