"""The main job, end to end: baseline (cached) -> search -> prune -> fine-tune -> evaluate -> export
-> report, in a fresh run folder, with the uniform policy pruned and fine-tuned the same way beside it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .api import (
    _check_workers,
    build_structure,
    evaluate_checkpoint,
    finetune_checkpoint,
    load_data_for_spec,
    load_model,
    prune_checkpoint,
    search_checkpoint,
    train_baseline,
)
from .errors import ConfigError, DataError
from .utils import check_writable_dir, machine_description, seed_everything, write_json

if TYPE_CHECKING:
    import torch

    from .config import RunConfig
    from .latency import LatencyModel
    from .search import SearchConfig, SearchResult
    from .structure import Structure

Say = Callable[[str], Any]


def resolve_dataset(name: str, data_dir: str | None, say: Say = print) -> str:
    """Fashion-MNIST when present, else scikit-learn digits with a one-line notice; a folder the user named
    that lacks it is an error when loaded, not a reason to run on other data."""
    from .data import fashion_mnist_available

    if name == "fashion-mnist" and not data_dir and not fashion_mnist_available():
        say("notice: Fashion-MNIST not found (apt-get install dataset-fashion-mnist); using scikit-learn digits")
        return "digits"
    return name


def run_pipeline(cfg: RunConfig, quiet: bool = False, say: Say = print, run_dir: str | Path | None = None) -> Path:
    """The main job: baseline (cached) -> entropy search -> prune -> fine-tune -> evaluate
    -> export -> report, in a fresh run folder. Returns the folder. A checkpoint whose dataset has no labels
    runs label-free: distilling fine-tunes, and top-1 agreement with the original in place of test accuracy."""
    from .config import ZOO_DATASET, dump_config
    from .report import write_report
    from .search import SearchConfig
    from .utils import resolve_device, set_threads, write_text

    cfg.validate()
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    _check_workers(cfg.workers, cfg.ray_address)
    t0 = time.perf_counter()
    given = _given_checkpoint(cfg, say) if cfg.checkpoint is not None else None  # checked before any output
    if given is None:
        cfg.dataset = resolve_dataset(cfg.dataset or ZOO_DATASET, cfg.data_dir, say)
    dataset = cfg.dataset
    assert dataset is not None  # _given_checkpoint names the checkpoint's
    cfg.search = SearchConfig(**{**cfg.search.__dict__, "seed": cfg.seed})
    cfg.search.validate()
    root = Path(cfg.out_root)
    b = cfg.baseline
    cache = root / "cache" / f"{cfg.model}-{dataset}-w{b.width_mult}-e{b.epochs}-s{cfg.seed}"
    if given is None and not (cache / "model.pt").exists():
        _check_baseline_data(cfg, dataset)  # found here, not after the run folder is made
    run_dir = _fresh_run_dir(root, run_dir)
    write_text(run_dir / "config.yaml", dump_config(cfg))
    t_all = time.perf_counter()
    timings: dict[str, float] = {}

    ckpt_path = given or cache / "model.pt"
    if given is None and ckpt_path.exists():
        say(f"baseline: reusing {ckpt_path}")
    elif given is None:
        say(f"baseline: training {cfg.model} on {dataset} for {b.epochs} epochs")
        train_baseline(cfg.model, dataset, cache, epochs=b.epochs, lr=b.lr, batch_size=b.batch_size,
                       width_mult=b.width_mult, data_dir=cfg.data_dir, seed=cfg.seed, device=device,
                       train_limit=b.train_limit, quiet=quiet, augment=b.augment)
    timings["baseline"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say(f"search: {cfg.search.agent} with the {cfg.search.reward.kind} reward, {cfg.search.episodes} episodes, "
        f"target {cfg.search.macs_target:.0%} of the MACs")
    result = search_checkpoint(ckpt_path, run_dir / "search", cfg.search, dataset=cfg.dataset, data_dir=cfg.data_dir,
                               device=device, quiet=quiet, workers=cfg.workers, ray_address=cfg.ray_address)
    timings["search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    prune_checkpoint(ckpt_path, run_dir / "search" / "policy.json", run_dir / "pruned", dataset=cfg.dataset,
                     data_dir=cfg.data_dir, device=device)
    timings["prune"] = time.perf_counter() - t0
    f = cfg.finetune
    t0 = time.perf_counter()
    say(f"finetune: {f.epochs} epochs{' with distillation' if f.distill else ''}")
    _finetune_like_run(run_dir, cfg, device, quiet)
    timings["finetune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("evaluate: accuracy, MACs and CPU latency (torch eager, TorchScript, onnxruntime)")
    rows = evaluate_checkpoint(run_dir / "finetuned" / "model.pt", dataset=cfg.dataset, data_dir=cfg.data_dir,
                               device=device, latency=True, repeats=cfg.latency_repeats,
                               processes=cfg.latency_processes)
    timings["evaluate"] = time.perf_counter() - t0
    exported = _export(run_dir, cfg.export_format)
    uniform, reference, macs_reference = _references(ckpt_path, run_dir, cfg, result, device, quiet, say, timings)
    timings["total"] = time.perf_counter() - t_all
    write_json(run_dir / "evaluation.json", {
        "model": cfg.model, "dataset": dataset, "checkpoint": cfg.checkpoint, "macs_target": cfg.search.macs_target,
        "rows": rows,
        "machine": machine_description(), "uniform_policy": uniform, "uniform_reference": reference,
        "macs_reference": macs_reference, "export": exported,
        "timings_s": timings, "search_reward": result.reward, "chosen": result.summary.get("chosen", "search"),
        "seed": cfg.seed, "date": time.strftime("%Y-%m-%d")})
    write_report(run_dir)
    return run_dir


def _export(run_dir: Path, fmt: str) -> dict[str, Any]:
    """The fine-tuned net exported beside the report, with what a deployment must know to feed it."""
    from .export import SUFFIXES, export_model

    model, ckpt = load_model(run_dir / "finetuned" / "model.pt")  # once: the net to export and its spec
    spec, file = ckpt.spec, f"model{SUFFIXES[fmt]}"
    res = export_model(model, spec.example_input(), run_dir / file, fmt)  # fmt: cfg.validate's
    return {"file": file, "format": fmt, "bytes": res["bytes"], "max_abs_diff": res["max_abs_diff"],
            "input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std)}


def _references(ckpt_path: Path, run_dir: Path, cfg: RunConfig, result: SearchResult, device: torch.device | str,
                quiet: bool, say: Say, timings: dict[str, float]) -> tuple[dict[str, float], Any, Any]:
    """The uniform policy, and the reference lines the config asks for: that policy fine-tuned alike, and for a
    latency-targeted run the MACs-targeted search of the same latency (each one's time into ``timings``)."""
    # the search's own rounding (`round_to: auto` is measured into a step there)
    searched = replace(cfg.search, round_to=result.summary["config"]["round_to"])
    from .search import matching_macs_target
    from .search.loop import latency_model

    model, ckpt = load_model(ckpt_path)
    structure = build_structure(model, ckpt.spec, searched.importance, searched.ignored_layers)
    latency = latency_model(model, structure, searched, run_dir / "search")  # the search's own (None: MACs only)
    uniform = _uniform_policy(structure, searched, latency)
    reference = macs_reference = None
    if cfg.reference_uniform:
        t0 = time.perf_counter()
        reference = _uniform_reference(ckpt_path, run_dir / "uniform", uniform, cfg, result, device, quiet, say)
        timings["uniform_reference"] = time.perf_counter() - t0
    if cfg.reference_macs and result.summary.get("latency_fraction") is not None:
        t0 = time.perf_counter()
        assert latency is not None  # a latency-targeted search fitted or read one
        target = matching_macs_target(structure, latency, result.summary["latency_fraction"], searched.min_keep,
                                      searched.step)
        macs_reference = _macs_reference(ckpt_path, run_dir / "macs-reference", target, searched, result, cfg, device,
                                         quiet, say)
        timings["macs_reference"] = time.perf_counter() - t0
    return uniform, reference, macs_reference


def _given_checkpoint(cfg: RunConfig, say: Say) -> Path:
    """The user's checkpoint, checked before the run folder exists (a bad one leaves nothing behind): readable
    without unpickling, unpruned, and its dataset at hand. The run takes its model and dataset."""
    from .errors import CheckpointError, UntrustedPickleError

    path = Path(cfg.checkpoint or "")
    try:
        _, ckpt = load_model(path)
    except UntrustedPickleError:
        raise CheckpointError(f"{path} contains pickled Python objects; the main job reads checkpoints only with "
                              "weights_only=True: save the model with entroprune.save_checkpoint() and run on "
                              "that file") from None
    if ckpt.pruning:
        raise ConfigError(f"{path} is already pruned; run on the original (unpruned) checkpoint")
    spec = ckpt.spec
    dataset = cfg.dataset or spec.dataset
    data = load_data_for_spec(spec, dataset, cfg.data_dir)  # a missing dataset is one line here, not after a search
    if not data.labelled:
        _check_label_free(cfg, data.name)
    # the config's model and baseline keys describe a baseline to train: unused here, whatever they say
    say(f"baseline: {path}, the checkpoint's {spec.model} on {dataset} (no baseline trained)")
    if not data.labelled:
        say(f"no labels in {data.name}: the fine-tune distils from the original, and the report gives top-1 "
            "agreement with it on held-out images instead of test accuracy")
    # the run's config.yaml reruns it from any folder
    cfg.checkpoint, cfg.model, cfg.dataset = str(path.resolve()), spec.model, dataset
    return path


def _check_baseline_data(cfg: RunConfig, dataset: str) -> None:
    """The images a zoo baseline would train on: present and labelled."""
    from .data import load_dataset
    from .models import min_input_size

    data = load_dataset(dataset, cfg.data_dir, seed=cfg.seed, min_size=min_input_size(cfg.model),
                        train_limit=cfg.baseline.train_limit)
    if not data.labelled:
        raise DataError(f"dataset {dataset} has no labels, and the zoo baseline trains on them: put the images in "
                        "one sub-folder per class, or prune a model trained elsewhere on them (`checkpoint`)")


def _check_label_free(cfg: RunConfig, name: str) -> None:
    """A run on unlabelled images: every step must do without labels (the fine-tune's only target is then the
    original's outputs), refused here rather than after a search."""
    from .search.rewards import REWARDS

    s = cfg.search
    kinds = [("search.reward.kind", s.reward.kind)] + ([("search.rerank_reward", s.rerank_reward)] if s.reranks else [])
    for key, kind in kinds:
        if REWARDS[kind].needs_labels:
            raise DataError(f"dataset {name} has no labels, and the {kind} reward needs them; set config key "
                            f"{key!r} to a label-free reward (entropy, kl)")
    if not cfg.finetune.distill:
        raise DataError(f"dataset {name} has no labels: the fine-tune must distil from the original (config key "
                        "'finetune.distill': true), whose outputs stand in for them")


def _finetune_like_run(folder: Path, cfg: RunConfig, device: torch.device | str, quiet: bool) -> dict[str, Any]:
    """``folder``/pruned fine-tuned into ``folder``/finetuned with the run's fine-tune settings and seed: the
    searched net and every reference line get the same one."""
    f = cfg.finetune
    return finetune_checkpoint(folder / "pruned" / "model.pt", folder / "finetuned", epochs=f.epochs, lr=f.lr,
                               batch_size=f.batch_size, distill=f.distill, seed=cfg.seed, device=device,
                               quiet=quiet, dataset=cfg.dataset, data_dir=cfg.data_dir, nproc=f.nproc)


def _fresh_run_dir(root: Path, run_dir: str | Path | None) -> Path:
    """``run_dir``, or a new ``run-<date>-<time>`` under ``root``; refused when it holds anything."""
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir, n = root / f"run-{stamp}", 1
        while run_dir.exists():
            n += 1
            run_dir = root / f"run-{stamp}-{n}"
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run folder {run_dir} is not empty; choose another")
    return check_writable_dir(run_dir)


def _uniform_policy(structure: Structure, search: SearchConfig, latency: LatencyModel | None) -> dict[str, float]:
    """The uniform policy of the search's targets, floor and rounding (the report's reference line); under a
    latency target, with the latency model the search used."""
    from .prune import policy_to_ratios
    from .search import fixed_policy_counts, uniform_ratio
    from .search.budget import Budget

    budget = Budget(structure, search.macs_target, latency, search.latency_target) if latency else None
    counts, _ = fixed_policy_counts(structure, search, [uniform_ratio(structure, search, budget)] * len(structure.groups),
                                    budget)
    return policy_to_ratios(structure, counts)


def _uniform_reference(ckpt_path: Path, out: Path, uniform: dict[str, float], cfg: RunConfig, result: SearchResult,
                       device: torch.device | str, quiet: bool, say: Say) -> dict[str, Any]:
    """The uniform policy pruned and fine-tuned exactly like the searched one: the report's reference line."""
    if result.policy == uniform:  # the search returned the uniform policy itself: nothing else to train
        say("uniform reference: the search chose the uniform policy; no second fine-tune")
        finetuned = json.loads((out.parent / "finetuned" / "metrics.json").read_text())
        return {**_scored(finetuned), "same_as_searched": True}
    say("uniform reference: the uniform policy with the same fine-tune")
    write_json(out / "policy.json", {"policy": uniform, "agent": "uniform", "importance": cfg.search.importance,
                                     "ignored_layers": cfg.search.ignored_layers})  # pruned as the search's result is
    prune_checkpoint(ckpt_path, out / "policy.json", out / "pruned", dataset=cfg.dataset, data_dir=cfg.data_dir,
                     device=device)
    return {**_scored(_finetune_like_run(out, cfg, device, quiet)), "same_as_searched": False}


def _scored(metrics: dict[str, Any]) -> dict[str, Any]:
    """A fine-tune's score (test accuracy, or agreement with the original without labels), MACs and params."""
    from .report import score_key

    key = score_key(metrics)
    return {key: metrics[key], "macs": metrics["macs"], "params": metrics["params"]}


def _macs_reference(ckpt_path: Path, out: Path, target: float, searched: SearchConfig, result: SearchResult,
                    cfg: RunConfig, device: torch.device | str, quiet: bool, say: Say) -> dict[str, Any]:
    """For a latency-targeted run, the tool's MACs-targeted search aimed at the same latency (the MACs target
    whose uniform policy the search's latency model predicts at the result's latency), pruned, fine-tuned and
    timed like the result: what targeting measured time bought over targeting MACs."""
    from .latency import RUNTIMES

    say(f"MACs reference: the default search at {target:.1%} of the MACs (the same predicted latency), fine-tuned alike")
    res = search_checkpoint(ckpt_path, out / "search", replace(searched, macs_target=target, latency_target=None),
                            dataset=cfg.dataset, data_dir=cfg.data_dir, device=device, quiet=quiet,
                            workers=cfg.workers, ray_address=cfg.ray_address)
    prune_checkpoint(ckpt_path, out / "search" / "policy.json", out / "pruned", dataset=cfg.dataset,
                     data_dir=cfg.data_dir, device=device)
    m = _finetune_like_run(out, cfg, device, quiet)
    rows = evaluate_checkpoint(out / "finetuned" / "model.pt", dataset=cfg.dataset, data_dir=cfg.data_dir,
                               device=device, latency=True, repeats=cfg.latency_repeats,
                               processes=cfg.latency_processes)
    key = f"{RUNTIMES[searched.latency_backend]}_b64_ms"
    return {"macs_target": target, "achieved": res.achieved, "chosen": res.summary.get("chosen", "search"),
            **_scored(m), "latency_fraction": rows[-1][key] / rows[0][key], "backend": searched.latency_backend}


# ----------------------------------------------------------------------------- any nn.Module


__all__ = ["run_pipeline", "resolve_dataset"]
