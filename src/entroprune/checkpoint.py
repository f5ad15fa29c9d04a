"""Checkpoints that load with ``torch.load(weights_only=True)``: a spec plus tensors.

A checkpoint never pickles a module. It stores how to rebuild the network (the zoo name
and its arguments, the dataset and its normalisation), the state_dict, and, for a pruned
network, the policy and torch-pruning's pruning history, replayed on a fresh model to get
the same shapes before the weights are loaded.
"""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError, ConfigError, UntrustedPickleError, one_line
from .models import build_model
from .settings import checked_args, given_config
from .utils import atomic_write

FORMAT = "entroprune-checkpoint"
VERSION = 1


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model and feed it correctly normalised images."""

    model: str
    num_classes: int
    in_channels: int
    width_mult: float = 1.0
    dataset: str = "digits"
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    input_size: list[int] = field(default_factory=lambda: [1, 28, 28])
    data_dir: str | None = None
    split_seed: int = 0  # the seed that carved train / val / calib, reused by later stages
    sample_rate: int | None = None  # audio's (a WAV folder): data at another rate is refused, not misread
    # each output's class name, where the data named them (a folder's sub-folders, Fashion-MNIST's, CIFAR-10's): a
    # deployment reads its predictions by them, and another folder's classes are checked against them
    classes: list[str] | None = None

    def validate(self) -> None:
        """Types and ranges of every field, so nothing unchecked reaches torch (raises ValueError)."""
        def positive_int(name: str, v: Any) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        def numbers(name: str, v: Any, positive: bool = False) -> None:
            ok = isinstance(v, (list, tuple)) and len(v) == self.in_channels and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and (x > 0 or not positive)
                for x in v)
            if not ok:
                raise ValueError(f"{name} must hold {self.in_channels} finite{' positive' if positive else ''} "
                                 f"numbers (one per input channel), got {v!r}")

        if not isinstance(self.model, str):
            raise ValueError(f"model must be a name, got {self.model!r}")
        positive_int("num_classes", self.num_classes)
        positive_int("in_channels", self.in_channels)
        if isinstance(self.width_mult, bool) or not isinstance(self.width_mult, (int, float)) or not (
                math.isfinite(self.width_mult) and self.width_mult > 0):
            raise ValueError(f"width_mult must be a positive number, got {self.width_mult!r}")
        numbers("mean", self.mean)
        numbers("std", self.std, positive=True)
        size = self.input_size
        if not (isinstance(size, (list, tuple)) and len(size) in (2, 3, 4) and all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in size)
                and size[0] == self.in_channels):
            raise ValueError(f"input_size must be [channels, height, width] (images), [channels, length] (1-D "
                             f"signals) or [channels, depth, height, width] (volumes) with {self.in_channels} "
                             f"channels, got {size!r}")
        if not isinstance(self.split_seed, int) or isinstance(self.split_seed, bool) or not 0 <= self.split_seed < 2**63:
            raise ValueError(f"split_seed must be an integer in [0, 2**63), got {self.split_seed!r}")
        if self.sample_rate is not None:
            positive_int("sample_rate", self.sample_rate)
        if self.classes is not None and not (isinstance(self.classes, list) and len(self.classes) == self.num_classes
                                             and all(isinstance(c, str) for c in self.classes)):
            raise ValueError(f"classes must name each of the {self.num_classes} classes, got {self.classes!r}")

    def build(self) -> nn.Module:
        return build_model(self.model, self.num_classes, self.in_channels, self.width_mult)

    def example_input(self, n: int = 1) -> torch.Tensor:
        return torch.zeros(n, *self.input_size)

    def built_as(self) -> str:
        """The net this spec builds, in words, for messages about weights that do not fit it."""
        return (f"model {self.model!r} built for {self.num_classes} classes and {self.in_channels} input channel(s) "
                f"at width {self.width_mult}")


@dataclass
class Checkpoint:
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    pruning: dict[str, Any] | None = None  # {"policy": {...}, "history": [...], ...}
    metrics: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """Rebuild the network, replay its pruning, load its weights."""
        model = self.spec.build()
        try:  # a batch of two: every stage feeds batches, and a forward that fixes the batch size fails here
            with torch.no_grad():
                model.eval()(self.spec.example_input(2))
        except RuntimeError as exc:  # e.g. an input_size too small for the model's downsampling
            raise CheckpointError(f"model {self.spec.model!r} cannot run a batch of the spec's input_size "
                                  f"{self.spec.input_size} ({one_line(exc)}); the file was edited "
                                  "or made by another tool, or the model's forward fixes the batch size") from None
        if self.pruning:
            from .prune import replay_pruning_history

            try:
                replay_pruning_history(model, self.spec.example_input(), self.pruning["history"])
            except (IndexError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
                raise CheckpointError(f"the checkpoint's pruning history cannot be replayed on model "
                                      f"{self.spec.model!r} ({one_line(exc)}); the file was edited "
                                      "or made by another version") from None
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0]
            raise CheckpointError(f"checkpoint weights do not match model {self.spec.model!r} "
                                  f"({detail}); the file was edited or made by another tool") from None
        check_finite(model)
        return model.eval()


def check_finite(model: nn.Module, what: str = "checkpoint tensor",
                 fix: str = "retrain or restore an earlier checkpoint", error: type[Exception] = CheckpointError) -> None:
    """Every float parameter and buffer finite: a NaN weight makes every activation NaN, which the rewards would
    score as a constant (the entropy of an all-NaN map reads 0) and the search would rank as if it meant something."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise error(f"{what} {name} contains NaN or Inf; {fix}")


@checked_args
def save_checkpoint(path: str | Path, spec: ModelSpec, model: nn.Module,
                    pruning: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a zoo model built as ``spec`` says) as a checkpoint every command and ``run --checkpoint``
    read with ``weights_only=True``: how a model trained outside entroprune enters it. A spec that does not
    describe the model is refused before anything is written (it made a file no command could load)."""
    spec = given_config(spec, ModelSpec, "spec", from_dict="ep.ModelSpec(**spec)")
    try:
        spec.validate()
    except ValueError as exc:
        raise ConfigError(f"the spec is invalid: {exc}") from None
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if pruning is None:  # a pruned net's shapes follow its history, which every load replays
        mismatch = state_mismatch(spec.build().state_dict(), state)
        if mismatch:
            raise ConfigError(f"the model does not fit its spec, {spec.built_as()} ({mismatch}); give the spec "
                              "the model was built with")
    payload = {"format": FORMAT, "version": VERSION, "spec": asdict(spec), "state_dict": state,
               "pruning": pruning, "metrics": _plain(metrics or {})}
    return atomic_write(path, lambda p: torch.save(payload, p))


def state_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """How ``state`` differs from a model's own state dict, three keys at most of each kind; None when it fits."""
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} (the model's {list(v.shape)})" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    parts = [f"{what} {', '.join(keys[:3])}{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}"
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes:", shapes)) if keys]
    return "; ".join(parts) or None


#: The wrapper torch.compile puts around a module names its weights ``_orig_mod.<name>``.
COMPILED_PREFIX = "_orig_mod."


def fit_names(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
              source: str | Path) -> dict[str, torch.Tensor]:
    """``state`` renamed to a model's own names where the training script wrapped the model: torch.compile's
    ``_orig_mod.`` anywhere in a name, and one prefix over every weight (a LightningModule's ``model.``, an
    ``AveragedModel``'s ``module.`` beside its ``n_averaged``, ``backbone.``). Entries outside that prefix are
    dropped with a warning naming them. Two prefixes that each hold the whole model (a student and its teacher,
    a model and its EMA copy) are refused: which one to prune is the user's call. Anything else is returned as
    given, for :func:`state_mismatch` to describe."""
    state = {k.replace(COMPILED_PREFIX, ""): v for k, v in state.items()}
    if set(state) == set(own):
        return state
    prefixes = {k[:len(k) - len(rest)] for k in state for rest in _suffixes(k) if rest in own}
    fits = {p: {k[len(p):]: v for k, v in state.items() if k.startswith(p)} for p in sorted(prefixes - {""})}
    fits = {p: sub for p, sub in fits.items() if set(sub) == set(own)}
    if len(fits) > 1:
        raise CheckpointError(f"{source} holds {len(fits)} copies of the model's weights (under "
                              f"{', '.join(repr(p) for p in fits)}); save the one to prune alone, "
                              "torch.save(model.state_dict(), path)")
    if not fits:
        return state
    prefix, sub = next(iter(fits.items()))
    dropped = [k for k in state if not k.startswith(prefix)]
    if dropped:
        warnings.warn(f"took the weights under {prefix!r} in {source}; left out {len(dropped)} other entr"
                      f"{'y' if len(dropped) == 1 else 'ies'} ({', '.join(dropped[:3])}"
                      f"{', ...' if len(dropped) > 3 else ''})", stacklevel=3)
    return sub


def _suffixes(name: str) -> list[str]:
    """``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``: the names a prefix could have been put in front of."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _plain(obj: Any) -> Any:
    """Metrics as plain Python values, so weights_only loading accepts them."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local file header
PICKLE_PROTO = b"\x80"  # a pickle of protocol 2 or later opens with its PROTO opcode


def is_safetensors(path: Path) -> bool:
    """A safetensors file opens with its JSON header's length (8 bytes, little-endian; the format caps it at 100 MB)
    and the header's ``{``: a truncated one too, for its reader to name."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= 100_000_000


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Weights in the safetensors format (Hugging Face's and timm's): tensors only, nothing to unpickle."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); the file is truncated or "
                              "corrupt, save the weights again") from None


def _read_torch_file(path: Path, trust_pickle: bool = False) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only`` unless trusted; every failure is a
    :class:`CheckpointError` with a fix."""
    if str(path) == ".":  # what an empty argument becomes on the command line, and "." is no file either
        raise CheckpointError("the checkpoint path is empty (or '.', this folder); pass the .pt checkpoint file")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path "
                              "(train one with `entroprune train`)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass the .pt checkpoint file inside it")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty; the write was interrupted, retrain")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if is_safetensors(path):
        raise CheckpointError(f"{path} holds weights in the safetensors format, not an entroprune checkpoint; make "
                              "one of them with `entroprune wrap` (the model's name and the dataset)")
    # torch.save writes a zip archive (a pickle, before torch 1.6). Anything else is no checkpoint: told
    # apart here, since the safe loader reads a JSON, ONNX or random file as an unsafe pickle and would
    # have the user pass --trust-pickle for it.
    if not head.startswith(ZIP_MAGIC) and head[:1] != PICKLE_PROTO:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive); pass a "
                              "model.pt that entroprune wrote (train, prune, finetune), or save your model with "
                              "entroprune.save_checkpoint()")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            raise UntrustedPickleError(
                f"{path} contains pickled Python objects, which can run arbitrary code when "
                "loaded; if you trust its author, pass `trust_pickle=True`") from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc}); "
                              "pass a file written by entroprune") from None
    except Exception as exc:  # torch.load raises many types (KeyError, RuntimeError, ...) on junk
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({msg}); the file is "
                              "truncated or not a PyTorch file, retrain or restore it") from None
    return obj


def load_checkpoint(path: str | Path, trust_pickle: bool = False) -> Checkpoint:
    """Read a checkpoint safely; every failure is a :class:`CheckpointError` with a fix."""
    path = Path(path)
    obj = _read_torch_file(path, trust_pickle)
    if trust_pickle and isinstance(obj, nn.Module):
        raise CheckpointError(f"{path} holds a whole pickled module, which the commands cannot rebuild (they "
                              "need a zoo model's spec); prune it in Python with entroprune.search_module, "
                              "prune_module and finetune_module, which take any nn.Module")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an entroprune checkpoint (no spec); make one from its weights with "
                              "`entroprune wrap`, or train one with `entroprune train`")
    try:
        spec = ModelSpec(**obj["spec"])
        spec.validate()
        state = obj["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise TypeError("state_dict is not a dict of tensors")
        pruning = obj.get("pruning")
        if pruning is not None and not (isinstance(pruning, dict) and isinstance(pruning.get("history"), list)
                                        and isinstance(pruning.get("counts"), dict)):
            raise TypeError("its pruning record needs a 'history' list and a 'counts' mapping")
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} has a malformed spec ({exc}); the file was edited or "
                              "comes from another version") from None
    from .models import MODELS

    if not MODELS.knows(spec.model):
        raise CheckpointError(f"{path} names {MODELS.unknown(spec.model)}")
    return Checkpoint(spec=spec, state_dict=state, pruning=obj.get("pruning"),
                      metrics=obj.get("metrics") or {})


#: Keys under which training scripts commonly nest a model's state dict.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def load_weights(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A model's weights saved by another tool (``torch.save(model.state_dict())``, or nested under one of
    :data:`STATE_DICT_KEYS` beside an optimizer's state), read with ``weights_only=True``, or a safetensors file; the
    ``module.`` prefix of ``DataParallel`` / ``DistributedDataParallel`` is dropped. With ``trust_pickle``, a whole
    pickled module (``torch.save(model)``) gives its state dict (unpickling it runs code from the file)."""
    path = Path(path)
    try:
        obj = _read_safetensors(path) if path.is_file() and is_safetensors(path) else _read_torch_file(path, trust_pickle)
    except UntrustedPickleError:
        raise CheckpointError(f"{path} holds pickled Python objects (a whole module?), which can run code when "
                              "loaded; save its weights instead, torch.save(model.state_dict(), path), or pass "
                              "`trust_pickle=True` if you trust its author") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()

    def tensors(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in d.items())
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        raise CheckpointError(f"{path} is an entroprune checkpoint already; pass it to the commands as it is")
    state = obj if tensors(obj) else next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj, dict)
                                           and tensors(obj.get(k))), None)
    if state is None:
        found = f"a dict of {', '.join(map(repr, list(obj)[:6]))}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} holds {found}, not a state dict (names -> tensors, as "
                              f"torch.save(model.state_dict()) writes; or one under {', '.join(STATE_DICT_KEYS)})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


__all__ = ["ModelSpec", "Checkpoint", "save_checkpoint", "load_checkpoint", "load_weights", "fit_names",
           "check_finite"]
