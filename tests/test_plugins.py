"""A model of the user's own, registered in a plugin: every command and the main job take it by name, its
checkpoints stay weights-only, and the processes a command starts import the same code."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from entroprune.cli import app
from entroprune.data import DATASETS
from entroprune.errors import ConfigError
from entroprune.models import MODELS, build_model
from entroprune.plugins import ENV
from entroprune.search.rewards import REWARDS

runner = CliRunner()

PLUGIN = '''
import torch
import torch.nn as nn

import entroprune as ep


class TinyNet(nn.Module):
    """A concatenation and a strided conv, in no zoo."""

    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(32, 24, 3, padding=1, stride=2), nn.BatchNorm2d(24), nn.ReLU())
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.down(torch.cat([x, self.branch(x)], 1))
        return self.head(x.mean((2, 3)))


@ep.register_model("tinynet")
def tinynet(num_classes, in_channels, width_mult):
    return TinyNet(num_classes, in_channels)


@ep.register_model("not-a-module")
def not_a_module(num_classes, in_channels, width_mult):
    return "a string"
'''


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A plugin file with a module name of its own, and a process state restored afterwards (registries,
    imported modules, sys.path and the environment the plugin loader writes to)."""
    name = f"plugin_{os.getpid()}_{tmp_path.name.replace('-', '_')}"
    path = tmp_path / f"{name}.py"
    path.write_text(PLUGIN)
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = dict(MODELS), dict(DATASETS), dict(REWARDS)
    yield path
    MODELS.clear(), MODELS.update(saved[0])
    DATASETS.clear(), DATASETS.update(saved[1])
    REWARDS.clear(), REWARDS.update(saved[2])
    sys.modules.pop(name, None)


def forget_plugin(path, monkeypatch):
    """As a new process would start: the model unknown, the module not imported, no plugin named."""
    MODELS.pop("tinynet", None), MODELS.pop("not-a-module", None)
    sys.modules.pop(path.stem, None)
    monkeypatch.delenv(ENV, raising=False)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_a_model_of_ones_own_goes_from_train_to_the_main_job(fresh, tmp_path, monkeypatch):
    res = invoke("--plugin", fresh, "train", "--model", "tinynet", "--dataset", "digits", "--epochs", "1",
                 "--out", tmp_path / "base", "--quiet")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    ckpt = tmp_path / "base" / "model.pt"
    assert torch.load(ckpt, weights_only=True)["spec"]["model"] == "tinynet"  # a name, not pickled code

    forget_plugin(fresh, monkeypatch)
    res = invoke("evaluate", ckpt)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "unknown model 'tinynet'" in res.stderr and "--plugin FILE.py" in res.stderr

    res = invoke("--plugin", fresh, "run", "--checkpoint", ckpt, "--quick", "--out-root", tmp_path / "runs", "--quiet")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    run = next((tmp_path / "runs").glob("run-*"))
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["model"] == "tinynet" and ev["rows"][1]["macs"] < ev["rows"][0]["macs"]
    # the fresh timing process unpickled the plugin's class by name: it timed there, not in this process
    assert [r["latency_processes"] for r in ev["rows"]] == [1, 1]
    assert (run / "model.onnx").exists() and ev["uniform_reference"]


def test_a_process_started_with_the_plugin_named_finds_its_model(fresh, monkeypatch):
    """What a data-parallel worker or a library user with $ENTROPRUNE_PLUGINS gets: loaded on first use."""
    forget_plugin(fresh, monkeypatch)
    with pytest.raises(ConfigError, match="unknown model 'tinynet'.*register_model"):
        build_model("tinynet", 10, 1)
    monkeypatch.setenv(ENV, str(fresh))
    assert build_model("tinynet", 10, 1)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="'not-a-module'.*returned str, not an nn.Module"):
        build_model("not-a-module", 10, 1)


@pytest.mark.parametrize("plugin, words", [
    ("{tmp}/missing.py", "plugin {tmp}/missing.py does not exist; pass a .py file or an importable module name"),
    ("{tmp}/broken.py", "plugin {tmp}/broken.py failed to import (RuntimeError: boom); fix it or leave it out"),
    ("no_such_module_xyz", "plugin no_such_module_xyz failed to import (ModuleNotFoundError: No module named"),
    ("{tmp}/takes_vgg.py", "plugin {tmp}/takes_vgg.py: model name 'vgg' is the zoo's; register yours under another name"),
])
def test_a_bad_plugin_is_one_line_before_any_command(fresh, tmp_path, plugin, words):
    (tmp_path / "broken.py").write_text(textwrap.dedent("""
        raise RuntimeError("boom")
    """))
    (tmp_path / "takes_vgg.py").write_text(textwrap.dedent("""
        import entroprune as ep
        ep.register_model("vgg")(lambda num_classes, in_channels, width_mult: None)
    """))
    before = sorted(p.name for p in tmp_path.iterdir())
    res = invoke("--plugin", plugin.format(tmp=tmp_path), "train", "--dataset", "digits", "--out", tmp_path / "out")
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words.format(tmp=tmp_path) in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_plugin_after_the_command_says_where_it_goes(fresh):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "run", "--plugin", str(fresh), "--quick"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "it goes before the command: `entroprune --plugin FILE.py run ...`" in proc.stderr


def test_a_plugin_cannot_take_a_zoo_name(fresh):
    from entroprune import register_model

    with pytest.raises(ConfigError, match="model name 'vgg' is the zoo's; register yours under another name"):
        register_model("vgg")(lambda num_classes, in_channels, width_mult: torch.nn.Identity())
    assert build_model("vgg", 10, 1, 0.25).__class__.__name__ == "VGG"


def test_every_registry_loads_the_environments_plugins_for_a_name_it_lacks(fresh, tmp_path, monkeypatch):
    """Datasets and rewards (the search's and the re-ranking's) are looked up as models are: an unknown name
    imports $ENTROPRUNE_PLUGINS first, and without it the one line says how to register one."""
    from entroprune import SearchConfig
    from entroprune.data import load_dataset
    from entroprune.search.rewards import RewardConfig

    extras = tmp_path / f"extras_{os.getpid()}_{tmp_path.name.replace('-', '_')}.py"
    extras.write_text(textwrap.dedent("""
        import numpy as np
        from entroprune.data import register_dataset
        from entroprune.search.rewards import register_reward

        @register_dataset("noise")
        def noise(data_dir, image_size, in_channels):
            rng = np.random.default_rng(0)
            return rng.random((40, 1, 8, 8), dtype=np.float32), np.arange(40) % 4, None

        @register_reward("sharp", {"entropy"})
        def sharp(config, readings):
            return -2 * readings["entropy"]
    """))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))  # the extras module forgotten afterwards
    checks = {
        "dataset": (lambda: load_dataset("noise", None), "unknown dataset 'noise'", "register_dataset"),
        "reward": (lambda: RewardConfig(kind="sharp").validate(), "unknown reward 'sharp'", "register_reward"),
        "re-ranking": (lambda: SearchConfig(rerank_reward="sharp").validate(), "unknown re-ranking reward 'sharp'",
                       "register_reward"),
    }
    for check, words, register in checks.values():
        with pytest.raises(Exception, match=f"{words}; choose one of .*entroprune.*{register}"):
            check()
    monkeypatch.setenv(ENV, str(extras))
    for check, _, _ in checks.values():
        check()
    assert "noise" in DATASETS and REWARDS["sharp"].needs == {"entropy"}


def test_a_model_whose_forward_fixes_the_batch_is_refused_at_load(fresh, tmp_path):
    """Every stage feeds batches: a forward that reshapes to batch 1 is one line when its checkpoint loads,
    not a traceback in the first stage that batches."""
    from entroprune import ModelSpec, register_model, save_checkpoint
    from entroprune.checkpoint import load_checkpoint
    from entroprune.errors import CheckpointError

    class BatchOne(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            return self.head(self.conv(x).view(1, -1))

    register_model("batchone")(lambda num_classes, in_channels, width_mult: BatchOne())
    spec = ModelSpec("batchone", 10, 1, input_size=[1, 8, 8], mean=[0.0], std=[1.0])
    save_checkpoint(tmp_path / "b.pt", spec, BatchOne())
    with pytest.raises(CheckpointError, match=r"cannot run a batch of the spec's input_size \[1, 8, 8\] .*"
                                              r"the model's forward fixes the batch size"):
        load_checkpoint(tmp_path / "b.pt").build()
    res = invoke("evaluate", tmp_path / "b.pt")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
