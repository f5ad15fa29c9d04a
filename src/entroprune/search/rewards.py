"""Rewards for a pruning policy, evaluated on a pruned copy or on the live model through zero-masks.

* ``entropy`` (the paper's method, default): minus the spatial entropy of the pruned
  network's conv activations on a calibration batch. Uses no labels.
* ``accuracy`` (AMC): top-1 accuracy (as a fraction) on a held-out validation subset.
* ``combined``: ``-entropy + accuracy_weight * accuracy``, for research.
* ``kl``: minus the KL divergence from the unpruned network's outputs to the pruned one's on the
  calibration images (teacher agreement). Uses no labels.

Any of them can be read after a short label-free recovery (``recovery_steps``,
:mod:`entroprune.search.recovery`), on a net that works again instead of a nearly broken one.

Every evaluation (``physical=True``, the default): cut the policy out of a copy of the model
with torch-pruning, optionally re-estimate BatchNorm statistics on the calibration images,
run the scoring forward on that smaller net. With ``physical=False``: apply zero-masks to the
live model instead (every forward costs the full MACs; same values to float rounding).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ..entropy import EntropyProbe, activation_points, select_layers
from ..errors import ConfigError, one_line
from ..prune import Masker, apply_physical, bn_calibration, counts_to_dict, recalibrate_bn, refitted
from ..structure import Structure
from .config import RewardConfig
from .recovery import kl_to_teacher, main_output
from .reward_kinds import REWARDS, RewardKind, register_reward

#: Images a refitted candidate is fitted on: as many as the final prune's calibration split.
REFIT_IMAGES = 1024


@dataclass
class RewardResult:
    reward: float
    entropy: float | None = None
    accuracy: float | None = None
    finite: bool = True
    times: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)  # other variants' values, when asked for


class RewardEvaluator:
    """Scores keep-count vectors on one model; holds the calibration and validation data once.

    :param model: the unpruned network (masked in place during evaluation, restored by ``close``).
    :param structure: its prunable groups.
    :param calib: normalised calibration images (BN recalibration and entropy).
    :param val: normalised validation images and labels (accuracy), or None for label-free use.
    :param recovery_images: normalised unlabelled images the recovery distils on (default: calib).
    """

    def __init__(self, model: nn.Module, structure: Structure, config: RewardConfig,
                 calib: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor] | None = None,
                 batch_size: int | None = None, extra_variants: Sequence[str] = (),
                 recovery_images: torch.Tensor | None = None, seed: int = 0):
        config.validate()
        if REWARDS[config.kind].needs_labels and (val is None or len(val[0]) == 0 or (val[1] < 0).any()):
            raise ConfigError(f"the {config.kind} reward needs labelled validation images; "
                              "use `reward.kind=entropy` for unlabelled data")
        if len(calib) == 0:
            raise ConfigError("no calibration images; raise `calib_size`")
        self.model, self.structure, self.config = model.eval(), structure, config
        # Calibration sets up to 1024 images go through in one batch (one-pass scoring).
        batch_size = batch_size or max(256, min(len(calib), 1024))
        self.calib, self.val, self.batch_size = calib, val, batch_size
        # masks need a saved copy of every weight; pruned copies leave the model untouched
        self.masker = None if config.physical else Masker(model, structure)
        points = activation_points(model, calib[:1])
        measurable = [m for g in structure.groups for m in g.members if m in points]
        order = list(points)  # forward order of convs
        measurable = sorted(set(measurable), key=order.index)
        flat = structure.flat(measurable)
        if len(flat) == len(measurable):
            raise ConfigError("no prunable conv layer has an output map larger than 1x1 at this input size, so "
                              "spatial entropy is undefined; use `reward.kind=accuracy` or larger input images")
        try:
            self.layers = select_layers(measurable, config.layers, flat=flat)
        except ValueError as exc:
            raise ConfigError(f"`reward.layers`: {exc}") from None
        self.variants = [config.variant] + [v for v in extra_variants if v != config.variant]
        self.probe = EntropyProbe(model, self.layers, points, self.variants, config.levels)
        self.reference: dict[str, dict[str, float]] = {}
        self.reference = self._entropies(None)[0]  # the unpruned net: every channel kept
        self.reference_accuracy = self._accuracy() if val is not None and (val[1] >= 0).all() else None
        self.teacher_log_probs = None
        if "kl" in REWARDS[config.kind].needs or val is not None:  # the unpruned net's answers: kl reward and diagnostics only
            with torch.no_grad():
                self.teacher_log_probs = torch.cat([torch.log_softmax(main_output(model(calib[s:s + self.batch_size])), 1)
                                                    for s in range(0, len(calib), self.batch_size)])
        # the refit fits on the recovery's unlabelled training images, not on the images a score is read on
        # (the calibration images only where no others were given)
        pool = recovery_images if recovery_images is not None and len(recovery_images) else calib
        self.refit_images = pool[:REFIT_IMAGES] if config.refit else None
        self.seed = seed
        self.recovery = None
        if config.recovery_steps:
            from .recovery import Recovery

            pool = recovery_images if recovery_images is not None and len(recovery_images) else calib
            self.recovery = Recovery(model, pool, config.recovery_steps, seed=seed)

    def _entropies(self, kept: dict[str, torch.Tensor] | None,
                   net: nn.Module | None = None) -> tuple[dict[str, dict[str, float]], float]:
        self.probe.reset(kept)
        t0 = time.perf_counter()
        values = self.probe.measure(self.calib, self.batch_size, model=net)
        return values, time.perf_counter() - t0

    @torch.no_grad()
    def _teacher_kl(self, net: nn.Module) -> float:
        total = 0.0
        for s in range(0, len(self.calib), self.batch_size):
            x = self.calib[s:s + self.batch_size]
            total += kl_to_teacher(main_output(net(x)), self.teacher_log_probs[s:s + self.batch_size]).item() * len(x)
        return total / len(self.calib)

    @torch.no_grad()
    def _accuracy(self, net: nn.Module | None = None) -> float:
        net = net or self.model
        x, y = self.val
        correct = 0
        for s in range(0, len(x), self.batch_size):
            correct += (main_output(net(x[s:s + self.batch_size])).argmax(1) == y[s:s + self.batch_size]).sum().item()
        return correct / max(1, len(x))

    def _pruned_copy(self, counts: np.ndarray) -> nn.Module:
        """The policy cut out of a copy of the (unmasked) model, its kept weights refitted where the config
        says. The copy carries the probe's forward hooks, which torch-pruning keeps on the modules it shrinks."""
        if self.refit_images is None:
            net = copy.deepcopy(self.model)
        else:
            with warnings.catch_warnings():  # a head left as cut is the final prune's to report, not each candidate's
                warnings.simplefilter("ignore")
                norms, head = self.config.refit_options()
                net = refitted(self.model, self.structure, counts, self.refit_images, self.seed, norms, head)
        try:
            apply_physical(net, self.structure, counts_to_dict(self.structure, counts))
        except Exception as exc:  # noqa: BLE001 - a count the structure's probe did not try: one line, not a traceback
            raise self.structure.refuse_pruning(self.model, counts, one_line(exc)) from None
        return net.eval()

    def aggregate(self, values: dict[str, float], variant: str) -> float:
        """Mean over the chosen layers, each relative to the unpruned net when normalising."""
        vals = []
        for layer in self.layers:
            v = values[layer]
            if self.config.normalize:
                ref = self.reference.get(variant, {}).get(layer, 0.0)
                v = v / ref if ref > 1e-12 else 0.0
            vals.append(v)
        return float(np.mean(vals)) if vals else 0.0

    def evaluate(self, counts: Sequence[int] | np.ndarray, with_accuracy: bool = False) -> RewardResult:
        """Score one policy; with_accuracy also measures validation accuracy and the KL to the
        unpruned net's outputs (diagnostics, ``extra["kl"]``)."""
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        counts = np.asarray(counts)
        if self.config.physical:
            net, kept = self._pruned_copy(counts), None
            times["pruning"] = time.perf_counter() - t0
            if self.recovery is not None:
                t0 = time.perf_counter()
                self.recovery(net)
                times["recovery"] = time.perf_counter() - t0
        else:
            self.masker.apply(counts)
            net, kept = self.model, self.masker.kept_channels(counts)
            times["masking"] = time.perf_counter() - t0
        kind = REWARDS[self.config.kind]
        wants_entropy = "entropy" in kind.needs
        # One pass does both when the calibration set is one batch: BN layers in batch-stat
        # mode normalise exactly as the recalibrated statistics will, so the entropy probe
        # can read the activations of the recalibration forward itself.
        single_pass = self.config.bn_recalibration and wants_entropy and len(self.calib) <= self.batch_size
        entropy = accuracy = None
        extra: dict[str, float] = {}
        if single_pass:
            self.probe.reset(kept)
            t0 = time.perf_counter()
            with bn_calibration(net):
                values = self.probe.measure(self.calib, self.batch_size, keep_mode=True, model=net)
            elapsed = time.perf_counter() - t0
            times["entropy"] = self.probe.elapsed
            times["bn_recalibration"] = elapsed - self.probe.elapsed  # the shared forward
            times["reward_forward"] = 0.0
        elif self.config.bn_recalibration:
            t0 = time.perf_counter()
            recalibrate_bn(net, self.calib, self.batch_size)
            times["bn_recalibration"] = time.perf_counter() - t0
        if wants_entropy:
            if not single_pass:
                values, elapsed = self._entropies(kept, net)
                times["entropy"] = self.probe.elapsed
                times["reward_forward"] = elapsed - self.probe.elapsed
            entropy = self.aggregate(values[self.config.variant], self.config.variant)
            extra = {v: self.aggregate(values[v], v) for v in self.variants[1:]}
        if "accuracy" in kind.needs or with_accuracy:
            t0 = time.perf_counter()
            accuracy = self._accuracy(net)
            key = "reward_forward" if kind.needs == {"accuracy"} else "diagnostic_accuracy"
            times[key] = times.get(key, 0.0) + time.perf_counter() - t0
        kl = None
        if self.teacher_log_probs is not None and ("kl" in kind.needs or with_accuracy):  # diagnostics too
            t0 = time.perf_counter()
            kl = self._teacher_kl(net)
            key = "reward_forward" if "kl" in kind.needs else "diagnostic_accuracy"
            times[key] = times.get(key, 0.0) + time.perf_counter() - t0
            extra["kl"] = kl
        reward = kind.formula(self.config, {"entropy": entropy, "accuracy": accuracy, "kl": kl})
        finite = math.isfinite(reward) and all(math.isfinite(v) for k, v in extra.items() if k != "kl")
        return RewardResult(reward=reward if finite else float("-inf"), entropy=entropy,
                            accuracy=accuracy, finite=finite, times=times, extra=extra)

    def close(self) -> None:
        """Remove hooks and give the model back its original weights and statistics."""
        self.probe.close()
        if self.masker is not None:
            self.masker.restore()


__all__ = ["REWARDS", "RewardConfig", "RewardKind", "RewardResult", "RewardEvaluator", "register_reward"]
