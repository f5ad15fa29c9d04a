"""The ``entroprune`` command line: a thin shell over the Python API.

Every command turns an :class:`EntropruneError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import signal
import sys
from inspect import signature
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# Only torch-free modules at the top (settings, configs, errors): --help, --version and a mistyped flag answer
# at once; each command imports the rest (torch with it) when it runs.
from .config import (
    EVAL_BATCH_SIZE,
    INSPECT_CALIB_SIZE,
    ZOO_DATASET,
    BaselineConfig,
    FinetuneConfig,
    PruneConfig,
    RunConfig,
)
from .errors import ConfigError, EntropruneError, SearchInterrupted, out_of_memory
from .search.config import RewardConfig, SearchConfig
from .settings import (
    BUILT_IN_DATASETS,
    DEFAULT_FORMAT,
    DEFAULT_IMPORTANCE,
    DEFAULT_MODEL,
    DEFAULT_OPSET,
    IMPORTANCES,
    INT8_FILE,
    OPSETS,
    SUFFIXES,
    ZOO_MODELS,
    LatencyConfig,
    busy_warning,
    in_fresh,
)
from .sweep import SweepConfig
from .utils import count_text, shell_arg

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Structured filter pruning of CNNs with an entropy-rewarded RL agent.")
# Piped output (CI, logs) gets wide tables instead of rich's 80-column default.
out = Console() if sys.stdout.isatty() else Console(width=200)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=400)

# Every option that sets a config field defaults to that field: the defaults are declared once, there.
_SEARCH, _REWARD, _BASELINE, _FINETUNE, _LATENCY, _PRUNE = (SearchConfig(), RewardConfig(), BaselineConfig(),
                                                             FinetuneConfig(), LatencyConfig(), PruneConfig())

Seed = Annotated[int, typer.Option(help="Random seed; same seed, same result.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
Threads = Annotated[int, typer.Option(help="Torch CPU threads (0 = torch default).")]
DataDir = Annotated[str | None, typer.Option(help="Dataset folder or file (else $ENTROPRUNE_DATA, "
                                                  "then /usr/share/datasets).")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
TrustPickle = Annotated[bool, typer.Option(help="Allow pickled objects (runs code from the file).")]
Importance = Annotated[str, typer.Option(help=f"Channel ranking within a group: {' or '.join(IMPORTANCES)}.")]
CheckpointDataset = Annotated[str | None, typer.Option(help="Dataset (default: the checkpoint's).")]
FinetuneEpochs = Annotated[int | None, typer.Option(
    help=f"Fine-tuning epochs of the pruned net and of its uniform reference (overrides the config's "
         f"finetune.epochs, default {_FINETUNE.epochs}): more win back accuracy at low targets, at their time.")]
# run and sweep: each option overrides its config key, whose default lives in RunConfig
RunCheckpoint = Annotated[Path | None, typer.Option(
    help="Your trained checkpoint to prune, instead of training the zoo baseline (overrides the config).")]
RunSeed = Annotated[int | None, typer.Option(help="Random seed (overrides the config).")]
RunDevice = Annotated[str | None, typer.Option(help="auto, cpu or cuda (overrides the config).")]
RunThreads = Annotated[int | None, typer.Option(help="Torch CPU threads, 0 = torch default (overrides the config).")]


def _ignore_further_ctrl_c() -> None:
    """The command is stopping because of a Ctrl-C: a second press during shutdown (atexit, torch's
    finalizers) would otherwise print a KeyboardInterrupt traceback after the one-line message."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread (the CLI called from a thread): nothing to guard
        pass
    # CPython notes a KeyboardInterrupt that left any string exec (dataclasses and scipy build functions that
    # way) and, under `python -m`, kills itself with SIGINT at exit although the command handled it; each
    # string exec clears that note as it starts, so one with nothing to interrupt leaves the exit code 130.
    exec("")


# Config fields and API parameters whose flag has another name (errors.as_flags renders the rest).
FLAG_NAMES = {"out_dir": "out", "out_file": "out", "fmt": "format", "ignored_layers": "ignore", "reward.kind": "reward", "reward.layers": "entropy-layers",
              "reward.physical": "physical-scoring"}


def handle_errors(fn=None, *, render=None):
    """Bad input ends in one readable line and exit 2 (a failed run: exit 1), never a traceback.

    Messages name settings as the library has them; ``render`` (default: the flags) rewrites them for
    the reader of this command.
    """
    from .errors import RunError, SearchInterrupted, as_flags

    if fn is None:
        return functools.partial(handle_errors, render=render)
    render = render or (lambda message: as_flags(message, FLAG_NAMES))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .utils import forget_created_dirs, remove_empty_created_dirs

        forget_created_dirs()
        try:
            return fn(*args, **kwargs)
        except SearchInterrupted as exc:
            _ignore_further_ctrl_c()
            err.print(render(str(exc)), highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except EntropruneError as exc:
            remove_empty_created_dirs()
            err.print(f"[bold red]error:[/] {render(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1 if isinstance(exc, RunError) else 2) from None
        except KeyboardInterrupt:
            _ignore_further_ctrl_c()
            remove_empty_created_dirs()
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except (MemoryError, RuntimeError) as exc:
            if not (needed := out_of_memory(exc)):
                raise
            remove_empty_created_dirs()  # the machine's limit, not the input's fault (exit 1), as a full disk
            flags = [f"--{n.replace('_', '-')}" for n in ("batch", "batch_size", "latency_batch")
                     if n in signature(fn).parameters]
            smaller = " or ".join(flags) if flags else "the config's batch sizes"
            err.print(f"[bold red]error:[/] out of memory ({needed}); use a smaller {smaller}, fewer "
                      "images or a smaller model, or free memory, and rerun", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            remove_empty_created_dirs()  # the machine, not the input: a full disk, a lost mount (exit 1)
            where = f" ({exc.filename})" if exc.filename else ""
            err.print(f"[bold red]error:[/] could not read or write a file{where}: {exc.strerror or exc}; "
                      "the outputs written before it are whole, free space or fix the path and rerun",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _print_version(value: bool) -> None:
    """What a bug report needs: this tool's version and the two libraries its results depend on."""
    if not value:
        return
    import platform
    from importlib.metadata import version

    from . import __version__

    # torch's version from its metadata, not its import: --version answers at once
    out.print(f"entroprune {__version__} (torch {version('torch')}, torch-pruning {version('torch-pruning')}, "
              f"Python {platform.python_version()})", highlight=False)
    raise typer.Exit()


@app.callback()
@handle_errors
def _app(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the version (and torch's) and exit.")] = False,
         plugin: Annotated[list[str] | None, typer.Option(
             "--plugin", help="A .py file or module that registers models, datasets or rewards of your own "
                              "(entroprune.register_model, ...); imported, so name only code you trust. "
                              "Repeatable; $ENTROPRUNE_PLUGINS names more.")] = None) -> None:
    """Structured filter pruning of CNNs with an entropy-rewarded RL agent."""
    from .plugins import load_plugins, named_plugins

    # exported, so that the processes a command starts import the same code
    load_plugins([*named_plugins(), *(plugin or [])], export=True)


def _config_keys(message: str) -> str:
    """``run`` reads its settings from YAML: name them as config keys (search settings under search., the
    prune's under prune.)."""
    from dataclasses import fields

    from .errors import as_keys

    top = {f.name for f in fields(RunConfig)}
    search = {f.name for f in fields(SearchConfig)} - top
    prune = {f.name for f in fields(PruneConfig)} - top - search
    return as_keys(message, lambda path: f"search.{path}" if path.split(".")[0] in search
                   else f"prune.{path}" if path.split(".")[0] in prune else path)


def _sweep_keys(message: str) -> str:
    """``sweep``: its own settings as its flags (a run's MACs target is one of --macs-targets), the runs' other
    settings as config keys."""
    from .errors import SETTING, as_flags

    own = ("macs_targets", "max_drop", "macs_target", "search.macs_target")
    return _config_keys(SETTING.sub(lambda m: as_flags(m.group(0), {"macs_target": "macs_targets"})
                                    if m.group(1) in own else m.group(0), message))


def _setup(seed: int, device: str, threads: int):
    from .utils import resolve_device, seed_everything, set_threads

    set_threads(threads)
    seed_everything(seed)
    return resolve_device(device)


def _prepare_out(path: Path, marker: str, force: bool) -> Path:
    from .utils import check_writable_dir

    if (path / marker).exists() and not force:
        raise ConfigError(f"{path} already holds {marker}; pass --force to overwrite it or "
                          "choose another --out")
    return check_writable_dir(path)


@app.command()
@handle_errors
def train(
    model: Annotated[str, typer.Option(help=f"Model name: {', '.join(ZOO_MODELS)} (kws and m5 for 1-D signals, resnet3d for volumes), "
                                            "or one a --plugin registers.")] = DEFAULT_MODEL,
    dataset: Annotated[str, typer.Option(help=f"Dataset name: {', '.join(BUILT_IN_DATASETS)}, or one a --plugin "
                                              "registers.")] = ZOO_DATASET,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/base"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = _BASELINE.epochs,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = _BASELINE.lr,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = _BASELINE.batch_size,
    width_mult: Annotated[float, typer.Option(help="Channel width multiplier.")] = _BASELINE.width_mult,
    train_limit: Annotated[int | None, typer.Option(help="Use only this many training images.")] = _BASELINE.train_limit,
    augment: Annotated[str, typer.Option(help="none, flip or shift (+flip): 2 pixels, or a tenth of a 1-D signal's length.")] = _BASELINE.augment,
    image_size: Annotated[int | None, typer.Option(help=(
        "Read an image folder's images at this many pixels square (default: the size most of them have)."))]
    = _BASELINE.image_size,
    data_dir: DataDir = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
    quiet: Quiet = False,
) -> None:
    """Train a model from scratch and save model.pt + metrics.json."""
    from .api import train_baseline

    dev = _setup(seed, device, threads)
    result = train_baseline(model, dataset, out_dir, epochs=epochs, lr=lr, batch_size=batch_size,
                            width_mult=width_mult, data_dir=data_dir, seed=seed, device=dev,
                            train_limit=train_limit, force=force, quiet=quiet, augment=augment,
                            image_size=image_size)
    out.print(f"test accuracy {result['test_accuracy']:.2f}%  params {result['params']:,}  "
              f"MACs {result['macs']:,}  ({result['train_time_s']:.0f} s)")
    out.print(f"checkpoint: {result['checkpoint']}")


def _warn_busy(row: dict, command: str) -> None:
    """One warning line where a row's latencies were timed beside other busy processes."""
    busy = busy_warning(row, command)
    if busy:
        err.print(f"warning: {busy}")


def _floats(text: str | None, flag: str, each: str = "one per input channel (0.49,0.48,0.45)") -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} takes numbers separated by commas, {each}, got {text!r}") from None


@app.command()
@handle_errors
def wrap(
    weights: Annotated[Path, typer.Argument(help="Weights saved by another tool: torch.save(model.state_dict()), or a .safetensors file.")],
    model: Annotated[str, typer.Option(help=f"The model they belong to: {', '.join(ZOO_MODELS)}, or one a --plugin "
                                            "registers.")],
    dataset: Annotated[str, typer.Option(help="The dataset it classifies (its classes and inputs build the model; "
                                              "its test split checks the weights).")],
    out_file: Annotated[Path, typer.Option("--out", help="The checkpoint to write.")],
    mean: Annotated[str | None, typer.Option(
        help="The normalisation the model was trained with, per channel (0.49,0.48,0.45); default: the "
             "dataset's own, as `train` uses.")] = None,
    std: Annotated[str | None, typer.Option(help="Its standard deviations, per channel (default: the dataset's).")] = None,
    width_mult: Annotated[float, typer.Option(help="The model's channel width multiplier.")] = _BASELINE.width_mult,
    data_dir: DataDir = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Make a checkpoint of a model trained elsewhere: its weights, the model's name and the dataset's spec."""
    from .api import wrap_weights

    means, stds = _floats(mean, "--mean"), _floats(std, "--std")
    _check_output_file(out_file, [weights], force, "--out")
    dev = _setup(seed, device, threads)
    res = wrap_weights(weights, model, dataset, out_file, data_dir=data_dir, width_mult=width_mult, mean=means,
                       std=stds, seed=seed, force=force, trust_pickle=trust_pickle, device=dev)
    acc, norm = res["test_accuracy"], lambda v: ", ".join(f"{x:.4g}" for x in v)  # noqa: E731
    out.print(f"{model} on {dataset}, normalised with mean [{norm(res['mean'])}] and std [{norm(res['std'])}]: "
              + (f"test accuracy {acc:.2f}% (if far below what it scored in training: check --model, "
                 "--width-mult, --mean and --std)" if acc is not None else "no labels to test the weights on"))
    out.print(f"checkpoint: {res['checkpoint']}")


def _check_output_file(path: Path, inputs: list[Path], force: bool, option: str = "--json") -> None:
    """Refuse, before any work, an output file that is an input, exists (without --force) or cannot be created."""
    target = path.resolve()
    if any(target == Path(i).resolve() for i in inputs):
        raise ConfigError(f"{option} {path} is one of the inputs; writing it would destroy it, choose another file")
    if target.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    if target.exists() and not force:
        raise ConfigError(f"{option} {path} already exists; pass --force to overwrite it or choose another file")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder; choose another path")
    from .utils import check_writable_dir

    try:  # a folder that cannot be made or written is the path's fault, found before the work, not after it
        check_writable_dir(target.parent)
    except ConfigError as exc:
        raise ConfigError(f"{option} {path}: {str(exc).split('; ')[0]}; choose another path") from None


@app.command()
@handle_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A model.pt written by entroprune.")],
    dataset: CheckpointDataset = None,
    data_dir: DataDir = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = EVAL_BATCH_SIZE,
    original: Annotated[Path | None, typer.Option(help="Unpruned checkpoint to compare with "
                                                      "(default: the one a pruned checkpoint names).")] = None,
    latency: Annotated[bool, typer.Option(help="Measure CPU latency (torch eager, TorchScript, onnxruntime).")] = False,
    processes: Annotated[int, typer.Option(
        help="With --latency: fresh processes the nets are timed in, as a deployment starts (0: this one).")]
    = _LATENCY.processes,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results here.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --json file.")] = False,
    trust_pickle: TrustPickle = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
) -> None:
    """Test accuracy, parameters and MACs of a checkpoint, side by side with its original."""
    from .api import evaluate_checkpoint

    if json_out is not None:
        _check_output_file(json_out, [checkpoint, *([original] if original else [])], force)
    dev = _setup(seed, device, threads)
    rows = evaluate_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir,
                               batch_size=batch_size, device=dev, original=original, latency=latency,
                               trust_pickle=trust_pickle, processes=processes)
    from rich.table import Table

    from .report import TABLE_COLUMNS, format_value

    table = Table(title=str(checkpoint))
    cols = [(k, title) for k, title in TABLE_COLUMNS if any(k in row for row in rows)]
    for k, title in cols:
        table.add_column(title, justify="left" if k == "name" else "right")
    for row in rows:
        table.add_row(*[format_value(row.get(k)) for k, _ in cols])
    out.print(table)
    if latency:
        _warn_busy(rows[-1], "rerun this command")
    if json_out:
        from .utils import write_json

        write_json(json_out, rows)


@app.command()
@handle_errors
def latency(
    checkpoint: Annotated[Path, typer.Argument(help="A model.pt written by entroprune.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for latency_model.json.")] = Path("runs/latency"),
    backend: Annotated[str, typer.Option(help="torch, torchscript or onnxruntime: the runtime you deploy on.")] = _LATENCY.backend,
    batch: Annotated[int, typer.Option(help="Inputs per forward, as deployed.")] = _LATENCY.batch,
    min_keep: Annotated[float, typer.Option(help="Smallest keep ratio of the search space.")] = _SEARCH.min_keep,
    round_to: Annotated[int, typer.Option(help="Channel rounding of the search space.")] = _SEARCH.step,
    held_out: Annotated[int, typer.Option(help="Random pruned nets timed to measure the model's error.")] = _LATENCY.held_out,
    processes: Annotated[int, typer.Option(
        help="Fresh processes the whole pruned nets are timed in, as a deployment starts (0: this one).")] = _LATENCY.processes,
    choose_rounding: Annotated[bool, typer.Option(
        help="First time the uniform policy at --macs-target rounded to 1, 2, ..., 32 channels, keep the step "
             "with the most speed-up per MACs reduction (rounding.json) and fit at that step.")] = False,
    macs_target: Annotated[float, typer.Option(help="MACs target the rounding choice prunes to.")] = _SEARCH.macs_target,
    force: Annotated[bool, typer.Option(help="Overwrite an existing latency_model.json.")] = False,
    trust_pickle: TrustPickle = False,
    seed: Seed = 0,
    threads: Threads = 0,
) -> None:
    """Fit a latency model of a checkpoint on this machine and report its error on random pruned nets."""
    from rich.table import Table

    from .api import choose_rounding_checkpoint, fit_latency_checkpoint

    _setup(seed, "cpu", threads)
    if (out_dir / "latency_model.json").exists() and not force:  # before the rounding's timings, not after
        raise ConfigError(f"{out_dir / 'latency_model.json'} already exists; pass --force or choose another --out")
    config = LatencyConfig(backend=backend, batch=batch, held_out=held_out, processes=processes)
    if choose_rounding:
        ch = choose_rounding_checkpoint(checkpoint, out_dir, config,
                                        macs_target=macs_target, min_keep=min_keep, force=force,
                                        trust_pickle=trust_pickle)
        table = Table("round to", "MACs kept", "speed-up", "speed-up x MACs kept")
        for r in ch["rows"]:
            table.add_row(str(r["round_to"]), f"{r['macs_fraction']:.1%}", f"{r['speedup']:.2f}x",
                          f"{r['efficiency']:.2f}" + (" (chosen)" if r["round_to"] == ch["round_to"] else ""))
        out.print(table)
        out.print(f"rounding: {ch['round_to']} channels (the smallest step within {ch['tie']:.0%} of the best "
                  f"speed-up per MACs reduction); {ch['file']}")
        round_to = ch["round_to"]
    whole = f"whole pruned nets{in_fresh(processes)}"
    with out.status(f"fitting: timing every layer over its channel counts, then {whole} (minutes on a "
                    "large net)"):
        rep = fit_latency_checkpoint(checkpoint, out_dir, config,
                                     min_keep=min_keep, round_to=round_to, seed=seed, force=force,
                                     trust_pickle=trust_pickle)
    err_txt = (f"median error {rep['median_error']:.1%}, worst {rep['max_error']:.1%} on {rep['held_out_policies']} "
               "random pruned nets it was not fitted on" if rep["held_out_policies"] else "no held-out check")
    heap = ", glibc heap kept" if rep.get("heap_kept") else ""
    out.print(f"{backend}, batch {batch}, {rep['threads']} threads{heap}: unpruned net {rep['full_latency_s'] * 1000:.2f} ms; "
              f"{err_txt}; fitted in {rep['fit_time_s']:.0f} s ({rep['layer_timings']} layer timings, "
              f"{rep['calibration_policies']} whole nets timed{in_fresh(rep.get('fit_processes') or 0) or ' here'})")
    out.print(f"latency model: {rep['model_file']}")


@app.command()
@handle_errors
def inspect(
    checkpoint: Annotated[Path, typer.Argument(help="A model.pt written by entroprune.")],
    dataset: CheckpointDataset = None,
    data_dir: DataDir = None,
    calib_size: Annotated[int, typer.Option(help="Calibration images for the entropy columns.")] = INSPECT_CALIB_SIZE,
    importance: Importance = DEFAULT_IMPORTANCE,
    trust_pickle: TrustPickle = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
) -> None:
    """Prunable groups (members, channels, share of MACs and parameters) and per-layer spatial entropy."""
    from rich.table import Table

    from .api import inspect_checkpoint

    dev = _setup(seed, device, threads)
    info = inspect_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir, calib_size=calib_size,
                              device=dev, importance=importance, trust_pickle=trust_pickle)
    # a group's MACs are those its channels scale: a conv between two groups scales with both, so the column
    # adds up to more than 100%, and a reader taking it for a partition would misjudge where the MACs are
    groups = Table(title=f"{info['model']}: {len(info['groups'])} prunable groups, "
                         f"{info['macs']:,} MACs, {info['params']:,} params",
                   caption="MACs (params) touched: the share of the MACs (parameters) that shrinks with the "
                           "group's channels; a conv between two groups counts in both, so the shares add up to more "
                           "than 100%")
    numbers = ("#", "channels", "MACs touched", "params touched")
    for col in ("#", "group (root)", "member layers", "channels", "MACs touched", "params touched"):
        groups.add_column(col, justify="right" if col in numbers else "left")
    for g in info["groups"]:
        groups.add_row(str(g["index"]), g["name"], ", ".join(g["convs"]), str(g["channels"]),
                       f"{g['macs_share']:.1%}", f"{g['params_share']:.1%}")
    out.print(groups)
    layers = Table(title=f"per-layer spatial entropy on {info['calib_images']} calibration images")
    variants = list(info["variants"])
    for col in ["layer", "group", "output", *variants]:
        layers.add_column(col, justify="left" if col in ("layer", "group") else "right")
    for row in info["layers"]:
        layers.add_row(row["layer"], row["group"], row["output"], *[f"{row[v]:.4f}" for v in variants])
    out.print(layers)
    floor = info["floor"]
    for flag, key in (("--macs-target", ""), ("--params-target", "params_")):
        out.print(f"lowest reachable {flag}: {floor[key + 'rounded']:.1%} (every group at --min-keep "
                  f"{floor['min_keep']}, channels rounded to {floor['round_to']}); {floor[key + 'unrounded']:.1%} "
                  "with --round-to 1")


def _parse_band(band: str) -> float | None:
    try:
        return None if band.strip().lower() in ("none", "off", "null") else float(band)
    except ValueError:
        raise ConfigError(f"--band must be a number in [0, 1] or 'none', got {band!r}") from None


def _parse_round_to(value: str) -> int | str:
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--round-to must be an integer (channels) or 'auto' (measured), got {value!r}") from None


@app.command()
@handle_errors
def search(
    checkpoint: Annotated[Path, typer.Argument(help="The unpruned model.pt to search a policy for.")],
    macs_target: Annotated[float, typer.Option(help="Fraction of MACs to keep (0.2 = 5x fewer).")] = _SEARCH.macs_target,
    flops_target: Annotated[float | None, typer.Option(hidden=True, help="Old name of --macs-target.")] = None,
    reward: Annotated[str, typer.Option(help="entropy, accuracy, combined or kl (agreement with the unpruned net).")] = _REWARD.kind,
    agent: Annotated[str, typer.Option(help="ddpg, uniform, global (torch-pruning global magnitude), random, sb3:td3, sb3:sac or sb3:ppo.")] = _SEARCH.agent,
    episodes: Annotated[int, typer.Option(help="Policies to try.")] = _SEARCH.episodes,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder for the log and policy.json.")] = Path("runs/search"),
    variant: Annotated[str, typer.Option(help="Entropy variant (distribution, cooccurrence, *-avg).")] = _REWARD.variant,
    maximize: Annotated[bool, typer.Option(help="Reward high entropy instead (research; not the paper's method).")] = _REWARD.maximize,
    entropy_layers: Annotated[str, typer.Option(help="all, last, last:K or comma-separated conv names.")] = _REWARD.layers,
    normalize: Annotated[bool, typer.Option(help="Entropy relative to the unpruned net, per layer.")] = _REWARD.normalize,
    bn_recalibration: Annotated[bool, typer.Option(help="Re-estimate BN statistics before scoring.")] = _REWARD.bn_recalibration,
    accuracy_weight: Annotated[float, typer.Option(help="Accuracy weight of the combined reward.")] = _REWARD.accuracy_weight,
    physical_scoring: Annotated[bool, typer.Option(help="Score each policy on a physically pruned copy (faster) instead of zero-masks on the full net.")] = _REWARD.physical,
    min_keep: Annotated[float, typer.Option(help="Smallest keep ratio of a group.")] = _SEARCH.min_keep,
    round_to: Annotated[str, typer.Option(help="Round channel counts to multiples of this; 'auto': the step measured "
                                               "to pay most on --latency-backend.")] = str(_SEARCH.round_to),
    warmup: Annotated[int, typer.Option(help="Random warm-up episodes (DDPG, TD3, SAC).")] = _SEARCH.warmup,
    calib_size: Annotated[int, typer.Option(help="Calibration images (BN and entropy).")] = _SEARCH.calib_size,
    val_size: Annotated[int, typer.Option(help="Validation images (accuracy reward, diagnostics).")] = _SEARCH.val_size,
    diagnose_every: Annotated[int, typer.Option(help="Also measure accuracy every K episodes (0 = off).")] = _SEARCH.diagnose_every,
    checkpoint_every: Annotated[int, typer.Option(help="Save resumable state every K episodes.")] = _SEARCH.checkpoint_every,
    workers: Annotated[int, typer.Option(help="Score episode batches on N Ray actors (needs entroprune\\[ray]).")] = 1,
    episode_batch: Annotated[int | None, typer.Option(
        help="Episodes per agent state, scored together (default: --workers).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="Join this Ray cluster (auto or HOST:PORT) instead of starting a local Ray.")] = None,
    importance: Importance = _SEARCH.importance,
    ignore: Annotated[str, typer.Option(
        help="Comma-separated module names to leave whole (layers feeding an output always are).")] = "",
    band: Annotated[str, typer.Option(
        help="Keep ratios within (1 -/+ band) x the uniform ratio; 'none' = AMC's whole \\[min-keep, 1].")] = str(_SEARCH.band),
    rerank_top_k: Annotated[int, typer.Option(
        help="Re-score this many best policies plus uniform and global after recovery (0 = off).")] = _SEARCH.rerank_top_k,
    rerank_reward: Annotated[str, typer.Option(help="Reward of the re-ranking (kl, entropy, accuracy).")] = _SEARCH.rerank_reward,
    confirm_seeds: Annotated[int, typer.Option(help="A searched winner of the re-ranking must beat uniform and global again under this many other recovery seeds (0 = off).")] = _SEARCH.confirm_seeds,
    uniform_margin: Annotated[float, typer.Option(help="Leave uniform only for a score this fraction of its |score| "
                                                       "better (0 = best wins).")] = _SEARCH.uniform_margin,
    recovery_steps: Annotated[int | None, typer.Option(help="Label-free distillation steps before each re-scored policy (default: 0 refitted, 40 on plain cuts).")] = _SEARCH.recovery_steps,
    rerank_refit: Annotated[bool | None, typer.Option(help="Re-score each policy refitted, as `prune` makes it by default (--no-rerank-refit: as `prune --no-refit` cuts).")] = _SEARCH.rerank_refit,
    refit_norms: Annotated[bool | None, typer.Option(help="Refit re-scored policies with `prune --refit-norms` (default: as `prune` does by default).")] = _REWARD.refit_norms,
    refit_head: Annotated[bool | None, typer.Option(help="Refit re-scored policies' classifier too (--no-refit-head: as `prune --no-refit-head`; default: as `prune` does by default).")] = _REWARD.refit_head,
    recovery_images: Annotated[int, typer.Option(help="Unlabelled training images the recovery distils on.")] = _SEARCH.recovery_images,
    params_target: Annotated[float | None, typer.Option(help="Also keep at most this fraction of the parameters (a flash or memory budget).")] = _SEARCH.params_target,
    latency_target: Annotated[float | None, typer.Option(
        help="Also keep at most this fraction of the measured latency (a latency model is fitted on this "
             "machine, or read from --latency-model); both targets hold, --macs-target 1 for latency only.")] = _SEARCH.latency_target,
    latency_model: Annotated[str | None, typer.Option(
        help="latency_model.json from `entroprune latency` (default: fit one in --out).")] = _SEARCH.latency_model,
    latency_backend: Annotated[str, typer.Option(help="Runtime the latency model times: torch, torchscript or onnxruntime.")] = _SEARCH.latency_backend,
    latency_batch: Annotated[int, typer.Option(help="Inputs per forward the latency model times.")] = _SEARCH.latency_batch,
    free_channels: Annotated[bool, typer.Option(help="Under --latency-target, widen the result by every channel step timed no slower here.")] = _SEARCH.free_channels,
    dataset: CheckpointDataset = None,
    data_dir: DataDir = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted search in --out.")] = False,
    force: Annotated[bool, typer.Option(help="Start over in an --out that holds a search.")] = False,
    trust_pickle: TrustPickle = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Search per-group keep ratios with an RL agent under a MACs budget; writes policy.json."""
    from .api import search_checkpoint
    from .search import RewardConfig, SearchConfig

    dev = _setup(seed, device, threads)
    cfg = SearchConfig(
        ignored_layers=[n.strip() for n in ignore.split(",") if n.strip()], importance=importance, band=_parse_band(band), rerank_top_k=rerank_top_k, rerank_reward=rerank_reward, confirm_seeds=confirm_seeds, uniform_margin=uniform_margin, recovery_steps=recovery_steps, rerank_refit=rerank_refit,
        recovery_images=recovery_images, macs_target=macs_target, flops_target=flops_target, agent=agent, episodes=episodes, min_keep=min_keep, round_to=_parse_round_to(round_to),
        seed=seed, calib_size=calib_size, val_size=val_size, diagnose_every=diagnose_every, checkpoint_every=checkpoint_every, warmup=warmup, episode_batch=episode_batch or workers,
        latency_target=latency_target, latency_model=latency_model, latency_backend=latency_backend, latency_batch=latency_batch,
        params_target=params_target, free_channels=free_channels, reward=RewardConfig(kind=reward, variant=variant, layers=entropy_layers, normalize=normalize, maximize=maximize,
                            bn_recalibration=bn_recalibration, accuracy_weight=accuracy_weight, physical=physical_scoring, refit_norms=refit_norms, refit_head=refit_head))
    res = search_checkpoint(checkpoint, out_dir, cfg, dataset=dataset, data_dir=data_dir, device=dev, resume=resume,
                            force=force, quiet=quiet, trust_pickle=trust_pickle, workers=workers,
                            ray_address=ray_address)
    _say_search_result(res, cfg, out_dir)


def _say_search_result(res, cfg, out_dir: Path) -> None:
    if "params_fraction" in res.summary:
        out.print(f"{res.summary['params_fraction']:.1%} of the parameters (target {cfg.params_target:.1%})")
    if "latency_fraction" in res.summary:
        out.print(f"predicted latency {res.summary['latency_fraction']:.1%} of the unpruned net's "
                  f"(target {cfg.latency_target:.1%})")
    freed = res.summary.get("free_channels")
    if freed is not None:
        from .search.free_channels import steps_summary

        out.print(f"free channels: {steps_summary(res.summary)}")
    where = f"{res.achieved:.1%} of the MACs (target {cfg.macs_target:.1%})"
    if res.summary.get("rerank"):  # the search's reward and the re-ranking's score are on different scales
        out.print(f"search: best {cfg.reward.kind} reward {res.summary['best_search_reward']:.5f} "
                  f"(episode {res.summary['best_episode']} of {res.episodes})")
        n, ran = len(res.summary["rerank"]), res.summary["config"]  # the settings the search settled and ran
        on = "their refitted nets" if ran["rerank_refit"] else "their plain cuts"
        out.print(f"re-ranked {count_text(n, 'policy', 'policies')} by {cfg.rerank_reward} on {on} after "
                  f"{ran['recovery_steps']} recovery steps: the {res.summary['chosen']} policy won "
                  f"(score {res.reward:.5f}), {where}")
    else:
        out.print(f"best {cfg.reward.kind} reward {res.reward:.5f} at {where}, {count_text(res.episodes, 'episode')}")
    if cfg.round_to == "auto":
        out.print(f"rounding: {res.summary['config']['round_to']} channels, measured on {cfg.latency_backend} at "
                  f"batch {cfg.latency_batch} ({out_dir / 'rounding.json'})")
    if res.spearman is not None:
        out.print(f"Spearman(reward, accuracy) over {res.summary['diagnosed_episodes']} diagnosed episodes: "
                  f"{res.spearman:+.3f}")
    out.print(f"policy: {out_dir / 'policy.json'}")


@app.command()
@handle_errors
def prune(
    checkpoint: Annotated[Path, typer.Argument(help="The unpruned model.pt.")],
    policy: Annotated[Path, typer.Option(help="policy.json written by `entroprune search`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the pruned model.pt.")] = Path("runs/pruned"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing pruned checkpoint.")] = False,
    refit: Annotated[bool, typer.Option(help="Refit the kept weights by least squares so each layer matches the "
                                               "unpruned net on the calibration images (no labels); --no-refit: a plain cut.")] = _PRUNE.refit,
    refit_norms: Annotated[bool, typer.Option(help="With the refit: scale the refitted filters back to the plain "
                                                     "cut's norms (the same net; BatchNorm makes up for it).")]
    = _PRUNE.refit_norms,
    refit_head: Annotated[bool, typer.Option(help="With the refit: refit the classifier (the layers the model "
                                                    "returns) too; --no-refit-head leaves it as cut.")]
    = _PRUNE.refit_head,
    bn_recalibration: Annotated[bool, typer.Option(help="Re-estimate BN statistics on calibration images.")]
    = _PRUNE.bn_recalibration,
    dataset: CheckpointDataset = None,
    data_dir: DataDir = None,
    trust_pickle: TrustPickle = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
) -> None:
    """Physically remove channels by a policy (torch-pruning); the result reloads safely."""
    from .api import prune_checkpoint

    dev = _setup(seed, device, threads)
    res = prune_checkpoint(checkpoint, policy, out_dir, force=force, trust_pickle=trust_pickle,
                           bn_recalibration=bn_recalibration, data_dir=data_dir, device=dev, dataset=dataset,
                           refit=refit, seed=seed, refit_norms=refit_norms, refit_head=refit_head)
    out.print(f"pruned: {res['macs']:,} MACs ({res['macs_fraction']:.1%} of {res['original_macs']:,}), "
              f"{res['params']:,} params{', kept weights refitted' if res['refit'] else ''} -> {res['checkpoint']}")


@app.command()
@handle_errors
def finetune(
    checkpoint: Annotated[Path, typer.Argument(help="A pruned model.pt.")],
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = _FINETUNE.epochs,
    lr: Annotated[float, typer.Option(help="Initial learning rate (cosine schedule).")] = _FINETUNE.lr,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = _FINETUNE.batch_size,
    distill: Annotated[bool, typer.Option(help="Distil from the unpruned teacher (the main job's recipe).")] = _FINETUNE.distill,
    teacher: Annotated[Path | None, typer.Option(help="Teacher checkpoint (default: the original).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default: <checkpoint dir>/../finetuned).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Dataset (default: the checkpoint's); unlabelled images (imagefolder, a flat folder) need --distill.")] = None,
    data_dir: DataDir = None,
    nproc: Annotated[int, typer.Option(help="Data-parallel processes on this machine (torch.distributed).")] = _FINETUNE.nproc,
    force: Annotated[bool, typer.Option(help="Overwrite an existing output.")] = False,
    trust_pickle: TrustPickle = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Fine-tune a pruned network (SGD, cosine schedule, optional distillation)."""
    from .api import finetune_checkpoint

    dev = _setup(seed, device, threads)
    out_dir = out_dir or checkpoint.parent.parent / "finetuned"
    res = finetune_checkpoint(checkpoint, out_dir, epochs=epochs, lr=lr, batch_size=batch_size, distill=distill,
                              teacher=teacher, seed=seed, device=dev, force=force, quiet=quiet,
                              trust_pickle=trust_pickle, data_dir=data_dir, nproc=nproc, dataset=dataset)
    if not res:  # a non-zero rank of a torchrun group: rank 0 reports
        return
    key, what = ("accuracy", "test accuracy") if "test_accuracy" in res else ("agreement", "agreement with the teacher")
    out.print(f"{what} {res[f'test_{key}_before']:.2f}% -> {res[f'test_{key}']:.2f}% "
              f"after {count_text(epochs, 'epoch')}; checkpoint: {res['checkpoint']}")


@app.command()
@handle_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A model.pt (pruned or not).")],
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Output file (default: model.onnx, model.ts or model.pt2, by --format).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=(
        "onnx, torchscript or pt2 (torch.export's ExportedProgram, which AOTInductor and ExecuTorch start from). "
        f"Default: the one --out's suffix names (.onnx, .ts, .pt2), else {DEFAULT_FORMAT}."))] = None,
    opset: Annotated[int | None, typer.Option(help=(
        f"ONNX opset, {OPSETS.start}-{OPSETS.stop - 1} (default {DEFAULT_OPSET}): lower for toolchains that "
        "read only older ones."))] = None,
    batch: Annotated[int, typer.Option(help=(
        "A fixed batch size for onnx and pt2, for toolchains that want static shapes (0: any batch)."))] = 0,
    int8: Annotated[bool, typer.Option(help=(
        "Quantise to int8 ONNX (QDQ), calibrated on the dataset's calibration images and checked on its test "
        f"split; default file {INT8_FILE}."))] = False,
    dataset: CheckpointDataset = None,
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing output file.")] = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Export to ONNX (checked by onnx.checker and onnxruntime), TorchScript or pt2, each loaded back and checked;
    or to int8 ONNX."""
    from .api import export_checkpoint
    from .export import format_for

    if out_file is not None:  # an input named as the output is that, whatever its suffix says of the format
        _check_output_file(out_file, [checkpoint], force, "--out")
    fmt = format_for(out_file, fmt)
    if out_file is None:
        out_file = Path(INT8_FILE if int8 else f"model{SUFFIXES[fmt]}")
        _check_output_file(out_file, [checkpoint], force, "--out")
    res = export_checkpoint(checkpoint, out_file, fmt, opset=opset, batch=batch, int8=int8, dataset=dataset,
                            data_dir=data_dir, trust_pickle=trust_pickle)
    what = f"{fmt}{' int8' if int8 else ''} opset {res['opset']}" if res["opset"] else fmt
    if not int8:
        check = f"max |difference| to torch {res['max_abs_diff']:.1e}"
    else:  # quantised outputs move: what a deployment sees is how often its top-1 still agrees
        check = (f"{res['float_bytes'] / res['bytes']:.1f}x smaller than float; top-1 agreement with the float net "
                 f"{res['agreement']:.2f}% on {res['outputs_checked']:,} test outputs")
        if res["test_accuracy"] is not None:
            check += f", test accuracy {res['test_accuracy']:.2f}% (float {res['float_test_accuracy']:.2f}%)"
    out.print(f"{what}: {out_file} ({res['bytes']:,} bytes, {f'batch {batch}' if batch else 'any batch'}), {check}")


@app.command()
@handle_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder (or a search or sweep folder).")]) -> None:
    """Write report.md, report.json and plots for a run folder (a sweep's: sweep.md and its plot)."""
    from .report import write_report
    from .sweep import SWEEP_FILE, write_sweep_report

    sweep = (run_dir / SWEEP_FILE).is_file()
    out.print(f"report: {write_sweep_report(run_dir) if sweep else write_report(run_dir)}")


@app.command()
@handle_errors(render=_config_keys)
def run(
    config: Annotated[Path | None, typer.Option(help="YAML config (see configs/default.yaml).")] = None,
    checkpoint: RunCheckpoint = None,
    macs_target: Annotated[float | None, typer.Option(
        help="Fraction of the MACs to keep (overrides the config's search.macs_target).")] = None,
    params_target: Annotated[float | None, typer.Option(
        help="Also keep at most this fraction of the parameters (overrides the config's search.params_target).")] = None,
    latency_target: Annotated[float | None, typer.Option(
        help="Fraction of the measured latency to keep (overrides the config's search.latency_target; the MACs "
             "target holds too: --macs-target 1 leaves time alone).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="The images (overrides the config): the baseline's, or with --checkpoint those to prune on (default: the "
             "checkpoint's own; unlabelled images run label-free).")] = None,
    data_dir: DataDir = None,
    quick: Annotated[bool, typer.Option(help="A small smoke run of the whole pipeline (< 1 minute).")] = False,
    out_root: Annotated[Path | None, typer.Option("--out-root", help="Where run folders go (default: runs).")] = None,
    seed: RunSeed = None,
    device: RunDevice = None,
    threads: RunThreads = None,
    finetune_epochs: FinetuneEpochs = None,
    quiet: Quiet = False,
    resume: Annotated[Path | None, typer.Option(
        help="Continue a run that stopped part-way (Ctrl-C, a crash) in its folder, with its own settings; its "
             "finished stages are kept.")] = None,
) -> None:
    """The main job: train (cached) or take --checkpoint -> search -> prune -> fine-tune -> evaluate -> export ->
    report."""
    from .errors import RunInterrupted
    from .pipeline import resume_run, run_pipeline

    for flag, value in (("--macs-target", macs_target), ("--latency-target", latency_target),
                        ("--params-target", params_target)):
        if value is not None and not 0 < value <= 1:  # checked here: the config's checks name config keys
            raise ConfigError(f"{flag} must lie in (0, 1] (the fraction kept), got {value}")
    flags = _run_flags(checkpoint, dataset, data_dir, out_root, seed, device, threads)
    targets = {"macs_target": macs_target, "latency_target": latency_target, "params_target": params_target}
    cfg = _run_config(config, quick, flags, targets, resume, "run", finetune={"epochs": finetune_epochs})
    try:
        run_dir = (resume_run(resume, quiet=quiet, say=_say) if cfg is None else
                   run_pipeline(cfg, quiet=quiet, say=_say))
    except RunInterrupted as exc:
        raise SearchInterrupted(exc.command_line()) from None
    import json as _json

    ev = _json.loads((run_dir / "evaluation.json").read_text())
    base, pruned = ev["rows"][0], ev["rows"][-1]
    from .report import score_key

    key = score_key(pruned)
    scores = (f"baseline test accuracy {base[key]:.2f}%, pruned + fine-tuned {pruned[key]:.2f}%"
              if key == "test_accuracy" else f"pruned + fine-tuned: top-1 agreement with the original {pruned[key]:.2f}%")
    out.print(f"{scores} at {pruned['macs_reduction']:.2f}x fewer MACs, "
              f"batch-64 CPU speed-up {pruned['speedup_torch_b64']:.2f}x (torch eager), "
              f"{pruned['speedup_ts_b64']:.2f}x (TorchScript), {pruned['speedup_ort_b64']:.2f}x (onnxruntime)")
    _warn_busy(pruned, f"entroprune evaluate {shell_arg(run_dir / 'finetuned' / 'model.pt')} --latency")
    out.print(f"run folder: {run_dir} (report.md, {ev['export']['file']}, finetuned/model.pt)")


def _say(message: str) -> None:
    err.print(message, highlight=False)


def _run_flags(checkpoint: Path | None, dataset: str | None, data_dir: str | None, out_root: Path | None,
               seed: int | None, device: str | None, threads: int | None) -> dict[str, Any]:
    """The top-level config keys ``run`` and ``sweep`` both take as flags (None: not given)."""
    return {"checkpoint": checkpoint and str(checkpoint), "dataset": dataset, "data_dir": data_dir,
            "out_root": out_root and str(out_root), "seed": seed, "device": device, "threads": threads}


def _run_config(config: Path | None, quick: bool, flags: dict[str, Any], search: dict[str, Any],
                resume: Path | None, command: str, own: dict[str, Any] | None = None,
                finetune: dict[str, Any] | None = None) -> RunConfig | None:
    """The config ``run`` and ``sweep`` start from, the flags given laid over it (``search`` and ``finetune``:
    those of the config's sections, flags ``--KEY`` and ``--finetune-KEY``); None with ``--resume``, which
    takes the folder's own and refuses any other setting, the command's ``own`` included."""
    from .config import load_config

    finetune = finetune or {}
    if resume is not None:
        given = [k for k, v in {**flags, **search, **(own or {}), **{f"finetune_{k}": v for k, v in finetune.items()},
                                "config": config, "quick": quick or None}.items() if v is not None]
        if given:
            where = "config.yaml" if command == "run" else "config.yaml and sweep.json"
            raise ConfigError(f"--resume continues a {command} with the settings in its {where}; drop "
                              f"{', '.join('--' + k.replace('_', '-') for k in given)}")
        return None
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    for section, values in (("search", search), ("finetune", finetune)):
        if any(v is not None for v in values.values()):
            overrides[section] = {k: v for k, v in values.items() if v is not None}
    return load_config(config, quick=quick, overrides=overrides)


@app.command()
@handle_errors(render=_sweep_keys)
def sweep(
    macs_targets: Annotated[str | None, typer.Option(
        help="Fractions of the MACs to keep, separated by commas: one main job each (default: "
             f"{','.join(f'{t:g}' for t in SweepConfig().macs_targets)}: 5-10x fewer MACs).")] = None,
    max_drop: Annotated[float | None, typer.Option(
        help=f"Accuracy points the recommended net may lose (default {SweepConfig.max_drop:g}): the fewest MACs "
             "within it.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config of each run (see configs/default.yaml).")] = None,
    checkpoint: RunCheckpoint = None,
    dataset: Annotated[str | None, typer.Option(help="The images, as `run` takes them (overrides the config).")] = None,
    data_dir: DataDir = None,
    quick: Annotated[bool, typer.Option(help="Each run a small smoke run (digits).")] = False,
    out_root: Annotated[Path | None, typer.Option("--out-root", help="Where sweep folders go (default: runs).")] = None,
    seed: RunSeed = None,
    device: RunDevice = None,
    threads: RunThreads = None,
    finetune_epochs: FinetuneEpochs = None,
    quiet: Quiet = False,
    resume: Annotated[Path | None, typer.Option(
        help="Continue a sweep that stopped part-way, in its folder, with its own settings.")] = None,
) -> None:
    """The main job at several MACs targets, then one table and plot of what each costs and buys, and the
    fewest-MACs net within --max-drop points of the original."""
    from .errors import SweepInterrupted
    from .sweep import resume_sweep, run_sweep

    targets = _floats(macs_targets, "--macs-targets", "one fraction of the MACs per run (0.1,0.15,0.2)")
    flags = _run_flags(checkpoint, dataset, data_dir, out_root, seed, device, threads)
    own = {"macs_targets": targets, "max_drop": max_drop}
    cfg = _run_config(config, quick, flags, {}, resume, "sweep", own, finetune={"epochs": finetune_epochs})
    try:
        if cfg is None:
            assert resume is not None
            folder = resume_sweep(resume, quiet=quiet, say=_say)
        else:
            folder = run_sweep(cfg, SweepConfig(**{k: v for k, v in own.items() if v is not None}), quiet=quiet,
                               say=_say)
    except SweepInterrupted as exc:
        raise SearchInterrupted(exc.command_line()) from None
    report = folder / "sweep.md"
    for line in report.read_text().splitlines():
        if line.startswith(("|", "**")):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(f"sweep folder: {folder} (sweep.md, plots/tradeoff.png; one run folder per target)")


def main() -> None:
    import warnings

    # one line per warning, as errors are, instead of Python's file:line and source echo
    from .errors import as_flags

    warnings.showwarning = lambda message, category, *args, **kwargs: err.print(
        f"[yellow]warning:[/] {as_flags(str(message), FLAG_NAMES)}", highlight=False, soft_wrap=True)
    sys.exit(run_cli())


def run_cli(args: list[str] | None = None) -> int:
    """Run the CLI; a mistyped flag, a missing argument or a value of the wrong type is one line and exit 2,
    as every other bad input is (click's own rendering is a five-line panel)."""
    # typer (pinned) vendors click; its usage errors are click's, under typer's name
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    try:
        code = app(args=args, standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        return 2
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "entroprune"
        message = exc.format_message().rstrip(".")
        if message.startswith("No such option: --plugin") and exc.ctx and exc.ctx.parent:
            # an option of the whole tool, typed after the command's name
            message += f"; it goes before the command: `entroprune --plugin FILE.py {exc.ctx.info_name} ...`"
        see = " See" if message.endswith("?") else "; see"  # click's "Did you mean 'search'?" ends a sentence
        err.print(f"error: {message}{see} `{command} --help`", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:  # Ctrl-C outside a command's own handling
        _ignore_further_ctrl_c()
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

