"""Training, fine-tuning and evaluation loops shared by every command."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DataBundle
from .errors import ConfigError, RunError
from .settings import check_types
from .utils import progress_bar

#: The one-cycle schedule's warm-up, a fraction of the training's steps.
ONECYCLE_WARMUP = 0.25


def _schedule(opt: torch.optim.Optimizer, config: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule over ``steps``. One-cycle needs a warm-up of two steps or more: at 4 steps in
    all (240 volumes, 2 epochs) torch's OneCycleLR divided by zero; shorter trainings anneal from the peak."""
    if config.schedule == "onecycle" and steps * ONECYCLE_WARMUP >= 2:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps,
                                                   pct_start=ONECYCLE_WARMUP)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)


@dataclass
class TrainConfig:
    """Hyperparameters of SGD training and fine-tuning.

    :param epochs: passes over the training split.
    :param lr: peak learning rate (one-cycle) or initial learning rate (cosine).
    :param batch_size: images per step.
    :param momentum: SGD momentum (Nesterov).
    :param weight_decay: L2 penalty on weights.
    :param schedule: ``onecycle`` (fast convergence from scratch) or ``cosine`` (fine-tuning).
    :param label_smoothing: cross-entropy label smoothing.
    :param augment: ``shift`` (translations + flips where allowed), ``flip`` or ``none``.
    :param distill_alpha: weight of the distillation loss when a teacher is given.
    :param distill_temperature: softmax temperature of distillation.
    """

    epochs: int = 3
    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    label_smoothing: float = 0.0
    augment: str = "flip"
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0

    def validate(self) -> None:
        check_types(self)
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.augment not in ("none", "flip", "shift"):
            raise ConfigError(f"augment must be none, flip or shift, got {self.augment!r}")
        if self.schedule not in ("onecycle", "cosine"):
            raise ConfigError(f"schedule must be onecycle or cosine, got {self.schedule!r}")


def main_output(out) -> torch.Tensor:
    """The logits a score or a loss reads from a model's output: the tensor itself, or the first tensor of a
    tuple, list or dict (a model with an auxiliary head is judged, and fine-tuned, on its main head)."""
    while not isinstance(out, torch.Tensor):
        if isinstance(out, dict):
            out = next(iter(out.values()))
        elif isinstance(out, (tuple, list)) and out:
            out = out[0]
        else:
            raise TypeError(f"cannot read logits from a model output of type {type(out).__name__}")
    return out


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None) -> dict[str, Any]:
    """Top-1 accuracy (%) and mean cross-entropy over labelled (x, y) batches, and the accuracy of each class
    (None where the batches hold none of it): pruning can cost a few classes far more than the mean says."""
    model.eval()
    correct, total, loss = 0, 0, 0.0
    seen = hits = None
    for x, y in loader:
        if device is not None:
            x, y = x.to(device), y.to(device)
        out = main_output(model(x))
        loss += F.cross_entropy(out, y, reduction="sum").item()
        right = out.argmax(1) == y
        correct += right.sum().item()
        total += y.numel()  # a segmentation's labels are one per pixel: its accuracy is per pixel (it read 1634%)
        n, counted = out.shape[1], (y >= 0) & (y < out.shape[1])  # labels the outputs do not name are not a class's
        seen = torch.bincount(y[counted].cpu(), minlength=n) + (0 if seen is None else seen)
        hits = torch.bincount(y[right & counted].cpu(), minlength=n) + (0 if hits is None else hits)
    if total == 0 or seen is None or hits is None:
        return {"accuracy": float("nan"), "loss": float("nan"), "per_class_accuracy": []}
    per_class = [100.0 * h / s if s else None for h, s in zip(hits.tolist(), seen.tolist(), strict=True)]
    return {"accuracy": 100.0 * correct / total, "loss": loss / total, "per_class_accuracy": per_class}


def agreement(model: nn.Module, teacher: nn.Module, loader: Iterable,
              device: torch.device | str | None = None) -> dict[str, float]:
    """Top-1 agreement (%) with ``teacher`` over (x, _) batches: what a fine-tune on unlabelled images can
    measure of itself (the labels' accuracy needs labels)."""
    model.eval()
    agree, total = 0, 0
    with torch.no_grad():
        for x, _ in loader:
            if device is not None:
                x = x.to(device)
            same = main_output(model(x)).argmax(1) == main_output(teacher(x)).argmax(1)
            agree += same.sum().item()
            total += same.numel()
    return {"agreement": 100.0 * agree / total if total else float("nan")}


def _batch_loss(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, teacher: nn.Module | None,
                config: TrainConfig, labelled: bool) -> torch.Tensor:
    """Cross-entropy on the labels, mixed with distillation from ``teacher`` when there is one; without
    labels the teacher's outputs are the whole target."""
    ce = F.cross_entropy(out, y, label_smoothing=config.label_smoothing) if labelled else None
    if teacher is None:
        assert ce is not None  # train_model refuses unlabelled data without a teacher
        return ce
    with torch.no_grad():
        t_out = main_output(teacher(x))
    temp = config.distill_temperature
    kd = F.kl_div(F.log_softmax(out / temp, 1), F.softmax(t_out / temp, 1), reduction="batchmean") * temp * temp
    return kd if ce is None else (1 - config.distill_alpha) * ce + config.distill_alpha * kd


def train_model(model: nn.Module, data: DataBundle | None, config: TrainConfig, seed: int = 0,
                device: torch.device | str = "cpu", teacher: nn.Module | None = None,
                quiet: bool = False, description: str = "train",
                train_loader: Iterable | None = None, val_loader: Iterable | None = None,
                eval_model: nn.Module | None = None, labelled: bool = True,
                val_labelled: bool | None = None) -> list[dict]:
    """Train in place; returns one metrics dict per epoch (train loss, val accuracy, time).

    Either ``data`` (a DataBundle) or ``train_loader`` (any re-iterable of (x, y) batches,
    e.g. a torch DataLoader; ``labelled=False`` where its y are placeholders) gives the images;
    ``val_labelled`` (default: as the training batches) whether ``val_loader``'s labels are real: a
    label-free fine-tune may still be judged by accuracy on a few labelled images.
    ``eval_model`` is what validation runs on when it differs from ``model`` (the module inside
    DistributedDataParallel, whose own forward would wait for the other ranks).
    """
    config.validate()
    labelled = data.labelled if data is not None else labelled
    val_labelled = labelled if val_labelled is None else val_labelled
    if not labelled and teacher is None:
        raise ConfigError(f"dataset {data.name if data else 'train_loader'} has no labels; train on a labelled "
                          "dataset, or fine-tune a pruned net by distillation from the unpruned one (`distill`), "
                          "which needs none")
    if data is None and train_loader is None:
        raise ConfigError("train_model needs a DataBundle or a train_loader")
    device = torch.device(device)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    torch.manual_seed(seed)
    params_decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    params_other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": params_decay, "weight_decay": config.weight_decay},
                           {"params": params_other, "weight_decay": 0.0}],
                          lr=config.lr, momentum=config.momentum, nesterov=True)
    if train_loader is None:
        train_loader = data.loader("train", config.batch_size, shuffle=True, augment=config.augment,
                                   seed=seed, device=device)
    if val_loader is None and data is not None:
        val_loader = data.loader("val", 512, device=device)
    steps = max(1, config.epochs * len(train_loader))  # loaders must have a length
    sched = _schedule(opt, config, steps)
    history: list[dict] = []
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task(description, total=steps, info="")
        for epoch in range(1, config.epochs + 1):
            model.train()
            t0, running, seen = time.perf_counter(), 0.0, 0
            for x, y in train_loader:
                x, y = x.to(device), y.to(device)
                loss = _batch_loss(main_output(model(x)), x, y, teacher, config, labelled)
                if not torch.isfinite(loss):
                    raise RunError(f"training diverged (loss {loss.item()}) at epoch {epoch}; lower `lr`")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item() * len(y)
                seen += len(y)
                bar.update(task, advance=1, info=f"epoch {epoch} loss {running / seen:.3f}")
            if isinstance(model, torch.nn.parallel.DistributedDataParallel):
                running, seen = _sum_over_ranks(running, seen, device)  # each rank saw only its shard
            metrics = {"epoch": epoch, "train_loss": running / max(seen, 1),
                       "time_s": time.perf_counter() - t0}
            if val_loader is not None:
                scored = (evaluate(eval_model or model, val_loader, device) if val_labelled
                          else agreement(eval_model or model, teacher, val_loader, device))
                metrics.update({f"val_{k}": v for k, v in scored.items() if k != "per_class_accuracy"})
            val = (f"val acc {metrics['val_accuracy']:.2f}%" if "val_accuracy" in metrics else
                   f"val agreement {metrics['val_agreement']:.2f}%" if "val_agreement" in metrics else "")
            if val:
                bar.update(task, info=f"epoch {epoch} {val}")
            history.append(metrics)
            if not quiet:
                bar.console.print(f"{description} epoch {epoch}/{config.epochs}: loss {metrics['train_loss']:.4f}"
                                  + (f", {val}" if val else "") + f", {metrics['time_s']:.1f} s", highlight=False)
    return history


def _sum_over_ranks(running: float, seen: int, device: torch.device) -> tuple[float, int]:
    import torch.distributed as dist

    t = torch.tensor([running, float(seen)], dtype=torch.float64,
                     device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t[0]), int(t[1])


__all__ = ["TrainConfig", "train_model", "evaluate", "agreement"]
