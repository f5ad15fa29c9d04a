"""What the module-level Python API is handed (a model, batches of images, labels), checked before use: a
loader of dicts, numpy arrays, images of other channels, one-hot or out-of-range labels, a float64 or NaN model
are one line naming the problem and the fix, where each failed deep in torch (a conv's forward, torch.cat, a
comparison, the loss)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import check_finite
from .errors import ConfigError, DataError
from .train import main_output
from .utils import modes_kept

#: Images for calibration: a tensor, or batches (a DataLoader) of images or (image, label) pairs.
Images = torch.Tensor | Iterable[Any]


def take_images(source: Images, limit: int, example: torch.Tensor | None = None) -> torch.Tensor:
    """The first ``limit`` images of a tensor or of an iterable of batches (x or (x, y)), shaped as ``example``'s
    batch where one is given."""
    if isinstance(source, torch.Tensor):
        images = source[:limit]
    else:
        chunks, n = [], 0
        for batch in source:
            x = _tensor(batch[0] if isinstance(batch, (tuple, list)) and batch else batch, "calib")
            chunks.append(x)
            n += len(x)
            if n >= limit:
                break
        if not chunks:
            once = " (a one-shot iterator such as a generator is empty once read: pass a list of batches or the " \
                   "loader itself)" if iter(source) is source else ""
            raise DataError(f"the calibration source yielded no images{once}")
        images = torch.cat(chunks)[:limit]
    _check_float(images, "calib")
    if example is not None:
        _check_like(images, example, "calib")
    if not torch.isfinite(images).all():  # as the dataset readers check theirs (float32: checked above)
        raise DataError("the calibration images contain NaN or Inf; clean the data")
    return images


def take_labelled(source: tuple[torch.Tensor, torch.Tensor] | Iterable[Any], limit: int,
                   example: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(source, (tuple, list)) and len(source) == 2 and isinstance(source[0], torch.Tensor):
        x, y = source[0][:limit], source[1][:limit]
    else:
        xs, ys, n = [], [], 0
        for batch in source:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise DataError(f"`val` batches must be (images, labels) pairs, got {_kind(batch)}")
            xs.append(_tensor(batch[0], "val"))
            ys.append(_tensor(batch[1], "val"))
            n += len(xs[-1])
            if n >= limit:
                break
        if not xs:
            raise DataError("the validation source yielded no batches")
        x, y = torch.cat(xs)[:limit], torch.cat(ys)[:limit]
    _check_float(x, "val")
    if example is not None:
        _check_like(x, example, "val")
    return x, y


def check_labels(model: nn.Module, x: torch.Tensor, y: Any, name: str, floats: bool) -> torch.Tensor:
    """Labels as one class index per image that the model's outputs can name, as long integers (``floats``: whole
    numbers in a float tensor are read as such, where the caller can convert them). One-hot rows failed in the
    accuracy's comparison; labels beyond the outputs scored every policy 0%, so the accuracy reward searched on
    nothing, or stopped a fine-tune with an IndexError."""
    if not isinstance(y, torch.Tensor):
        raise DataError(f"the `{name}` labels must be a tensor of class indices, got {type(y).__name__}")
    with modes_kept(model), torch.no_grad():
        device = next((t.device for t in model.parameters()), x.device)  # a CUDA model fed CPU batches: the
        out = main_output(model.eval()(x[:1].to(device)))  # training moves both, as this check does
    if out.dim() < 2:  # no class dimension to check against (the training's loss names the problem)
        return y.long()
    # classes along dim 1, as cross-entropy reads them: (N, C) logits take (N,) labels, a segmentation's
    # (N, C, H, W) takes (N, H, W)
    classes, want = out.shape[1], (len(x), *out.shape[2:])
    if tuple(y.shape) != want:
        onehot = " (one-hot rows: pass y.argmax(1))" if tuple(y.shape) == (len(x), classes) else ""
        raise DataError(f"the `{name}` labels must be one class index per {'output position' if out.dim() > 2 else 'image'}"
                        f", shaped {want}, got {tuple(y.shape)}{onehot}")
    if y.is_floating_point() and not (floats and torch.equal(y, y.round())):
        raise DataError(f"the `{name}` labels must be integer class indices, got {y.dtype}: pass y.long()")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(f"the `{name}` labels run from {int(y.min())} to {int(y.max())}, but the model has {classes} "
                        f"outputs (classes 0 to {classes - 1}); pass labels as the model's class indices")
    return y.long()


def check_teacher(model: nn.Module, teacher: nn.Module, x: torch.Tensor) -> None:
    """A teacher of other outputs than the student's (another head, other classes) failed in the distillation's
    loss with a size mismatch."""
    outs = []
    for net in (model, teacher):
        with modes_kept(net), torch.no_grad():
            device = next((t.device for t in net.parameters()), x.device)
            outs.append(main_output(net.eval()(x[:1].to(device))))
    if outs[0].shape != outs[1].shape:
        raise ConfigError(f"the teacher's outputs are shaped {tuple(outs[1].shape[1:])}, the model's "
                          f"{tuple(outs[0].shape[1:])}: distil from the unpruned net this one was pruned from")


def _kind(batch: Any) -> str:
    if isinstance(batch, dict):
        return f"a dict (keys {', '.join(map(str, list(batch)[:4]))}): pass (batch[image key], batch[label key]) pairs"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)}"
    return type(batch).__name__


def _tensor(x: Any, name: str) -> torch.Tensor:
    """A batch's images as a tensor: a dict (a Hugging Face-style batch) or a numpy array is named, not read
    wrongly or failed on in torch.cat."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"`{name}` batches must hold torch tensors (images, or (images, labels)), got {_kind(x)}"
                        + (" (torch.from_numpy converts)" if type(x).__module__ == "numpy" else ""))
    return x


def _check_float(images: torch.Tensor, name: str) -> None:
    """float32 images, as the model's weights are (``check_weights``): uint8 pixels failed deep in the first conv
    ("expected scalar type Byte but found Float"), float64 ones on its bias."""
    if images.dtype != torch.float32:
        fix = ("x.float() / 255, then the normalisation the model was trained with" if not images.is_floating_point()
               else "x.float()")
        raise DataError(f"the `{name}` images are {str(images.dtype).removeprefix('torch.')}, the model's weights "
                        f"float32: pass them as it was trained on them ({fix})")


def _check_like(images: torch.Tensor, example: torch.Tensor, name: str) -> None:
    """Images of the example input's shape: a batch of other channels fails deep in a forward, where the
    message names the conv's weight and not the data, and one of another size in a Flatten + Linear head
    (or is read by the entropy at other map sizes than the structure's MACs and 1x1 groups were found at)."""
    if images.shape[1:] != example.shape[1:]:
        raise DataError(f"the `{name}` images are shaped {tuple(images.shape)}, the example input "
                        f"{tuple(example.shape)}: pass images of the shape the model takes, as the example input is "
                        "(resized, or with an example input of theirs)")


def check_module(model: nn.Module) -> nn.Module:
    """A module handed to the API for pruning (no checkpoint load checked it): an eager module (torch.compile's
    is unwrapped) whose weights are plain tensors, checked as ``check_weights`` says."""
    from .structure import plain_module

    model = plain_module(model)
    check_weights(model)
    return model


def check_weights(model: nn.Module) -> None:
    """Finite float32 weights, as the images the stages feed a model are float32 (a float64 or half model
    would fail deep inside with a dtype mismatch)."""
    dtypes = {t.dtype for t in model.parameters() if t.is_floating_point()}  # a buffer may be float64 on purpose
    if dtypes - {torch.float32}:
        raise ConfigError(f"the model's weights are {', '.join(sorted(str(d) for d in dtypes))}; entroprune prunes "
                          "float32 models: pass model.float() (and convert the pruned copy back if needed)")
    check_finite(model, "the model's tensor", "pass a model with finite weights (a diverged training or a bad load "
                 "leaves NaN)", ConfigError)


class _Unlabelled:
    """Batches of images alone as the (x, y) batches training reads; the labels are never read."""

    def __init__(self, loader: Iterable[Any]):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return ((x, torch.full((len(x),), -1)) for x in self.loader)


def batches(loader: Iterable[Any], model: nn.Module, teacher: nn.Module | None, name: str,
             sized: bool) -> tuple[Iterable[Any], bool]:
    """``loader`` as (x, y) batches, and whether it has labels: a batch of images alone has none, which only
    distillation from a teacher can train on. Every epoch walks it again (a one-shot iterator trained on its first
    epoch alone, short of the batch peeked here), and ``sized``: the learning-rate schedule needs its length."""
    if iter(loader) is loader:
        raise ConfigError(f"{name} is a one-shot iterator (a generator, or iter() of a loader), which only the "
                          "first epoch could read; pass the loader itself or a list of batches")
    if sized and not hasattr(loader, "__len__"):
        raise ConfigError(f"{name} has no len(), which the learning-rate schedule needs; pass a DataLoader or a "
                          "list of batches")
    first = next(iter(loader), None)
    if isinstance(first, (tuple, list)) and len(first) == 2 and isinstance(first[0], torch.Tensor):
        _check_float(first[0], name)  # the first batch's, as a sample
        check_labels(model, first[0], first[1], name, floats=False)
        if teacher is not None:
            check_teacher(model, teacher, first[0])
        return loader, True
    if not isinstance(first, torch.Tensor):
        raise ConfigError(f"{name} must yield (images, labels) batches or batches of images alone, got "
                          f"{'no batch' if first is None else _kind(first)}")
    _check_float(first, name)
    if teacher is None:
        raise ConfigError(f"{name} yields images without labels; pass teacher= (the unpruned model) to fine-tune "
                          "by distillation, which needs none, or a loader of (images, labels) batches")
    check_teacher(model, teacher, first)
    return _Unlabelled(loader), False
