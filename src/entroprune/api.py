"""The Python API behind the CLI: each function is one pipeline stage with the CLI's defaults."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from .checkpoint import (
    Checkpoint,
    ModelSpec,
    check_finite,
    fit_names,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    state_mismatch,
)
from .config import EVAL_BATCH_SIZE, INSPECT_CALIB_SIZE, BaselineConfig, FinetuneConfig, PruneConfig, RunConfig
from .data import BUILT_IN, DataBundle, load_dataset
from .errors import CheckpointError, ConfigError, DataError, one_line
from .inputs import (
    Images,
    batches,
    check_labels,
    check_module,
    check_teacher,
    check_weights,
    take_images,
    take_labelled,
)
from .latency import FRESH_PROCESSES
from .models import build_model, min_input_size
from .settings import UNNAMED_IMPORTANCE, check_image_size, checked_args, given_config
from .structure import CONVS, DEFAULT_IMPORTANCE, IMPORTANCES, count_macs_params
from .train import TrainConfig, agreement, evaluate, train_model
from .utils import (
    check_writable_dir,
    file_sha256,
    forward_with_hooks,
    input_kind,
    modes_kept,
    refuse_output_inside,
    resolve_device,
    same_weights,
    seed_everything,
    shape_text,
    weights_sha256,
    write_json,
)

if TYPE_CHECKING:
    from .latency import LatencyConfig
    from .search import SearchConfig, SearchResult
    from .structure import Structure

_SEARCH = RunConfig().search  # the search's defaults, which the latency fit's search space takes too

def _data_folder(spec: ModelSpec, dataset: str | None, data_dir: str | Path | None) -> str | Path | None:
    """The folder load_data_for_spec reads (None for built-in data or the default places). A folder the
    checkpoint recorded is kept only where it exists: a checkpoint moved to another machine finds its data in
    the default places there, while a folder the caller names is searched alone."""
    if data_dir is not None:
        return data_dir
    same_data = (dataset or spec.dataset) == spec.dataset
    # a built-in dataset reads no folder: one recorded by a checkpoint trained before that was refused is ignored
    recorded = spec.data_dir if same_data and spec.dataset not in BUILT_IN else None
    return recorded if recorded and Path(recorded).exists() else None


def _names(classes: list[str]) -> str:
    return ", ".join(classes[:6]) + (f" and {len(classes) - 6} more" if len(classes) > 6 else "")


def load_data_for_spec(spec: ModelSpec, dataset: str | None = None,
                       data_dir: str | Path | None = None, **kwargs: Any) -> DataBundle:
    """The dataset a checkpoint was trained on (or another), normalised as the model expects."""
    name = dataset or spec.dataset
    folder = _data_folder(spec, dataset, data_dir)
    kwargs.setdefault("seed", spec.split_seed)
    images = len(spec.input_size) == 3
    built = input_kind(len(spec.input_size) - 1)
    if name in ("imagefolder", "wavfolder"):  # a user's own files: converted and sized to what the model takes
        kwargs.setdefault("in_channels", spec.in_channels)
        if images and name == "imagefolder":
            kwargs.setdefault("image_size", tuple(spec.input_size[1:]))  # (height, width), rectangular ones too
        if len(spec.input_size) == 2 and name == "wavfolder":
            kwargs.setdefault("image_size", spec.input_size[1])  # the clip length in samples
    try:
        data = load_dataset(name, folder, min_size=spec.input_size[1] if images else None, **kwargs)
    except DataError as exc:
        missing = folder is None and data_dir is None and spec.data_dir and name == spec.dataset
        if not missing:
            raise
        raise DataError(f"{exc} (the checkpoint records the folder {spec.data_dir}, which does not exist here)") from None
    what = input_kind(len(data.image_size))
    if data.in_channels != spec.in_channels:
        raise DataError(f"dataset {name} has {data.in_channels}-channel {what} but the model "
                        f"expects {spec.in_channels}; use the dataset it was trained on")
    if list(data.image_size) != list(spec.input_size[1:]):
        raise DataError(f"dataset {name} has {what} of {shape_text(data.image_size)} but the model was built for "
                        f"{built} of {shape_text(spec.input_size[1:])}; use {built} of the training size")
    if spec.classes and data.classes and data.classes != spec.classes:
        warnings.warn(f"dataset {name}'s classes are {_names(data.classes)} but the model's are {_names(spec.classes)}; "
                      "its labels are read as the model's outputs by position (give the folder the model's class "
                      "sub-folders to compare like with like)", stacklevel=2)
    if spec.sample_rate and data.sample_rate and data.sample_rate != spec.sample_rate:
        raise DataError(f"dataset {name} is audio sampled at {data.sample_rate} Hz but the model was trained at "
                        f"{spec.sample_rate} Hz; resample the files to {spec.sample_rate} Hz")
    if data.labelled and spec.num_classes and data.num_classes > spec.num_classes:
        raise DataError(f"dataset {name} has {data.num_classes} classes but the model predicts "
                        f"{spec.num_classes}; use the dataset it was trained on")
    data.mean, data.std = list(spec.mean), list(spec.std)
    return data


@checked_args
def train_baseline(model: str, dataset: str, out_dir: str | Path, epochs: int = BaselineConfig.epochs,
                   lr: float = BaselineConfig.lr, batch_size: int = BaselineConfig.batch_size,
                   width_mult: float = BaselineConfig.width_mult,
                   data_dir: str | Path | None = None, seed: int = 0,
                   device: torch.device | str = "cpu", train_limit: int | None = None,
                   force: bool = False, quiet: bool = False, augment: str = BaselineConfig.augment,
                   image_size: int | None = BaselineConfig.image_size) -> dict[str, Any]:
    """Train a zoo model on a dataset; writes ``model.pt`` and ``metrics.json`` into out_dir. ``image_size``: an
    image folder's images read at that square size (default: the size most of them have)."""
    device = resolve_device(device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "model.pt"
    build_model(model, 2, 1, width_mult)  # fail on a bad name before touching data or disk
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, augment=augment)
    config.validate()
    if epochs < 1:  # a fine-tune of 0 epochs recalibrates BN; a baseline of 0 epochs is an untrained net
        raise ConfigError(f"`epochs` must be >= 1 to train a baseline, got {epochs}")
    check_image_size(image_size, dataset)
    refuse_output_inside(out_dir, [data_dir])
    data = load_dataset(dataset, data_dir, seed=seed, min_size=min_input_size(model),
                        train_limit=train_limit, image_size=image_size)
    if not data.labelled:
        raise DataError(f"dataset {dataset} has no labels, which training needs: an image folder's come from one "
                        "sub-folder per class, an .npz file's from its array y")
    if ckpt_path.exists() and not force:
        raise ConfigError(f"{ckpt_path} already exists; pass `force=True` to overwrite it or choose "
                          "another `out_dir`")
    check_writable_dir(out_dir)
    # The initial weights come from the global RNG: seed it here, not only in the CLI, or API
    # callers (the main job, benchmarks) get a different baseline on every run.
    seed_everything(seed)
    net, spec = zoo_model(model, data, width_mult, dataset, data_dir, seed)
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


def _architecture(spec: ModelSpec) -> tuple[Any, ...]:
    return spec.model, spec.num_classes, spec.in_channels, spec.width_mult, list(spec.input_size)


def _architecture_text(spec: ModelSpec) -> str:
    return (f"{spec.model} at width {spec.width_mult} for {spec.num_classes} classes on "
            f"{'x'.join(map(str, spec.input_size))} inputs")


@checked_args
def wrap_weights(weights: str | Path, model: str, dataset: str, out_file: str | Path,
                 data_dir: str | Path | None = None, width_mult: float = BaselineConfig.width_mult,
                 mean: list[float] | None = None, std: list[float] | None = None, seed: int = 0,
                 force: bool = False, trust_pickle: bool = False,
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """A model trained elsewhere made an entroprune checkpoint: its weights (a state dict, read with
    ``weights_only=True``) loaded into the registered ``model`` built for ``dataset``'s classes and inputs, with
    the normalisation it was trained with (``mean`` / ``std`` per channel; default: the dataset's own, as
    ``train`` uses). Returns the test accuracy on ``dataset`` (top-1 agreement is not defined without a
    reference), the check that weights, model and normalisation belong together. ``trust_pickle``: a whole
    pickled module (``torch.save(model)``) gives its weights; unpickling it runs code from the file."""
    out_file, device = Path(out_file), resolve_device(device)
    build_model(model, 2, 1, width_mult)  # a bad name before any data is read
    state = load_weights(weights, trust_pickle)
    if out_file.exists() and not force:
        raise ConfigError(f"{out_file} already exists; pass `force=True` to overwrite it or choose another `out_file`")
    data = load_dataset(dataset, data_dir, seed=seed, min_size=min_input_size(model))
    net, spec = zoo_model(model, data, width_mult, dataset, data_dir, seed)
    for name, given in (("mean", mean), ("std", std)):
        if given is not None and (len(given) != data.in_channels or not all(math.isfinite(v) for v in given)
                                  or (name == "std" and min(given) <= 0)):
            raise ConfigError(f"`{name}` needs {data.in_channels} finite number(s){', all > 0' if name == 'std' else ''}"
                              f" (one per input channel of {dataset}), got {given}")
    spec.mean, spec.std = list(mean or spec.mean), list(std or spec.std)
    state = fit_names(state, net.state_dict(), weights)
    mismatch = state_mismatch(net.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{weights} does not fit {spec.built_as()} ({mismatch}); name the model (and "
                              "`width_mult`) the weights were trained as, on a dataset of as many classes")
    net.load_state_dict(state)
    check_finite(net, fix="retrain the model or restore its weights")
    data.mean, data.std = list(spec.mean), list(spec.std)
    test = evaluate(net.to(device), data.loader("test", EVAL_BATCH_SIZE), device) if data.labelled else {}
    net.cpu()
    macs, params = count_macs_params(net, data.example_input())
    metrics = {"model": model, "dataset": dataset, "wrapped_from": str(weights),
               "test_accuracy": test.get("accuracy"), "macs": macs, "params": params}
    check_writable_dir(out_file.parent)
    save_checkpoint(out_file, spec, net, metrics=metrics)
    return {**metrics, "checkpoint": str(out_file), "mean": spec.mean, "std": spec.std}


@checked_args
def load_model(path: str | Path, trust_pickle: bool = False) -> tuple[nn.Module, Checkpoint]:
    """Rebuild a network (pruned or not) from a checkpoint file."""
    ckpt = load_checkpoint(path, trust_pickle=trust_pickle)
    return ckpt.build(), ckpt


@checked_args
def evaluate_checkpoint(path: str | Path, dataset: str | None = None,
                        data_dir: str | Path | None = None, batch_size: int = EVAL_BATCH_SIZE,
                        device: torch.device | str = "cpu", original: str | Path | None = None,
                        latency: bool = False, trust_pickle: bool = False,
                        repeats: int = RunConfig.latency_repeats,
                        processes: int = FRESH_PROCESSES) -> list[dict[str, Any]]:
    """Test accuracy, parameters, MACs (and CPU latency) of a checkpoint, as table rows.

    A pruned checkpoint is compared side by side with its original (the unpruned checkpoint
    it names, or ``original``), with reductions and speed-ups against it. On unlabelled images the rows
    hold ``test_agreement`` (top-1 agreement with the original, %) instead of ``test_accuracy``.
    """
    device = resolve_device(device)
    from .latency import add_ratios, latency_rows

    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be >= 1, got {batch_size}")
    if processes < 0:
        raise ConfigError(f"`processes` must be >= 0 (0: time in this process), got {processes}")

    model, ckpt = load_model(path, trust_pickle)
    data = load_data_for_spec(ckpt.spec, dataset, data_dir)
    entries = []
    orig_path = _original(ckpt, original, "", "pass `original` (a path)")
    if not data.labelled and not orig_path:
        raise DataError(f"dataset {data.name} has no labels, and test accuracy needs them: evaluate on a labelled "
                        "dataset (the checkpoint's, by default), or evaluate a pruned checkpoint, whose top-1 "
                        "agreement with its original needs none")
    if orig_path:
        orig_model, orig = load_model(orig_path, trust_pickle)
        if ckpt.pruning and _architecture(orig.spec) != _architecture(ckpt.spec):
            # another net's reductions and agreement would be read as this one's (1.3x for a 5x cut)
            raise CheckpointError(f"{orig_path} is not the model {path} was pruned from: it is "
                                  f"{_architecture_text(orig.spec)}, the pruned net was cut from "
                                  f"{_architecture_text(ckpt.spec)}; pass the unpruned checkpoint it was pruned from")
        entries.append(("original", orig_model))
    entries.append(("pruned" if ckpt.pruning else Path(path).name, model))
    rows = []
    for name, net in entries:
        net.to(device)
        test = data.loader("test", batch_size, device=device)
        # without labels the original is the reference: how often the pruned net's top-1 agrees with it
        if data.labelled:
            scored = evaluate(net, test)
            score = {"test_accuracy": scored["accuracy"], "per_class_accuracy": scored["per_class_accuracy"]}
        else:
            score = {"test_agreement": agreement(net, entries[0][1], test, device)["agreement"]}
        macs, params = count_macs_params(net, data.example_input().to(device))
        rows.append({"name": name, **score, "params": params, "macs": macs})
    if latency:
        timed = latency_rows([net for _, net in entries], tuple(ckpt.spec.input_size), repeats, processes)
        for row, lat in zip(rows, timed, strict=True):
            row.update(lat)
    return add_ratios(rows) if len(rows) > 1 else rows


@checked_args
def prune_checkpoint(path: str | Path, policy: str | Path | dict, out_dir: str | Path, force: bool = False,
                     trust_pickle: bool = False, bn_recalibration: bool = PruneConfig.bn_recalibration,
                     data_dir: str | Path | None = None, device: torch.device | str = "cpu",
                     dataset: str | None = None, refit: bool = PruneConfig.refit, seed: int = 0,
                     refit_norms: bool = PruneConfig.refit_norms,
                     refit_head: bool = PruneConfig.refit_head) -> dict[str, Any]:
    """Physically remove channels by a policy; writes a pruned model.pt that reloads safely.

    BN statistics are re-estimated on the calibration split of ``dataset`` (default: the checkpoint's; no
    labels needed), and with ``refit`` the kept weights are first refitted there, so the pruned network works
    before any fine-tune (:class:`~entroprune.config.PruneConfig`).
    """
    device = resolve_device(device)
    from .prune import counts_to_dict, prune_model, recalibrate_bn

    # refused before any work; past it, refit_norms implies refit
    PruneConfig(refit=refit, refit_norms=refit_norms, bn_recalibration=bn_recalibration)
    pol = _read_policy(policy)
    _warn_if_scored_otherwise(pol, refit, refit_norms, refit_head)
    out_dir = Path(out_dir)
    model, ckpt = load_model(path, trust_pickle)
    if ckpt.pruning:
        raise ConfigError(f"{path} is already pruned; prune the original checkpoint")
    structure = build_structure(model, ckpt.spec, pol.get("importance", UNNAMED_IMPORTANCE), _ignored(pol))
    counts = structure.policy_counts(pol["policy"], pol.get("round_to", 1))
    if (out_dir / "model.pt").resolve() == Path(path).resolve():
        raise ConfigError(f"`out_dir` {out_dir} would overwrite the checkpoint being pruned; choose another `out_dir`")
    if (out_dir / "model.pt").exists() and not force:
        raise ConfigError(f"{out_dir / 'model.pt'} already exists; pass `force=True` or choose another `out_dir`")
    check_writable_dir(out_dir)
    calib = None
    if bn_recalibration or refit:
        data = load_data_for_spec(ckpt.spec, dataset, data_dir)
        calib = data.normalize(data.calib.x)
    pruned, history = prune_model(model, structure, counts, check=True,  # on the CPU, where the structure probes
                                  refit_images=calib if refit else None, seed=seed, refit_norms=refit_norms,
                                  refit_head=refit_head)
    if bn_recalibration and calib is not None:
        recalibrate_bn(pruned.to(device), calib.to(device))
        pruned.cpu()
    macs, params = count_macs_params(pruned, ckpt.spec.example_input())
    refits = {"refit": refit, "refit_norms": refit_norms, "refit_head": refit and refit_head}  # in both records
    pruning = {"policy": {g.name: float(pol["policy"][g.name]) for g in structure.groups},
               "counts": counts_to_dict(structure, counts),
               "history": history, "original": str(Path(path).resolve()), "original_sha256": file_sha256(path),
               "original_weights_sha256": weights_sha256(path),
               "importance": pol.get("importance", UNNAMED_IMPORTANCE), "norm": structure.norm,
               "ignored_layers": _ignored(pol), **refits}
    metrics = {"macs": macs, "params": params, "original_macs": int(structure.total_macs),
               "original_params": int(structure.total_params), "macs_fraction": macs / structure.total_macs, **refits}
    save_checkpoint(out_dir / "model.pt", ckpt.spec, pruned, pruning=pruning, metrics=metrics)
    write_json(out_dir / "prune.json", metrics)
    return {**metrics, "checkpoint": str(out_dir / "model.pt")}


def _warn_if_scored_otherwise(pol: dict[str, Any], refit: bool, refit_norms: bool, refit_head: bool) -> None:
    """The search's re-ranking chose among its candidates as they were then cut (refitted or plainly, the refit's
    options as they were); a prune that cuts the policy another way fine-tunes a net the choice was not made for."""
    scored = pol.get("rerank_refit")
    how = None
    if isinstance(scored, bool) and scored != refit:
        how = ("refitted, but this prune cuts it plainly: prune with `refit=True`, or search again with "
               "`rerank_refit=False`" if scored else "cut plainly, but this prune refits it: prune with "
               "`refit=False`, or search again with `rerank_refit=True`")
    elif scored is True:
        for key, now in (("refit_norms", refit_norms), ("refit_head", refit_head)):
            then = pol.get(f"rerank_{key}")
            if isinstance(then, bool) and then != now:
                how = (f"refitted with `{key}={then}`, but this prune refits it with `{key}={now}`: prune with "
                       f"`{key}={then}`, or search again with the reward's `{key}={now}`")
    if how:
        warnings.warn(f"the search chose this policy by scoring its candidates {how}, so the choice is made for "
                      "the net you fine-tune", stacklevel=3)


def _ignored(pol: dict[str, Any]) -> list[str]:
    """The layers the policy's search left whole (the structure must be rebuilt the same way)."""
    names = pol.get("ignored_layers") or []
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ConfigError("the policy's 'ignored_layers' must be a list of module names")
    return names


def _read_policy(policy: str | Path | dict) -> dict[str, Any]:

    if isinstance(policy, dict):
        pol = policy
    else:
        p = Path(policy)
        if not p.is_file():
            raise ConfigError(f"policy file {p} does not exist; pass the policy.json written by `entroprune search`")
        try:
            pol = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p} is not valid JSON ({exc}); pass a policy.json from `entroprune search`") from None
        except RecursionError:
            raise ConfigError(f"{p} is nested too deeply to be a policy; pass a policy.json from "
                              "`entroprune search`") from None
    if not isinstance(pol, dict):
        raise ConfigError("a policy must be a JSON object with a 'policy' mapping of group name to keep ratio")
    if "policy" not in pol:  # a bare {group: ratio} mapping is accepted too
        pol = {"policy": pol}
    if not isinstance(pol["policy"], dict) or not pol["policy"]:
        raise ConfigError("the policy's 'policy' entry must map group names to keep ratios")
    round_to = pol.get("round_to", 1)
    if isinstance(round_to, bool) or not isinstance(round_to, int) or not 1 <= round_to <= 4096:
        raise ConfigError(f"the policy's 'round_to' must be an integer from 1 to 4096, got {round_to!r}")
    if pol.get("importance", UNNAMED_IMPORTANCE) not in IMPORTANCES:
        raise ConfigError(f"the policy's 'importance' must be one of {', '.join(IMPORTANCES)}, got "
                          f"{pol.get('importance')!r}")
    return pol


@checked_args
def finetune_checkpoint(path: str | Path, out_dir: str | Path, epochs: int = FinetuneConfig.epochs,
                        lr: float = FinetuneConfig.lr, batch_size: int = FinetuneConfig.batch_size,
                        distill: bool = FinetuneConfig.distill, teacher: str | Path | None = None,
                        seed: int = 0, device: torch.device | str = "cpu", force: bool = False,
                        quiet: bool = False, trust_pickle: bool = False,
                        data_dir: str | Path | None = None, nproc: int = FinetuneConfig.nproc,
                        dataset: str | None = None) -> dict[str, Any]:
    """Fine-tune a (pruned) checkpoint with SGD + cosine schedule, optionally distilling
    from the unpruned teacher; writes model.pt and metrics.json into ``out_dir``.

    ``dataset`` (default: the checkpoint's) may be unlabelled images (a flat ``imagefolder``, an ``npz``
    without ``y``): then the teacher's outputs are the only target, so ``distill`` is required, and the
    metrics are top-1 agreement with the teacher on held-out images (``test_agreement``) instead of test
    accuracy.

    ``nproc`` > 1 trains data-parallel in that many local processes (:mod:`entroprune.ddp`);
    ``batch_size`` stays the global batch, split across them. Inside a torchrun group it trains
    data-parallel whatever ``nproc`` says.
    """
    device = resolve_device(device)
    from . import ddp

    out_dir = Path(out_dir)
    if nproc < 1:
        raise ConfigError(f"`nproc` must be >= 1, got {nproc}")
    model, ckpt = load_model(path, trust_pickle)
    if Path(out_dir).resolve() == Path(path).resolve().parent:  # even with force: inputs are never replaced
        raise ConfigError(f"`out_dir` {out_dir} would overwrite the input checkpoint; choose another `out_dir`")
    refuse_output_inside(out_dir, [_data_folder(ckpt.spec, dataset, data_dir)])
    if (out_dir / "model.pt").exists() and not force:
        raise ConfigError(f"{out_dir / 'model.pt'} already exists; pass `force=True` or choose another `out_dir`")
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, schedule="cosine")
    config.validate()
    data = load_data_for_spec(ckpt.spec, dataset, data_dir)
    teacher_model = _finetune_teacher(ckpt, data, distill, teacher, trust_pickle)
    if teacher_model is not None:
        check_teacher(model, teacher_model, data.example_input())
    if nproc > 1 and batch_size < nproc:
        raise ConfigError(f"`batch_size` {batch_size} cannot be split over `nproc` {nproc}; raise it")
    check_writable_dir(out_dir)
    if nproc > 1 and not ddp.in_process_group():
        kwargs = {"path": str(path), "out_dir": str(out_dir), "epochs": epochs, "lr": lr, "batch_size": batch_size,
                  "distill": distill, "teacher": None if teacher is None else str(teacher), "seed": seed,
                  "device": str(device), "force": True, "quiet": quiet, "trust_pickle": trust_pickle,
                  "data_dir": None if data_dir is None else str(data_dir), "dataset": dataset}
        return {**ddp.launch_finetune(kwargs, nproc), "checkpoint": str(out_dir / "model.pt")}

    ctx = ddp.join(device) if ddp.in_process_group() else None
    if ctx is not None:
        device = ctx.device
    main_rank = ctx is None or ctx.is_main
    model.to(device)
    before = _test_score(model, data, teacher_model, device) if main_rank else {}
    t0 = time.perf_counter()
    if ctx is None:
        history = train_model(model, data, config, seed=seed, device=device, teacher=teacher_model, quiet=quiet,
                              description="finetune")
    else:
        history = _train_data_parallel(model, data, config, ctx, seed, teacher_model, quiet)
        if not main_rank:
            ddp.leave()
            return {}
    # Running BN statistics lag behind weights that changed quickly; short fine-tunes end
    # far better with statistics re-estimated on training images.
    from .prune import recalibrate_bn

    recalibrate_bn(model, data.normalize(data.train.x[:2048]).to(device))
    test = _test_score(model, data, teacher_model, device)
    macs, params = count_macs_params(model, data.example_input().to(device))
    key = "accuracy" if data.labelled else "agreement"
    metrics = {f"test_{key}": test[key], f"test_{key}_before": before[key], "dataset": data.name, "epochs": epochs,
               "distill": distill, "macs": macs, "params": params, "finetune_time_s": time.perf_counter() - t0,
               "history": history, "seed": seed, "processes": 1 if ctx is None else ctx.world}
    save_checkpoint(out_dir / "model.pt", ckpt.spec, model.cpu(), pruning=ckpt.pruning, metrics=metrics)
    write_json(out_dir / "metrics.json", metrics)
    if ctx is not None:
        ddp.leave()
    return {**metrics, "checkpoint": str(out_dir / "model.pt")}


def _finetune_teacher(ckpt: Any, data: DataBundle, distill: bool, teacher: str | Path | None,
                      trust_pickle: bool) -> nn.Module | None:
    """The net to distil from (None without ``distill``); unlabelled data has nothing else to learn from."""
    if not data.labelled and not distill:
        raise ConfigError(f"dataset {data.name} has no labels: fine-tune it by distillation from the unpruned "
                          "net (`distill=True`), whose outputs stand in for them")
    if not distill:
        return None
    tpath = _original(ckpt, teacher, " (the teacher `distill` fine-tunes from)", "pass `teacher` (a path) or "
                      "`distill=False`")
    if not tpath:
        raise ConfigError("`distill` needs a teacher: the checkpoint names no original, pass `teacher` (a path) "
                          "or `distill=False`")
    return load_model(tpath, trust_pickle)[0]


def _original(ckpt: Checkpoint, given: str | Path | None, role: str, fix: str) -> str | Path | None:
    """``given``, or the original a pruned checkpoint's record names, still there and unchanged: one retrained or
    overwritten in place since the pruning became the teacher or the reference without a word."""
    if given is not None:
        return given
    record = ckpt.pruning or {}
    path = record.get("original")
    if not path:
        return None
    if not Path(path).exists():  # moved or deleted since the pruning recorded it
        raise CheckpointError(f"the original checkpoint {path}{role} is gone; {fix}")
    # records before the hashes have none; a file rewritten with the same weights (a cache retrained) is the same net
    if record.get("original_sha256") not in (None, file_sha256(path)) and \
            not same_weights(path, record.get("original_weights_sha256")):
        raise CheckpointError(f"the original checkpoint {path}{role} has changed since the pruning read it "
                              f"(retrained or overwritten?); to use it anyway, or the one it was pruned from, {fix}")
    return path


def _test_score(model: nn.Module, data: DataBundle, teacher: nn.Module | None,
                device: torch.device | str) -> dict[str, float]:
    """Test accuracy, or on unlabelled data top-1 agreement with the teacher (accuracy needs labels)."""
    test = data.loader("test", 512, device=device)
    if data.labelled:
        return evaluate(model, test)
    assert teacher is not None  # unlabelled data needs distill (_finetune_teacher)
    return agreement(model, teacher, test, device)


def _train_data_parallel(model: nn.Module, data: DataBundle, config: TrainConfig, ctx: Any, seed: int,
                         teacher: nn.Module | None, quiet: bool) -> list[dict[str, Any]]:
    """This process's part of a data-parallel fine-tune: its shard of every batch, gradients averaged."""
    from torch.nn.parallel import DistributedDataParallel

    device, main_rank = ctx.device, ctx.is_main
    shard = data.loader("train", config.batch_size, shuffle=True, augment=config.augment, seed=seed, device=device,
                        shard=(ctx.rank, ctx.world))
    parallel = DistributedDataParallel(model.to(device), device_ids=[device.index] if device.type == "cuda" else None)
    return train_model(parallel, None, config, seed=seed, device=device, teacher=teacher, quiet=quiet or not main_rank,
                       description=f"finetune x{ctx.world}", train_loader=shard,
                       val_loader=data.loader("val", 512, device=device) if main_rank else None, eval_model=model)


@checked_args
def export_checkpoint(path: str | Path, out_file: str | Path, fmt: str | None = None, opset: int | None = None,
                      batch: int = 0, int8: bool = False, dataset: str | None = None,
                      data_dir: str | Path | None = None, trust_pickle: bool = False) -> dict[str, Any]:
    """Export a checkpoint to ONNX, TorchScript or pt2 (torch.export), verified against torch; ``fmt`` None:
    the format ``out_file``'s suffix names (.onnx, .ts, .pt2), else ONNX. ``opset``: ONNX's (None: the default,
    ``entroprune.export.DEFAULT_OPSET``); ``batch``: a fixed batch size for ONNX and pt2 (0: any).

    ``int8``: ONNX quantised to int8 (``entroprune.export.export_int8``), its ranges calibrated on the
    calibration split of ``dataset`` (default: the checkpoint's; no labels needed) and checked on its test split
    (top-1 agreement with the float net; accuracy where labelled)."""
    from .export import check_export_options, export_model, format_for

    fmt = format_for(out_file, fmt)
    check_export_options(fmt, opset, batch, int8)  # before the checkpoint and any data are read
    model, ckpt = load_model(path, trust_pickle)
    if not int8:
        return export_model(model, ckpt.spec.example_input(), out_file, fmt, opset=opset, batch=batch,
                            classes=ckpt.spec.classes)
    return _int8_export(model, ckpt.spec, out_file, opset, batch, dataset, data_dir)


def _int8_export(model: nn.Module, spec: ModelSpec, out_file: str | Path, opset: int | None = None, batch: int = 0,
                dataset: str | None = None, data_dir: str | Path | None = None) -> dict[str, Any]:
    """A loaded checkpoint's net as int8 ONNX, calibrated and checked on ``dataset`` (default: its own) as
    :func:`export_checkpoint` describes; the run calls it with the net it has just exported in float."""
    from .export import export_int8

    data = load_data_for_spec(spec, dataset, data_dir)
    return export_int8(model, spec.example_input(), out_file, (x for x, _ in data.loader("calib", EVAL_BATCH_SIZE)),
                       data.loader("test", EVAL_BATCH_SIZE), data.labelled, opset=opset, batch=batch,
                       classes=spec.classes)


def _latency_inputs(path: str | Path, out_dir: str | Path, name: str, force: bool,
                    trust_pickle: bool) -> tuple[Path, nn.Module, Structure]:
    """The output file (refused when it exists without ``force``), the model and its structure, the output
    folder made: what every timing command needs before it times anything."""
    out_file = Path(out_dir) / name
    if out_file.exists() and not force:
        raise ConfigError(f"{out_file} already exists; pass `force=True` or choose another `out_dir`")
    model, ckpt = load_model(path, trust_pickle)
    structure = build_structure(model, ckpt.spec)
    check_writable_dir(out_dir)
    return out_file, model, structure


@checked_args
def fit_latency_checkpoint(path: str | Path, out_dir: str | Path, config: LatencyConfig | None = None,
                           min_keep: float = _SEARCH.min_keep, round_to: int = _SEARCH.step, seed: int = 0,
                           force: bool = False,
                           trust_pickle: bool = False) -> dict[str, Any]:
    """Fit a checkpoint's latency model on this machine (layer tables and whole pruned nets timed on
    ``config.backend`` at ``config.batch``) over the search space ``min_keep`` / ``round_to``; writes
    latency_model.json into ``out_dir`` and returns the fit's report (cost, error on held-out policies)."""
    from .latency import LatencyConfig, fit_latency_model, fresh_timer, wall_pair_timer, wall_timer
    from .utils import machine_description

    config = given_config(config, LatencyConfig)
    config.validate()
    if not 0 < min_keep <= 1 or round_to < 1:
        raise ConfigError(f"`min_keep` must lie in (0, 1] and `round_to` be >= 1, got {min_keep} and {round_to}")
    out_file, model, structure = _latency_inputs(path, out_dir, "latency_model.json", force, trust_pickle)
    lo = structure.keep_counts(min_keep, round_to)
    meta = {"checkpoint": str(path), "backend": config.backend, "batch": config.batch,
            "threads": torch.get_num_threads(), "machine": machine_description(), "min_keep": min_keep,
            "round_to": round_to}
    lm, report = fit_latency_model(model.cpu().eval(), structure, lo,
                                   wall_timer(config.batch, config.backend, config.repeats), config.points,
                                   config.calibration, config.held_out, round_to, seed, meta,
                                   pair=wall_pair_timer(config.batch, config.backend, config.repeats),
                                   fresh=fresh_timer(config.batch, config.backend, config.repeats, config.processes))
    write_json(out_file, lm.to_dict())
    return {**report, **meta, "model_file": str(out_file)}


@checked_args
def choose_rounding_checkpoint(path: str | Path, out_dir: str | Path, config: LatencyConfig | None = None,
                               macs_target: float = _SEARCH.macs_target, min_keep: float = _SEARCH.min_keep,
                               force: bool = False,
                               trust_pickle: bool = False) -> dict[str, Any]:
    """Measure which channel step makes pruning pay most on ``config.backend`` at ``config.batch`` on this
    machine (:func:`entroprune.latency.choose_rounding`); writes rounding.json into ``out_dir``."""
    from .latency import LatencyConfig, choose_rounding, wall_pair_timer
    from .search.policies import uniform_policies
    from .utils import machine_description

    config = given_config(config, LatencyConfig)
    config.validate()
    if not 0 < macs_target <= 1 or not 0 < min_keep <= 1:
        raise ConfigError(f"`macs_target` and `min_keep` must lie in (0, 1], got {macs_target} and {min_keep}")
    out_file, model, structure = _latency_inputs(path, out_dir, "rounding.json", force, trust_pickle)
    res = choose_rounding(model, structure, uniform_policies(structure, macs_target, min_keep),
                          wall_pair_timer(config.batch, config.backend, config.repeats))
    res.update(checkpoint=str(path), macs_target=macs_target, min_keep=min_keep, backend=config.backend, batch=config.batch, threads=torch.get_num_threads(),
               machine=machine_description(), file=str(out_file))
    write_json(out_file, res)
    return res


def zoo_model(model: str, data: DataBundle, width_mult: float, dataset: str, data_dir: str | Path | None = None,
              seed: int = 0) -> tuple[nn.Module, ModelSpec]:
    """A zoo model for ``data``'s images and classes (its weights from the global RNG), with the spec its
    checkpoint will hold."""
    net = build_model(model, data.num_classes, data.in_channels, width_mult)
    shortest = getattr(net, "min_input_size", 1)
    if getattr(net, "input_dims", 2) == len(data.image_size) == 1 and data.image_size[0] < shortest:
        raise ConfigError(f"model {model!r} takes signals of at least {shortest} samples (raw audio), but dataset "
                          f"{dataset}'s are {data.image_size[0]}; use kws for short sequences")
    kind = {1: "1-D signals"}.get(len(data.image_size), input_kind(len(data.image_size)))
    refusal = (f"model {model!r} cannot run on dataset {dataset}'s {kind} of "
               f"{shape_text((data.in_channels, *data.image_size))}")
    zoo = "the zoo's kws and m5 take 1-D signals, resnet3d volumes, its other models images"
    dims = getattr(net, "input_dims", None)
    if dims is not None and dims != len(data.image_size):  # Conv3d would read an image batch as one unbatched volume
        raise ConfigError(f"{refusal} (it takes {input_kind(dims)}); {zoo}")
    with modes_kept(net), torch.no_grad():  # in eval mode: a forward in train mode would move BN's statistics
        try:
            net.eval()(data.example_input(2))
        except Exception as exc:  # noqa: BLE001 - a 2-D net on signals, a 1-D one on images: one line
            raise ConfigError(f"{refusal} ({one_line(exc)}); "
                              f"{zoo}") from None
    spec = ModelSpec(model=model, num_classes=data.num_classes, in_channels=data.in_channels,
                     width_mult=width_mult, dataset=dataset, mean=data.mean, std=data.std,
                     input_size=[data.in_channels, *data.image_size],
                     # absolute: a relative folder was read from wherever the next command ran (and not found)
                     data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else None, split_seed=seed,
                     sample_rate=data.sample_rate, classes=data.classes)
    return net, spec


def build_structure(model: nn.Module, spec: ModelSpec, importance: str = DEFAULT_IMPORTANCE,
                    ignored: list[str] | tuple[str, ...] = ()) -> Structure:
    from .structure import Structure

    return Structure(model, spec.example_input(), importance=importance, ignored=ignored)


def check_reachable(structure: Structure, config: SearchConfig) -> None:
    """The MACs target can be met within ``min_keep`` at the channel step (the finest for ``round_to: auto``,
    whose measurement skips the steps that cannot reach it); one line naming the floor if not."""
    from .search.policies import config_env

    config_env(structure, config, step=1 if config.round_to == "auto" else None)


@checked_args
def search_checkpoint(path: str | Path, out_dir: str | Path, config: SearchConfig | None = None, dataset: str | None = None,
                      data_dir: str | Path | None = None, device: torch.device | str = "cpu",
                      resume: bool = False, force: bool = False, quiet: bool = False,
                      importance: str | None = None, trust_pickle: bool = False, workers: int = 1,
                      ray_address: str | None = None) -> SearchResult:
    """Search a pruning policy for a checkpoint; writes policy.json and the search log.

    ``importance``, when given, replaces ``config.importance`` (the channel ranking). ``workers`` > 1 scores
    each episode batch on that many Ray actors (``entroprune[ray]``).
    """
    device = resolve_device(device)
    from .search import LOG_FILE, SearchConfig, run_search

    config = given_config(config, SearchConfig).resolved()
    if importance is not None:
        config = replace(config, importance=importance)
    config.validate()
    _check_workers(workers, ray_address)
    out_dir = Path(out_dir)
    if (out_dir / LOG_FILE).exists() and not (resume or force):
        raise ConfigError(f"{out_dir} already holds a search; pass `resume=True` to continue it, `force=True` to "
                          "start over, or choose another `out_dir`")
    model, ckpt = load_model(path, trust_pickle)
    if ckpt.pruning:
        raise ConfigError(f"{path} is already pruned; search on the original (unpruned) checkpoint")
    refuse_output_inside(out_dir, [_data_folder(ckpt.spec, dataset, data_dir)])
    data = load_data_for_spec(ckpt.spec, dataset, data_dir, calib_size=None)
    calib = data.normalize(data.calib.x[: config.calib_size]).to(device)
    val = None
    if data.labelled and config.val_size > 0:
        val = (data.normalize(data.val.x[: config.val_size]).to(device), data.val.y[: config.val_size].to(device))
    structure = build_structure(model, ckpt.spec, config.importance, config.ignored_layers)
    from .search import STATE_FILE

    check_reachable(structure, config)
    if resume and not (out_dir / STATE_FILE).exists():
        raise ConfigError(f"nothing to resume in {out_dir} (no {STATE_FILE}); run without `resume=True`")
    check_writable_dir(out_dir)
    model.to(device)
    # the net's weights too: a checkpoint retrained in place must not resume another's search (one rewritten with
    # the same weights, a removed cache retrained with the same seed, may)
    meta = {"checkpoint": str(Path(path).resolve()), "checkpoint_weights_sha256": weights_sha256(path),
            "model": ckpt.spec.model, "dataset": data.name, "importance": config.importance}
    recovery = None
    if config.reranks and config.recovery_steps:  # unlabelled training images, never the scored ones
        recovery = data.normalize(data.train.x[: config.recovery_images]).to(device)
    return run_search(model, structure, calib, val, config, out_dir, resume=resume, quiet=quiet, meta=meta,
                      workers=workers, ray_address=ray_address, recovery_images=recovery)


def _check_workers(workers: int, ray_address: str | None) -> None:
    """Fail before reading data or writing anything when the parallel set-up cannot work."""
    from .search.scoring import check_ray_address, import_ray

    if workers < 1:
        raise ConfigError(f"`workers` must be >= 1, got {workers}")
    if workers > 1:
        import_ray()
        check_ray_address(ray_address)
    elif ray_address:
        raise ConfigError("`ray_address` needs `workers` >= 2")


@checked_args
def inspect_checkpoint(path: str | Path, dataset: str | None = None, data_dir: str | Path | None = None,
                       calib_size: int = INSPECT_CALIB_SIZE, device: torch.device | str = "cpu", importance: str = DEFAULT_IMPORTANCE,
                       trust_pickle: bool = False) -> dict[str, Any]:
    """Groups and per-layer entropies of a checkpoint, as plain data (the CLI renders it)."""
    device = resolve_device(device)
    from .entropy import VARIANTS, EntropyProbe, activation_points

    if calib_size < 1:
        raise ConfigError(f"`calib_size` must be >= 1, got {calib_size}")

    model, ckpt = load_model(path, trust_pickle)
    data = load_data_for_spec(ckpt.spec, dataset, data_dir)
    structure = build_structure(model, ckpt.spec, importance)
    model.to(device)
    calib = data.normalize(data.calib.x[:calib_size]).to(device)
    points = activation_points(model, calib[:1])
    group_of = {m: g.name for g in structure.groups for m in g.members}
    sizes: dict[str, str] = {}
    mods = dict(model.named_modules())
    forward_with_hooks(model, calib[:1], [
        (mods[c], lambda m, i, o, c=c: sizes.__setitem__(c, shape_text(o.shape[1:]))) for c in points])
    layers = list(points)
    with EntropyProbe(model, layers, points, VARIANTS) as probe:
        values = probe.measure(calib)
    conv_names = {n for n, m in mods.items() if isinstance(m, (*CONVS, nn.Linear))}

    floors = {}  # the lowest MACs and parameter fractions, at each rounding
    for key, step in (("rounded", _SEARCH.step), ("unrounded", 1)):
        counts = structure.keep_counts(_SEARCH.min_keep, step)
        floors[key] = float(structure.macs(counts) / structure.total_macs)
        floors[f"params_{key}"] = float(structure.params(counts) / structure.total_params)
    return {
        "model": ckpt.spec.model, "macs": int(structure.total_macs), "params": int(structure.total_params),
        "calib_images": len(calib), "variants": list(VARIANTS),
        "groups": [{"index": g.index, "name": g.name, "members": g.members,
                    "convs": [m for m in g.members if m in conv_names], "channels": g.channels,
                    "macs_share": g.macs / structure.total_macs, "params_share": _params_touched(structure, g.index)}
                   for g in structure.groups],
        "layers": [{"layer": c, "group": group_of.get(c, "-"), "output": sizes.get(c, "?"),
                    **{v: values[v][c] for v in VARIANTS}} for c in layers],
        # the lowest MACs and parameter targets a search can reach (every group at min_keep), at the default
        # rounding and unrounded: a 16-channel layer rounded to 8 keeps half, so a small net's floor moves with it
        "floor": {"min_keep": _SEARCH.min_keep, "round_to": _SEARCH.step, **floors},
    }


def _params_touched(structure: Structure, index: int) -> float:
    """The share of the parameters that shrinks with group ``index``'s channels (those left at a vanishing
    fraction of it are the ones that do not)."""
    fractions = np.ones((1, len(structure.groups)))
    fractions[0, index] = 1e-12
    return float(1 - structure.params_batch(fractions)[0] / structure.total_params)




@checked_args
def search_module(model: nn.Module, example_input: torch.Tensor, calib: Images, out_dir: str | Path,
                  config: SearchConfig | None = None,
                  val: tuple[torch.Tensor, torch.Tensor] | Iterable[Any] | None = None, importance: str | None = None,
                  quiet: bool = True, resume: bool = False, workers: int = 1,
                  ray_address: str | None = None) -> SearchResult:
    """Search a policy for any CNN: ``calib`` (normalised float32 images of ``example_input``'s shape: a tensor
    or a loader) feeds BN recalibration and the entropy reward, and images beyond the first ``calib_size`` the
    re-ranking's recovery (all of them when there are no more); ``val`` ((x, y) or a loader) the
    accuracy reward. ``importance``, when given, replaces ``config.importance``. ``workers`` > 1 scores
    episode batches on Ray actors (the model must pickle)."""
    from .search import SearchConfig, run_search
    from .structure import Structure

    config = given_config(config, SearchConfig).resolved()
    if importance is not None:
        config = replace(config, importance=importance)
    config.validate()
    _check_workers(workers, ray_address)
    model = check_module(model)
    structure = Structure(model, example_input, importance=config.importance, ignored=config.ignored_layers)
    extra = config.recovery_images if config.reranks and config.recovery_steps else 0
    images = take_images(calib, config.calib_size + extra, example_input)
    calib_x = images[: config.calib_size]
    recovery = (images[config.calib_size:] if len(images) > config.calib_size else images) if extra else None
    val_xy = take_labelled(val, config.val_size, example_input) if val is not None else None
    if val_xy is not None:
        val_xy = val_xy[0], check_labels(model, val_xy[0], val_xy[1], "val", floats=True)
    with modes_kept(model):
        return run_search(model.eval(), structure, calib_x, val_xy, config, out_dir, resume=resume, quiet=quiet,
                          workers=workers, ray_address=ray_address, recovery_images=recovery)


@checked_args
def prune_module(model: nn.Module, example_input: torch.Tensor, policy: SearchResult | str | Path | dict[str, Any],
                 importance: str = DEFAULT_IMPORTANCE, calib: Images | None = None,
                 refit: bool = PruneConfig.refit, seed: int = 0,
                 refit_norms: bool = PruneConfig.refit_norms,
                 refit_head: bool = PruneConfig.refit_head) -> tuple[nn.Module, list[Any]]:
    """A physically pruned copy of any CNN by a policy (a SearchResult, a policy.json path or
    a {group: keep ratio} dict); with ``calib`` (unlabelled images) its kept weights are refitted (``refit``)
    and its BN statistics re-estimated there."""
    from .prune import prune_model, recalibrate_bn
    from .structure import Structure

    PruneConfig(refit=refit, refit_norms=refit_norms)  # refused before any work
    if isinstance(policy, (str, Path, dict)):
        pol = _read_policy(policy)
    else:  # a SearchResult
        pol = _read_policy({"policy": policy.policy, "ignored_layers": list(policy.ignored_layers),
                            "importance": policy.importance})
    model = check_module(model)
    structure = Structure(model, example_input, importance=pol.get("importance", importance),
                          ignored=_ignored(pol))
    counts = structure.policy_counts(pol["policy"], pol.get("round_to", 1))
    images = take_images(calib, 1024, example_input) if calib is not None else None
    pruned, history = prune_model(model, structure, counts, check=True, refit_images=images if refit else None,
                                  seed=seed, refit_norms=refit_norms, refit_head=refit_head)
    if images is not None:
        recalibrate_bn(pruned, images)
    return pruned, history


@checked_args
def finetune_module(model: nn.Module, train_loader: Iterable[Any], epochs: int = FinetuneConfig.epochs,
                    lr: float = FinetuneConfig.lr,
                    teacher: nn.Module | None = None, val_loader: Iterable[Any] | None = None, seed: int = 0,
                    device: torch.device | str = "cpu", quiet: bool = True) -> list[dict]:
    """Fine-tune any (pruned) CNN in place; SGD with a cosine schedule. Batches are (x, y), or images alone
    when ``teacher`` is given: label-free distillation from it, as the command line fine-tunes on unlabelled
    images. The history gives ``val_accuracy`` where the validation batches have labels (whether the training
    batches do or not), else ``val_agreement`` with the teacher."""
    device = resolve_device(device)
    check_weights(model)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("every parameter of the model is frozen (requires_grad False), so fine-tuning would "
                          "change nothing; call model.requires_grad_(True) first, or leave frozen only what "
                          "should stay fixed")
    train_loader, labelled = batches(train_loader, model, teacher, "train_loader", sized=True)
    val_labelled = labelled
    if val_loader is not None:
        val_loader, val_labelled = batches(val_loader, model, teacher, "val_loader", sized=False)
    config = TrainConfig(epochs=epochs, lr=lr, schedule="cosine")
    return train_model(model, None, config, seed=seed, device=device, teacher=teacher, quiet=quiet,
                       description="finetune", train_loader=train_loader, val_loader=val_loader, labelled=labelled,
                       val_labelled=val_labelled)


