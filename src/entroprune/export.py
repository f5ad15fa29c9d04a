"""Export to ONNX, TorchScript or torch.export's ExportedProgram, checked against the torch model's own outputs."""

from __future__ import annotations

import copy
import io
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError, one_line
from .settings import (
    DEFAULT_FORMAT,
    DEFAULT_OPSET,
    FORMATS,
    INT8_AGREEMENT_WARNING,
    INT8_FILE,
    INT8_MIN_OPSET,
    OPSETS,
    SUFFIXES,
)
from .utils import atomic_write

#: How a deployment loads each format, for the run's report.
LOADERS = {"onnx": 'onnxruntime.InferenceSession("{file}")',
           "torchscript": 'torch.jit.optimize_for_inference(torch.jit.load("{file}"))',
           "pt2": 'torch.export.load("{file}").module()'}


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        int8 = " (int8 is ONNX quantised: pass `int8`)" if fmt.lower() in ("int8", "qdq", "quantized", "quantised") else ""
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}{int8}")


def check_export_options(fmt: str, opset: int | None, batch: int, int8: bool = False) -> None:
    """``opset`` is ONNX's alone; a fixed ``batch`` (0: any) is for ONNX and pt2, whose graphs fix their shapes
    (accelerator toolchains that want static shapes read them), while a traced TorchScript net takes any batch;
    ``int8`` is ONNX from opset 13."""
    check_format(fmt)
    if int8 and fmt != "onnx":
        raise ConfigError(f"an int8 export is ONNX (QDQ); leave `fmt` out or pass onnx, not {fmt}")
    if int8 and (opset or DEFAULT_OPSET) < INT8_MIN_OPSET:
        raise ConfigError(f"an int8 export needs `opset` >= {INT8_MIN_OPSET} (per-channel quantisation), got {opset}")
    if opset is not None and fmt != "onnx":
        raise ConfigError(f"`opset` is ONNX's; leave it out to export {fmt}")
    if opset is not None and opset not in OPSETS:
        raise ConfigError(f"`opset` must lie in {OPSETS.start}-{OPSETS.stop - 1} (what torch's ONNX exporter "
                          f"writes), got {opset}")
    if batch < 0:
        raise ConfigError(f"`batch` must be >= 0 (0: any batch size), got {batch}")
    if batch and fmt == "torchscript":
        raise ConfigError("a traced TorchScript net takes any batch; leave `batch` out, or export onnx or pt2 "
                          "with a fixed batch")


def format_for(out_file: str | Path | None, fmt: str | None) -> str:
    """The format to write: ``fmt`` when given, else the one ``out_file``'s suffix names (``.ts``: torchscript),
    else (no suffix) the default. A suffix that names another format than ``fmt`` is refused: ONNX bytes in
    ``model.ts`` would fail only where the file is deployed; so is, without ``fmt``, a suffix that names no
    format entroprune writes (``model.tflite`` would have held ONNX)."""
    suffix = Path(out_file).suffix.lower() if out_file is not None else ""
    by_suffix = {s: name for name, s in SUFFIXES.items()}.get(suffix)
    if fmt is None:
        if suffix and by_suffix is None:
            known = ", ".join(f"{name} (*{s})" for name, s in SUFFIXES.items())
            raise ConfigError(f"`out_file` {out_file}: entroprune writes {known}, not {suffix}; name the file by one "
                              f"of those suffixes, or pass `fmt` to write one of them under this name")
        return by_suffix or DEFAULT_FORMAT
    check_format(fmt)
    if by_suffix is not None and by_suffix != fmt:
        raise ConfigError(f"`out_file` {out_file} has the suffix of {by_suffix}, but `fmt` is {fmt}; name the file "
                          f"*{SUFFIXES[fmt]} or leave `fmt` out to write {by_suffix}")
    return fmt


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """A model's output as the list of tensors an exported file returns: the tensor itself, or a tuple's, list's or
    dict's tensors in order, nested ones flattened (a net with an auxiliary head returns two)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flat_outputs(o)]
    raise ConfigError(f"the model returns a {type(out).__name__}; entroprune exports models whose output is a tensor, "
                      "or a tuple, list or dict of tensors")


def output_names(n: int) -> list[str]:
    """The exported ONNX outputs' names: ``logits`` (the main head, which the tool scores), then ``output1``, ..."""
    return ["logits", *(f"output{i}" for i in range(1, n))]


def onnx_bytes(model: nn.Module, example: torch.Tensor, opset: int = DEFAULT_OPSET, dynamic: bool = True) -> bytes:
    """The ONNX file's bytes; ``dynamic``: any batch size, else the example's."""
    with torch.no_grad():
        names = output_names(len(flat_outputs(model(example))))
    buf = io.BytesIO()
    # The TorchScript exporter on purpose: the torch.export one needs onnxscript and fails on models that
    # trace fine. Its deprecation notices are torch's plans, not the user's problem.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        torch.onnx.export(model, (example,), buf, input_names=["input"], output_names=names,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}} if dynamic else None,
                          opset_version=opset, dynamo=False)
    return buf.getvalue()


def with_classes(data: bytes, classes: list[str] | None) -> bytes:
    """The ONNX file with its outputs' class names in its metadata (``classes``, a JSON list), where they are
    known: ``onnxruntime.InferenceSession(f).get_modelmeta().custom_metadata_map["classes"]``."""
    if not classes:
        return data
    import json

    import onnx

    proto = onnx.load_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "classes", json.dumps(classes)
    return proto.SerializeToString()


def frozen_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """The net traced and frozen: weights inlined as constants, batch norms folded into the convs. What
    `export --format torchscript` writes; portable, unlike the optimized form below."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # strict=False: a dict or list of outputs (an auxiliary head's) traces, its structure fixed as traced
        return torch.jit.freeze(torch.jit.trace(model.cpu().eval(), example.cpu(), strict=False))


def deployed_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """The frozen net as a CPU deployment loads it: ``torch.jit.optimize_for_inference`` keeps activations in
    oneDNN's blocked layout from layer to layer. Tied to this machine's build (it cannot be saved), so it is
    made after loading: ``torch.jit.optimize_for_inference(torch.jit.load(path))``."""
    with torch.no_grad(), warnings.catch_warnings():
        # torch marks TorchScript deprecated in favour of torch.compile, which needs a C++ compiler at the
        # deployment; TorchScript is still what runs a saved net with nothing but libtorch
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*optimize_for_inference")
        return torch.jit.optimize_for_inference(frozen_torchscript(model, example))


def exported_program(model: nn.Module, example: torch.Tensor, batch: int = 0) -> torch.export.ExportedProgram:
    """torch.export's capture of the net, any batch size (``batch`` 0) or that one: what `export --format pt2`
    writes (``torch.export.load(path).module()`` runs it)."""
    # any batch: traced at 2, since torch.export specialises sizes 0 and 1
    example = example[:1].expand(batch or 2, *example.shape[1:])
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.export")
            return torch.export.export(model.cpu().eval(), (example.cpu(),),
                                       dynamic_shapes=None if batch else ({0: torch.export.Dim.DYNAMIC},))
    except Exception as exc:  # torch.export refuses control flow on values, and much else it cannot trace
        raise ConfigError(f"torch.export cannot capture this model ({one_line(exc)}); export it as onnx or "
                          "torchscript instead") from None


def _fold_batch_norms(model: nn.Module) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    return fuse(model)  # a copy: each conv followed only by a batch norm gets the norm folded in


def _channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)  # only 4-d tensors change layout


@torch.no_grad()
def deployed_eager(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The net as an eager-torch CPU deployment should run it: batch norms folded into their convs (one
    per-channel pass fewer per layer) and weights channels-last, the layout oneDNN's CPU convolutions
    and pooling run fastest in (activations follow the weights' layout). Unlike the as-loaded form, both
    passes shrink with pruning like the convs do: on this machine the unpruned nets ran 1.2-2.1x faster
    and the main job's speed-up rose from 0.55 to 0.68 of its MACs reduction
    (docs/measurements/latency_deploy.md). Each step is kept only when the net still runs and
    reproduces its outputs on ``example``; a net torch.fx cannot trace keeps its norms, one that views
    a channels-last tensor as flat keeps the default layout. A copy: ``model`` is left as it was."""
    model = copy.deepcopy(model).cpu().eval()
    example = example.cpu()
    expected = flat_outputs(model(example))
    tol = 1e-4 * max(1.0, *(float(e.abs().max()) for e in expected))
    for step in (_fold_batch_norms, _channels_last):
        try:
            candidate = step(model)
            got = flat_outputs(candidate(example))
            kept = len(got) == len(expected) and all(
                torch.allclose(g, e, rtol=1e-4, atol=tol) for g, e in zip(got, expected, strict=True))
        except Exception:  # noqa: BLE001 - tracing and layout fail in many ways; the net as it was is correct
            kept = False
        if kept:
            model = candidate
    return model


def onnx_session(data: bytes, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # No spin-waiting: idle spinning threads of one session steal the cores of the next
    # (seen as 2x noise when timing two sessions in alternation).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def export_model(model: nn.Module, example: torch.Tensor, path: str | Path, fmt: str = DEFAULT_FORMAT,
                 atol: float = 1e-4, opset: int | None = None, batch: int = 0,
                 classes: list[str] | None = None) -> dict[str, float]:
    """Write ``model`` to ``path`` and check the exported file reproduces its outputs. ``opset``: ONNX's
    (None: :data:`DEFAULT_OPSET`); ``batch``: a fixed batch size for ONNX and pt2 (0: any); ``classes``: the
    outputs' names, kept in an ONNX file's metadata (:func:`with_classes`)."""
    check_export_options(fmt, opset, batch)
    model = model.cpu().eval()
    example = example.cpu()
    probe = torch.randn(batch or 4, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    expected = [t.numpy() for t in flat_outputs(model(probe))]
    if fmt == "onnx":
        import onnx

        data = with_classes(onnx_bytes(model, probe if batch else example[:1], opset or DEFAULT_OPSET,
                                       dynamic=not batch), classes)
        onnx.checker.check_model(onnx.load_from_string(data))
        got = onnx_session(data).run(None, {"input": probe.numpy()})
    elif fmt == "torchscript":
        data, got = _saved_and_run(frozen_torchscript(model, example[:1]).save, torch.jit.load, probe, fmt)
    else:
        data, got = _saved_and_run(partial(torch.export.save, exported_program(model, example, batch)),
                                   lambda f: torch.export.load(f).module(), probe, fmt)
    diff = (max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
            if len(got) == len(expected) and all(g.shape == e.shape for g, e in zip(got, expected, strict=True))
            else float("inf"))
    if diff > atol:  # checked before writing: a --force export that fails leaves the earlier file as it was
        raise ConfigError(f"exported {fmt} model differs from torch by {diff:.2e} (> {atol}); "
                          "not written, please report this model")
    atomic_write(path, lambda p: p.write_bytes(data))
    return {"max_abs_diff": diff, "bytes": Path(path).stat().st_size, "outputs": len(expected),
            "opset": (opset or DEFAULT_OPSET) if fmt == "onnx" else None, "batch": batch}


def quantize_onnx(data: bytes, calibration: Iterable[np.ndarray]) -> bytes:
    """Static int8 quantisation by onnxruntime, in the QDQ format (QuantizeLinear/DequantizeLinear pairs around
    each op, which onnxruntime, TensorRT and the NPU toolchains fuse into int8 kernels): weights per output
    channel, activations per tensor over the min/max the calibration batches reach; signed int8 for both, the
    format onnxruntime recommends first."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quant_pre_process, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    with tempfile.TemporaryDirectory(prefix="entroprune-int8-") as tmp:
        plain, ready, quantized = (Path(tmp) / name for name in ("float.onnx", "ready.onnx", "int8.onnx"))
        plain.write_bytes(data)
        quant_pre_process(plain, ready)  # shape inference and graph optimisation first, as onnxruntime asks
        quantize_static(ready, quantized, Batches(), quant_format=QuantFormat.QDQ, per_channel=True)
        return quantized.read_bytes()


def _batches_of(x: torch.Tensor, batch: int) -> Iterator[tuple[torch.Tensor, int]]:
    """``x`` in pieces a fixed-batch graph takes (the last padded with zeros), each with its real length."""
    if not batch:
        yield x, len(x)
        return
    for start in range(0, len(x), batch):
        piece = x[start:start + batch]
        yield torch.cat([piece, piece.new_zeros(batch - len(piece), *piece.shape[1:])]), len(piece)


@torch.no_grad()
def export_int8(model: nn.Module, example: torch.Tensor, path: str | Path, calibration: Iterable[torch.Tensor],
                test: Iterable[tuple[torch.Tensor, torch.Tensor]], labelled: bool, opset: int | None = None,
                batch: int = 0, classes: list[str] | None = None) -> dict[str, Any]:
    """Write ``model`` as int8 ONNX (:func:`quantize_onnx`, ranges from the ``calibration`` images) and check it
    as a deployment would run it: its top-1 agreement with the float net on the ``test`` batches, and test
    accuracy beside the float net's where they are ``labelled``. Quantisation moves outputs, so unlike the float
    exports there is no exact check; an agreement below INT8_AGREEMENT_WARNING percent is written with a warning."""
    check_export_options("onnx", opset, batch, int8=True)
    opset = opset or DEFAULT_OPSET
    model = model.cpu().eval()
    example = example.cpu()[:1]
    plain = onnx_bytes(model, example.expand(batch, *example.shape[1:]) if batch else example, opset, dynamic=not batch)
    pieces = [piece.numpy() for x in calibration for piece, _ in _batches_of(x.cpu(), batch)]
    if not pieces:
        raise ConfigError("an int8 export needs calibration images, and the dataset gave none; give a larger one")
    try:
        data = with_classes(quantize_onnx(plain, pieces), classes)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's quantiser fails in many ways on ops it does not know
        raise ConfigError(f"onnxruntime cannot quantise this model ({one_line(exc)}); export it in float") from None
    session = onnx_session(data)
    agree = correct = float_correct = seen = 0
    for x, y in test:
        x, y = x.cpu(), y.cpu()
        got = torch.cat([torch.from_numpy(session.run(None, {"input": piece.numpy()})[0][:n]).argmax(1)
                         for piece, n in _batches_of(x, batch)])
        ref = flat_outputs(model(x))[0].argmax(1)
        agree, seen = agree + int((got == ref).sum()), seen + got.numel()
        if labelled:
            correct, float_correct = correct + int((got == y).sum()), float_correct + int((ref == y).sum())
    if not seen:
        raise ConfigError("the int8 export's check read no test images; give a dataset with a test split")
    agreement = 100.0 * agree / seen
    if agreement < INT8_AGREEMENT_WARNING:
        warnings.warn(f"the int8 net agrees with the float one on {agreement:.1f}% of the test outputs; check its "
                      "accuracy on your data before deploying it, or deploy the float export", stacklevel=2)
    atomic_write(path, lambda p: p.write_bytes(data))
    return {"bytes": Path(path).stat().st_size, "float_bytes": len(plain), "agreement": agreement,
            "test_accuracy": 100.0 * correct / seen if labelled else None,
            "float_test_accuracy": 100.0 * float_correct / seen if labelled else None, "outputs_checked": seen,
            "opset": opset, "batch": batch}


def _saved_and_run(save: Callable[[str], None], load: Callable[[str], Callable], probe: torch.Tensor,
                   fmt: str) -> tuple[bytes, list[np.ndarray]]:
    """The file's bytes and the outputs of the net loaded back from it: the file is checked, not the object."""
    fd, tmp = tempfile.mkstemp(suffix=SUFFIXES[fmt])  # torch.export.load wants its suffix
    os.close(fd)
    try:
        save(tmp)
        return Path(tmp).read_bytes(), [t.numpy() for t in flat_outputs(load(tmp)(probe))]
    finally:
        os.unlink(tmp)


__all__ = ["FORMATS", "SUFFIXES", "LOADERS", "DEFAULT_FORMAT", "DEFAULT_OPSET", "OPSETS", "INT8_FILE", "check_format",
           "check_export_options", "export_int8", "quantize_onnx", "with_classes", "exported_program", "deployed_eager", "deployed_torchscript", "export_model", "flat_outputs", "frozen_torchscript", "onnx_bytes", "onnx_session", "output_names"]
