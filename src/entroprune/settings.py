"""The settings and names that the torch-heavy modules share with the configs and the command line.

Nothing here imports torch, so that ``entroprune --help``, ``--version`` and a mistyped flag answer in a
fraction of a second instead of after torch's import (seconds). Each owning module re-exports its names
(``entroprune.latency.LatencyConfig``, ``entroprune.export.FORMATS``, ...); the values are declared here, once.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from .errors import ConfigError

P = ParamSpec("P")
R = TypeVar("R")

#: The zoo model the main job trains when a config names none.
DEFAULT_MODEL = "vgg"
#: The zoo's models and the built-in datasets by name, for the command line's help, which imports no torch:
#: the registries (models.MODELS, data.DATASETS) hold the same names, as tests/test_registries.py checks.
ZOO_MODELS = ("vgg", "vgg16", "resnet20", "resnet56", "mobilenetv2", "kws", "m5", "resnet3d")
BUILT_IN_DATASETS = ("fashion-mnist", "mnist", "digits", "cifar10", "imagefolder", "wavfolder", "npz", "signals",
                     "volumes")

#: Channel ranking -> the norm torch-pruning takes of the weights. ``auto`` settles it by the net: L2 where every
#: group's channels come from one conv (a plain chain), L1 where any group couples several (residual streams,
#: depthwise blocks): L2 gained on the arena's three plain chains and lost on its residual nets
#: (docs/method.md, "Which channels").
IMPORTANCES: dict[str, int | None] = {"l1": 1, "l2": 2, "auto": None}
# How channels are ranked within a group unless a caller says otherwise: `auto`, the arena's best label-free
# default (arena part 53: +0.31 over uniform on VGG 10%, where L1 gave -0.02; +0.30 on VGG-16 against +0.17;
# the same as L1 on ResNet-20 and MobileNetV2, which it ranks by L1; docs/method.md, "Which channels").
DEFAULT_IMPORTANCE = "auto"
#: The ranking of a policy file or search state that names none: every such file was written before the
#: ranking could be chosen, when it was always L1, so it is cut as its search scored it.
UNNAMED_IMPORTANCE = "l1"
#: The ranking of the main job's reference line (the uniform policy cut plainly): L1 (Li et al., 2017), the
#: arena's `uniform`, which issue 16's goal measures the default against, whatever the run ranks by.
REFERENCE_IMPORTANCE = "l1"
#: Whether the prune refits the kept weights by least squares (``PruneConfig.refit``), declared here because the
#: search's re-ranking follows it by default (``SearchConfig.rerank_refit``): candidates are scored on the nets the
#: prune will make.
DEFAULT_REFIT = True
#: The refit's two options (``PruneConfig.refit_norms``, ``PruneConfig.refit_head``), declared here for the same
#: reason: a refitted candidate is scored as the prune will refit it (``RewardConfig.refit_norms``, ``refit_head``).
DEFAULT_REFIT_NORMS = False
DEFAULT_REFIT_HEAD = True

#: Quantisation levels of the co-occurrence entropy.
DEFAULT_LEVELS = 16

#: Export formats and the suffix a run folder gives each file.
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}
FORMATS = tuple(SUFFIXES)
# ONNX is what every runtime reads; TorchScript runs on libtorch alone; pt2 (torch.export) is where torch's own
# deployment paths start (AOTInductor, ExecuTorch) now that torch marks TorchScript deprecated
DEFAULT_FORMAT = "onnx"
#: ONNX opsets torch's TorchScript-based exporter writes; 17 (the default) is read by every current runtime, older
#: accelerator toolchains take only lower ones
OPSETS = range(9, 21)
DEFAULT_OPSET = 17
#: int8 exports write per-channel QuantizeLinear nodes, whose `axis` came in opset 13
INT8_MIN_OPSET = 13
#: The file an int8 export writes unless told otherwise (`export --int8`, a run's `export_int8`)
INT8_FILE = "model.int8.onnx"
#: Below this top-1 agreement (%) with the float net on the test split, an int8 export is written with a warning
INT8_AGREEMENT_WARNING = 97.0

#: Deployment runtimes a latency is measured on, and the short names of their columns. ``torchscript`` is the
#: net as `entroprune export --format torchscript` writes it (traced, frozen), loaded the way torch recommends
#: for CPU inference (``torch.jit.optimize_for_inference``: batch norms folded, oneDNN layouts kept between
#: layers); eager ``torch`` is the net as :func:`entroprune.export.deployed_eager` prepares it (batch norms
#: folded, channels-last), not as loaded, whose per-channel passes shrink more slowly than the MACs
#: (docs/measurements/latency_deploy.md).
RUNTIMES = {"torch": "torch", "torchscript": "ts", "onnxruntime": "ort"}
BACKENDS = tuple(RUNTIMES)

#: Fresh processes :func:`entroprune.latency.latency_rows` times in by default. One process's timings can sit
#: in a slow mode (docs/method.md); the median over three is not moved by one.
FRESH_PROCESSES = 3


#: The file in a run folder that records its finished stages (for `run --resume`; `report` reads a run without
#: an evaluation beside it as unfinished).
PROGRESS_FILE = "progress.json"

#: Cores other processes may keep busy, on average, while latencies are timed before a result says its timings were
#: disturbed: a test suite beside a run's evaluation on 2 cores read the pruned net 0.34x as fast as its original in
#: eager torch, 1.54x alone, where the idle VM's own processes measured 0.01.
BUSY_CORES = 0.25


def busy_warning(row: dict[str, Any], command: str) -> str | None:
    """A warning for latencies timed while other processes kept the machine busy (None when they did not, or
    when it could not be read); ``command`` times them again."""
    cores = row.get("others_busy_cores")
    if cores is None or cores <= BUSY_CORES:
        return None
    return (f"other processes kept {cores:.2f} cores busy on average while the latencies were timed, so they and the "
            f"speed-ups are not this machine's own; time them again with nothing else running: {command}")


def check_image_size(image_size: int | None, dataset: str) -> None:
    """``image_size`` reads an image folder's images at that square size; the other built-in datasets have theirs
    (a registered dataset's reader is handed it, to honour or not)."""
    if image_size is None:
        return
    if image_size < 1:
        raise ConfigError(f"`image_size` must be >= 1 pixel (or unset: the size most images have), got {image_size}")
    if dataset in BUILT_IN_DATASETS and dataset != "imagefolder":
        raise ConfigError(f"`image_size` applies to image folders (imagefolder); {dataset} has its own size, "
                          "leave `image_size` out")


def check_types(config: Any, prefix: str = "") -> None:
    """Every field of a config dataclass holds its declared type, nested configs included (numpy numbers are
    stored as Python's). The YAML loader's
    pydantic pass checks a file's values; a Python caller's `SearchConfig(episodes="300")` or
    `SearchConfig(reward="accuracy")` would otherwise fail later, as a TypeError deep in the search."""
    import typing

    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        hint, value, name = hints[f.name], getattr(config, f.name), prefix + f.name
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):  # type: ignore[arg-type]
                kind = f" ({hint.__name__}(kind={value!r}) names a kind)" if isinstance(value, str) and "kind" in {
                    g.name for g in dataclasses.fields(hint)} else ""  # type: ignore[arg-type]
                raise ConfigError(f"`{name}` must be a {hint.__name__}{kind}, got {value!r}")  # type: ignore[union-attr]
            check_types(value, name + ".")
            continue
        plain = _python_number(value)
        if plain is not value:  # kept as the Python number (np.float32 was refused by range checks, unwritable to JSON)
            setattr(config, f.name, plain)
        _check_value(hint, plain, name)


def _python_number(value: Any) -> Any:
    """A numpy or 0-d torch number as the Python number it is; anything else as it is."""
    return value.item() if getattr(value, "ndim", None) == 0 and hasattr(value, "item") else value


def _check_value(hint: Any, value: Any, name: str) -> None:
    """``value`` of type ``hint`` (strictly: "3" is no int), a path standing for text; else one line naming ``name``."""
    from pydantic import ValidationError

    checked = os.fspath(value) if isinstance(value, os.PathLike) else value  # a pathlib.Path where a name belongs
    try:
        _adapter(hint).validate_python(checked, strict=True)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise ConfigError(f"`{name}`: {msg[0].lower()}{msg[1:]}, got {checked!r}") from None


# what a parameter's annotation may name to be checked by checked_args (a path is checked as the text it stands for)
_SCALARS = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None), "Path": str}


def _scalar_hint(annotation: Any) -> Any:
    """The type of a parameter annotated with numbers, flags, text and paths alone ("int", "str | Path | None"),
    with a path standing for text; None for any other annotation (objects are checked where they are used)."""
    if not isinstance(annotation, str):
        return None
    parts = [p.strip() for p in annotation.split("|")]
    if not parts or any(p not in _SCALARS for p in parts):
        return None
    return functools.reduce(operator.or_, [_SCALARS[p] for p in parts])


#: True inside a call of the Python API made with ``quiet=True`` (so inside a command given ``--quiet``): bars
#: drawn deep below it, where no ``quiet`` is passed down (an image folder's reading bar), stay hidden too.
QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("entroprune_quiet", default=False)


def checked_args(fn: Callable[P, R]) -> Callable[P, R]:
    """A function of the Python API whose number, flag, text and path arguments hold their declared types: a
    caller's `force="no"` or `distill="false"` was true (and overwrote an output), `batch_size="64"` a TypeError
    deep in the data loader. Numpy numbers are passed on as Python's. Called with ``quiet=True``, no progress bar
    shows until it returns (:data:`QUIET`)."""
    import inspect

    sig = inspect.signature(fn)
    hints = {name: _scalar_hint(p.annotation) for name, p in sig.parameters.items()}
    hints = {name: hint for name, hint in hints.items() if hint is not None}

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:  # a missing or unknown argument: Python's own TypeError, from the call itself
            return fn(*args, **kwargs)
        for name, value in bound.arguments.items():
            if name not in hints:
                continue
            value = bound.arguments[name] = _python_number(value)
            _check_value(hints[name], value, name)
        if bound.arguments.get("quiet") is not True:
            return fn(*bound.args, **bound.kwargs)
        token = QUIET.set(True)
        try:
            return fn(*bound.args, **bound.kwargs)
        finally:
            QUIET.reset(token)

    return wrapper


def given_config(value: Any, cls: type, name: str = "config", from_dict: str | None = None) -> Any:
    """``value``, or the defaults for None: a dict of settings where a config object belongs failed later as an
    AttributeError. ``from_dict`` says how a dict becomes one (``cls(**settings)`` unless given)."""
    if value is None:
        try:
            return cls()
        except TypeError:  # a class without defaults for every field (ModelSpec)
            raise ConfigError(f"`{name}` is required: give a {cls.__name__}") from None
    if not isinstance(value, cls):
        how = f" ({from_dict or f'ep.{cls.__name__}(**settings)'} makes one of a dict)" if isinstance(value, dict) else ""
        raise ConfigError(f"`{name}` must be a {cls.__name__}{how}, got {type(value).__name__}")
    return value


@functools.cache
def _adapter(hint: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(hint)


def in_fresh(processes: int) -> str:
    """Where whole nets were timed, for a sentence: " in N fresh processes", " in a fresh process", or ""
    (timed in the process that asked)."""
    return f" in {processes} fresh processes" if processes > 1 else " in a fresh process" if processes == 1 else ""


@dataclass
class LatencyConfig:
    """How a latency model is measured.

    :param backend: ``torch``, ``torchscript`` or ``onnxruntime``: the runtime the pruned net will be deployed on.
    :param batch: inputs per forward, as deployed.
    :param points: channel counts per dimension of each layer's table.
    :param calibration: random pruned nets timed whole to fit the rest of the net (norms, activations).
    :param held_out: random pruned nets timed whole, never fitted on, to measure the model's error.
    :param repeats: timed forwards per measurement (their median is kept).
    :param processes: fresh processes the whole pruned nets are timed in (the median kept), as a deployment
        starts and as the result is measured; 0 times them in the fitting process, after its layer timings
        (there two timings of the same held-out nets disagreed by 0.7-12%, in fresh processes by 0.2-2.9%:
        docs/method.md, "Whole nets timed in fresh processes").
    """

    backend: str = "torch"
    batch: int = 64
    points: int = 5
    calibration: int = 8
    held_out: int = 8
    repeats: int = 7
    processes: int = FRESH_PROCESSES

    def validate(self) -> None:
        check_types(self)
        if self.backend not in BACKENDS:
            raise ConfigError(f"`backend` {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if min(self.batch, self.points - 1, self.calibration, self.repeats) < 1 or min(self.held_out,
                                                                                     self.processes) < 0:
            raise ConfigError("`batch`, `calibration` and `repeats` must be >= 1, `points` >= 2, `held_out` and "
                              "`processes` >= 0")
