"""Applying a policy: zero-masks in place (for the search) or physical removal (the result).

Both use the channel ranking that :class:`~entroprune.structure.Structure` computed on the
unmodified weights, so a masked network and its physically pruned twin compute the same
function: a masked channel has zero filter, zero BN scale and shift, hence outputs exactly
zero, which is what its absence contributes downstream.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from .errors import CheckpointError, ConfigError, one_line, out_of_memory
from .utils import modes_kept

if TYPE_CHECKING:  # structure probes its groups with this module's pruning: no import back at run time
    from .structure import Structure


@contextmanager
def traceable(model: nn.Module):
    """torch-pruning traces the dependency graph through autograd, which records nothing through frozen
    parameters (a model loaded for inference with ``requires_grad_(False)`` showed no prunable group):
    inside, every parameter is trainable; on exit each gets its own flag back by name (pruning replaces
    the parameters it cuts)."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield model
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, True))


def apply_physical(model: nn.Module, structure: Structure, keep: Mapping[str, int]) -> list:
    """Remove channels in place with torch-pruning; returns the pruning history.

    Channels come from ``structure``'s ranking, computed on the unmodified weights, so the
    choice does not depend on the order in which groups are pruned.
    """
    model.eval()
    mods = dict(model.named_modules())
    with traceable(model):
        dg = tp.DependencyGraph().build_dependency(model, structure.example_input.to(
            next(model.parameters()).device))
        for g in structure.groups:
            count = int(keep.get(g.name, g.channels))
            if count >= g.channels:
                continue
            root = mods[g.name]
            fn = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else (
                tp.prune_depthwise_conv_out_channels if g.layer_type == "depthwise"
                else tp.prune_conv_out_channels)
            idxs = [g.member_idxs[g.name][i] for i in g.removed(count)]
            dg.get_pruning_group(root, fn, idxs=idxs).prune()
    return dg.pruning_history()


class Masker:
    """Zero-masks groups of a live model in place; ``restore()`` undoes it in one call."""

    def __init__(self, model: nn.Module, structure: Structure):
        self.model, self.structure = model, structure
        mods = dict(model.named_modules())
        self._saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._targets: list[list[tuple[torch.Tensor, torch.Tensor, int]]] = []
        for g in structure.groups:
            targets = []
            for member in g.members:
                mod = mods[member]
                idx = torch.tensor(g.member_idxs[member], dtype=torch.long)
                for pname in ("weight", "bias"):
                    p = getattr(mod, pname, None)
                    if isinstance(p, torch.Tensor):  # a transposed conv's weight holds its outputs on dim 1
                        dim = 1 if pname == "weight" and isinstance(mod, nn.modules.conv._ConvTransposeNd) else 0
                        targets.append((p, idx.to(p.device), dim))
            self._targets.append(targets)
        self._layer_idx = {
            (gi, m): torch.tensor(g.member_idxs[m]) for gi, g in enumerate(structure.groups)
            for m in g.members}

    @torch.no_grad()
    def restore(self) -> None:
        state = self.model.state_dict()
        for k, v in self._saved.items():
            state[k].copy_(v)

    @torch.no_grad()
    def apply(self, counts: Sequence[int] | np.ndarray) -> None:
        """Restore the original weights, then zero every channel the counts remove."""
        self.restore()
        for g, count, targets in zip(self.structure.groups, counts, self._targets, strict=True):
            if count >= g.channels:
                continue
            removed = torch.tensor(g.removed(int(count)), dtype=torch.long)
            for p, idx, dim in targets:
                p.index_fill_(dim, idx[removed], 0.0)

    def kept_channels(self, counts: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Module channel indices that survive, for every group member (used by the probes)."""
        kept = {}
        for gi, (g, count) in enumerate(zip(self.structure.groups, counts, strict=True)):
            sel = torch.tensor(g.kept(int(count)), dtype=torch.long)
            for m in g.members:
                kept[m] = self._layer_idx[(gi, m)][sel]
        return kept


def counts_to_dict(structure: Structure, counts: Sequence[int] | np.ndarray) -> dict[str, int]:
    return {g.name: int(c) for g, c in zip(structure.groups, counts, strict=True)}


def prune_model(model: nn.Module, structure: Structure, counts: Sequence[int] | np.ndarray,
                check: bool = False, refit_images: torch.Tensor | None = None,
                seed: int = 0, refit_norms: bool = False, refit_head: bool = True) -> tuple[nn.Module, list]:
    """A physically pruned copy of ``model`` and torch-pruning's history to replay it. ``check``: also compare it
    with the model with those channels zeroed (the final prune; :meth:`Structure.pruning_fault`). A policy
    torch-pruning cuts wrongly is refused in one line either way. ``refit_images``: first refit the kept
    weights by least squares on these normalised unlabelled images (:mod:`entroprune.refit`), and with
    ``refit_norms`` rescale them to the plain cut's norms (:func:`~entroprune.refit.match_cut_norms`); without
    ``refit_head`` the layers whose outputs the model returns keep the cut's weights."""
    if refit_images is not None:
        model = refitted(model, structure, counts, refit_images, seed, refit_norms, refit_head)
    pruned = copy.deepcopy(model).cpu()
    try:
        history = apply_physical(pruned, structure, counts_to_dict(structure, counts))
    except Exception as exc:  # noqa: BLE001 - one line, naming the group at fault
        raise structure.refuse_pruning(model, counts, one_line(exc)) from None
    if check and (fault := structure.pruning_fault(model, counts, pruned)) is not None:
        raise structure.refuse_pruning(model, counts, fault)
    return pruned, _plain_history(history)


def refitted(model: nn.Module, structure: Structure, counts: Sequence[int] | np.ndarray, images: torch.Tensor,
             seed: int = 0, match_norms: bool = False, head: bool = True) -> nn.Module:
    """A copy of ``model`` with the channels ``counts`` cut zeroed and the kept weights refitted (same shapes).
    A refit that fails on the model (the final prune's or a scored candidate's) is one line."""
    from .refit import refit_kept

    masked = copy.deepcopy(model)
    masker = Masker(masked, structure)
    masker.apply(counts)
    try:
        with modes_kept(model):
            refit_kept(model, masked, masker.kept_channels(counts), images.to(next(model.parameters()).device), seed,
                       match_norms=match_norms, head=head)
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
        if out_of_memory(exc):  # the machine's limit: the CLI says so in its own words
            raise
        raise ConfigError(f"the least-squares refit failed on this model ({one_line(exc)}); prune without "
                          "it (`refit=False`), and re-rank a search's candidates without it (`rerank_refit=False`)"
                          ) from None
    return masked


def _plain_history(history: list) -> list:
    return [[str(name), bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in history]


def replay_pruning_history(model: nn.Module, example: torch.Tensor, history: list) -> nn.Module:
    """Re-apply a saved pruning history to a fresh model so its shapes match the weights."""
    try:
        with traceable(model.eval()):
            dg = tp.DependencyGraph().build_dependency(model, example)
            dg.load_pruning_history([tuple(h) for h in history])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"cannot replay the checkpoint's pruning history ({exc}); "
                              "the file was edited or made by another version") from None
    return model


@contextmanager
def bn_calibration(model: nn.Module):
    """Inside: BN layers use batch statistics and accumulate an exact running average
    (momentum None) from reset; on exit the model is back in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    momenta = []
    for bn in bns:
        momenta.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        yield bns
    finally:
        for bn, mom in zip(bns, momenta, strict=True):
            bn.momentum = mom
            bn.eval()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate BatchNorm statistics on ``images`` (exact average over the batches).

    Pruning shifts the statistics every later BN layer sees; stale ones alone can collapse
    accuracy to chance, drowning any reward signal (NOTES.md section 4).
    """
    if len(images) == 0:
        return
    with bn_calibration(model) as bns:
        if not bns:
            return
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])


def policy_to_ratios(structure: Structure, counts: Sequence[int] | np.ndarray) -> dict[str, float]:
    return {g.name: round(int(c) / g.channels, 6) for g, c in zip(structure.groups, counts, strict=True)}


__all__ = ["Masker", "prune_model", "refitted", "replay_pruning_history", "recalibrate_bn", "counts_to_dict",
           "policy_to_ratios"]
