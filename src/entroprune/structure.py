"""Prunable structure of a network: coupled channel groups, their ranking, MACs and params.

Groups come from torch-pruning's DependencyGraph: channels that must be removed together
(a residual stream, a depthwise conv and its producer) form one group, keyed by the name
of its root module. The classifier's outputs are never pruned.

MACs and parameters of a pruned network are computed analytically, without building it:
each counted call (conv, BN, ReLU, pool, linear) costs a sum of ``coef * prod_g f_g ** e_g``
terms, where ``f_g`` is the kept fraction of group ``g``; the terms are found once, by
physically pruning each group alone on a copy and watching how each call shrinks (a power of
``f``, or a part of a concatenated or biased input that scales linearly). This matches
``torch_pruning.utils.count_ops_and_params`` on the physically pruned model for plain,
residual, depthwise, grouped and concatenating nets (tests/test_architectures.py).
"""

from __future__ import annotations

import copy
import math
import numbers
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp
from torch.overrides import TorchFunctionMode
from torch_pruning.dependency import graph as tp_graph
from torch_pruning.utils.op_counter import MODULES_MAPPING

from .errors import ConfigError, one_line
from .prune import Masker, apply_physical, traceable
from .settings import DEFAULT_IMPORTANCE, IMPORTANCES
from .utils import flat_tensors, forward_with_hooks, modes_kept

# Layers whose output channels root a group (transposed convs: U-Net up-paths, decoders; 1-D convs: audio and
# time series, whose maps the entropy reward reads as one row; 3-D convs: video and volumes, read slice by slice).
PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # the convs that may be grouped (depthwise, grouped)
CONVS = (*PLAIN_CONVS, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ROOTS = (*CONVS, nn.Linear)


def check_example(example_input: torch.Tensor) -> None:
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise ConfigError("the example input must be one tensor of shape (batch, channels, ...); models that "
                          f"take several inputs are not supported (got {type(example_input).__name__})")


def plain_module(model: nn.Module) -> nn.Module:
    """The eager module to prune or count, or one line saying why there is none: torch.compile's wrapper is
    unwrapped (every pruned copy would be compiled again); TorchScript has no Python modules to cut;
    weights computed by a reparametrisation (torch.nn.utils.prune's masks, weight or spectral norm) are
    not tensors torch-pruning can slice (a deepcopy of a masked model fails outright) or count."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    if type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError("the model is TorchScript (torch.jit.script or torch.jit.trace), which has no layers to "
                          "cut; pass the eager nn.Module it was made from")
    fixes = {BasePruningMethod: ("torch.nn.utils.prune's mask", "torch.nn.utils.prune.remove(layer, {!r})"),
             WeightNorm: ("weight norm", "torch.nn.utils.remove_weight_norm(layer, {!r})"),
             SpectralNorm: ("spectral norm", "torch.nn.utils.remove_spectral_norm(layer, {!r})")}
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m):
            tensor = next(iter(m.parametrizations))
            raise ConfigError(f"layer {name!r} computes its {tensor!r} through a parametrization (weight or spectral "
                              "norm), which entroprune can neither prune nor count; bake it in first with "
                              f"torch.nn.utils.parametrize.remove_parametrizations(layer, {tensor!r})")
        for hook in m._forward_pre_hooks.values():
            for kind, (what, fix) in fixes.items():
                if isinstance(hook, kind):
                    tensor = getattr(hook, "_tensor_name", getattr(hook, "name", "weight"))
                    raise ConfigError(f"layer {name!r} computes its {tensor!r} through {what}, which entroprune "
                                      f"can neither prune nor count; bake it in first with {fix.format(tensor)}")
    return model


def cannot_run(example_input: torch.Tensor, exc: Exception) -> ConfigError:
    """A forward that failed on the caller's example (a wrong shape or dtype): theirs to fix, in one line."""
    return ConfigError(f"the model cannot run on an example input of shape {tuple(example_input.shape)} "
                       f"({one_line(exc)}); pass one "
                       "batch of the inputs it takes")


@torch.no_grad()
def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """MACs of one forward pass at the example's size (batch 1) and the parameter count."""
    check_example(example_input)
    model = plain_module(model)  # torch-pruning's counter skips a parametrised conv (its class is not Conv2d)
    device = next(model.parameters()).device
    try:
        with modes_kept(model):
            macs, params = tp.utils.count_ops_and_params(model, example_input[:1].to(device))
    except Exception as exc:  # noqa: BLE001 - a wrong shape or dtype is the caller's, one line
        raise cannot_run(example_input, exc) from None
    return int(macs), int(params)


@dataclass
class Group:
    """One set of coupled output channels, pruned together."""

    name: str  # the producing conv's module name: the key of a policy
    index: int  # position in network order
    channels: int
    layer_type: str  # conv, depthwise or linear (of the root)
    in_channels: int
    kernel: int
    stride: int
    out_hw: int  # output height * width of the root
    members: list[str]  # modules whose output channels belong to the group
    member_idxs: dict[str, list[int]]  # module -> its channel index for each group channel
    # Group channels are positions 0..channels-1; member_idxs maps them to each module.
    order: list[int] = field(default_factory=list)  # positions (offsets in a chunk when step > 1), best first
    macs: int = 0  # MACs of the calls whose cost depends on this group
    # Channels come in ``step`` equal chunks when a member is a grouped conv (groups=step) or a
    # GroupNorm: every chunk loses the same offsets, so counts are multiples of ``step``.
    step: int = 1

    def kept(self, count: int) -> list[int]:
        """Group channel indices kept when ``count`` channels survive (by importance)."""
        if self.step == 1:
            return sorted(self.order[:count])
        chunk = self.channels // self.step
        return sorted(o + c * chunk for c in range(self.step) for o in self.order[:count // self.step])

    def removed(self, count: int) -> list[int]:
        keep = set(self.kept(count))
        return [i for i in range(self.channels) if i not in keep]


def _by_root(item, channels: int) -> list[int]:
    """A group item's channel indices in the root's channel order (torch-pruning pairs each index with
    the root index it follows; the two lists need not be in the same order)."""
    idxs = [int(i) for i in item.idxs]
    roots = [int(r) for r in getattr(item, "root_idxs", None) or []]
    if sorted(roots) != list(range(channels)):  # not one-to-one: keep torch-pruning's order
        return idxs
    by_root = dict(zip(roots, idxs, strict=True))
    return [by_root[r] for r in range(channels)]


def _depthwise(module: nn.Module) -> bool:
    """One filter per input channel (torch-pruning's test): in and out channels are pruned together."""
    return isinstance(module, PLAIN_CONVS) and module.groups > 1 and module.groups == module.out_channels == \
        module.in_channels


def _leaf_calls(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, float]], list[str]]:
    """Cost of every counted call in one forward (torch-pruning's own counting rules)."""
    calls: list[tuple[str, float]] = []
    order: list[str] = []
    hooks = []
    for name, m in model.named_modules():
        hook = MODULES_MAPPING.get(type(m))
        if hook is None:
            continue

        def record(mod, inp, out, name=name, hook=hook):
            mod.__flops__ = 0
            hook(mod, inp, out)
            calls.append((name, float(mod.__flops__)))
            del mod.__flops__
            if isinstance(mod, ROOTS):
                order.append(name)

        hooks.append((m, record))
    forward_with_hooks(model, example, hooks)
    return calls, order


class _Runaway(Exception):
    """torch-pruning's search for the group rooted at ``root`` (a module) ran away."""

    def __init__(self, root: object):
        super().__init__()
        self.root = root


def _largest_tensor(model: nn.Module, example: torch.Tensor) -> int:
    """The most elements any tensor of one forward holds (module outputs, functional results such as an
    attention matrix, the input): no index list of a real pruning group can be longer."""

    class Largest(TorchFunctionMode):
        numel = example.numel()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.numel = max([self.numel, *(t.numel() for t in flat_tensors(out))])
            return out

    largest = Largest()
    with modes_kept(model), torch.no_grad(), largest:
        model.eval()(example)
    return largest.numel


_GROUP_PATCH = threading.Lock()

#: How many roots' indices one channel of a real group may carry: the same index comes once per branch where
#: branches are stacked (SKNet's two: 2x over the architecture suite and the zoo, where every other group is 1x);
#: a runaway's lists grow with every turn of its cycle (tests/archs.py's attention block: 3x, 9x, then past 8x).
REPEATS = 8


def _dim_bound(target: object, limit: int) -> int:
    """No channel (or feature) index a pruning op on ``target`` names can reach this: a layer's widest dimension,
    an unwrapped parameter's; ``limit`` for parameter-free ops (reshapes, element-wise ops)."""
    if isinstance(target, CONVS):
        return max(target.in_channels, target.out_channels)
    if isinstance(target, nn.Linear):
        return max(target.in_features, target.out_features)
    if isinstance(target, nn.Parameter):
        return max(target.shape, default=limit)
    if isinstance(target, nn.Module):
        dims = [d for p in target.parameters(recurse=False) for d in p.shape]
        dims += [n for a in ("num_features", "num_channels") if isinstance(n := getattr(target, a, None), int)]
        return max(dims, default=limit)
    return limit


@contextmanager
def bounded_groups(limit: int) -> Iterator[None]:
    """torch-pruning follows some reshapes of a conv's channels (split into attention heads, as YOLOv10's and
    other hybrid CNNs' attention blocks do) round a cycle whose index lists grow with every turn
    (VainF/Torch-Pruning#430): a hang, then memory exhausted; others it maps past the end of a layer. Inside,
    an index past its target's channels, or an index list more than ``REPEATS`` times as long as the target has
    channels, or longer than ``limit``, raises :class:`_Runaway` naming the group's root, for a refusal in one
    line instead."""

    class Bounded(tp_graph.Group):
        def add_dep(self, dep, idxs):
            bound = _dim_bound(dep.target.module, limit)
            top = max((getattr(i, "idx", i) for i in idxs), default=-1)
            if top >= bound or len(idxs) > min(limit, REPEATS * bound):
                raise _Runaway((self[0].dep if len(self) else dep).source.module)
            super().add_dep(dep, idxs)

    with _GROUP_PATCH:  # one structure at a time swaps the class: threads would restore each other's
        base, tp_graph.Group = tp_graph.Group, Bounded  # get_pruning_group builds its groups by this name
        try:
            yield
        finally:
            tp_graph.Group = base


def output_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The Conv/Linear layers nearest to each of the model's outputs (through any parameter-free ops):
    their output channels are the model's output shape, so pruning them would change what the model
    returns (an auxiliary head, a detector's second branch), not only its cost."""
    by_fn: dict[object, str] = {}

    def record(mod, inp, out, name):
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            by_fn[out.grad_fn] = name

    model = model.eval()
    hooks = [mod.register_forward_hook(lambda m, i, o, n=n: record(m, i, o, n))
             for n, mod in model.named_modules() if isinstance(mod, ROOTS)]
    try:
        with torch.enable_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
    found: list[str] = []
    for t in flat_tensors(out):
        seen, frontier = set(), [t.grad_fn]
        while frontier:
            fn = frontier.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            if fn in by_fn:
                if by_fn[fn] not in found:
                    found.append(by_fn[fn])
                continue
            frontier.extend(nxt for nxt, _ in fn.next_functions)
    return found


@torch.no_grad()
def _outputs_differ(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    """Whether two nets give other outputs (shapes, or values beyond float noise) on ``x``."""
    for u, v in zip(flat_tensors(a.eval()(x)), flat_tensors(b.eval()(x)), strict=True):
        if u.shape != v.shape or (u - v).abs().max().item() > 1e-4 * (1 + u.abs().max().item()):
            return True
    return False


NOT_MASKED = "the pruned net computes something else than the net with those channels zeroed"


@torch.no_grad()
def _output_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in flat_tensors(model.eval()(example))]


def _module_params(model: nn.Module) -> list[tuple[str, float]]:
    return [(n, float(sum(p.numel() for p in m.parameters(recurse=False))))
            for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


def _all_powers(ratios: np.ndarray, frac: float) -> bool:
    """Every ratio is 1, frac or frac**2: the cost scales as a plain power of the group's fraction."""
    return bool(all(min(abs(r - 1), abs(r - frac), abs(r - frac * frac)) < 1e-9 for r in ratios))


def _cost_terms(base: np.ndarray, ratios: list[np.ndarray], fracs: list[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """Rows (coefficient, exponents) whose sum of ``coef * prod_g f_g ** e_g`` is each call's cost.

    ``ratios[k][i, j]``: call ``i``'s cost with group ``j`` alone cut to ``fracs[k][j]`` (a second cut
    only where the first is not a plain power). Each group's effect on a call is a polynomial
    ``c0 + c1 f + c2 f**2`` with value 1 at ``f = 1``: without a constant it is a factor (input
    and output channels of a conv: ``f`` or ``f**2``, ``c1 f + c2 f**2`` with a bias); with one it is
    a part of a concatenated input (``1 - w + w f``), and parts add up rather than multiply. A call
    becomes one row per product of monomials. Returns the groups some call read as a part of its input.
    """
    coefs, exps, concat = [], [], set()
    n = len(fracs[0])
    for i, b in enumerate(base):
        factors: list[list[tuple[float, int, int]]] = []  # per factor group: (coef, group, exponent)
        parts: dict[int, float] = {}
        for j in range(n):
            r1, f1 = ratios[0][i, j], fracs[0][j]
            if b <= 0 or abs(r1 - 1) < 1e-9:
                continue
            if abs(r1 - f1) < 1e-9 or abs(r1 - f1 * f1) < 1e-9:
                factors.append([(1.0, j, 1 if abs(r1 - f1) < 1e-9 else 2)])
                continue
            if fracs[1][j] == 1.0:  # one cut only (a group of two chunks): read it as affine, 1 - w + w f
                parts[j] = (1 - r1) / (1 - f1)
                continue
            r2, f2 = ratios[1][i, j], fracs[1][j]
            # r - 1 = c1 (f - 1) + c2 (f**2 - 1) at both cuts
            c1, c2 = np.linalg.solve([[f1 - 1, f1 * f1 - 1], [f2 - 1, f2 * f2 - 1]], [r1 - 1, r2 - 1])
            c0 = 1 - c1 - c2
            if abs(c0) < 1e-6:
                factors.append([(c, j, e) for c, e in ((c1, 1), (c2, 2)) if abs(c) > 1e-12])
            else:
                parts[j] = c1
        rows: list[tuple[float, np.ndarray]] = [(b, np.zeros(n))]
        for options in factors:
            rows = [(c * oc, e + np.eye(n)[j] * oe) for c, e in rows for oc, j, oe in options]
        if parts:
            concat.update(parts)
            rest = 1 - sum(parts.values())
            rows = ([(c * rest, e) for c, e in rows] if rest > 1e-9 else []) + [
                (c * w, e + np.eye(n)[j]) for c, e in rows for j, w in parts.items()]
        for c, e in rows:
            coefs.append(c)
            exps.append(e)
    return np.array(coefs), np.clip(np.array(exps).reshape(len(coefs), n), 0, 2), concat


def plain_group(group: Group, mods: dict[str, nn.Module]) -> bool:
    """One conv (or linear) produces the group's channels: no residual stream or depthwise conv couples it."""
    return sum(isinstance(mods.get(n), ROOTS) for n in group.members) == 1


def _make_group(g, dg, names: dict, mods: dict, rank: dict, out_hw: dict, imp) -> Group | None:
    """One torch-pruning group as a :class:`Group` (None for a group of one channel or without a
    conv or linear layer of its own)."""
    channels = len(g[0].idxs)
    members, member_idxs, step = [], {}, 1
    for item in g:
        mod = item.dep.target.module
        if mod in names and dg.is_out_channel_pruning_fn(item.dep.handler):
            members.append(names[mod])
            member_idxs[names[mod]] = _by_root(item, channels)
        if isinstance(mod, PLAIN_CONVS) and mod.groups > 1 and not _depthwise(mod):
            step = math.lcm(step, mod.groups)
        elif isinstance(mod, nn.GroupNorm):
            step = math.lcm(step, mod.num_groups)
    # Name the group after its producer: the first conv/linear in forward order,
    # preferring a regular conv over a depthwise one that merely follows it.
    layers = sorted((m for m in members if m in rank), key=lambda m: rank[m])
    regular = [m for m in layers if not _depthwise(mods[m])]
    if channels < 2 or not layers:
        return None
    name = (regular or layers)[0]
    root = mods[name]
    if channels % step:
        raise ConfigError(f"group {name} has {channels} channels, not a multiple of the {step} channel "
                          "groups of its grouped conv or GroupNorm; leave it out with ignored layers")
    try:
        scores = imp(g).double()
    except Exception as exc:  # noqa: BLE001 - e.g. a depthwise conv with a channel multiplier
        raise ConfigError(f"torch-pruning cannot rank the channels of group {name} ({one_line(exc)}); leave it "
                          f"whole with ignored layers (`ignored_layers={name}`), or report the model upstream") from None
    if step > 1:  # rank offsets within a chunk by their importance summed over the chunks
        scores = scores.reshape(step, channels // step).sum(0)
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    is_dw = _depthwise(root)
    return Group(
        name=name, index=0, channels=channels,
        layer_type="depthwise" if is_dw else ("conv" if isinstance(root, CONVS) else "linear"),
        in_channels=int(getattr(root, "in_channels", getattr(root, "in_features", 0))),
        kernel=int(root.kernel_size[0]) if isinstance(root, CONVS) else 1,
        stride=int(root.stride[0]) if isinstance(root, CONVS) else 1,
        out_hw=out_hw.get(name, 1), members=sorted(members, key=lambda m: rank.get(m, 1e9)),
        member_idxs=member_idxs, order=order, step=step)


class Structure:
    """The prunable groups of a model and a closed form of MACs / params per policy."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, importance: str = DEFAULT_IMPORTANCE,
                 ignored: Sequence[str] = ()):
        if importance not in IMPORTANCES:
            raise ConfigError(f"unknown importance {importance!r}; choose {' or '.join(IMPORTANCES)}")
        check_example(example_input)
        self.importance = importance
        self.example_input = example_input[:1].detach().cpu()
        model = copy.deepcopy(plain_module(model)).cpu().eval()
        names = {m: n for n, m in model.named_modules()}
        try:
            calls, conv_order = _leaf_calls(model, self.example_input)
        except Exception as exc:  # noqa: BLE001 - a wrong shape or dtype is the caller's, one line
            raise cannot_run(example_input, exc) from None
        if not conv_order:
            raise ConfigError("the model has no convolution or Linear layer; nothing to prune")
        self.classifier = conv_order[-1]
        all_mods = dict(model.named_modules())
        unknown = [n for n in ignored if n not in all_mods]
        if unknown:
            raise ConfigError(f"ignored layers {', '.join(unknown)} are not modules of the model; "
                              f"give names as model.named_modules() lists them (e.g. {conv_order[0]})")
        # every layer that feeds an output keeps its channels, and whatever the user leaves out
        self.protected = list(dict.fromkeys([self.classifier, *output_layers(model, self.example_input), *ignored]))
        ignored_mods = [all_mods[n] for n in self.protected]
        # a real group's index lists are never longer than the largest tensor (4x spare): past it, a runaway
        limit = 4 * _largest_tensor(model, self.example_input)
        try:
            with traceable(model):
                dg = tp.DependencyGraph().build_dependency(model, self.example_input)
            with bounded_groups(limit):
                raw = list(dg.get_all_groups(ignored_layers=ignored_mods, root_module_types=list(ROOTS)))
        except _Runaway as exc:
            name = names.get(exc.root, "?")
            raise ConfigError(f"torch-pruning cannot follow where the channels of group {name} go (it maps them past "
                              "the end of a layer: a reshape of channels it misreads, such as a split into attention "
                              f"heads or a pixel shuffle); leave it whole with ignored layers (`ignored_layers={name}`) "
                              "and the rest is pruned, or report the model upstream") from None
        except Exception as exc:  # noqa: BLE001 - any tracer failure is one line, not a traceback
            raise ConfigError(f"torch-pruning cannot trace this model ({one_line(exc)}); leave the part it "
                              "fails on out with ignored layers, or report the model upstream") from None
        # module -> output height * width at the example size (1x1 maps have no spatial entropy)
        self.out_sizes = out_hw = self._output_sizes(model)
        rank = {n: i for i, n in enumerate(conv_order)}
        mods = dict(model.named_modules())

        def ranked(norm: str) -> list[Group]:
            imp = tp.importance.GroupMagnitudeImportance(p=IMPORTANCES[norm])
            return [grp for g in raw if (grp := _make_group(g, dg, names, mods, rank, out_hw, imp)) is not None]

        #: the norm the channels are ranked by: ``importance``, with ``auto`` settled by the net
        self.norm = "l1" if importance == "auto" else importance
        groups = ranked(self.norm)
        if importance == "auto" and groups and all(plain_group(g, mods) for g in groups):
            self.norm = "l2"
            groups = ranked("l2")
        groups.sort(key=lambda gr: rank[gr.name])
        for i, gr in enumerate(groups):
            gr.index = i
        if not groups:
            raise ConfigError("the model has no prunable channel group (every conv feeds the "
                              "classifier directly or has a single channel); nothing to prune")
        self.groups = groups
        self.by_name = {g.name: g for g in groups}
        self._out_shapes = _output_shapes(model, self.example_input)
        self._fit_costs(model, calls)

    def flat(self, layers: Sequence[str]) -> list[str]:
        """The given modules whose output map is 1x1 at the example size: spatial entropy is
        constant there (VGG-16 on 28x28 images ends in three such convs)."""
        return [name for name in layers if self.out_sizes.get(name, 1) <= 1]

    @property
    def flat_groups(self) -> list[str]:
        """Conv groups with a 1x1 output map: no entropy reward can see their keep ratio."""
        return [g.name for g in self.groups if g.layer_type != "linear" and g.out_hw <= 1]

    # ----------------------------------------------------------------- construction helpers

    def _output_sizes(self, model: nn.Module) -> dict[str, int]:
        sizes: dict[str, int] = {}

        def record(mod, inp, out, name):  # a 3-D conv's maps are read slice by slice: one slice's size
            sizes.setdefault(name, int(np.prod(out.shape[-2:] if out.dim() == 5 else out.shape[2:])) if out.dim() > 2 else 1)

        forward_with_hooks(model, self.example_input,
                           [(m, lambda mod, i, o, n=n: record(mod, i, o, n))
                            for n, m in model.named_modules() if isinstance(m, ROOTS)])
        return sizes

    def _fit_costs(self, model: nn.Module, calls: list[tuple[str, float]]) -> None:
        """Probe each group alone to learn which calls and parameters it scales, and how."""
        base = np.array([c for _, c in calls])
        params = _module_params(model)
        pbase = np.array([p for _, p in params])
        n = len(self.groups)
        # ratio[k][i, j]: cost of call (parameter set) i with group j alone cut to fracs[k][j]
        ratio_calls = [np.ones((len(calls), n)), np.ones((len(calls), n))]
        ratio_params = [np.ones((len(params), n)), np.ones((len(params), n))]
        fracs = [np.ones(n), np.ones(n)]
        broken: dict[str, str] = {}
        probe_x = self._probe_x = torch.randn(2, *self.example_input.shape[1:],
                                              generator=torch.Generator().manual_seed(0))
        # The pruned net must compute what the net with the same channels zeroed computes, or torch-pruning
        # mapped a reshape or a shuffle wrongly; not comparable under GroupNorm or LayerNorm, whose
        # statistics legitimately change when channels are removed.
        self._maskable = not any(isinstance(m, (nn.GroupNorm, nn.LayerNorm)) for m in model.modules())
        masker = Masker(copy.deepcopy(model).eval(), self) if self._maskable else None
        for j, g in enumerate(self.groups):
            chunks = g.channels // g.step
            # a second, smaller cut only where the first shows a cost that is not a power of the fraction
            for k, keep_chunks in enumerate((max(1, chunks // 2), max(1, chunks // 4))):
                keep = keep_chunks * g.step
                if k == 1 and (keep_chunks == chunks // 2 or _all_powers(ratio_calls[0][:, j], fracs[0][j])
                               and _all_powers(ratio_params[0][:, j], fracs[0][j])):
                    break
                fracs[k][j] = keep / g.channels
                try:  # a reshape, a stack or a shuffle torch-pruning maps wrongly fails here, not in a search
                    pruned = self._physical(model, {g.name: keep})
                    new_calls, _ = _leaf_calls(pruned, self.example_input)
                    if len(new_calls) != len(calls):
                        raise RuntimeError("pruning it changed the model's call graph")
                    shape_ok = _output_shapes(pruned, self.example_input) == self._out_shapes
                except Exception as exc:  # noqa: BLE001 - every failure is reported in one line below
                    broken[g.name] = one_line(exc)
                    break
                if not shape_ok:
                    broken[g.name] = "pruning it changes the shape of the model's output"
                    break
                if k == 0 and masker is not None:
                    counts = self.full_counts()
                    counts[j] = keep
                    masker.apply(counts)
                    if _outputs_differ(masker.model, pruned, probe_x):
                        broken[g.name] = NOT_MASKED
                        break
                new = np.array([c for _, c in new_calls])
                newp = np.array([p for _, p in _module_params(pruned)])
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio_calls[k][:, j] = np.where(base > 0, new / base, 1.0)
                    ratio_params[k][:, j] = np.where(pbase > 0, newp / pbase, 1.0)
        if broken:
            names = ", ".join(broken)
            first = next(iter(broken.items()))
            raise ConfigError(f"torch-pruning cannot prune group(s) {names} of this model correctly ({first[0]}: "
                              f"{first[1]}); leave them whole with ignored layers ("
                              f"`ignored_layers={','.join(broken)}`) and the rest is pruned, or report the model upstream")
        self._base, self._exp, concat_calls = _cost_terms(base, ratio_calls, fracs)
        self._pbase, self._pexp, concat_params = _cost_terms(pbase, ratio_params, fracs)
        self.total_macs = float(base.sum())
        self.total_params = float(pbase.sum())
        for j, g in enumerate(self.groups):
            g.macs = int(self._base[self._exp[:, j] > 0].sum())
        if concat_calls or concat_params:  # sums of products: check the closed form where it is new
            self._check_costs(model, [self.groups[j].name for j in sorted(concat_calls | concat_params)])

    def _check_costs(self, model: nn.Module, parts: list[str]) -> None:
        """Check the closed form against torch-pruning at two random policies; where it misses, name the groups read
        as parts that miss alone at their count (a classifier's input group is one through its bias: not at fault)."""
        rng = np.random.default_rng(0)
        for _ in range(2):
            counts = self.keep_counts(rng.uniform(0.1, 1.0, len(self.groups)))
            try:
                pruned = self._physical(model, self._keep(counts))
            except Exception as exc:  # noqa: BLE001 - one line, naming the group at fault
                raise self.refuse_pruning(model, counts, one_line(exc), at="some channel counts") from None
            # a cut that fails (a transformer's width no longer divisible by its heads) is no cost to compare
            if (fault := self.pruning_fault(model, counts, pruned)) is not None:
                raise self.refuse_pruning(model, counts, fault, at="some channel counts")
            if (miss := self._cost_miss(model, counts, pruned)) is None:
                continue
            names = ",".join([n for n in parts if self._cost_miss(model, self._alone(counts, self.by_name[n].index))]
                             or parts)
            raise ConfigError(f"the closed-form MACs of this architecture do not match torch-pruning's pruning ({miss}) "
                              f"where group(s) {names} feed part of a layer's input (a concatenation or a slice of "
                              f"channels); leave them whole with ignored layers (`ignored_layers={names}`), or report "
                              "the model")

    def _cost_miss(self, model: nn.Module, counts: np.ndarray, pruned: nn.Module | None = None) -> str | None:
        """How torch-pruning's cut of ``counts`` (``pruned``, or cut here) differs from the closed form (its MACs or
        params, or its failure)."""
        try:
            pruned = pruned if pruned is not None else self._physical(model, self._keep(counts))
            macs, params = count_macs_params(pruned, self.example_input)
        except Exception as exc:  # noqa: BLE001 - a count the probe did not try: one line
            return one_line(exc)
        if abs(self.macs(counts) - macs) > 1e-6 * macs + 1:
            return f"{self.macs(counts):.0f} vs {macs} MACs"
        if abs(self.params(counts) - params) > 1e-6 * params + 1:
            return f"{self.params(counts):.0f} vs {params} parameters"
        return None

    def _keep(self, counts: Sequence[int] | np.ndarray) -> dict[str, int]:
        return {g.name: int(c) for g, c in zip(self.groups, counts, strict=True)}

    def _alone(self, counts: Sequence[int] | np.ndarray, j: int) -> np.ndarray:
        """Group ``j`` at its count in ``counts``, every other group whole."""
        one = self.full_counts()
        one[j] = counts[j]
        return one

    def _physical(self, model: nn.Module, keep: Mapping[str, int]) -> nn.Module:
        """A pruned copy on the CPU, as the structure's example is; ``model`` stays where it is."""
        pruned = copy.deepcopy(model).cpu()
        apply_physical(pruned, self, keep)
        return pruned

    def pruning_fault(self, model: nn.Module, counts: Sequence[int] | np.ndarray,
                      pruned: nn.Module | None = None) -> str | None:
        """Why ``model`` cut to ``counts`` (``pruned``, or pruned here) is wrong, or None: it fails, changes the
        output's shape, or computes something else than the model with those channels zeroed. The probe tried each
        group alone at two counts; a slice of a group's channels (``x[:, :3]``) can map right at those and wrong at
        others, so the final prune is checked too."""
        try:
            if pruned is None:
                pruned = self._physical(model, self._keep(counts))
            if _output_shapes(pruned.eval(), self.example_input) != self._out_shapes:
                return "pruning it changes the shape of the model's output"
            if self._maskable:
                masker = Masker(copy.deepcopy(model).cpu().eval(), self)
                masker.apply(counts)
                if _outputs_differ(masker.model, pruned, self._probe_x):
                    return NOT_MASKED
        except Exception as exc:  # noqa: BLE001 - reported in one line by refuse_pruning
            return one_line(exc)
        return None

    def refuse_pruning(self, model: nn.Module, counts: Sequence[int] | np.ndarray, fault: str,
                       at: str = "this policy's channel counts") -> ConfigError:
        """The one-line refusal of a policy torch-pruning cuts wrongly, naming the groups that are wrong alone at
        their count (all cut groups where none is)."""
        cut = [g for g, c in zip(self.groups, counts, strict=True) if c < g.channels]
        names = ",".join([g.name for g in cut if self.pruning_fault(model, self._alone(counts, g.index)) is not None]
                         or [g.name for g in cut])
        return ConfigError(f"torch-pruning prunes group(s) {names} of this model wrongly at {at} ({fault}), "
                           "though they probed right at other counts; leave them whole with ignored layers "
                           f"(`ignored_layers={names}`) in the search, or report the model upstream")

    # ----------------------------------------------------------------- policies

    def keep_counts(self, ratios: float | Mapping[str, float] | Sequence[float] | np.ndarray,
                    round_to: int = 1) -> np.ndarray:
        """Channels kept per group for keep ratios (one for every group, by name or in group order)."""
        if isinstance(ratios, Mapping):
            ratios = [ratios.get(g.name, 1.0) for g in self.groups]
        r = np.full(len(self.groups), float(ratios)) if np.ndim(ratios) == 0 else np.asarray(ratios, dtype=float)
        counts = np.array([self.round_group(g, x, round_to) for g, x in zip(self.groups, r, strict=True)])
        return counts

    @staticmethod
    def count_step(g: Group, round_to: int = 1) -> int:
        """The channel step of group ``g``'s counts: ``round_to`` (when the group is larger) and its chunks."""
        return math.lcm(round_to if round_to > 1 and g.channels > round_to else 1, g.step)

    @staticmethod
    def round_group(g: Group, ratio: float, round_to: int = 1) -> int:
        """Channels group ``g`` keeps at ``ratio``: rounded to ``round_to`` and to its chunk ``step``."""
        if g.step == 1:
            return Structure.round_channels(g.channels, ratio, round_to)
        unit = Structure.count_step(g, round_to)
        n = int(round(ratio * g.channels / unit)) * unit
        n = min(g.channels, max(unit, n))
        return n - n % g.step  # channels is a multiple of step; a larger unit may not divide it

    @staticmethod
    def round_channels(channels: int, ratio: float, round_to: int = 1) -> int:
        n = int(round(ratio * channels))
        if round_to > 1 and channels > round_to:
            n = int(round(n / round_to)) * round_to
            n = max(round_to, n)
        return int(min(channels, max(1, n)))

    def fractions(self, counts: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(counts, dtype=float) / np.array([g.channels for g in self.groups])

    def macs(self, counts: Sequence[int] | np.ndarray) -> float:
        """MACs of the network with ``counts[g]`` channels kept in each group."""
        logf = np.log(self.fractions(counts))
        return float(self._base @ np.exp(self._exp @ logf))

    def params(self, counts: Sequence[int] | np.ndarray) -> float:
        logf = np.log(self.fractions(counts))
        return float(self._pbase @ np.exp(self._pexp @ logf))

    def macs_batch(self, fractions: np.ndarray) -> np.ndarray:
        """MACs for many fraction vectors at once (rows of ``fractions``)."""
        return np.exp(np.log(fractions) @ self._exp.T) @ self._base

    def params_batch(self, fractions: np.ndarray) -> np.ndarray:
        """Parameters for many fraction vectors at once (rows of ``fractions``)."""
        return np.exp(np.log(fractions) @ self._pexp.T) @ self._pbase

    def full_counts(self) -> np.ndarray:
        return np.array([g.channels for g in self.groups])

    def policy_counts(self, policy: Mapping[str, float], round_to: int = 1,
                      strict: bool = True) -> np.ndarray:
        """Validate a policy (group name -> keep ratio) and turn it into channel counts."""
        unknown = sorted(set(policy) - set(self.by_name))
        if unknown:
            raise ConfigError(f"policy names unknown groups {unknown[:3]}; known groups: "
                              f"{', '.join(list(self.by_name)[:6])}...")
        missing = [g.name for g in self.groups if g.name not in policy]
        if strict and missing:
            raise ConfigError(f"policy lacks groups {missing[:3]}; give a keep ratio for every "
                              "group (see `entroprune inspect`)")
        for k, v in policy.items():
            # numbers.Real: numpy's floats too (a policy computed with numpy); a tensor is named, not misread
            if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= 1):
                raise ConfigError(f"keep ratio of {k} is {v!r}; ratios must be numbers in (0, 1]")
        return self.keep_counts(policy, round_to)


__all__ = ["Structure", "Group", "count_macs_params", "IMPORTANCES"]
