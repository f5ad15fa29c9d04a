"""Baseline policies: one ratio for every group, or the best of random policies."""

from __future__ import annotations

import numpy as np

from .base import Agent


class UniformAgent(Agent):
    """The same keep ratio for every group, solved by bisection to hit the MACs target."""

    name = "uniform"
    max_episodes = 1

    def __init__(self, obs_dim: int, seed: int = 0, action: float = 1.0):
        super().__init__(obs_dim, seed)
        self.action = action

    @classmethod
    def solve(cls, structure, target: float, min_keep: float, round_to: int = 1) -> float:
        """Normalised action of the largest uniform ratio whose rounded channel counts stay within the target.

        Within, not merely closest: a ratio a rounding step over the budget lets the action wall
        cut the last groups to their minimum (a 6-layer VGG at 20% kept 8 of 128 channels in its
        last layer), which is not a uniform policy. Under the budget, the wall may only raise the
        last groups to fill it.
        """
        lo, hi = min_keep, 1.0
        for _ in range(50):
            mid = (lo + hi) / 2
            frac = structure.macs(structure.keep_counts([mid] * len(structure.groups), round_to)) / structure.total_macs
            lo, hi = (mid, hi) if frac <= target else (lo, mid)
        return (lo - min_keep) / (1 - min_keep) if min_keep < 1 else 1.0

    def act(self, obs: np.ndarray, episode: int) -> float:
        return self.action


class RandomAgent(Agent):
    """Uniformly random actions; the search keeps the best of its episodes."""

    name = "random"

    def act(self, obs: np.ndarray, episode: int) -> float:
        return float(self.rng.uniform(0.0, 1.0))
