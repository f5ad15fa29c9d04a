"""Least-squares refit of the weights a pruned net keeps (AMC's and Channel Pruning's reconstruction).

Cutting channels leaves every later layer reading fewer inputs with weights trained for all of them, so a
freshly pruned net is near chance (the main job's VGG at 20% of the MACs: 26% on Fashion-MNIST) and the
fine-tune starts from there. Refitting each layer's kept weights, in forward order, so that its outputs on
unlabelled images match the unpruned net's (ridge least squares over sampled positions, the inputs read
from the refitted net so far) gives most of the accuracy back before any training (26% -> 90.5% there) for
one forward over the images, stepped layer by layer through the net's torch.fx graph (a net that does not
trace: two forwards from the images per layer, stopped at it); no labels. AMC refits this way too, but only
1x1 convs in its code; here every 1-D, 2-D and 3-D conv and transposed conv with ``groups=1`` (padded any way
the conv pads) and every linear layer is refitted. Depthwise and grouped convs and layers called more than once
keep their weights.

The refit works on the *masked* twin of the model (cut channels zeroed, shapes unchanged), so each layer's
kept output channels are the same indices in the unpruned net; the physical cut comes after.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.fx as fx
import torch.nn as nn

from .utils import flat_tensors

#: Positions per image and conv (and linear layer reading maps channels last): 16k equations from 1024 images for
#: at most ~1-2k unknowns.
REFIT_SAMPLES = 16
REFIT_RIDGE = 1e-3  # relative to the mean input energy; keeps the solve stable where inputs are collinear
#: A layer with more inputs than this (channels x kernel positions) keeps its weights: its float64 normal
#: equations alone would take over half a GB (an ImageNet VGG's first linear layer reads 25,088).
REFIT_MAX_INPUTS = 8192
#: Equations per unknown a layer whose output the model returns (a classifier) needs to be refitted. Nothing
#: normalises such a layer's output, so a fit that overshoots on too few rows sets the logits' scale:
#: MobileNetV2's classifier, fitted on 1024 images for 600 kept inputs (1.7 each), came out 19.6x its RMS and
#: the fine-tune ended 7.6-10.0 points below the plain cut; left as cut, +0.02 over it. The heads refitted on
#: 4.3-42.7 equations per input came out 1.7-3.4x and cost nothing (docs/measurements/refit_norms.md,
#: docs/arena.md). A conv behind BatchNorm is refitted on fewer (VGG-16's deepest: 0.66) with no such harm.
REFIT_HEAD_ROWS = 3.0
#: The most the one-pass refit may hold (both nets' activations at the layer being refitted, for all its images);
#: past it, the one pass reads as many of the images as fit, and where fewer than REFIT_PASS_MIN_IMAGES fit, each
#: layer is read by forwards from all the images, a batch at a time (O(layers^2) layer calls over every image).
REFIT_PASS_BYTES = 4 << 30
#: The fewest images the one pass may read (each gives a conv REFIT_SAMPLES equations).
REFIT_PASS_MIN_IMAGES = 64
_UNFOLD_ELEMENTS = 1 << 25  # patches unfolded at once (128 MB of float32): large maps go a few images at a time


class _Stop(Exception):
    """Ends a forward pass once the layer being refitted has been read."""


def refit_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The convs (``groups=1``) and linears a forward pass calls, in call order; each must be called once."""
    calls: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=name: calls.append(n))
             for name, m in model.named_modules() if _refittable(m)]
    try:
        with torch.no_grad():
            model(example[:2])
    finally:
        for h in hooks:
            h.remove()
    return [n for n in dict.fromkeys(calls) if calls.count(n) == 1]


@contextmanager
def _named_outputs(model: nn.Module, keep: Callable[[nn.Module], bool]) -> Iterator[dict[int, str]]:
    """Inside: the output tensor of each module ``keep`` picks, by ``id``, named, for every forward run there."""
    made: dict[int, str] = {}
    alive: list[torch.Tensor] = []  # keeps every traced output alive, so no two share an id

    def hook(name: str):
        def take(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            alive.append(out)
            made[id(out)] = name
        return take

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if keep(m)]
    try:
        yield made
    finally:
        for h in hooks:
            h.remove()


def output_layers(model: nn.Module, example: torch.Tensor) -> set[str]:
    """The refittable layers whose output tensor the model returns as it is (a classifier), by one forward."""
    with _named_outputs(model, _refittable) as made, torch.no_grad():
        return {made[id(t)] for t in flat_tensors(model(example[:2])) if id(t) in made}


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _refittable(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Linear) or (isinstance(mod, _CONVS + _TRANSPOSED) and mod.groups == 1)


def _conv_layout(mod: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """A layer's weight as the conv its rows are read for holds it, (out, in, kernel...): a transposed conv is the
    conv of its input spread out by its stride with the kernel flipped, its in and out swapped. Its own inverse."""
    if isinstance(mod, _TRANSPOSED):
        return weight.transpose(0, 1).flip(list(range(2, weight.dim())))
    return weight


def _spread(mod: nn.modules.conv._ConvTransposeNd, x: torch.Tensor) -> torch.Tensor:
    """A transposed conv's input as the conv of :func:`_conv_layout` reads it: ``stride - 1`` zeros between
    neighbours, then padded (cropped where negative) to its output's size."""
    stride = mod.stride
    if any(s > 1 for s in stride):
        spread = x.new_zeros(*x.shape[:2], *[(n - 1) * s + 1 for n, s in zip(x.shape[2:], stride, strict=True)])
        spread[(..., *[slice(None, None, s) for s in stride])] = x
        x = spread
    pads = [(d * (k - 1) - p, d * (k - 1) - p + o) for k, d, p, o in
            zip(mod.kernel_size, mod.dilation, mod.padding, mod.output_padding, strict=True)]
    return nn.functional.pad(x, [q for pair in reversed(pads) for q in pair])


def _patches(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A conv's input patches, (n, C*k, positions) in its weight's (:func:`_conv_layout`) and its output's orders,
    padded as its forward pads: unfold alone pads with zeros by numbers, and a conv may pad by ``same``/``valid``
    (a refit then failed) or by reflection, replication or wrapping (its border rows were then wrong). unfold
    reads 2-D maps only: a 1-D conv's as 2-D of height 1, a 3-D conv's by a window per dimension."""
    if isinstance(mod, _TRANSPOSED):
        x, stride = _spread(mod, x), (1,) * len(mod.kernel_size)
    else:
        mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
        x, stride = nn.functional.pad(x, mod._reversed_padding_repeated_twice, mode), mod.stride
    kernel, dilation = mod.kernel_size, mod.dilation
    if len(kernel) == 1:
        return nn.functional.unfold(x.unsqueeze(2), (1, *kernel), (1, *dilation), 0, (1, *stride))
    if len(kernel) == 2:
        return nn.functional.unfold(x, kernel, dilation, 0, stride)
    for dim, (k, s, d) in enumerate(zip(kernel, stride, dilation, strict=True), 2):
        x = x.unfold(dim, d * (k - 1) + 1, s)[..., ::d]  # each window appended last
    n, c, spatial = x.shape[0], x.shape[1], x.dim() - 2 - len(kernel)
    order = (0, 1, *range(2 + spatial, x.dim()), *range(2, 2 + spatial))  # n, C, kernel..., positions...
    return x.permute(order).reshape(n, c * math.prod(kernel), -1)


def _rows(mod: nn.Module, x: torch.Tensor, pick: torch.Tensor | None) -> torch.Tensor:
    """A layer's input as the rows of a linear system: unfolded patches at the picked positions (convs), a linear
    layer's input vectors (at the picked positions where it reads maps channels last)."""
    if isinstance(mod, nn.Linear):
        return _at_positions(x, pick)
    rows = []
    spread = math.prod(mod.stride) if isinstance(mod, _TRANSPOSED) else 1
    per_image = x[0].numel() * spread * math.prod(mod.kernel_size)
    step = max(1, _UNFOLD_ELEMENTS // per_image)
    for s in range(0, len(x), step):
        f = _patches(mod, x[s:s + step])  # n, C*k*k, P
        p = pick[s:s + step]
        rows.append(torch.gather(f, 2, p[:, None].expand(-1, f.shape[1], -1)).transpose(1, 2).reshape(-1, f.shape[1]))
    return torch.cat(rows)


def _at_positions(v: torch.Tensor, pick: torch.Tensor | None) -> torch.Tensor:
    """Channels-last vectors (n, ..., C) as rows, all of them or each image's picked positions."""
    if pick is None:
        return v.reshape(-1, v.shape[-1])
    v = v.reshape(len(v), -1, v.shape[-1])
    return torch.gather(v, 1, pick[..., None].expand(-1, -1, v.shape[-1])).reshape(-1, v.shape[-1])


def _linear_pick(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    """Positions to sample where a linear layer reads maps channels last (a ConvNeXt MLP), as a conv's are: every
    position of every image a row held gigabytes of float64 targets for a wide layer on large maps. None: every row."""
    positions = x[0].numel() // x.shape[-1]
    if x.dim() <= 2 or positions <= REFIT_SAMPLES:
        return None
    return torch.randint(0, positions, (len(x), REFIT_SAMPLES), generator=gen).to(x.device)


def _targets(mod: nn.Module, y: torch.Tensor, pick: torch.Tensor | None) -> torch.Tensor:
    if isinstance(mod, nn.Linear):
        return _at_positions(y, pick)
    y = y.flatten(2)
    return torch.gather(y, 2, pick[:, None].expand(-1, y.shape[1], -1)).transpose(1, 2).reshape(-1, y.shape[1])


def _partial_forwards(original: nn.Module, masked: nn.Module, ref: nn.Module, mod: nn.Module, images: torch.Tensor,
                      batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    """Batch by batch: the input of ``mod`` (the layer in ``masked``), and the input and output of ``ref`` (the same
    layer in ``original``), each read by a forward stopped there; None where the layer did not run."""
    seen: dict[str, torch.Tensor] = {}

    def take_input(m: nn.Module, args: tuple) -> None:
        seen["x"] = args[0]
        raise _Stop

    def take_original_input(m: nn.Module, args: tuple) -> None:
        seen["x0"] = args[0]

    def take_output(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen["y"] = out
        raise _Stop

    hooks = [mod.register_forward_pre_hook(take_input), ref.register_forward_pre_hook(take_original_input),
             ref.register_forward_hook(take_output)]
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            for net in (masked, original):
                try:
                    net(batch)
                except _Stop:
                    pass
            if "x" not in seen or "y" not in seen:
                yield None
                return
            yield seen["x"], seen["x0"], seen["y"]
    finally:
        for h in hooks:
            h.remove()


class _Stepped:
    """A traced net's forward over every batch, run node by node and kept where it stopped, so a refit reads each
    layer's input and output in one pass over the net instead of a forward from the images per layer (those
    cost layers^2 / 2 layer calls: MobileNetV2's refit took 141.5 s that way on 2 cores, 8.2 s this way,
    docs/measurements/refit_speed.md). Values are freed after their last use: what is held is the frontier's
    activations for all the images."""

    def __init__(self, graph: fx.GraphModule, images: torch.Tensor, batch_size: int):
        self.nodes = list(graph.graph.nodes)
        self.at = 0
        self.index = {n.target: i for i, n in enumerate(self.nodes) if n.op == "call_module"}  # a layer's node
        self.free: dict[int, list[fx.Node]] = {}
        last = {a: i for i, n in enumerate(self.nodes) for a in n.all_input_nodes}
        for a, i in last.items():
            self.free.setdefault(i, []).append(a)
        self.runs = []
        for start in range(0, len(images), batch_size):
            run = fx.Interpreter(graph, garbage_collect_values=False)
            run.args_iter = iter([images[start:start + batch_size]])
            self.runs.append(run)

    def run_to(self, stop: int) -> None:
        """Run every batch up to, not including, node ``stop``."""
        for i in range(self.at, stop):
            node = self.nodes[i]
            for run in self.runs:
                run.env[node] = run.run_node(node)
                for a in self.free.get(i, ()):
                    del run.env[a]
        self.at = max(self.at, stop)

    def value(self, node: fx.Node) -> list[torch.Tensor]:
        return [run.env[node] for run in self.runs]


def _pass_bytes_per_image(graph: fx.GraphModule, images: torch.Tensor) -> float:
    """What the one pass holds per image at its peak, in both nets: the masked net's live values, stepped over
    two images, halved and doubled."""
    probe = _Stepped(graph, images[:2], 2)
    peak = 0
    for i in range(len(probe.nodes)):
        probe.run_to(i + 1)
        env = probe.runs[0].env.values()
        peak = max(peak, sum(t.numel() * t.element_size() for t in env if isinstance(t, torch.Tensor)))
    return peak / min(2, len(images)) * 2


class _OnePass:
    """Both nets stepped once, layer by layer, for :func:`refit_kept` (see :class:`_Stepped`)."""

    def __init__(self, original: fx.GraphModule, masked: fx.GraphModule, images: torch.Tensor, batch_size: int):
        self.images = images
        self.masked, self.original = _Stepped(masked, images, batch_size), _Stepped(original, images, batch_size)

    @classmethod
    def build(cls, original: nn.Module, masked: nn.Module, order: list[str], images: torch.Tensor,
              batch_size: int) -> _OnePass | None:
        """None where either net does not trace into a graph that calls the layers ``order`` names, in that order,
        as modules (their hooks included), or where holding its activations for even :data:`REFIT_PASS_MIN_IMAGES`
        images would take more than :data:`REFIT_PASS_BYTES`: the refit then takes the partial forwards. Where all
        the images would pass it, the one pass reads the first that fit (``len(pass.images)``)."""
        graphs = []
        for net in (original, masked):
            try:
                graph = fx.symbolic_trace(net)
            except Exception:  # noqa: BLE001 - untraceable forwards (data-dependent control flow) take the other path
                return None
            called = [n.target for n in graph.graph.nodes if n.op == "call_module"]
            hooked = {name for name, m in net.named_modules() if m._forward_hooks or m._forward_pre_hooks}
            placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
            refitted = set(order)
            if len(placeholders) != 1 or not hooked <= set(called) or [c for c in called if c in refitted] != order:
                return None
            graphs.append(graph)
        fit = int(REFIT_PASS_BYTES // max(_pass_bytes_per_image(graphs[1], images), 1))
        if fit < min(len(images), REFIT_PASS_MIN_IMAGES):
            return None
        return cls(graphs[0], graphs[1], images[:fit], batch_size)

    def batches(self, name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
        """As :func:`_partial_forwards` gives them, layer ``name`` being the next in the refit's order."""
        node_m, node_o = self.masked.index[name], self.original.index[name]
        self.masked.run_to(node_m)
        self.original.run_to(node_o)
        xs = self.masked.value(self.masked.nodes[node_m].args[0])
        x0s = self.original.value(self.original.nodes[node_o].args[0])
        self.original.run_to(node_o + 1)
        yield from zip(xs, x0s, self.original.value(self.original.nodes[node_o]), strict=True)


def _normal_equations(mod: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None],
                      gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
    """X'X and X'Y (float64) of one layer over the batches: X the layer's input in the masked net, Y its output in
    the original less its bias, at the same sampled positions; which input channels are ever non-zero; and the
    rows of X. None where X is the layer's input in the original too (its own weights are then the best fit
    already) or where it did not run."""
    xtx = xty = active = None
    changed, count = False, 0
    for got in batches:
        if got is None:
            return None
        x, x0, y = got
        if isinstance(mod, _TRANSPOSED) and _spread(mod, x[:1]).shape[2:] != tuple(
                n + d * (k - 1) for n, k, d in zip(y.shape[2:], mod.kernel_size, mod.dilation, strict=True)):
            return None  # an output size given at the call (``output_size``), which _spread cannot know
        changed = changed or not torch.equal(x, x0)
        if isinstance(mod, _CONVS + _TRANSPOSED):
            positions = y[0, 0].numel()
            pick = torch.randint(0, positions, (len(x), min(REFIT_SAMPLES, positions)), generator=gen).to(y.device)
        else:
            pick = _linear_pick(x, gen)
        rows = _rows(mod, x, pick).double()
        count += len(rows)
        target = _targets(mod, y, pick).double()
        if mod.bias is not None:
            target = target - mod.bias.double()
        channels = x.reshape(-1, x.shape[-1]).T if isinstance(mod, nn.Linear) else x.transpose(0, 1).reshape(x.shape[1], -1)
        nonzero = channels.abs().sum(1) > 0
        xtx = rows.T @ rows if xtx is None else xtx + rows.T @ rows
        xty = rows.T @ target if xty is None else xty + rows.T @ target
        active = nonzero if active is None else active | nonzero
    return (xtx, xty, active, count) if changed else None


@torch.no_grad()
def refit_kept(original: nn.Module, masked: nn.Module, kept: dict[str, torch.Tensor], images: torch.Tensor,
               seed: int = 0, batch_size: int = 256, match_norms: bool = False, head: bool = True) -> list[str]:
    """Refit ``masked``'s kept weights in place (see the module's docstring); returns the layers refitted.

    :param original: the unpruned net (read only).
    :param masked: its copy with the cut channels zeroed (:class:`~entroprune.prune.Masker`).
    :param kept: each group member's kept output channels (``Masker.kept_channels``); a layer not in it keeps
        all of its outputs (a classifier, a layer left whole).
    :param images: normalised unlabelled images (the calibration split).
    :param match_norms: then rescale the refitted filters to the plain cut's norms (:func:`match_cut_norms`).
    :param head: refit the layers whose outputs the model returns too (:func:`output_layers`), each only where
        the images give it :data:`REFIT_HEAD_ROWS` equations per unknown; False leaves them as the cut does.
    """
    if len(images) == 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    original.eval()
    masked.eval()
    mods, refs = dict(masked.named_modules()), dict(original.named_modules())
    done = []
    heads, order = output_layers(masked, images), refit_order(masked, images)
    one_pass = _OnePass.build(original, masked, order, images, batch_size)
    if one_pass and len(one_pass.images) < len(images):
        warnings.warn(f"the refit read {len(one_pass.images)} of the {len(images)} calibration images: their "
                      f"activations, held for one pass over the net, fill the {REFIT_PASS_BYTES >> 30} GiB it may "
                      "take", stacklevel=2)
    for name in order:
        mod = mods[name]
        weight = _conv_layout(mod, mod.weight.detach())
        if (name in heads and not head) or weight[0].numel() > REFIT_MAX_INPUTS:
            continue
        batches = one_pass.batches(name) if one_pass else \
            _partial_forwards(original, masked, refs[name], mod, images, batch_size)
        system = _normal_equations(mod, batches, gen)
        batches.close()
        if system is None:
            continue
        xtx, xty, active, rows = system
        cols = active.repeat_interleave(xtx.shape[0] // active.numel())  # a conv's k*k columns per channel
        if name in heads and rows < REFIT_HEAD_ROWS * int(cols.sum()):
            warnings.warn(f"the refit left `{name}` as cut: {rows} equations for its {int(cols.sum())} kept inputs "
                          f"({rows / int(cols.sum()):.1f} each), under the {REFIT_HEAD_ROWS:g} a layer whose output "
                          "the model returns needs", stacklevel=2)
            continue
        outs = kept.get(name, torch.arange(weight.shape[0])).to(xtx.device)
        a = xtx[cols][:, cols]
        a += REFIT_RIDGE * a.diagonal().mean().clamp_min(1e-12) * torch.eye(len(a), dtype=a.dtype, device=a.device)
        w = torch.linalg.solve(a, xty[cols][:, outs]).T
        if not torch.isfinite(w).all():
            continue  # a degenerate layer keeps its weights
        flat = weight.reshape(weight.shape[0], -1).clone()
        flat[outs.unsqueeze(1), cols.nonzero().squeeze(1).unsqueeze(0)] = w.to(flat.dtype)
        flat[:, ~cols] = 0  # inputs that are always zero: their weights are free, zero keeps the cut clean
        mod.weight.copy_(_conv_layout(mod, flat.reshape(weight.shape)))
        done.append(name)
    if match_norms and done:
        match_cut_norms(original, masked, done, images)
    return done


def _convs_into_batchnorm(model: nn.Module, example: torch.Tensor) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Each conv whose output tensor a BatchNorm with running statistics reads as its input, by one traced forward."""
    pairs: dict[str, nn.modules.batchnorm._BatchNorm] = {}
    with _named_outputs(model, lambda m: isinstance(m, _CONVS)) as made:
        def bn_in(m: nn.modules.batchnorm._BatchNorm, args: tuple) -> None:
            if id(args[0]) in made and m.running_var is not None:
                pairs[made[id(args[0])]] = m

        hooks = [m.register_forward_pre_hook(bn_in) for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        try:
            model(example[:2])
        finally:
            for h in hooks:
                h.remove()
    return pairs


@torch.no_grad()
def match_cut_norms(original: nn.Module, masked: nn.Module, names: list[str], images: torch.Tensor) -> list[str]:
    """Scale each refitted conv's kept filters back to the norm the plain cut leaves them (the unpruned filter
    over the inputs kept), and the running statistics of the BatchNorm that reads the conv alike, so the net
    computes the same function; returns the convs rescaled.

    Why: the refit makes up for cut inputs with larger filters (ResNet-20 at 20% of the MACs: median 1.13-2.12x
    the unpruned norms but for the 1x1 shortcuts, benchmarks/refit_norms.py), and behind BatchNorm a filter's norm divides SGD's effective step on it by its square,
    so the fine-tune would move a refitted net less than a plainly cut one. A net whose outputs the rescale
    changes (a conv read by more than its BatchNorm) is left as the refit made it. Measured after the main
    job's fine-tune (docs/arena.md, ``*-refit-norms``): +0.07 points on VGG 20%, -2.27 on ResNet-20, so it is
    an option (``PruneConfig.refit_norms``), off.
    """
    masked.eval()
    pairs = _convs_into_batchnorm(masked, images)
    mods, refs = dict(masked.named_modules()), dict(original.named_modules())
    probe = images[:64]
    before, saved = masked(probe), copy.deepcopy(masked.state_dict())
    scaled = []
    for name in names:
        mod, bn = mods[name], pairs.get(name)
        if bn is None or not isinstance(mod, _CONVS):
            continue
        w = mod.weight.flatten(1)
        inputs = w.abs().sum(0) > 0
        fitted = w.norm(dim=1)
        cut = (refs[name].weight.flatten(1) * inputs).norm(dim=1).to(w.dtype)
        scale = torch.where(fitted > 0, cut / fitted.clamp_min(1e-30), torch.ones_like(fitted))
        var = scale ** 2 * (bn.running_var + bn.eps) - bn.eps  # BatchNorm's output unchanged, eps included
        scale = torch.where(var > 0, scale, torch.ones_like(scale))  # (a tiny variance shrunk below zero: left)
        mod.weight.mul_(scale.view(-1, *[1] * (mod.weight.dim() - 1)))
        if mod.bias is not None:
            mod.bias.mul_(scale)
        bn.running_mean.mul_(scale)
        bn.running_var.copy_(torch.where(var > 0, var, bn.running_var))
        scaled.append(name)
    after = masked(probe)
    if not torch.allclose(after, before, rtol=1e-3, atol=1e-3 * before.abs().max().item()):
        masked.load_state_dict(saved)
        return []
    return scaled


__all__ = ["match_cut_norms", "refit_kept", "refit_order"]
