"""Baseline policies: one ratio for every group, torch-pruning's global ranking, or the best of random policies."""

from __future__ import annotations

import copy

import numpy as np
import torch.nn as nn

from .base import Agent


class UniformAgent(Agent):
    """The same keep ratio for every group, solved by bisection to hit the MACs target."""

    name = "uniform"
    max_episodes = 1

    def __init__(self, obs_dim: int, seed: int = 0, action: float = 1.0):
        super().__init__(obs_dim, seed)
        self.action = action

    @classmethod
    def solve(cls, structure, target: float, min_keep: float, round_to: int = 1, budget=None) -> float:
        """Normalised action of the largest uniform ratio whose rounded channel counts stay within the target.

        Within, not merely closest: a ratio a rounding step over the budget lets the action wall
        cut the last groups to their minimum (a 6-layer VGG at 20% kept 8 of 128 channels in its
        last layer), which is not a uniform policy. Under the budget, the wall may only raise the
        last groups to fill it.
        """
        lo, hi = min_keep, 1.0
        for _ in range(50):
            mid = (lo + hi) / 2
            counts = structure.keep_counts([mid] * len(structure.groups), round_to)
            fits = budget.fits(counts)[0] if budget is not None else structure.macs(counts) / structure.total_macs <= target
            lo, hi = (mid, hi) if fits else (lo, mid)
        return (lo - min_keep) / (1 - min_keep) if min_keep < 1 else 1.0

    def setup(self, model: nn.Module, structure, config, budget=None) -> None:
        self.action = self.solve(structure, config.macs_target, config.min_keep, config.step, budget)

    def act(self, obs: np.ndarray, episode: int) -> float:
        return self.action


class RandomAgent(Agent):
    """Uniformly random actions; the search keeps the best of its episodes."""

    name = "random"

    def act(self, obs: np.ndarray, episode: int) -> float:
        return float(self.rng.uniform(0.0, 1.0))


class FixedPolicyAgent(Agent):
    """Replays one precomputed keep ratio per group (set ``ratios`` before the episode)."""

    name = "fixed"
    max_episodes = 1

    def __init__(self, obs_dim: int, seed: int = 0, ratios: list[float] | None = None, min_keep: float = 0.0):
        super().__init__(obs_dim, seed)
        self.ratios, self.min_keep, self._t = list(ratios or []), min_keep, 0

    def act(self, obs: np.ndarray, episode: int) -> float:
        r = self.ratios[self._t % len(self.ratios)]
        self._t += 1
        return float(np.clip((r - self.min_keep) / (1 - self.min_keep), 0.0, 1.0)) if self.min_keep < 1 else 1.0


class GlobalAgent(FixedPolicyAgent):
    """torch-pruning's global magnitude ranking, sized to the MACs target: what a torch-pruning
    user would pick without a search (``MagnitudePruner(global_pruning=True)``)."""

    name = "global"

    def setup(self, model: nn.Module, structure, config, budget=None) -> None:
        self.ratios = self.solve(model, structure, config.macs_target, config.min_keep, config.step, budget)
        self.min_keep = config.min_keep

    @staticmethod
    def solve(model: nn.Module, structure, target: float, min_keep: float, round_to: int = 1,
              budget=None) -> list[float]:
        """Keep ratio per group of the smallest global pruning ratio whose channels fit the target.

        The per-group cap ``1 - min_keep`` is the search's own floor, so both pick from one space.
        """
        import torch_pruning as tp

        from ...prune import traceable

        base = copy.deepcopy(model).cpu().eval()
        example = structure.example_input

        def counts_at(ratio: float) -> np.ndarray:
            net = copy.deepcopy(base)
            named = dict(net.named_modules())
            with traceable(net):
                pruner = tp.pruner.MagnitudePruner(
                    net, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                    global_pruning=True, pruning_ratio=ratio, max_pruning_ratio=1 - min_keep,
                    round_to=round_to if round_to > 1 else None,
                    ignored_layers=[named[n] for n in structure.protected])
                pruner.step()
            out = []
            for g in structure.groups:
                m = named[g.name]
                out.append(int(m.out_features if isinstance(m, nn.Linear) else m.out_channels))
            return np.array(out)

        lo, hi = 0.0, 1.0 - min_keep
        best = counts_at(hi)
        for _ in range(14):
            mid = (lo + hi) / 2
            counts = counts_at(mid)
            fits = budget.fits(counts)[0] if budget is not None else structure.macs(counts) / structure.total_macs <= target
            if fits:
                best, hi = counts, mid
            else:
                lo = mid
        return [float(c) / g.channels for c, g in zip(best, structure.groups, strict=True)]
