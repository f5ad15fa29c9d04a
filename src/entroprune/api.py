"""The Python API behind the CLI: each function is one pipeline stage with the CLI's defaults."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import Checkpoint, ModelSpec, load_checkpoint, save_checkpoint
from .data import DataBundle, load_dataset
from .errors import ConfigError, DataError
from .models import build_model, min_input_size
from .structure import count_macs_params
from .train import TrainConfig, evaluate, train_model
from .utils import check_writable_dir, write_json


def load_data_for_spec(spec: ModelSpec, dataset: str | None = None,
                       data_dir: str | Path | None = None, **kwargs: Any) -> DataBundle:
    """The dataset a checkpoint was trained on (or another), normalised as the model expects."""
    name = dataset or spec.dataset
    folder = data_dir if data_dir is not None else (spec.data_dir if name == spec.dataset else None)
    kwargs.setdefault("seed", spec.split_seed)
    data = load_dataset(name, folder, min_size=spec.input_size[1], **kwargs)
    if data.in_channels != spec.in_channels:
        raise DataError(f"dataset {name} has {data.in_channels}-channel images but the model "
                        f"expects {spec.in_channels}; use the dataset it was trained on")
    if list(data.image_size) != list(spec.input_size[1:]):
        raise DataError(f"dataset {name} has {data.image_size[0]}x{data.image_size[1]} images "
                        f"but the model was built for {spec.input_size[1]}x{spec.input_size[2]}; "
                        "use images of the training size")
    if data.labelled and spec.num_classes and data.num_classes > spec.num_classes:
        raise DataError(f"dataset {name} has {data.num_classes} classes but the model predicts "
                        f"{spec.num_classes}; use the dataset it was trained on")
    data.mean, data.std = list(spec.mean), list(spec.std)
    return data


def train_baseline(model: str, dataset: str, out_dir: str | Path, epochs: int = 3,
                   lr: float = 0.1, batch_size: int = 128, width_mult: float = 1.0,
                   data_dir: str | Path | None = None, seed: int = 0,
                   device: torch.device | str = "cpu", train_limit: int | None = None,
                   force: bool = False, quiet: bool = False, augment: str = "flip") -> dict[str, Any]:
    """Train a zoo model on a dataset; writes ``model.pt`` and ``metrics.json`` into out_dir."""
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "model.pt"
    build_model(model, 2, 1, width_mult)  # fail on a bad name before touching data or disk
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, augment=augment)
    config.validate()
    data = load_dataset(dataset, data_dir, seed=seed, min_size=min_input_size(model),
                        train_limit=train_limit)
    if not data.labelled:
        raise DataError(f"dataset {dataset} has no labels; training needs one sub-folder per class")
    if ckpt_path.exists() and not force:
        raise ConfigError(f"{ckpt_path} already exists; pass --force to overwrite it or choose "
                          "another --out")
    check_writable_dir(out_dir)
    net = build_model(model, data.num_classes, data.in_channels, width_mult)
    spec = ModelSpec(model=model, num_classes=data.num_classes, in_channels=data.in_channels,
                     width_mult=width_mult, dataset=dataset, mean=data.mean, std=data.std,
                     input_size=[data.in_channels, *data.image_size],
                     data_dir=str(data_dir) if data_dir else None, split_seed=seed)
    t0 = time.perf_counter()
    history = train_model(net, data, config, seed=seed, device=device, quiet=quiet,
                          description=f"train {model}")
    train_time = time.perf_counter() - t0
    test = evaluate(net, data.loader("test", 512, device=device))
    macs, params = count_macs_params(net, data.example_input())
    metrics = {"model": model, "dataset": dataset, "seed": seed, "epochs": epochs,
               "test_accuracy": test["accuracy"], "test_loss": test["loss"], "macs": macs,
               "params": params, "train_time_s": train_time, "history": history,
               "torch_threads": torch.get_num_threads(), "device": str(device)}
    save_checkpoint(ckpt_path, spec, net.cpu(), metrics=metrics)
    write_json(out_dir / "metrics.json", metrics)
    metrics["checkpoint"] = str(ckpt_path)
    return metrics


def load_model(path: str | Path, trust_pickle: bool = False) -> tuple[nn.Module, Checkpoint]:
    """Rebuild a network (pruned or not) from a checkpoint file."""
    ckpt = load_checkpoint(path, trust_pickle=trust_pickle)
    return ckpt.build(), ckpt


def evaluate_checkpoint(path: str | Path, dataset: str | None = None,
                        data_dir: str | Path | None = None, batch_size: int = 512,
                        device: torch.device | str = "cpu",
                        trust_pickle: bool = False) -> list[dict[str, Any]]:
    """Test accuracy, parameters and MACs of a checkpoint, as table rows."""
    model, ckpt = load_model(path, trust_pickle)
    data = load_data_for_spec(ckpt.spec, dataset, data_dir)
    model.to(device)
    acc = evaluate(model, data.loader("test", batch_size, device=device))
    macs, params = count_macs_params(model, data.example_input().to(device))
    return [{"name": Path(path).name, "test_accuracy": acc["accuracy"], "params": params,
             "macs": macs}]


__all__ = ["train_baseline", "evaluate_checkpoint", "load_model", "load_data_for_spec"]


def build_structure(model: nn.Module, spec: ModelSpec, importance: str = "l1"):
    from .structure import Structure

    return Structure(model, spec.example_input(), importance=importance)


def search_checkpoint(path: str | Path, out_dir: str | Path, config=None, dataset: str | None = None,
                      data_dir: str | Path | None = None, device: torch.device | str = "cpu",
                      resume: bool = False, force: bool = False, quiet: bool = False,
                      importance: str = "l1", trust_pickle: bool = False):
    """Search a pruning policy for a checkpoint; writes policy.json and the search log."""
    from .search import LOG_FILE, SearchConfig, run_search

    config = config or SearchConfig()
    config.validate()
    out_dir = Path(out_dir)
    if (out_dir / LOG_FILE).exists() and not (resume or force):
        raise ConfigError(f"{out_dir} already holds a search; pass --resume to continue it, --force to "
                          "start over, or choose another --out")
    model, ckpt = load_model(path, trust_pickle)
    if ckpt.pruning:
        raise ConfigError(f"{path} is already pruned; search on the original (unpruned) checkpoint")
    data = load_data_for_spec(ckpt.spec, dataset, data_dir, calib_size=None)
    calib = data.normalize(data.calib.x[: config.calib_size]).to(device)
    if len(calib) < config.calib_size and not quiet:
        pass  # small datasets: use what there is
    val = None
    if data.labelled and config.val_size > 0:
        val = (data.normalize(data.val.x[: config.val_size]).to(device), data.val.y[: config.val_size].to(device))
    structure = build_structure(model, ckpt.spec, importance)
    check_writable_dir(out_dir)
    if force and not resume:
        for name in ("episodes.jsonl", "search_state.pt", "policy.json", "search.json"):
            (out_dir / name).unlink(missing_ok=True)
    model.to(device)
    meta = {"checkpoint": str(Path(path).resolve()), "model": ckpt.spec.model, "dataset": data.name,
            "importance": importance}
    return run_search(model, structure, calib, val, config, out_dir, resume=resume, quiet=quiet, meta=meta)


def inspect_checkpoint(path: str | Path, dataset: str | None = None, data_dir: str | Path | None = None,
                       calib_size: int = 256, device: torch.device | str = "cpu", importance: str = "l1",
                       trust_pickle: bool = False) -> dict[str, Any]:
    """Groups and per-layer entropies of a checkpoint, as plain data (the CLI renders it)."""
    from .entropy import VARIANTS, EntropyProbe, activation_points

    model, ckpt = load_model(path, trust_pickle)
    data = load_data_for_spec(ckpt.spec, dataset, data_dir)
    structure = build_structure(model, ckpt.spec, importance)
    model.to(device)
    calib = data.normalize(data.calib.x[:calib_size]).to(device)
    points = activation_points(model, calib[:1])
    group_of = {m: g.name for g in structure.groups for m in g.members}
    sizes: dict[str, str] = {}
    mods = dict(model.named_modules())
    handles = [mods[c].register_forward_hook(
        lambda m, i, o, c=c: sizes.__setitem__(c, "x".join(str(d) for d in o.shape[1:]))) for c in points]
    with torch.no_grad():
        model(calib[:1])
    for h in handles:
        h.remove()
    layers = list(points)
    with EntropyProbe(model, layers, points, VARIANTS) as probe:
        values = probe.measure(calib)
    conv_names = {n for n, m in mods.items() if isinstance(m, (nn.Conv2d, nn.Linear))}
    return {
        "model": ckpt.spec.model, "macs": int(structure.total_macs), "params": int(structure.total_params),
        "calib_images": len(calib), "variants": list(VARIANTS),
        "groups": [{"index": g.index, "name": g.name, "members": g.members,
                    "convs": [m for m in g.members if m in conv_names], "channels": g.channels,
                    "macs_share": g.macs / structure.total_macs} for g in structure.groups],
        "layers": [{"layer": c, "group": group_of.get(c, "-"), "output": sizes.get(c, "?"),
                    **{v: values[v][c] for v in VARIANTS}} for c in layers],
    }
