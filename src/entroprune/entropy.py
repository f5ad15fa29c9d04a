"""Spatial entropy of convolutional activation maps, vectorised and batched in torch.

Variants (see docs/method.md for formulas and the reasoning behind each):

* ``distribution``: a rectified map as a probability distribution over its H*W positions;
  Shannon entropy divided by log(H*W), in [0, 1]. Low when activity is concentrated.
* ``cooccurrence``: the map min-max normalised and quantised to L levels; entropy (bits) of
  the joint histogram of horizontally and vertically adjacent level pairs: the spatial
  entropy of Musat & Andonie's earlier semiotic work. Low when the map is smooth / simple.
* ``*-avg``: the same on the channel-averaged map of a layer instead of per channel.

Pruned channels are excluded from every average: a pruned map is all zero, has zero entropy,
and would otherwise reward pruning for its own sake. Zero or constant maps give 0, never NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .settings import DEFAULT_LEVELS
from .structure import CONVS
from .utils import forward_with_hooks

#: Map entropies by name: (maps, levels, rectified) -> entropy per map. Each also gives a ``-avg`` variant
#: (entropy of the channel-averaged map); :func:`register_entropy` adds one.
MAP_ENTROPIES: dict[str, Callable[[torch.Tensor, int, bool], torch.Tensor]] = {}
#: Every variant name, bases first: the values of ``RewardConfig.variant`` and ``--variant``.
VARIANTS: list[str] = []


def register_entropy(name: str) -> Callable[[Callable], Callable]:
    def add(fn: Callable[[torch.Tensor, int, bool], torch.Tensor]) -> Callable:
        MAP_ENTROPIES[name] = fn
        VARIANTS[:] = [*MAP_ENTROPIES, *(f"{b}-avg" for b in MAP_ENTROPIES)]
        return fn
    return add


def check_variant(variant: str) -> None:
    """The one check of a variant name (configs, probes and direct calls all come through here)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown entropy variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def distribution_entropy(maps: torch.Tensor, rectified: bool = False) -> torch.Tensor:
    """Normalised Shannon entropy of each rectified (..., H, W) map over its positions.

    Computed as ``log S - sum(x log x) / S`` with ``S = sum(x)``: two reductions over the
    map and no normalised copy of it, which keeps the reward cheap next to the forward pass.
    """
    x = (maps if rectified else maps.clamp_min(0)).flatten(-2)
    n = x.shape[-1]
    if n <= 1:
        return torch.zeros(x.shape[:-1], device=x.device, dtype=x.dtype)
    total = x.sum(-1)
    safe = total.clamp_min(torch.finfo(x.dtype).tiny)
    # x * log(max(x, tiny)) is exactly 0 at x = 0 and ~3x faster than xlogy, whose
    # log(0) = -inf path is slow on CPU.
    xlogx = (x * torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))).sum(-1)
    h = (torch.log(safe) - xlogx / safe) / math.log(n)
    return torch.where(total > 0, h, torch.zeros_like(h)).clamp_(0.0, 1.0)


def cooccurrence_entropy(maps: torch.Tensor, levels: int = DEFAULT_LEVELS) -> torch.Tensor:
    """Entropy (bits) of adjacent-pair level histograms of each (..., H, W) map."""
    lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
    x = maps.reshape(-1, h, w)
    m = x.shape[0]
    flat = x.reshape(m, -1)
    lo, hi = flat.min(-1).values, flat.max(-1).values
    span = (hi - lo).view(m, 1, 1)
    ok = span > 1e-12 * (1 + hi.abs().view(m, 1, 1))
    scaled = (x - lo.view(m, 1, 1)) / torch.where(ok, span, torch.ones_like(span))
    q = (scaled * levels).floor().clamp_(0, levels - 1).long()
    q = torch.where(ok, q, torch.zeros_like(q))
    pairs = []
    if w > 1:
        pairs.append((q[:, :, :-1] * levels + q[:, :, 1:]).reshape(m, -1))
    if h > 1:
        pairs.append((q[:, :-1, :] * levels + q[:, 1:, :]).reshape(m, -1))
    if not pairs:
        return torch.zeros(lead, device=maps.device, dtype=maps.dtype)
    idx = torch.cat(pairs, 1)
    counts = torch.zeros(m, levels * levels, device=maps.device, dtype=maps.dtype)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=maps.dtype))
    p = counts / idx.shape[1]
    ent = -torch.xlogy(p, p).sum(-1) / math.log(2)
    return ent.clamp_min_(0.0).reshape(lead)


register_entropy("distribution")(lambda maps, levels, rectified: distribution_entropy(maps, rectified))
register_entropy("cooccurrence")(lambda maps, levels, rectified: cooccurrence_entropy(maps, levels))


def map_entropy(maps: torch.Tensor, variant: str, levels: int = DEFAULT_LEVELS,
                rectified: bool = False) -> torch.Tensor:
    check_variant(variant)
    return MAP_ENTROPIES[variant.removesuffix("-avg")](maps, levels, rectified)


def layer_entropy(act: torch.Tensor, variant: str = "distribution",
                  kept: torch.Tensor | None = None, levels: int = DEFAULT_LEVELS,
                  rectified: bool = False) -> torch.Tensor:
    """Per-image entropy of one layer's (N, C, H, W) activations over its kept channels; a 1-D conv's
    (N, C, L) maps are read as one row (entropy over their L positions, neighbours along it), a 3-D conv's
    (N, C, D, H, W) maps slice by slice (each of the D maps' spatial entropy, the mean over them: a video's
    frames, a volume's slices).

    ``rectified=True`` promises ``act >= 0`` and skips the ReLU copy.
    """
    check_variant(variant)
    act = act.float()
    if act.dim() == 3:
        act = act.unsqueeze(2)
    elif act.dim() == 5:  # (N, C, D, H, W): the slices as images, then each image's mean over its slices
        n, depth = act.shape[0], act.shape[2]
        per_slice = layer_entropy(act.transpose(1, 2).flatten(0, 1), variant, kept, levels, rectified)
        return per_slice.view(n, depth).mean(1)
    if kept is not None:
        kept = kept.to(act.device)
        if len(kept) == 0:
            return torch.zeros(act.shape[0], device=act.device)
    if variant.endswith("-avg"):
        if kept is not None and len(kept) < act.shape[1]:
            act = act.index_select(1, kept)
        mean_map = (act if rectified else act.clamp_min(0)).mean(1)
        return map_entropy(mean_map, variant, levels, rectified=True)
    per_channel = map_entropy(act, variant, levels, rectified)  # (N, C): cheaper than copying kept maps
    if kept is not None and len(kept) < act.shape[1]:
        per_channel = per_channel.index_select(1, kept)
    return per_channel.mean(1)


def activation_points(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """For each conv, the module whose output is its activation: the BatchNorm applied to
    the conv's output when there is one (found by tensor identity in a forward), else the
    conv itself. ReLU is applied by the probe, so in-place activations do not matter."""
    produced: dict[int, str] = {}
    points: dict[str, str] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, CONVS):  # transposed convs too: a U-Net's decoder maps are spatial maps
            def conv_hook(m, i, o, name=name):
                produced[id(o)] = name
                points.setdefault(name, name)
            hooks.append((mod, conv_hook))
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            def bn_hook(m, i, o, name=name):
                src = produced.get(id(i[0]))
                if src is not None:
                    points[src] = name
            hooks.append((mod, bn_hook))
    forward_with_hooks(model, example, hooks)
    return points


class EntropyProbe:
    """Measures per-layer spatial entropy during a forward pass through hooks.

    :param model: the network (masked in place or physically pruned).
    :param layers: conv names to measure, in network order.
    :param points: conv name -> module whose output is the conv's activation.
    :param variants: which entropy variants to compute on each forward.
    :param levels: quantisation levels of the co-occurrence variant.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], points: Mapping[str, str],
                 variants: Sequence[str] = ("distribution",), levels: int = DEFAULT_LEVELS):
        for v in variants:
            check_variant(v)
        self.model, self.layers, self.variants, self.levels = model, list(layers), list(variants), levels
        self._avg_only = all(v.endswith("-avg") for v in self.variants)
        self.kept: dict[str, torch.Tensor] = {}
        self.sums: dict[tuple[str, str], float] = {}
        self.count = 0
        self.elapsed = 0.0  # seconds spent computing entropies during the last measure()
        self.active = False  # hooks record only inside measure(), not in other forwards
        mods = dict(model.named_modules())
        self._handles = [mods[points[layer]].register_forward_hook(
            lambda m, i, o, layer=layer: self._record(layer, o)) for layer in self.layers]

    def _record(self, layer: str, out: torch.Tensor) -> None:
        if not self.active:
            return
        t0 = time.perf_counter()
        act, kept = out.detach(), self.kept.get(layer)
        if self._avg_only and kept is not None and 0 < len(kept) < act.shape[1]:
            # the mean map needs only the kept channels: select them first, rectify the copy in place
            act, kept = act.index_select(1, kept.to(act.device)).clamp_min_(0), None
        else:
            act = act.clamp_min(0)
        for v in self.variants:
            val = layer_entropy(act, v, kept, self.levels, rectified=True).sum().item()
            self.sums[(layer, v)] = self.sums.get((layer, v), 0.0) + val
        self.elapsed += time.perf_counter() - t0

    def reset(self, kept: Mapping[str, torch.Tensor] | None = None) -> None:
        self.kept = dict(kept or {})
        self.sums, self.count = {}, 0

    @torch.no_grad()
    def measure(self, images: torch.Tensor, batch_size: int = 512, keep_mode: bool = False,
                model: nn.Module | None = None) -> dict[str, dict[str, float]]:
        """Mean entropy per variant and layer over ``images``: {variant: {layer: value}}.

        ``keep_mode`` leaves the model's train/eval modes alone (used when BatchNorm is
        being recalibrated by this very forward pass). ``model`` runs the images instead of
        the probed model: a copy of it that carries the same hooks (a pruned copy).
        """
        model = model or self.model
        self.sums, self.count, self.elapsed = {}, 0, 0.0
        if not keep_mode:
            model.eval()
        self.active = True
        try:
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                model(batch)
                self.count += len(batch)
        finally:
            self.active = False
        n = max(self.count, 1)
        return {v: {layer: self.sums.get((layer, v), 0.0) / n for layer in self.layers}
                for v in self.variants}

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> EntropyProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def select_layers(layers: Sequence[str], spec: str | Sequence[str] = "all",
                  flat: Sequence[str] = ()) -> list[str]:
    """``all``, ``last``, ``last:K`` or explicit names (comma-separated or a list).

    ``flat`` layers (1x1 maps, see ``Structure.flat``) are skipped by the keywords and refused by name.
    """
    layers = list(layers)
    pool = [layer for layer in layers if layer not in flat]
    if isinstance(spec, str):
        if spec == "all":
            return pool
        if spec == "last":
            return pool[-1:]
        if spec.startswith("last:"):
            k = int(spec.split(":", 1)[1])
            if k < 1:
                raise ValueError("last:K needs K >= 1")
            return pool[-k:]
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in spec if s not in layers]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; measurable layers: {', '.join(layers)}")
    named_flat = [layer for layer in layers if layer in spec and layer in flat]
    if named_flat:
        raise ValueError(f"{', '.join(named_flat)} output 1x1 maps, whose spatial entropy is constant; "
                         f"choose among {', '.join(pool)}")
    return [layer for layer in layers if layer in spec]


__all__ = ["VARIANTS", "MAP_ENTROPIES", "register_entropy", "check_variant", "distribution_entropy", "cooccurrence_entropy", "map_entropy",
           "layer_entropy", "activation_points", "EntropyProbe", "select_layers"]
