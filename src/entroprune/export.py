"""Export to ONNX or TorchScript, checked against the torch model's own outputs."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError
from .utils import atomic_write

FORMATS = ("onnx", "torchscript")


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    # The TorchScript exporter on purpose: the torch.export one needs onnxscript and fails on models that
    # trace fine. Its deprecation notices are torch's plans, not the user's problem.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        torch.onnx.export(model, (example,), buf, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return buf.getvalue()


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
def export_model(model: nn.Module, example: torch.Tensor, path: str | Path, fmt: str = "onnx",
                 atol: float = 1e-4) -> dict[str, float]:
    """Write ``model`` to ``path`` and check the exported file reproduces its outputs."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose onnx or torchscript")
    model = model.cpu().eval()
    example = example.cpu()
    probe = torch.randn(4, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    expected = model(probe).numpy()
    if fmt == "onnx":
        import onnx

        data = onnx_bytes(model, example[:1])
        onnx.checker.check_model(onnx.load_from_string(data))
        got = onnx_session(data).run(None, {"input": probe.numpy()})[0]
        atomic_write(path, lambda p: p.write_bytes(data))
    else:
        traced = torch.jit.trace(model, example[:1])
        fd, tmp = tempfile.mkstemp(suffix=".pt")
        os.close(fd)
        try:
            traced.save(tmp)
            got = torch.jit.load(tmp)(probe).numpy()
            data = Path(tmp).read_bytes()
        finally:
            os.unlink(tmp)
        atomic_write(path, lambda p: p.write_bytes(data))
    diff = float(np.abs(got - expected).max())
    if diff > atol:
        Path(path).unlink(missing_ok=True)
        raise ConfigError(f"exported {fmt} model differs from torch by {diff:.2e} (> {atol}); "
                          "not written, please report this model")
    return {"max_abs_diff": diff, "bytes": Path(path).stat().st_size}


__all__ = ["FORMATS", "export_model", "onnx_bytes", "onnx_session"]
