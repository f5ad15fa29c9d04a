"""The main job, end to end: baseline (cached) -> search -> prune -> fine-tune -> evaluate -> export
-> report, in a fresh run folder, with the uniform policy cut plainly and fine-tuned the same way beside it."""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .api import (
    _check_workers,
    _data_folder,
    build_structure,
    evaluate_checkpoint,
    finetune_checkpoint,
    load_data_for_spec,
    load_model,
    prune_checkpoint,
    search_checkpoint,
    train_baseline,
)
from .errors import ConfigError, DataError, RunInterrupted, SearchInterrupted
from .settings import PROGRESS_FILE, REFERENCE_IMPORTANCE, checked_args
from .utils import (
    check_writable_dir,
    claim_dir,
    count_text,
    machine_description,
    refuse_output_inside,
    seed_everything,
    shell_arg,
    write_json,
)

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from .checkpoint import ModelSpec
    from .config import RunConfig
    from .data import DataBundle
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


@checked_args
def run_pipeline(cfg: RunConfig, quiet: bool = False, say: Say = print, run_dir: str | Path | None = None) -> Path:
    """The main job: baseline (cached) -> entropy search -> prune -> fine-tune -> evaluate
    -> export -> report, in a fresh run folder. Returns the folder. A checkpoint whose dataset has no labels
    runs label-free: distilling fine-tunes, and top-1 agreement with the original in place of test accuracy.
    Stopped part-way (Ctrl-C, a crash), the folder keeps every finished stage: :func:`resume_run` continues it."""
    return start_run(cfg, quiet, say, run_dir, resume_hint=True)


def start_run(cfg: RunConfig, quiet: bool, say: Say, run_dir: str | Path | None, resume_hint: bool) -> Path:
    """:func:`run_pipeline`'s work; ``resume_hint`` False for a run inside a sweep, whose own resume command (said
    once, by the sweep) is the one to use: each run's `run --resume` line sent its users to the wrong command."""
    from .config import dump_config
    from .utils import write_text

    cfg, device, given, cache = _checked(cfg, say)
    run_dir = fresh_dir(Path(cfg.out_root), run_dir)
    write_text(run_dir / "config.yaml", dump_config(cfg))
    progress = Progress(run_dir, {"baseline": str((given or cache / "model.pt").resolve())}, say=say)
    progress.save()
    # said first, so that a run lost to a crash or a closed terminal can be found and continued
    say(f"run folder: {run_dir}" + (f" (if the run stops part-way: `entroprune run --resume {shell_arg(run_dir)}` "
                                    "continues it)" if resume_hint else ""))
    return _run_stages(cfg, progress, given is not None, device, quiet, say)


def check_run(cfg: RunConfig, say: Say = print) -> RunConfig:
    """Refuse what :func:`run_pipeline` would refuse before it makes a folder (a missing dataset, a checkpoint it
    cannot prune, an unreachable target), making none: a sweep checks its lowest target so. Returns a copy of
    ``cfg`` completed as a run's config.yaml records it (dataset, search seed, absolute input paths)."""
    return _checked(copy.deepcopy(cfg), say)[0]


def _checked(cfg: RunConfig, say: Say) -> tuple[RunConfig, torch.device, Path | None, Path]:
    """``cfg`` completed (dataset, search seed, absolute paths) and checked; the device, a given checkpoint and
    the zoo baseline's cache folder."""
    from .config import ZOO_DATASET, RunConfig
    from .search import SearchConfig
    from .settings import given_config

    cfg = given_config(cfg, RunConfig, "cfg", from_dict="ep.load_config(None, overrides=settings)")
    device, given = _prepare(cfg, say)
    if given is None:
        cfg.dataset = resolve_dataset(cfg.dataset or ZOO_DATASET, cfg.data_dir, say)
    dataset = cfg.dataset
    assert dataset is not None  # _given_checkpoint names the checkpoint's
    cfg.search = SearchConfig(**{**cfg.search.__dict__, "seed": cfg.seed})
    cfg.search.validate()
    cache = Path(cfg.out_root) / "cache" / _cache_name(cfg, dataset)
    if given is None:  # (a given checkpoint's folder and target are checked with it, before anything is said)
        _refuse_runs_inside(cfg, cfg.data_dir)
        _check_target(cfg, *_zoo_baseline(cfg, cache / "model.pt", dataset))
    _absolute_paths(cfg)  # the run's config.yaml reruns and resumes it from any folder
    return cfg, device, given, cache


@checked_args
def resume_run(run_dir: str | Path, quiet: bool = False, say: Say = print) -> Path:
    """Continue a main job that stopped part-way (Ctrl-C, a crash, a lost machine) in its own folder, with the
    settings of its config.yaml: finished stages are kept, an interrupted search resumes from its saved state,
    and any other interrupted stage starts over; the result is the uninterrupted run's. Returns the folder."""
    from .config import load_config

    progress = Progress.load(Path(run_dir), say)
    cfg = load_config(progress.run_dir / "config.yaml")
    device, _ = _prepare(cfg, say)
    kept = [name for name in STAGES if name in progress.timings]
    say(f"resume: {progress.run_dir}, {'finished before: ' + ', '.join(kept) if kept else 'no stage finished before'}")
    return _run_stages(cfg, progress, cfg.checkpoint is not None, device, quiet, say)


def _prepare(cfg: RunConfig, say: Say) -> tuple[torch.device, Path | None]:
    """Settings checked, threads, seed and device set; the user's checkpoint checked before any output."""
    from .utils import resolve_device, set_threads

    cfg.validate()
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    _check_workers(cfg.workers, cfg.ray_address)
    return device, _given_checkpoint(cfg, say) if cfg.checkpoint is not None else None


def _refuse_runs_inside(cfg: RunConfig, data_folder: str | Path | None) -> None:
    """Run folders (and the baseline cache) under the data folder became a class of it on the next read."""
    refuse_output_inside(cfg.out_root, [data_folder], "`out_root`")


def _absolute_paths(cfg: RunConfig) -> None:
    """Input paths made absolute, as the checkpoint's already is: config.yaml reads relative ones from its own
    folder, the run folder, where a path typed relative to the working directory would not be found."""
    if cfg.data_dir:
        cfg.data_dir = str(Path(cfg.data_dir).expanduser().resolve())
    if cfg.search.latency_model:
        cfg.search.latency_model = str(Path(cfg.search.latency_model).expanduser().resolve())


#: The main job's stages in order, as the progress record and evaluation.json's ``timings_s`` name them, with
#: the words messages use.
STAGES = {"baseline": "baseline", "search": "search", "prune": "pruning", "finetune": "fine-tune",
          "evaluate": "evaluation", "export": "export", "uniform_reference": "uniform reference",
          "macs_reference": "MACs reference", "report": "report"}


class Progress:
    """What a run has finished, kept in its folder (``progress.json``) for :func:`resume_run`: the baseline it
    prunes, with its content's hash once it exists (a resume never prunes another), each finished stage's
    seconds, and the time spent over every session."""

    def __init__(self, run_dir: Path, record: dict[str, Any], resumed: bool = False, say: Say = print) -> None:
        self.run_dir, self.record, self.resumed, self.say = run_dir, record, resumed, say
        self.timings: dict[str, float] = record.setdefault("timings_s", {})
        self.elapsed_before = float(record.get("elapsed_s", 0.0))
        self.t0 = time.perf_counter()

    @classmethod
    def load(cls, run_dir: Path, say: Say = print) -> Progress:
        from .utils import read_json

        if not run_dir.is_dir():
            raise ConfigError(f"run folder {run_dir} does not exist; pass the folder `entroprune run` printed")
        record = read_json(run_dir / PROGRESS_FILE)
        if not isinstance(record, dict) or not isinstance(record.get("baseline"), str) or not isinstance(
                record.get("timings_s", {}), dict) or not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} holds no run to resume (no {PROGRESS_FILE} and config.yaml written by "
                              "`entroprune run`); start a new run")
        if (run_dir / "evaluation.json").exists() and (run_dir / "report.md").exists():
            raise ConfigError(f"run {run_dir} is complete (report.md); start a new run to run it again")
        record["resumes"] = int(record.get("resumes", 0)) + 1
        return cls(run_dir, record, resumed=True, say=say)

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def save(self) -> None:
        write_json(self.run_dir / PROGRESS_FILE, {**self.record, "elapsed_s": self.elapsed})

    def stage(self, name: str, work: Callable[[], Any], kept: Callable[[], Any] = lambda: None,
              announce: str | None = None) -> Any:
        """``work``'s result (``announce`` said first), its time recorded once it finishes; on a resume, ``kept``'s
        when that finds the stage finished before (not None). A Ctrl-C inside is a :class:`RunInterrupted`."""
        if self.resumed and name in self.timings:
            value = kept()
            if value is not None:
                self.say(f"{name}: finished before the interruption, kept")
                return value
        if announce:
            self.say(announce)
        t0 = time.perf_counter()
        try:
            value = work()
        except (KeyboardInterrupt, SearchInterrupted):
            raise RunInterrupted(str(self.run_dir), STAGES[name]) from None
        self.timings[name] = time.perf_counter() - t0
        self.save()
        return value

    def check_baseline(self, path: Path) -> None:
        """The baseline's hashes, recorded the first time it exists and compared on every resume: the file's, or
        where that changed its weights' (a removed cache retrained with the same seed is the same net)."""
        from .utils import file_sha256, same_weights, weights_sha256

        digest = file_sha256(path)
        if self.record.setdefault("baseline_sha256", digest) != digest and \
                not same_weights(path, self.record.get("baseline_weights_sha256")):
            raise ConfigError(f"{path} changed since run {self.run_dir} started (retrained or replaced); a resume "
                              "would prune another net than its search saw, start a new run")
        self.record.update(baseline_sha256=digest, baseline_weights_sha256=weights_sha256(path))
        self.save()


def _run_stages(cfg: RunConfig, progress: Progress, given: bool, device: torch.device, quiet: bool,
                say: Say) -> Path:
    """Every stage of the main job in its folder, each kept once finished (see :class:`Progress`)."""
    from .report import write_report
    from .search.loop import load_result
    from .utils import folder_lock, read_json

    run_dir, resume, f = progress.run_dir, progress.resumed, cfg.finetune
    with folder_lock(run_dir, "a run"):
        ckpt_path = Path(progress.record["baseline"])
        progress.stage("baseline", lambda: _baseline(cfg, ckpt_path, given, device, quiet, say),
                       lambda: ckpt_path.exists() or None)
        progress.check_baseline(ckpt_path)
        result = progress.stage("search", lambda: _search(ckpt_path, run_dir / "search", cfg.search, cfg, device,
                                                          quiet, resume), lambda: load_result(run_dir / "search"),
                                f"search: {cfg.search.agent} with the {cfg.search.reward.kind} reward, "
                                f"{cfg.search.episodes} episodes, target {cfg.search.macs_target:.0%} of the MACs")
        progress.stage("prune", lambda: _prune(ckpt_path, run_dir, cfg, device, resume),
                       lambda: read_json(run_dir / "pruned" / "prune.json"))
        progress.stage("finetune", lambda: _finetune_like_run(run_dir, cfg, device, quiet, resume),
                       lambda: read_json(run_dir / "finetuned" / "metrics.json"),
                       f"finetune: {count_text(f.epochs, 'epoch')}{' with distillation' if f.distill else ''}")
        rows = progress.stage("evaluate", lambda: evaluate_checkpoint(
            run_dir / "finetuned" / "model.pt", dataset=cfg.dataset, data_dir=cfg.data_dir, device=device,
            latency=True, repeats=cfg.latency_repeats, processes=cfg.latency_processes),
            announce="evaluate: accuracy, MACs and CPU latency (torch eager, TorchScript, onnxruntime)")
        exported = progress.stage("export", lambda: _export(run_dir, cfg))
        uniform, reference, macs_reference = _references(ckpt_path, run_dir, cfg, result, device, quiet, say,
                                                         progress)
        evaluation = {
            "model": cfg.model, "dataset": cfg.dataset, "checkpoint": cfg.checkpoint,
            "macs_target": cfg.search.macs_target, "rows": rows,
            "machine": machine_description(), "uniform_policy": uniform, "uniform_reference": reference,
            "macs_reference": macs_reference, "export": exported,
            "timings_s": {**progress.timings, "total": progress.elapsed}, "resumes": progress.record.get("resumes", 0),
            # the search's own best reward, and the re-ranking's score of the policy returned (what result.reward
            # holds when the search re-ranks: the two are on different scales)
            "search_reward": result.summary.get("best_search_reward", result.reward),
            "rerank_score": result.reward if result.summary.get("rerank") else None,
            "chosen": result.summary.get("chosen", "search"),
            "seed": cfg.seed, "date": time.strftime("%Y-%m-%d")}
        progress.stage("report", lambda: (write_json(run_dir / "evaluation.json", evaluation), write_report(run_dir)))
    return run_dir


def _cache_name(cfg: RunConfig, dataset: str) -> str:
    """The cached baseline's folder: named by every setting its weights depend on. A run with another learning
    rate, batch size, augmentation, training subset or data folder reused a baseline trained without them; those
    are appended where they differ from the defaults (the default baseline keeps its name)."""
    import hashlib

    from .config import BaselineConfig

    b, default = cfg.baseline, BaselineConfig()
    name = f"{cfg.model}-{dataset}-w{b.width_mult}-e{b.epochs}-s{cfg.seed}"
    extra = [f"{tag}{value}" for tag, value, usual in (("lr", b.lr, default.lr), ("b", b.batch_size, default.batch_size),
                                                       ("aug-", b.augment, default.augment),
                                                       ("n", b.train_limit, default.train_limit),
                                                       ("px", b.image_size, default.image_size)) if value != usual]
    if cfg.data_dir is not None:  # a path's own characters may not suit a folder name: its digest does
        extra.append("d" + hashlib.sha256(str(Path(cfg.data_dir).expanduser().resolve()).encode()).hexdigest()[:8])
    return "-".join([name, *extra])


def _baseline(cfg: RunConfig, ckpt_path: Path, given: bool, device: torch.device, quiet: bool, say: Say) -> None:
    """The zoo baseline, trained into its cache unless a run trained it before (a given checkpoint: nothing)."""
    b = cfg.baseline
    if given:
        return
    if ckpt_path.exists():
        say(f"baseline: reusing {ckpt_path}")
        return
    say(f"baseline: training {cfg.model} on {cfg.dataset} for {count_text(b.epochs, 'epoch')}")
    assert cfg.dataset is not None
    train_baseline(cfg.model, cfg.dataset, ckpt_path.parent, epochs=b.epochs, lr=b.lr, batch_size=b.batch_size,
                   width_mult=b.width_mult, data_dir=cfg.data_dir, seed=cfg.seed, device=device,
                   train_limit=b.train_limit, quiet=quiet, augment=b.augment, image_size=b.image_size)


def _search(ckpt_path: Path, out: Path, search: SearchConfig, cfg: RunConfig, device: torch.device | str, quiet: bool,
            resume: bool) -> SearchResult:
    """A search into ``out``; on a resume, continued from its saved state (started over without one)."""
    from .search import STATE_FILE
    from .search.loop import LATENCY_FILE

    saved = resume and (out / STATE_FILE).exists()
    fitted = out / LATENCY_FILE
    had_fit = fitted.exists()
    try:
        # re-ranked on the nets this run's prune makes (refitted or plain cuts)
        return search_checkpoint(ckpt_path, out, search.resolved(cfg.prune.refit, cfg.prune.refit_norms, cfg.prune.refit_head), dataset=cfg.dataset, data_dir=cfg.data_dir, device=device,
                                 quiet=quiet, workers=cfg.workers, ray_address=cfg.ray_address, resume=saved,
                                 force=resume and not saved)
    except ConfigError as exc:
        if search.latency_model or had_fit or not fitted.exists():
            raise
        # refused after minutes of timing (an unreachable latency target): the next run need not time again
        raise ConfigError(f"{exc}; the latency model fitted for it is kept: `search.latency_model: "
                          f"{fitted.resolve()}` in the next run's config reuses it") from None


def _prune(ckpt_path: Path, folder: Path, cfg: RunConfig, device: torch.device | str, resume: bool,
           policy: Path | None = None) -> None:
    """``folder``/pruned cut by ``policy`` (default: ``folder``/search/policy.json); kept on a resume if
    finished (prune.json is written last)."""
    if resume and (folder / "pruned" / "prune.json").exists():
        return
    prune_checkpoint(ckpt_path, policy or folder / "search" / "policy.json", folder / "pruned", dataset=cfg.dataset,
                     data_dir=cfg.data_dir, device=device, force=resume, refit=cfg.prune.refit,
                     refit_norms=cfg.prune.refit_norms, refit_head=cfg.prune.refit_head, bn_recalibration=cfg.prune.bn_recalibration, seed=cfg.seed)


def _export(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """The fine-tuned net exported beside the report, with what a deployment must know to feed it."""
    from .export import INT8_FILE, SUFFIXES, export_model

    fmt = cfg.export_format  # checked by cfg.validate, as the opset and batch are
    model, ckpt = load_model(run_dir / "finetuned" / "model.pt")  # once: the net to export and its spec
    spec, file = ckpt.spec, f"model{SUFFIXES[fmt]}"
    res = export_model(model, spec.example_input(), run_dir / file, fmt,
                       opset=cfg.export_opset if fmt == "onnx" else None, batch=cfg.export_batch, classes=spec.classes)
    int8 = None
    if cfg.export_int8:
        from .api import _int8_export

        q = _int8_export(model, spec, run_dir / INT8_FILE, cfg.export_opset, cfg.export_batch, cfg.dataset, cfg.data_dir)
        int8 = {"file": INT8_FILE, **{k: q[k] for k in ("bytes", "float_bytes", "agreement", "test_accuracy",
                                                        "float_test_accuracy", "opset")}}
    return {"file": file, "format": fmt, "bytes": res["bytes"], "max_abs_diff": res["max_abs_diff"],
            "outputs": res["outputs"], "opset": res["opset"], "batch": res["batch"], "input_size": list(spec.input_size),
            "mean": list(spec.mean), "std": list(spec.std), "sample_rate": spec.sample_rate, "int8": int8,
            "classes": spec.classes}


def _references(ckpt_path: Path, run_dir: Path, cfg: RunConfig, result: SearchResult, device: torch.device | str,
                quiet: bool, say: Say, progress: Progress) -> tuple[dict[str, float], Any, Any]:
    """The uniform policy, and the reference lines the config asks for: that policy fine-tuned alike, and for a
    latency-targeted run the MACs-targeted search of the same latency (each one a stage of ``progress``)."""
    # the search's own rounding (`round_to: auto` is measured into a step there)
    searched = replace(cfg.search, round_to=result.summary["config"]["round_to"])
    from .search import matching_macs_target
    from .search.loop import latency_model

    model, ckpt = load_model(ckpt_path)
    structure = build_structure(model, ckpt.spec, searched.importance, searched.ignored_layers)
    latency = latency_model(model, structure, searched, run_dir / "search")  # the search's own (None: MACs only)
    uniform = _uniform_policy(structure, searched, latency)
    reference = macs_reference = None
    resume = progress.resumed
    if cfg.reference_uniform:
        reference = progress.stage("uniform_reference", lambda: _uniform_reference(
            ckpt_path, run_dir / "uniform", uniform, cfg, result, structure.norm, device, quiet, say, resume))
    if cfg.reference_macs and result.summary.get("latency_fraction") is not None:
        assert latency is not None  # a latency-targeted search fitted or read one
        target = matching_macs_target(structure, latency, result.summary["latency_fraction"], searched.min_keep,
                                      searched.step)
        macs_reference = progress.stage("macs_reference", lambda: _macs_reference(
            ckpt_path, run_dir / "macs-reference", target, searched, result, cfg, device, quiet, say, resume))
    return uniform, reference, macs_reference


def _given_checkpoint(cfg: RunConfig, say: Say) -> Path:
    """The user's checkpoint, checked before the run folder exists (a bad one leaves nothing behind): readable
    without unpickling, unpruned, and its dataset at hand. The run takes its model and dataset."""
    from .errors import CheckpointError, UntrustedPickleError

    path = Path(cfg.checkpoint or "")
    try:
        model, ckpt = load_model(path)
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
    _check_target(cfg, model, spec)
    _refuse_runs_inside(cfg, _data_folder(spec, dataset, cfg.data_dir))
    # the config's model and baseline keys describe a baseline to train: unused here, whatever they say
    say(f"baseline: {path}, the checkpoint's {spec.model} on {dataset} (no baseline trained)")
    if not data.labelled:
        say(f"no labels in {data.name}: the fine-tune distils from the original, and the report gives top-1 "
            "agreement with it on held-out images instead of test accuracy")
    # the run's config.yaml reruns it from any folder
    cfg.checkpoint, cfg.model, cfg.dataset = str(path.resolve()), spec.model, dataset
    return path


def _zoo_baseline(cfg: RunConfig, cached: Path, dataset: str) -> tuple[nn.Module, ModelSpec]:
    """The zoo baseline's net and spec: the cached checkpoint's, or, before it is trained, the net as it will be
    built, its images checked here, not after the run folder is made (a net's MACs do not depend on weights)."""
    import torch

    from .api import zoo_model

    if cached.exists():
        model, ckpt = load_model(cached)
        return model, ckpt.spec
    data = _check_baseline_data(cfg, dataset)
    with torch.random.fork_rng(devices=[]):  # the run's random draws stay those of a run without this check
        return zoo_model(cfg.model, data, cfg.baseline.width_mult, dataset)


def _check_target(cfg: RunConfig, model: nn.Module, spec: ModelSpec) -> None:
    """An unreachable MACs target refused before the run folder exists (the search would find it after the
    baseline's training, and leave a folder behind)."""
    from .api import check_reachable

    check_reachable(build_structure(model, spec, cfg.search.importance, cfg.search.ignored_layers), cfg.search)


def _check_baseline_data(cfg: RunConfig, dataset: str) -> DataBundle:
    """The images a zoo baseline would train on: present and labelled."""
    from .data import load_dataset
    from .models import min_input_size

    data = load_dataset(dataset, cfg.data_dir, seed=cfg.seed, min_size=min_input_size(cfg.model),
                        train_limit=cfg.baseline.train_limit, image_size=cfg.baseline.image_size)
    if not data.labelled:
        raise DataError(f"dataset {dataset} has no labels, and the zoo baseline trains on them: put the images in "
                        "one sub-folder per class, or prune a model trained elsewhere on them (`checkpoint`)")
    return data


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


def _finetune_like_run(folder: Path, cfg: RunConfig, device: torch.device | str, quiet: bool,
                       resume: bool) -> dict[str, Any]:
    """``folder``/pruned fine-tuned into ``folder``/finetuned with the run's fine-tune settings and seed: the
    searched net and every reference line get the same one. On a resume, one finished before is kept
    (metrics.json is written last); one that was not starts over (its seed makes it the same)."""
    from .utils import read_json

    f, out = cfg.finetune, folder / "finetuned"
    if resume and (metrics := read_json(out / "metrics.json")) is not None:
        return {**metrics, "checkpoint": str(out / "model.pt")}
    return finetune_checkpoint(folder / "pruned" / "model.pt", out, epochs=f.epochs, lr=f.lr,
                               batch_size=f.batch_size, distill=f.distill, seed=cfg.seed, device=device,
                               quiet=quiet, dataset=cfg.dataset, data_dir=cfg.data_dir, nproc=f.nproc, force=resume)


def fresh_dir(root: Path, run_dir: str | Path | None, kind: str = "run") -> Path:
    """``run_dir``, or a new ``<kind>-<date>-<time>`` under ``root``; refused when it holds anything."""
    if run_dir is None:
        check_writable_dir(root, "out_root")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        names = (root / (f"{kind}-{stamp}" if n == 1 else f"{kind}-{stamp}-{n}") for n in itertools.count(1))
        # claimed by creating it: runs started in the same second (a sweep of seeds in parallel) shared a folder
        # when each checked that the name was free and then made it
        run_dir = next(name for name in names if claim_dir(name))
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{kind} folder {run_dir} is not empty; choose another")
    return check_writable_dir(run_dir)


def _uniform_policy(structure: Structure, search: SearchConfig, latency: LatencyModel | None) -> dict[str, float]:
    """The uniform policy of the search's targets, floor and rounding (the report's reference line); under a
    latency target, with the latency model the search used."""
    from .prune import policy_to_ratios
    from .search import fixed_policy_counts, uniform_ratio
    from .search.budget import Budget

    budget = Budget(structure, search.macs_target, latency, search.latency_target if latency else None,
                    search.params_target)
    counts, _ = fixed_policy_counts(structure, search, [uniform_ratio(structure, search, budget)] * len(structure.groups),
                                    budget)
    return policy_to_ratios(structure, counts)


def _uniform_reference(ckpt_path: Path, out: Path, uniform: dict[str, float], cfg: RunConfig, result: SearchResult,
                       norm: str, device: torch.device | str, quiet: bool, say: Say,
                       resume: bool = False) -> dict[str, Any]:
    """The trivial choice, the uniform policy cut plainly (no refit) by the L1 norm (REFERENCE_IMPORTANCE, the
    arena's `uniform`), with the searched net's fine-tune: the report's reference line, what the tool (search,
    ranking and refit) bought over one keep ratio and a magnitude cut (``norm``: the searched net's ranking, ``auto`` resolved)."""
    ranked_alike = norm == REFERENCE_IMPORTANCE
    if result.policy == uniform and ranked_alike and not cfg.prune.refit:  # the searched net itself: nothing else to train
        say("uniform reference: the search chose the uniform policy; no second fine-tune")
        finetuned = json.loads((out.parent / "finetuned" / "metrics.json").read_text())
        return {**_scored(finetuned), "same_as_searched": True}
    say(f"uniform reference: the uniform policy, cut by {REFERENCE_IMPORTANCE.upper()} without the refit, with the "
        "same fine-tune")
    write_json(out / "policy.json", {"policy": uniform, "agent": "uniform", "importance": REFERENCE_IMPORTANCE,
                                     "ignored_layers": cfg.search.ignored_layers})
    plain = replace(cfg, prune=replace(cfg.prune, refit=False, refit_norms=False))
    _prune(ckpt_path, out, plain, device, resume, out / "policy.json")
    return {**_scored(_finetune_like_run(out, cfg, device, quiet, resume)), "same_as_searched": False, "refit": False,
            "importance": REFERENCE_IMPORTANCE, "ranked_alike": ranked_alike}


def _scored(metrics: dict[str, Any]) -> dict[str, Any]:
    """A fine-tune's score (test accuracy, or agreement with the original without labels), MACs and params."""
    from .report import score_key

    key = score_key(metrics)
    return {key: metrics[key], "macs": metrics["macs"], "params": metrics["params"]}


def _macs_reference(ckpt_path: Path, out: Path, target: float, searched: SearchConfig, result: SearchResult,
                    cfg: RunConfig, device: torch.device | str, quiet: bool, say: Say,
                    resume: bool = False) -> dict[str, Any]:
    """For a latency-targeted run, the tool's MACs-targeted search aimed at the same latency (the MACs target
    whose uniform policy the search's latency model predicts at the result's latency), pruned, fine-tuned and
    timed like the result: what targeting measured time bought over targeting MACs."""
    from .latency import RUNTIMES

    say(f"MACs reference: the default search at {target:.1%} of the MACs (the same predicted latency), fine-tuned alike")
    from .search.loop import load_result

    res = (resume and load_result(out / "search")) or _search(
        ckpt_path, out / "search", replace(searched, macs_target=target, latency_target=None), cfg, device, quiet,
        resume)
    _prune(ckpt_path, out, cfg, device, resume)
    m = _finetune_like_run(out, cfg, device, quiet, resume)
    rows = evaluate_checkpoint(out / "finetuned" / "model.pt", dataset=cfg.dataset, data_dir=cfg.data_dir,
                               device=device, latency=True, repeats=cfg.latency_repeats,
                               processes=cfg.latency_processes)
    key = f"{RUNTIMES[searched.latency_backend]}_b64_ms"
    return {"macs_target": target, "achieved": res.achieved, "chosen": res.summary.get("chosen", "search"),
            **_scored(m), "latency_fraction": rows[-1][key] / rows[0][key], "backend": searched.latency_backend}


# ----------------------------------------------------------------------------- any nn.Module


__all__ = ["run_pipeline", "resume_run", "resolve_dataset", "Progress", "STAGES", "PROGRESS_FILE"]
