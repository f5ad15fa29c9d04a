"""Every command against bad input: exit 2, one readable line, no traceback, nothing
written, inputs unchanged (issue: reliability and security)."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from entroprune.checkpoint import ModelSpec, save_checkpoint
from entroprune.cli import app
from entroprune.models import build_model
from tests.conftest import write_idx

runner = CliRunner()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def world(tmp_path, digits_ckpt, pruned_ckpt, idx_dir):
    """A folder of good and bad inputs; returns a dict of named paths."""
    w = {"tmp": tmp_path, "good": tmp_path / "good.pt"}
    w["good"].write_bytes(digits_ckpt.read_bytes())
    (tmp_path / "pruned.pt").write_bytes(pruned_ckpt.read_bytes())
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "trunc.pt").write_bytes(digits_ckpt.read_bytes()[:2000])
    (tmp_path / "text.pt").write_text("hello, I am not a checkpoint\n")
    (tmp_path / "policy.json").write_text('{"policy": {"features.0": 0.5}}')  # the safe loader reads these as
    (tmp_path / "noise.pt").write_bytes(bytes(range(7, 256)) * 4)  # pickles: "pass --trust-pickle" was its advice
    torch.save(build_model("vgg", 10, 1, 0.25), tmp_path / "module.pt")
    raw = torch.load(digits_ckpt, weights_only=True)
    torch.save({**raw, "spec": {**raw["spec"], "model": "alexnet"}}, tmp_path / "unknown_model.pt")
    torch.save({**raw, "spec": {**raw["spec"], "width_mult": 1.0}}, tmp_path / "mismatch.pt")
    nan_state = {k: (v.clone().fill_(float("nan")) if v.is_floating_point() else v) for k, v in raw["state_dict"].items()}
    torch.save({**raw, "state_dict": nan_state}, tmp_path / "nan.pt")
    torch.save(raw["state_dict"], tmp_path / "weights.pt")  # weights saved by another tool, for `wrap`
    torch.save(nan_state, tmp_path / "nan_weights.pt")
    torch.save({f"{who}.{k}": v for who in ("student", "teacher") for k, v in raw["state_dict"].items()},
               tmp_path / "two_copies.pt")  # a distillation script's whole state: which copy to prune?
    from safetensors.torch import save_file

    save_file(raw["state_dict"], tmp_path / "weights.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "weights.safetensors").read_bytes()[:3000])
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_weights.pt")
    save_checkpoint(tmp_path / "tiny.pt", ModelSpec("vgg", 10, 1, 0.01, "digits", [0.3], [0.3], [1, 8, 8]),
                    build_model("vgg", 10, 1, 0.01))
    seven = ModelSpec(**{**raw["spec"], "num_classes": 7})  # another task's net: a teacher of other outputs
    save_checkpoint(tmp_path / "seven.pt", seven, build_model(seven.model, 7, seven.in_channels, seven.width_mult))
    # datasets
    bad_idx = tmp_path / "bad_idx"
    bad_idx.mkdir()
    for f in idx_dir.iterdir():
        (bad_idx / f.name).write_bytes(f.read_bytes())
    (bad_idx / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    trunc_idx = tmp_path / "trunc_idx"
    trunc_idx.mkdir()
    for f in idx_dir.iterdir():
        (trunc_idx / f.name).write_bytes(f.read_bytes())
    raw_img = gzip.decompress((idx_dir / "train-images-idx3-ubyte.gz").read_bytes())
    (trunc_idx / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw_img[:-50]))
    mism = tmp_path / "mismatch_idx"
    mism.mkdir()
    for f in idx_dir.iterdir():
        (mism / f.name).write_bytes(f.read_bytes())
    write_idx(mism / "train-labels-idx1-ubyte", np.zeros(50, np.uint8))
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    (cifar / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((3, 5), np.uint8), b"labels": [1, 2, 3]}))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    imgs = tmp_path / "imgs"
    for c in ("a", "b"):
        (imgs / c).mkdir(parents=True)
        for i in range(3):
            from PIL import Image

            Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(imgs / c / f"{i}.png")
    (imgs / "a" / "broken.png").write_bytes(b"\x89PNG broken")
    flat = tmp_path / "flat_imgs"
    flat.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(flat / f"{i}.png")
    junk = tmp_path / "junk_imgs"
    for c in ("a", "b"):
        (junk / c).mkdir(parents=True)
        (junk / c / "0.png").write_bytes(b"\x89PNG broken")
    np.savez(tmp_path / "one_class.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.zeros(20, np.int64))
    np.savez(tmp_path / "some_negative.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 3 - 1)
    # policies
    good_groups = ["features.0", "features.3", "features.7", "features.10", "features.14", "features.17"]
    pols = {
        "unknown_group": {"policy": {**{g: 0.5 for g in good_groups}, "nosuch.conv": 0.5}},
        "ratio_high": {"policy": {g: 1.5 for g in good_groups}},
        "ratio_zero": {"policy": {g: 0.0 for g in good_groups}},
        "missing_groups": {"policy": {good_groups[0]: 0.5}},
    }
    for name, pol in pols.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(pol))
    (tmp_path / "notjson.json").write_text("{this is not json")
    (tmp_path / "unknown_key.yaml").write_text("search:\n  epsiodes: 3\n")
    (tmp_path / "wrong_type.yaml").write_text("seed: twelve\n")
    (tmp_path / "bool_number.yaml").write_text("dataset: digits\nsearch:\n  episodes: yes\n")  # pydantic read it as 1 episode
    (tmp_path / "empty_value.yaml").write_text("dataset: ''\nbaseline:\n  train_limit: 256\n")  # was read as no dataset: fashion-mnist
    (tmp_path / "union_value.yaml").write_text("search:\n  round_to: 7.5\n")  # named 'search.round_to.int'
    (tmp_path / "bad_syntax.yaml").write_text("search: [unclosed\n")
    (tmp_path / "reward_name.yaml").write_text("search:\n  reward: accuracy\n")  # the section's kind, not the section
    (tmp_path / "empty_section.yaml").write_text("search:\n")  # YAML reads it as null
    (tmp_path / "zero_workers.yaml").write_text("workers: 0\n")
    (tmp_path / "negative_processes.yaml").write_text("latency_processes: -1\n")
    (tmp_path / "bad_importance.yaml").write_text("search:\n  importance: l3\n")
    (tmp_path / "two_seeds.yaml").write_text("seed: 1\nsearch:\n  seed: 2\n")
    (tmp_path / "latency.yaml").write_text("search:\n  latency_target: 0.5\n")
    (tmp_path / "ray_address_alone.yaml").write_text("ray_address: auto\n")
    (tmp_path / "accuracy_reward.yaml").write_text("search:\n  reward:\n    kind: accuracy\n")
    (tmp_path / "no_distill.yaml").write_text("finetune:\n  distill: false\n")
    (tmp_path / "zero_epochs.yaml").write_text("baseline:\n  epochs: 0\n")
    (tmp_path / "a_file").write_text("x")
    # policies with bad fields, checked where the policy is read
    half = {g: 0.5 for g in good_groups}
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model.pt").write_bytes(digits_ckpt.read_bytes())
    (tmp_path / "half.json").write_text(json.dumps({"policy": half}))
    (tmp_path / "round_str.json").write_text(json.dumps({"policy": half, "round_to": "eight"}))
    (tmp_path / "round_nan.json").write_text('{"policy": ' + json.dumps(half) + ', "round_to": NaN}')
    (tmp_path / "ratio_true.json").write_text(json.dumps({"policy": {g: True for g in good_groups}}))
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    # checkpoints whose spec or pruning record was edited
    spec = raw["spec"]
    for name, change in {"classes_float": {"num_classes": 2.5}, "input_tiny": {"input_size": [1, 2, 2]},
                         "mean_empty": {"mean": [], "std": []}}.items():
        torch.save({**raw, "spec": {**spec, **change}}, tmp_path / f"{name}.pt")
    torch.save({**raw, "pruning": {"counts": {}}}, tmp_path / "no_history.pt")
    torch.save({**raw, "spec": {**spec, "dataset": "mnist", "data_dir": str(tmp_path / "nope")}},
               tmp_path / "mnist_elsewhere.pt")
    torch.save({**raw, "spec": {**spec, "dataset": "imagefolder", "data_dir": str(tmp_path / "flat_imgs")}},
               tmp_path / "unlabelled_spec.pt")
    torch.save({**raw, "pruning": "pruned by hand"}, tmp_path / "pruning_str.pt")
    pruned_raw = torch.load(pruned_ckpt, weights_only=True)  # its original moved away since the pruning
    torch.save({**pruned_raw, "pruning": {**pruned_raw["pruning"], "original": str(tmp_path / "moved.pt")}},
               tmp_path / "orphan.pt")
    # ... and one whose original was retrained in place since (its recorded hashes are another net's)
    torch.save({**pruned_raw, "pruning": {**pruned_raw["pruning"], "original": str(tmp_path / "good.pt"),
                                          "original_sha256": "0" * 64, "original_weights_sha256": "0" * 64}},
               tmp_path / "stale.pt")
    # a search folder whose saved state was cut short, run folders with broken records
    (tmp_path / "cut_state").mkdir()
    (tmp_path / "cut_state" / "search_state.pt").write_bytes(digits_ckpt.read_bytes()[:300])
    (tmp_path / "cut_log").mkdir()
    (tmp_path / "cut_log" / "episodes.jsonl").write_text('{"episode": 0, "finite": true, "reward": -1.0}\n{"epis')
    (tmp_path / "no_rows").mkdir()
    (tmp_path / "no_rows" / "evaluation.json").write_text('{"model": "vgg"}')
    (tmp_path / "bad_export").mkdir()
    (tmp_path / "bad_export" / "evaluation.json").write_text(
        '{"rows": [{"test_accuracy": 90.0}], "export": {"file": "model.onnx", "format": "tflite"}}')
    # an IDX header whose dimensions overflow 64 bits, an image over the pixel limit
    huge = tmp_path / "huge_idx"
    huge.mkdir()
    for f in idx_dir.iterdir():
        (huge / f.name).write_bytes(f.read_bytes())
    (huge / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + b"\xff" * 12 + b"\0" * 64))
    from PIL import Image

    bomb = tmp_path / "bomb_imgs"
    for c in ("a", "b"):
        (bomb / c).mkdir(parents=True)
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(bomb / c / "0.png")
    Image.new("1", (10_000, 5_000)).save(bomb / "a" / "big.png")
    return w


T = "{tmp}"
CASES = {
    "missing checkpoint": ["evaluate", f"{T}/missing.pt"],
    "empty checkpoint": ["evaluate", f"{T}/empty.pt"],
    "empty checkpoint path": ["run", "--checkpoint", "", "--out-root", f"{T}/out"],
    "truncated checkpoint": ["evaluate", f"{T}/trunc.pt"],
    "non-checkpoint file": ["inspect", f"{T}/text.pt"],
    "pickled whole module": ["evaluate", f"{T}/module.pt"],
    "a JSON file as the checkpoint": ["evaluate", f"{T}/policy.json"],
    "random bytes as the checkpoint": ["prune", f"{T}/noise.pt", "--policy", f"{T}/policy.json", "--out", f"{T}/out"],
    "unknown model in spec": ["evaluate", f"{T}/unknown_model.pt"],
    "state_dict mismatching spec": ["evaluate", f"{T}/mismatch.pt"],
    "NaN weights": ["search", f"{T}/nan.pt", "--out", f"{T}/out"],
    "wrong dataset path": ["train", "--dataset", "mnist", "--data-dir", f"{T}/nope", "--out", f"{T}/out"],
    "Fashion-MNIST asked from a folder without it": ["run", "--quick", "--dataset", "fashion-mnist", "--data-dir",
                                                     f"{T}/nope", "--out-root", f"{T}/out"],
    "digits given a data folder": ["run", "--quick", "--data-dir", f"{T}/nope", "--out-root", f"{T}/out"],
    "run folders under a file": ["run", "--quick", "--out-root", f"{T}/good.pt"],
    "search parameter target 0": ["search", f"{T}/good.pt", "--params-target", "0", "--out", f"{T}/out"],
    "run, unreachable parameter target": ["run", "--checkpoint", f"{T}/good.pt", "--params-target", "0.001",
                                          "--out-root", f"{T}/out"],
    "run, negative fine-tune epochs": ["run", "--quick", "--finetune-epochs", "-1", "--out-root", f"{T}/out"],
    "sweep --resume with fine-tune epochs": ["sweep", "--resume", f"{T}/base", "--finetune-epochs", "5"],
    "sweep of one target": ["sweep", "--quick", "--macs-targets", "0.5", "--out-root", f"{T}/out"],
    "sweep of a target twice": ["sweep", "--quick", "--macs-targets", "0.5,0.3,0.5", "--out-root", f"{T}/out"],
    "sweep with a target of 1": ["sweep", "--quick", "--macs-targets", "0.5,1", "--out-root", f"{T}/out"],
    "sweep target above 1": ["sweep", "--quick", "--macs-targets", "0.5,1.5", "--out-root", f"{T}/out"],
    "sweep targets not numbers": ["sweep", "--quick", "--macs-targets", "0.5;0.3", "--out-root", f"{T}/out"],
    "sweep max drop NaN": ["sweep", "--quick", "--max-drop", "nan", "--out-root", f"{T}/out"],
    # refused before any folder exists, not after the runs at the higher targets
    "sweep, its lowest target unreachable": ["sweep", "--checkpoint", f"{T}/good.pt", "--macs-targets", "0.5,0.01",
                                             "--out-root", f"{T}/out"],
    "sweep with a latency target in its config": ["sweep", "--quick", "--config", f"{T}/latency.yaml", "--out-root",
                                                  f"{T}/out"],
    "sweep --resume of a run folder": ["sweep", "--resume", f"{T}/base"],
    "sweep --resume with a seed": ["sweep", "--resume", f"{T}/base", "--seed", "1"],
    "corrupt gzip IDX": ["train", "--dataset", "mnist", "--data-dir", f"{T}/bad_idx", "--out", f"{T}/out"],
    "truncated IDX": ["train", "--dataset", "mnist", "--data-dir", f"{T}/trunc_idx", "--out", f"{T}/out"],
    "image/label count mismatch": ["train", "--dataset", "mnist", "--data-dir", f"{T}/mismatch_idx",
                                   "--out", f"{T}/out"],
    "corrupt CIFAR pickle": ["train", "--dataset", "cifar10", "--data-dir", f"{T}/cifar", "--out", f"{T}/out"],
    "corrupt npz": ["train", "--dataset", "npz", "--data-dir", f"{T}/bad.npz", "--out", f"{T}/out"],
    "no readable image": ["train", "--dataset", "imagefolder", "--data-dir", f"{T}/junk_imgs", "--out", f"{T}/out"],
    "single-class dataset": ["train", "--dataset", "npz", "--data-dir", f"{T}/one_class.npz", "--out", f"{T}/out"],
    "labels partly negative": ["train", "--dataset", "npz", "--data-dir", f"{T}/some_negative.npz", "--out",
                               f"{T}/out"],
    "unknown dataset": ["train", "--dataset", "nosuch", "--out", f"{T}/out"],
    "unknown model": ["train", "--model", "nosuch", "--dataset", "digits", "--out", f"{T}/out"],
    "policy with unknown group": ["prune", f"{T}/good.pt", "--policy", f"{T}/unknown_group.json", "--out", f"{T}/out"],
    "policy ratio > 1": ["prune", f"{T}/good.pt", "--policy", f"{T}/ratio_high.json", "--out", f"{T}/out"],
    "policy ratio 0": ["prune", f"{T}/good.pt", "--policy", f"{T}/ratio_zero.json", "--out", f"{T}/out"],
    "policy missing groups": ["prune", f"{T}/good.pt", "--policy", f"{T}/missing_groups.json", "--out", f"{T}/out"],
    "policy not JSON": ["prune", f"{T}/good.pt", "--policy", f"{T}/notjson.json", "--out", f"{T}/out"],
    "flops target 0": ["search", f"{T}/good.pt", "--macs-target", "0", "--out", f"{T}/out"],
    "flops target negative": ["search", f"{T}/good.pt", "--macs-target", "-0.5", "--out", f"{T}/out"],
    "flops target > 1": ["search", f"{T}/good.pt", "--macs-target", "1.5", "--out", f"{T}/out"],
    "MACs target 1 without a latency target": ["search", f"{T}/good.pt", "--macs-target", "1", "--out", f"{T}/out"],
    "run from a checkpoint, unreachable MACs target": ["run", "--checkpoint", f"{T}/good.pt", "--macs-target", "0.01",
                                                       "--out-root", f"{T}/out"],
    "run of the zoo baseline, unreachable MACs target": ["run", "--quick", "--macs-target", "0.01", "--out-root",
                                                         f"{T}/out"],
    "unreachable flops target": ["search", f"{T}/good.pt", "--macs-target", "0.01", "--min-keep", "0.5",
                                 "--out", f"{T}/out"],
    "model with nothing to prune": ["search", f"{T}/tiny.pt", "--out", f"{T}/out"],
    "unwritable output directory": ["train", "--dataset", "digits", "--epochs", "1", "--out", f"{T}/a_file/sub"],
    "config with unknown key": ["run", "--config", f"{T}/unknown_key.yaml", "--out-root", f"{T}/out"],
    "config with wrong type": ["run", "--config", f"{T}/wrong_type.yaml", "--out-root", f"{T}/out"],
    "config with a boolean for a number": ["run", "--config", f"{T}/bool_number.yaml", "--out-root", f"{T}/out"],
    "config with an empty dataset": ["run", "--config", f"{T}/empty_value.yaml", "--out-root", f"{T}/out"],
    "config with a fraction for round_to": ["run", "--config", f"{T}/union_value.yaml", "--out-root", f"{T}/out"],
    "config with bad YAML": ["run", "--config", f"{T}/bad_syntax.yaml", "--out-root", f"{T}/out"],
    "config with a reward name for its section": ["run", "--config", f"{T}/reward_name.yaml", "--out-root", f"{T}/out"],
    "config with an empty section": ["run", "--config", f"{T}/empty_section.yaml", "--out-root", f"{T}/out"],
    "config with two seeds": ["run", "--config", f"{T}/two_seeds.yaml", "--out-root", f"{T}/out"],
    "config with 0 workers": ["run", "--config", f"{T}/zero_workers.yaml", "--out-root", f"{T}/out"],
    "config with latency_processes -1": ["run", "--config", f"{T}/negative_processes.yaml", "--out-root", f"{T}/out"],
    "evaluate --processes -1": ["evaluate", f"{T}/good.pt", "--latency", "--processes", "-1"],
    "config with unknown channel ranking": ["run", "--config", f"{T}/bad_importance.yaml", "--out-root", f"{T}/out"],
    "config with ray_address, 1 worker": ["run", "--config", f"{T}/ray_address_alone.yaml", "--out-root",
                                          f"{T}/out"],
    "unknown export format": ["export", f"{T}/good.pt", "--format", "tflite", "--out", f"{T}/out/m.x"],
    "export format int8": ["export", f"{T}/good.pt", "--format", "int8", "--out", f"{T}/out/m.onnx"],
    "missing run folder": ["report", f"{T}/no_run"],
    "resume with nothing to resume": ["search", f"{T}/good.pt", "--resume", "--out", f"{T}/out"],
    "unknown agent": ["search", f"{T}/good.pt", "--agent", "sb3:dqn", "--out", f"{T}/out"],
    "unknown entropy variant": ["search", f"{T}/good.pt", "--variant", "renyi", "--out", f"{T}/out"],
    "finetune missing checkpoint": ["finetune", f"{T}/missing.pt", "--out", f"{T}/out"],
    "finetune from a teacher of other classes": ["finetune", f"{T}/pruned.pt", "--teacher", f"{T}/seven.pt", "--epochs",
                                                 "1", "--out", f"{T}/out"],
    "negative seed": ["evaluate", f"{T}/good.pt", "--seed", "-1"],
    "seed above 2**63": ["evaluate", f"{T}/good.pt", "--seed", str(2**64)],
    "negative threads": ["evaluate", f"{T}/good.pt", "--threads", "-1"],
    "evaluate batch size 0": ["evaluate", f"{T}/good.pt", "--batch-size", "0"],
    "inspect calib size 0": ["inspect", f"{T}/good.pt", "--calib-size", "0"],
    "train limit 0": ["train", "--model", "vgg", "--dataset", "digits", "--train-limit", "0", "--out", f"{T}/out"],
    "evaluate --json onto its own checkpoint": ["evaluate", f"{T}/good.pt", "--json", f"{T}/good.pt"],
    "evaluate --json onto an existing file": ["evaluate", f"{T}/good.pt", "--json", f"{T}/text.pt"],
    "evaluate --json under a file": ["evaluate", f"{T}/good.pt", "--json", f"{T}/text.pt/r.json"],
    "search band not a number": ["search", f"{T}/good.pt", "--band", "wide", "--out", f"{T}/out"],
    "search band above 1": ["search", f"{T}/good.pt", "--band", "1.5", "--out", f"{T}/out"],
    "search round-to not a step": ["search", f"{T}/good.pt", "--round-to", "eight", "--out", f"{T}/out"],
    "search round-to zero": ["search", f"{T}/good.pt", "--round-to", "0", "--out", f"{T}/out"],
    "search uniform margin NaN": ["search", f"{T}/good.pt", "--uniform-margin", "nan", "--out", f"{T}/out"],
    "search recovery on no images": ["search", f"{T}/good.pt", "--recovery-images", "0", "--no-rerank-refit",
                                     "--out", f"{T}/out"],
    "search unknown re-ranking reward": ["search", f"{T}/good.pt", "--rerank-reward", "vibes", "--out", f"{T}/out"],
    "search unknown channel ranking": ["search", f"{T}/good.pt", "--importance", "l3", "--out", f"{T}/out"],
    "policy round_to a string": ["prune", f"{T}/good.pt", "--policy", f"{T}/round_str.json", "--out", f"{T}/out"],
    "policy round_to NaN": ["prune", f"{T}/good.pt", "--policy", f"{T}/round_nan.json", "--out", f"{T}/out"],
    "refit norms without the refit": ["prune", f"{T}/good.pt", "--policy", f"{T}/policy.json", "--out", f"{T}/out",
                                      "--no-refit", "--refit-norms"],
    "policy ratio true": ["prune", f"{T}/good.pt", "--policy", f"{T}/ratio_true.json", "--out", f"{T}/out"],
    "policy nested 200k deep": ["prune", f"{T}/good.pt", "--policy", f"{T}/deep.json", "--out", f"{T}/out"],
    "prune --out over its own checkpoint": ["prune", f"{T}/base/model.pt", "--policy", f"{T}/half.json",
                                            "--out", f"{T}/base", "--force"],
    "export --out over its own checkpoint": ["export", f"{T}/good.pt", "--out", f"{T}/good.pt", "--force"],
    "spec num_classes not an integer": ["evaluate", f"{T}/classes_float.pt"],
    "spec input_size too small": ["evaluate", f"{T}/input_tiny.pt"],
    "spec mean and std empty": ["inspect", f"{T}/mean_empty.pt"],
    "pruned checkpoint without history": ["evaluate", f"{T}/no_history.pt"],
    "finetune, the original moved away": ["finetune", f"{T}/orphan.pt", "--epochs", "1", "--out", f"{T}/out"],
    "evaluate, the original moved away": ["evaluate", f"{T}/orphan.pt"],
    "evaluate --original another model": ["evaluate", f"{T}/orphan.pt", "--original", f"{T}/tiny.pt"],
    "evaluate, the original retrained since": ["evaluate", f"{T}/stale.pt"],
    "finetune, the original retrained since": ["finetune", f"{T}/stale.pt", "--epochs", "1", "--out", f"{T}/out"],
    "run from a missing checkpoint": ["run", "--checkpoint", f"{T}/missing.pt", "--out-root", f"{T}/out"],
    "run MACs target > 1": ["run", "--checkpoint", f"{T}/good.pt", "--macs-target", "1.5", "--out-root", f"{T}/out"],
    "run latency target NaN": ["run", "--latency-target", "nan", "--out-root", f"{T}/out"],
    "run from a pickled module": ["run", "--checkpoint", f"{T}/module.pt", "--out-root", f"{T}/out"],
    "run from a pruned checkpoint": ["run", "--checkpoint", f"{T}/pruned.pt", "--out-root", f"{T}/out"],
    "run from a checkpoint whose dataset is gone": ["run", "--checkpoint", f"{T}/mnist_elsewhere.pt",
                                                     "--out-root", f"{T}/out"],
    "run on unlabelled images with the accuracy reward": ["run", "--checkpoint", f"{T}/unlabelled_spec.pt",
                                                           "--config", f"{T}/accuracy_reward.yaml",
                                                           "--out-root", f"{T}/out"],
    "run on unlabelled images without distillation": ["run", "--checkpoint", f"{T}/unlabelled_spec.pt",
                                                       "--config", f"{T}/no_distill.yaml", "--out-root", f"{T}/out"],
    "pruning record a string": ["finetune", f"{T}/pruning_str.pt", "--out", f"{T}/out"],
    "truncated search state on resume": ["search", f"{T}/good.pt", "--resume", "--out", f"{T}/cut_state"],
    "report of a truncated episode log": ["report", f"{T}/cut_log"],
    "report of evaluation.json without rows": ["report", f"{T}/no_rows"],
    "report of evaluation.json with a malformed export record": ["report", f"{T}/bad_export"],
    "IDX dimensions overflowing 64 bits": ["train", "--dataset", "mnist", "--data-dir", f"{T}/huge_idx",
                                           "--out", f"{T}/out"],
    "image over the pixel limit": ["train", "--dataset", "imagefolder", "--data-dir", f"{T}/bomb_imgs",
                                   "--out", f"{T}/out"],
    "search --out inside its image folder": ["search", f"{T}/good.pt", "--dataset", "imagefolder", "--data-dir",
                                             f"{T}/imgs", "--out", f"{T}/imgs/run"],
    "run folders inside the checkpoint's image folder": ["run", "--checkpoint", f"{T}/unlabelled_spec.pt", "--quick",
                                                         "--out-root", f"{T}/flat_imgs/runs"],
    "train --out inside its data folder": ["train", "--dataset", "mnist", "--data-dir", f"{T}/bad_idx", "--out",
                                           f"{T}/bad_idx/model"],
    "finetune --out its checkpoint's folder, --force": ["finetune", f"{T}/base/model.pt", "--out", f"{T}/base",
                                                        "--force"],
    "accuracy reward on unlabelled images": ["search", f"{T}/good.pt", "--dataset", "imagefolder", "--data-dir",
                                             f"{T}/flat_imgs", "--reward", "accuracy", "--out", f"{T}/out"],
    "evaluate on unlabelled images": ["evaluate", f"{T}/good.pt", "--dataset", "imagefolder", "--data-dir",
                                      f"{T}/flat_imgs"],
    "accuracy weight NaN": ["search", f"{T}/good.pt", "--reward", "combined", "--accuracy-weight", "nan",
                            "--out", f"{T}/out"],
    "threads beyond any machine": ["evaluate", f"{T}/good.pt", "--threads", "100000"],
    "report of a checkpoint file": ["report", f"{T}/good.pt"],
    "search --out an existing file": ["search", f"{T}/good.pt", "--out", f"{T}/a_file"],
    "run training a baseline on unlabelled images": ["run", "--quick", "--dataset", "imagefolder", "--data-dir",
                                                     f"{T}/flat_imgs", "--out-root", f"{T}/out"],
    "train --epochs 0": ["train", "--epochs", "0", "--out", f"{T}/out"],
    "run with baseline.epochs 0": ["run", "--config", f"{T}/zero_epochs.yaml", "--out-root", f"{T}/out"],
    "export --out where no folder can be made": ["export", f"{T}/good.pt", "--out", "/proc/entroprune/m.onnx"],
    "search --out the checkpoint itself": ["search", f"{T}/good.pt", "--out", f"{T}/good.pt"],
    "export --out a folder, --force": ["export", f"{T}/good.pt", "--out", f"{T}/base", "--force"],
    "export --out with a suffix of no format": ["export", f"{T}/good.pt", "--out", f"{T}/m.tflite"],
    "wrap weights of another model": ["wrap", f"{T}/weights.pt", "--model", "resnet20", "--dataset", "digits",
                                      "--out", f"{T}/out.pt"],
    "wrap weights at another width": ["wrap", f"{T}/weights.pt", "--model", "vgg", "--dataset", "digits",
                                      "--out", f"{T}/out.pt"],
    "wrap a pickled module": ["wrap", f"{T}/module.pt", "--model", "vgg", "--dataset", "digits", "--out",
                              f"{T}/out.pt"],
    "wrap an entroprune checkpoint": ["wrap", f"{T}/good.pt", "--model", "vgg", "--dataset", "digits", "--out",
                                      f"{T}/out.pt"],
    "wrap with a mean per channel too many": ["wrap", f"{T}/weights.pt", "--model", "vgg", "--dataset", "digits",
                                              "--width-mult", "0.5", "--mean", "0.1,0.2", "--out", f"{T}/out.pt"],
    "wrap NaN weights": ["wrap", f"{T}/nan_weights.pt", "--model", "vgg", "--dataset", "digits", "--width-mult",
                         "0.5", "--out", f"{T}/out.pt"],
    "wrap two copies of the weights": ["wrap", f"{T}/two_copies.pt", "--model", "vgg", "--dataset", "digits",
                                       "--width-mult", "0.5", "--out", f"{T}/out.pt"],
    "wrap a truncated safetensors file": ["wrap", f"{T}/cut.safetensors", "--model", "vgg", "--dataset", "digits",
                                          "--width-mult", "0.5", "--out", f"{T}/out.pt"],
    "a safetensors file as the checkpoint": ["evaluate", f"{T}/weights.safetensors"],
    "wrap a JSON file": ["wrap", f"{T}/policy.json", "--model", "vgg", "--dataset", "digits", "--out", f"{T}/out.pt"],
    "wrap a file without weights": ["wrap", f"{T}/no_weights.pt", "--model", "vgg", "--dataset", "digits", "--out",
                                    f"{T}/out.pt"],
    "train --out named as a checkpoint": ["train", "--dataset", "digits", "--out", f"{T}/d.pt"],
    "prune --out named as a checkpoint": ["prune", f"{T}/base/model.pt", "--policy", f"{T}/half.json",
                                          "--out", f"{T}/p.pt"],
    "cuda without a GPU": ["evaluate", f"{T}/good.pt", "--device", "cuda"] if not torch.cuda.is_available()
    else ["evaluate", f"{T}/missing.pt"],
}


# What each refusal must say: a refusal by the wrong check fails the case.
EXPECT = {
    'missing checkpoint': 'missing.pt does not exist',
    'empty checkpoint': 'empty.pt is empty',
    "empty checkpoint path": "the checkpoint path is empty (or '.', this folder); pass the .pt checkpoint file",
    'truncated checkpoint': 'trunc.pt is not a readable checkpoint',
    'non-checkpoint file': 'text.pt is not a PyTorch checkpoint (torch.save writes a zip archive)',
    'a JSON file as the checkpoint': 'policy.json is not a PyTorch checkpoint',
    'random bytes as the checkpoint': 'noise.pt is not a PyTorch checkpoint',
    'pickled whole module': 'contains pickled Python objects',
    'unknown model in spec': "names unknown model 'alexnet'",
    'state_dict mismatching spec': "checkpoint weights do not match model 'vgg'",
    'NaN weights': 'contains NaN or Inf',
    'wrong dataset path': 'mnist IDX files not found',
    'Fashion-MNIST asked from a folder without it': 'fashion-mnist IDX files not found in',
    'digits given a data folder': 'digits is built in (scikit-learn) and reads no folder',
    'run folders under a file': "good.pt is a file; choose another 'out_root'",
    'corrupt gzip IDX': 'bad_idx/train-images-idx3-ubyte.gz',
    'truncated IDX': 'but its header promises',
    'image/label count mismatch': 'holds 60 images but',
    'corrupt CIFAR pickle': 'expected rows of 3072 bytes',
    'corrupt npz': 'as .npz',
    'no readable image': 'no readable image in T/junk_imgs',
    'single-class dataset': 'has a single class',
    # -1 marks a set without labels: a few of them read the whole set as unlabelled ("needs one sub-folder per class")
    'labels partly negative': '7 of 20 training labels are negative and the rest class indices',
    'unknown dataset': "unknown dataset 'nosuch'",
    'unknown model': "unknown model 'nosuch'",
    'policy with unknown group': 'policy names unknown groups',
    'policy ratio > 1': 'keep ratio of features.0 is 1.5',
    'policy ratio 0': 'keep ratio of features.0 is 0.0',
    'policy missing groups': 'policy lacks groups',
    'policy not JSON': 'is not valid JSON',
    'flops target 0': 'must lie in (0, 1] (fraction of MACs kept), got 0.0',
    'flops target negative': 'got -0.5',
    'flops target > 1': 'got 1.5',
    "MACs target 1 without a latency target": "--macs-target 1 keeps every MAC and no --latency-target or "
                                              "--params-target below 1 bounds the time or the size, so there is "
                                              "nothing to prune",
    'unreachable flops target': '--macs-target 0.01 is unreachable',
    # refused before the run folder exists (the search found it after the baseline's training, leaving one)
    "run from a checkpoint, unreachable MACs target": "'search.macs_target' 0.01 is unreachable",
    "run of the zoo baseline, unreachable MACs target": "'search.macs_target' 0.01 is unreachable",
    'model with nothing to prune': 'no prunable channel group',
    'unwritable output directory': 'is not writable',
    'config with unknown key': "config key 'search.epsiodes': Unexpected keyword argument; did you mean "
                               "'search.episodes'? Fix or remove it",
    'config with wrong type': "config key 'seed'",
    'config with a boolean for a number': "config key 'search.episodes' must be a number, got true",
    'config with an empty dataset': "'dataset' is empty; give it a value, or leave it out for its default",
    'config with a fraction for round_to': "config key 'search.round_to': Input should be a valid integer",
    'config with bad YAML': 'is not valid YAML',
    'config with a reward name for its section': "config key 'search.reward': Input should be a dictionary or an "
                                                 "instance of RewardConfig; it is a section of keys: write "
                                                 "`reward: {kind: accuracy}`",
    'config with an empty section': "config key 'search': Input should be a dictionary or an instance of SearchConfig; "
                                    "it is a section of keys, or leave it out for its defaults",
    'config with two seeds': "config key 'search.seed' (2) differs",
    'config with 0 workers': "config key 'workers'",
    "config with latency_processes -1": "config key 'latency_processes': Input should be greater than or equal to 0",
    "evaluate --processes -1": "--processes must be >= 0 (0: time in this process), got -1",
    'config with unknown channel ranking': "'search.importance' must be one of l1, l2, auto (the channel ranking), got 'l3'",
    'config with ray_address, 1 worker': "'ray_address' needs 'workers' >= 2",
    'unknown export format': "unknown export format 'tflite'",
    'export format int8': "choose one of onnx, torchscript, pt2 (int8 is ONNX quantised: pass --int8)",
    'missing run folder': 'no_run does not exist',
    'resume with nothing to resume': 'nothing to resume in',
    'unknown agent': "unknown agent 'sb3:dqn'",
    'unknown entropy variant': "unknown entropy variant 'renyi'",
    'finetune missing checkpoint': 'missing.pt does not exist',
    'finetune from a teacher of other classes': "the teacher's outputs are shaped (7,), the model's (10,): distil from "
                                                "the unpruned net this one was pruned from",
    'negative seed': 'seed must be an integer in [0, 2**63), got -1',
    'seed above 2**63': 'seed must be an integer in [0, 2**63)',
    'negative threads': 'threads must be an integer >= 0',
    'evaluate batch size 0': '--batch-size must be >= 1, got 0',
    'inspect calib size 0': '--calib-size must be >= 1, got 0',
    'train limit 0': '--train-limit must be >= 1',
    'evaluate --json onto its own checkpoint': 'is one of the inputs',
    'evaluate --json onto an existing file': 'already exists; pass --force',
    'evaluate --json under a file': 'is a file, not a folder',
    'search band not a number': '--band must be a number',
    'search band above 1': 'band must lie in [0, 1]',
    'search round-to not a step': "--round-to must be an integer (channels) or 'auto'",
    'search round-to zero': 'round-to must be an integer from 1 to 4096',
    'search uniform margin NaN': 'uniform_margin must lie in [0, 10)',
    'search recovery on no images': '--recovery-images 0 would make the recovery distil on the calibration images',
    'search unknown re-ranking reward': "unknown re-ranking reward 'vibes'",
    'search unknown channel ranking': "--importance must be one of l1, l2, auto (the channel ranking), got 'l3'",
    "policy round_to a string": "'round_to' must be an integer from 1 to 4096, got 'eight'",
    "policy round_to NaN": "'round_to' must be an integer from 1 to 4096, got nan",
    "refit norms without the refit": "--refit-norms rescales the filters the refit fits, and nothing is refitted; "
                                     "set --refit too",
    "policy ratio true": "keep ratio of features.0 is True",
    "policy nested 200k deep": "nested too deeply",
    "prune --out over its own checkpoint": "would overwrite the checkpoint being pruned",
    "export --out over its own checkpoint": "--out T/good.pt is one of the inputs",
    "spec num_classes not an integer": "num_classes must be a positive integer, got 2.5",
    "spec input_size too small": "cannot run a batch of the spec's input_size [1, 2, 2]",
    "spec mean and std empty": "mean must hold 1 finite numbers",
    "pruned checkpoint without history": "pruning record needs a 'history' list",
    "finetune, the original moved away": "the original checkpoint T/moved.pt (the teacher --distill fine-tunes "
                                         "from) is gone; pass --teacher (a path) or --no-distill",
    "evaluate, the original moved away": "the original checkpoint T/moved.pt is gone; pass --original (a path)",
    # the teacher or reference would silently be another net than the one pruned
    "evaluate, the original retrained since": "the original checkpoint T/good.pt has changed since the pruning read it "
                                              "(retrained or overwritten?); to use it anyway, or the one it was pruned "
                                              "from, pass --original (a path)",
    "finetune, the original retrained since": "the original checkpoint T/good.pt (the teacher --distill fine-tunes "
                                              "from) has changed since the pruning read it",
    # another net's reductions would be read as this one's (1.3x for a 5x cut)
    "evaluate --original another model": "T/tiny.pt is not the model T/orphan.pt was pruned from: it is vgg at width "
                                          "0.01",
    "run from a missing checkpoint": "missing.pt does not exist",
    "search parameter target 0": "--params-target must lie in (0, 1] (fraction of the parameters kept), got 0.0",
    "run, unreachable parameter target": "'search.params_target' 0.001 is unreachable: the smallest policy the search "
                                         "space allows keeps",
    "run, negative fine-tune epochs": "config key 'finetune': epochs must be >= 0, got -1",
    "sweep --resume with fine-tune epochs": "--resume continues a sweep with the settings in its config.yaml and "
                                            "sweep.json; drop --finetune-epochs",
    "sweep of one target": "--macs-targets takes at least two targets to compare, got [0.5]",
    "sweep of a target twice": "--macs-targets names a target twice (0.5, 0.3, 0.5)",
    "sweep with a target of 1": "--macs-targets 1 keeps every MAC and no 'search.latency_target' or "
                                "'search.params_target' below 1 bounds the time or the size",
    "sweep target above 1": "--macs-targets holds fractions of the MACs to keep, each in (0, 1], got 1.5",
    "sweep targets not numbers": "--macs-targets takes numbers separated by commas, one fraction of the MACs per run",
    "sweep max drop NaN": "--max-drop is the accuracy points the recommended net may lose, a number >= 0, got nan",
    "sweep, its lowest target unreachable": "--macs-targets 0.01 is unreachable",
    "sweep with a latency target in its config": "a sweep varies the MACs target alone; drop 'search.latency_target'",
    "sweep --resume of a run folder": "T/base holds no sweep to resume",
    "sweep --resume with a seed": "--resume continues a sweep with the settings in its config.yaml and sweep.json; drop --seed",
    "run MACs target > 1": "--macs-target must lie in (0, 1] (the fraction kept), got 1.5",
    "run latency target NaN": "--latency-target must lie in (0, 1] (the fraction kept), got nan",
    "run from a pickled module": "the main job reads checkpoints only with weights_only=True",
    "run from a pruned checkpoint": "pruned.pt is already pruned; run on the original",
    "run from a checkpoint whose dataset is gone": "mnist IDX files not found",
    "run on unlabelled images with the accuracy reward": "has no labels, and the accuracy reward needs them",
    "run training a baseline on unlabelled images": "has no labels, and the zoo baseline trains on them",
    "train --epochs 0": "--epochs must be >= 1 to train a baseline, got 0",
    "run with baseline.epochs 0": "config key 'baseline.epochs' must be >= 1 to train a baseline",
    "export --out where no folder can be made": "--out /proc/entroprune/m.onnx: output directory /proc/entroprune "
                                                 "is not writable",
    "run on unlabelled images without distillation": "has no labels: the fine-tune must distil from the original",
    "pruning record a string": "its pruning record needs",
    "truncated search state on resume": "cut_state/search_state.pt is unreadable",
    "report of a truncated episode log": "episodes.jsonl line 2 is not an episode record",
    "report of evaluation.json without rows": "lacks its 'rows'",
    "report of evaluation.json with a malformed export record": "has a malformed 'export' record",
    "IDX dimensions overflowing 64 bits": "promises 79228162458924105385300197375",
    "image over the pixel limit": "10000x5000 pixels, over entroprune's limit",
    "search --out inside its image folder": "imgs/run lies inside the input folder T/imgs",
    "run folders inside the checkpoint's image folder": "'out_root' T/flat_imgs/runs lies inside the input folder "
                                                        "T/flat_imgs",
    "train --out inside its data folder": "bad_idx/model lies inside the input folder T/bad_idx",
    "finetune --out its checkpoint's folder, --force": "would overwrite the input checkpoint",
    "accuracy reward on unlabelled images": "the accuracy reward needs labelled validation images",
    "evaluate on unlabelled images": "has no labels, and test accuracy needs them",
    "accuracy weight NaN": "--accuracy-weight must be a finite number, got nan",
    "threads beyond any machine": "threads must be at most",
    "report of a checkpoint file": "good.pt is a file, not a run folder",
    "search --out an existing file": "a_file is a file; choose another --out",
    "search --out the checkpoint itself": "good.pt is a file; choose another --out",
    "export --out a folder, --force": "--out T/base is a folder; give a file name",
    "export --out with a suffix of no format": "entroprune writes onnx (*.onnx), torchscript (*.ts), pt2 (*.pt2), "
                                               "not .tflite; name the file by one of those suffixes, or pass --format",
    "wrap weights of another model": "weights.pt does not fit model 'resnet20' built for 10 classes and 1 input "
                                     "channel(s) at width 1.0 (missing conv1.weight",
    "wrap weights at another width": "other shapes: features.0.weight [16, 1, 3, 3] (the model's [32, 1, 3, 3])",
    "wrap a pickled module": "module.pt holds pickled Python objects (a whole module?), which can run code when "
                             "loaded; save its weights instead",
    "wrap an entroprune checkpoint": "good.pt is an entroprune checkpoint already",
    "wrap with a mean per channel too many": "--mean needs 1 finite number(s) (one per input channel of digits), "
                                             "got [0.1, 0.2]",
    "wrap NaN weights": "contains NaN or Inf; retrain the model or restore its weights",
    "wrap two copies of the weights": "two_copies.pt holds 2 copies of the model's weights (under 'student.', "
                                      "'teacher.'); save the one to prune alone",
    "wrap a truncated safetensors file": "cut.safetensors is not a readable safetensors file (",
    "a safetensors file as the checkpoint": "weights.safetensors holds weights in the safetensors format, not an "
                                            "entroprune checkpoint; make one of them with `entroprune wrap`",
    "wrap a JSON file": "policy.json is not a PyTorch checkpoint",
    "wrap a file without weights": "no_weights.pt holds a dict of 'epoch', 'lr', not a state dict",
    "train --out named as a checkpoint": "output directory T/d.pt is named as a .pt file, but --out is the folder "
                                         "its files are written into; pass --out T/d",
    "prune --out named as a checkpoint": "output directory T/p.pt is named as a .pt file",
    "cuda without a GPU": "no CUDA GPU is available" if not torch.cuda.is_available() else "does not exist",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(world, case):
    tmp = world["tmp"]
    args = [a.replace(T, str(tmp)) for a in CASES[case]]
    before = snapshot(tmp)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.stdout, res.stderr, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert EXPECT[case] in lines[0].replace(str(tmp), "T"), (EXPECT[case], lines[0])
    assert "Traceback" not in res.stderr + res.stdout
    assert snapshot(tmp) == before  # nothing written, nothing changed
    assert not (tmp / "out").exists()


def test_pickle_message_names_opt_in_flag(world):
    res = runner.invoke(app, ["evaluate", str(world["tmp"] / "module.pt")])
    assert "--trust-pickle" in res.stderr and "arbitrary code" in res.stderr
    # trusted, a whole module still has no spec to rebuild it from: the message names the API that takes it
    import entroprune

    res = runner.invoke(app, ["evaluate", str(world["tmp"] / "module.pt"), "--trust-pickle"])
    assert res.exit_code == 2 and "entroprune.search_module" in res.stderr
    assert all(hasattr(entroprune, fn) for fn in ("search_module", "prune_module", "finetune_module"))


def test_every_api_a_message_names_exists():
    """An error message that sends the user to entroprune.X names a function the package exports."""
    import re

    import entroprune

    src = Path(entroprune.__file__).parent
    named = {m for f in src.rglob("*.py") for m in re.findall(r"(?<![.\w])entroprune\.([a-z_]+)", f.read_text())}
    modules = {p.stem for p in src.rglob("*.py")} | {p.name for p in src.iterdir() if p.is_dir()}
    missing = sorted(n for n in named - modules if not hasattr(entroprune, n))
    assert not missing, missing


def test_malicious_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"format": "entroprune-checkpoint", "payload": Evil()}, tmp_path / "evil.pt")
    for cmd in (["evaluate"], ["inspect"], ["search"], ["export"]):
        res = runner.invoke(app, [*cmd, str(tmp_path / "evil.pt")])
        assert res.exit_code == 2
        assert not marker.exists()


def test_every_case_is_refused_by_its_own_check():
    """Each case names what it expects to read, and no two cases expect the same message from one command."""
    assert set(EXPECT) == set(CASES)
    pairs = {(CASES[c][0], EXPECT[c]) for c in CASES}
    assert len(pairs) >= len(CASES) - 2  # "missing checkpoint" is the same check for evaluate and finetune


def test_second_search_on_the_same_folder_is_refused(world):
    """Two searches into one --out would write every episode twice into one log: the second is refused."""
    import fcntl

    out = world["tmp"] / "busy"
    out.mkdir()
    with open(out / ".entroprune.lock", "a+") as held:  # what a running search holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(world["tmp"])
        res = runner.invoke(app, ["search", str(world["good"]), "--out", str(out), "--episodes", "3"])
        assert res.exit_code == 2 and "another entroprune process is writing a search" in res.stderr
        assert snapshot(world["tmp"]) == before


def test_config_yaml_aliases_and_duplicate_keys_are_refused(world):
    tmp = world["tmp"]
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"
    (tmp / "bomb.yaml").write_text(bomb)
    (tmp / "dup.yaml").write_text("seed: 1\nseed: 2\n")
    (tmp / "late.yaml").write_text("export_format: tflite\n")
    (tmp / "ddpg.yaml").write_text("search:\n  ddpg: {learning_rate: 0.1}\n")
    (tmp / "ts_batch.yaml").write_text("export_format: torchscript\nexport_batch: 8\n")
    (tmp / "opset.yaml").write_text("export_opset: 7\n")
    (tmp / "int8.yaml").write_text("export_format: pt2\nexport_int8: true\nexport_opset: 12\n")
    (tmp / "px.yaml").write_text("dataset: digits\nbaseline:\n  image_size: 32\n")
    expected = {"bomb.yaml": "aliases", "dup.yaml": "appears twice", "late.yaml": "export_format",
                "ddpg.yaml": "unknown DDPG setting", "ts_batch.yaml": "takes any batch; leave 'export_batch' out",
                "opset.yaml": "'export_opset' must lie in 9-20",
                "int8.yaml": "an int8 export needs 'export_opset' >= 13",
                "px.yaml": "'baseline.image_size' applies to image folders (imagefolder); digits has its own size"}
    for name, words in expected.items():
        before = snapshot(tmp)
        res = runner.invoke(app, ["run", "--quick", "--config", str(tmp / name), "--out-root", str(tmp / "runs")])
        assert res.exit_code == 2 and words in res.stderr, (name, res.stderr)
        assert snapshot(tmp) == before and not (tmp / "runs").exists()  # no half-made run folder
