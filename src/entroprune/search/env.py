"""A Gymnasium environment in which each step chooses the keep ratio of one channel group.

The observation is AMC's layer embedding; the action is a keep ratio in [min_keep, 1]; the
episode's reward (given at its last step) comes from a pluggable scorer. A two-sided
"action wall" guarantees every episode ends at the MACs target whatever the agent does:
each action is clipped so that the budget stays reachable (AMC's upper wall) and so that
the network cannot be pruned far below the target either (our lower wall, which keeps
policies comparable: a reward cannot be gamed by spending less than the budget).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from ..errors import ConfigError
from ..latency import LatencyModel
from ..structure import Structure
from .budget import Budget

OBS_FEATURES = ("index", "layer_type", "in_channels", "out_channels", "kernel", "stride",
                "out_size", "group_macs", "macs_removed", "macs_rest", "prev_action")
# How far under the target a finished policy may end: the wall fills the budget group by group in
# network order, so the last groups' channel steps leave a gap (3.8% at worst in tests/search/test_env.py).
UNDER_TOLERANCE = 0.05


class PruningEnv(gym.Env):
    """One episode = one policy: a keep ratio for every prunable group, in network order.

    :param structure: the model's groups and its analytic MACs.
    :param scorer: keep counts -> (reward, info dict); None gives reward 0 (wall tests).
    :param macs_target: fraction of the original MACs to keep, in (0, 1].
    :param min_keep: smallest keep ratio of a group (AMC: 0.2).
    :param round_to: round channel counts to multiples of this (1 = no rounding).
    :param ratio_bounds: per-group (lowest, highest) keep ratios, inside [min_keep, 1]: the search
        space's band around the uniform policy; None = [min_keep, 1] for every group.
    :param latency: a fitted latency model; with ``latency_target`` (fraction of the predicted latency kept)
        the wall holds both budgets.
    :param params_target: also keep at most this fraction of the parameters (None: no bound).
    """

    metadata = {"render_modes": []}

    def __init__(self, structure: Structure, scorer: Callable[[np.ndarray], tuple[float, dict]] | None = None,
                 macs_target: float = 0.2, min_keep: float = 0.2, round_to: int = 1,
                 ratio_bounds: tuple[np.ndarray, np.ndarray] | None = None,
                 latency: LatencyModel | None = None, latency_target: float | None = None,
                 params_target: float | None = None):
        super().__init__()
        if not (isinstance(macs_target, (int, float)) and 0 < macs_target <= 1):
            raise ConfigError(f"`macs_target` must lie in (0, 1] (fraction of MACs kept), got {macs_target}")
        if not 0 < min_keep <= 1:
            raise ConfigError(f"`min_keep` must lie in (0, 1], got {min_keep}")
        if round_to < 1:
            raise ConfigError(f"`round_to` must be >= 1, got {round_to}")
        self.structure, self.scorer = structure, scorer
        self.target, self.min_keep, self.round_to = macs_target, min_keep, round_to
        self.groups = structure.groups
        self.n = len(self.groups)
        self.total = structure.total_macs
        self.min_counts = structure.keep_counts(min_keep, round_to)
        self.max_counts = structure.full_counts()
        lo_r, hi_r = ratio_bounds if ratio_bounds is not None else (np.full(self.n, min_keep), np.ones(self.n))
        self.lo_ratio = np.clip(np.asarray(lo_r, dtype=float), min_keep, 1.0)
        self.hi_ratio = np.maximum(np.clip(np.asarray(hi_r, dtype=float), min_keep, 1.0), self.lo_ratio)
        self.min_counts = np.maximum(self.min_counts, structure.keep_counts(self.lo_ratio, round_to))
        self.hi_counts = np.maximum(self.min_counts, structure.keep_counts(self.hi_ratio, round_to))
        floor = structure.macs(self.min_counts) / self.total
        # strictly: a floor a hair above the target would hand back a policy above it (never above, not 2%)
        if floor > macs_target * (1 + 1e-9):
            rounding = (f" (and at least {round_to} channels, counts being rounded to multiples of {round_to})"
                        if round_to > 1 else "")
            raise ConfigError(
                f"`macs_target` {macs_target} is unreachable: even keeping {min_keep:.0%} of every group"
                f"{rounding} leaves {floor:.1%} of the MACs (unprunable layers included); raise the target or lower "
                f"`min_keep`{' or `round_to`' if round_to > 1 else ''}")
        self.budget = Budget(structure, macs_target, latency, latency_target, params_target)
        for name, target, spent, what in (
                ("params_target", params_target, self.budget.params_fraction, "the parameters (unprunable layers included)"),
                ("latency_target", latency_target, self.budget.latency_fraction, "the predicted latency (fixed costs included)")):
            floor_of = spent(self.min_counts) if target is not None else None
            if floor_of is not None and floor_of[0] > target * (1 + 1e-9):
                raise ConfigError(f"`{name}` {target} is unreachable: the smallest policy the search space allows "
                                  f"keeps {floor_of[0]:.1%} of {what}; raise the target or lower `min_keep`")
        self._static = self._static_features()
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(OBS_FEATURES),), dtype=np.float32)
        self.action_space = gym.spaces.Box(np.float32(min_keep), np.float32(1.0), (1,), dtype=np.float32)
        self.on_episode_end: Callable[[dict], None] | None = None
        self._reset_state()

    def _static_features(self) -> np.ndarray:
        g = self.groups
        types = {"conv": 0.0, "depthwise": 0.5, "linear": 1.0}
        cols = np.array([[gr.index, types[gr.layer_type], gr.in_channels, gr.channels, gr.kernel, gr.stride,
                          gr.out_hw, gr.macs] for gr in g], dtype=float)
        span = cols.max(0) - cols.min(0)
        norm = np.where(span > 0, (cols - cols.min(0)) / np.where(span > 0, span, 1), 0.0)
        norm[:, 1] = cols[:, 1]
        return norm

    def _reset_state(self) -> None:
        self.t = 0
        self.counts = self.max_counts.copy()
        self.prev_action = 1.0

    def _obs(self) -> np.ndarray:
        t = min(self.t, self.n - 1)
        decided = self.counts.copy()
        decided[t:] = self.max_counts[t:]
        removed = 1.0 - self.structure.macs(decided) / self.total
        rest = float(sum(gr.macs for gr in self.groups[t + 1:])) / self.total
        feats = np.concatenate([self._static[t], [removed, min(rest, 1.0), self.prev_action]])
        return np.clip(feats, 0.0, 1.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._reset_state()
        return self._obs(), {}

    def ratio_range(self, t: int) -> tuple[float, float]:
        """The keep ratios group ``t`` may take before the wall: the agent's [0, 1] maps onto it."""
        return float(self.lo_ratio[t]), float(self.hi_ratio[t])

    # ---------------------------------------------------------------- the action wall

    def bounds(self, t: int) -> tuple[int, int]:
        """Smallest and largest channel count of group ``t`` that keep the target reachable."""
        g = self.groups[t]
        cands = np.arange(self.min_counts[t], self.hi_counts[t] + 1)
        if self.structure.count_step(g, self.round_to) > 1:
            cands = np.unique([self.structure.round_group(g, c / g.channels, self.round_to) for c in cands])
        lo_case = self.counts.astype(float).copy()
        lo_case[t + 1:] = self.min_counts[t + 1:]
        hi_case = self.counts.astype(float).copy()
        hi_case[t + 1:] = self.hi_counts[t + 1:]
        rows_lo = np.repeat(lo_case[None], len(cands), 0)
        rows_lo[:, t] = cands
        rows_hi = np.repeat(hi_case[None], len(cands), 0)
        rows_hi[:, t] = cands
        upper_ok = self.budget.fits(rows_lo)  # the rest at its smallest still fits
        lower_ok = self.budget.reaches(rows_hi)  # the rest at its largest still spends a budget
        hi_c = cands[upper_ok].max() if upper_ok.any() else cands.min()
        lo_c = cands[lower_ok].min() if lower_ok.any() else cands.max()
        if lo_c > hi_c:  # the window is narrower than one channel step: stay under budget
            lo_c = hi_c
        return int(lo_c), int(hi_c)

    def count_for(self, t: int, ratio: float, bounds: tuple[int, int]) -> int:
        """The channel count group ``t`` gets for a requested keep ratio: clipped to the band, rounded to the
        channel step, then held inside the wall's ``bounds`` (:meth:`bounds`, passed in: it is the costly part)."""
        ratio = float(np.clip(ratio, self.lo_ratio[t], self.hi_ratio[t]))
        return int(np.clip(self.structure.round_group(self.groups[t], ratio, self.round_to), *bounds))

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        ratio = float(np.asarray(action, dtype=float).reshape(-1)[0])
        if not np.isfinite(ratio):
            ratio = self.min_keep
        t = self.t
        ratio = float(np.clip(ratio, self.lo_ratio[t], self.hi_ratio[t]))
        g = self.groups[t]
        count = self.count_for(t, ratio, self.bounds(t))
        self.counts[t] = count
        applied = count / g.channels
        self.prev_action = applied
        self.t += 1
        done = self.t >= self.n
        reward, info = 0.0, {"group": g.name, "requested": ratio, "applied": applied}
        if done:
            info.update(self.finish())
            reward = info["reward"]
        return self._obs(), float(reward), done, False, info

    def fill(self) -> None:
        """Under a latency budget, give the budget the wall's greedy pass left unused back, one channel step
        at a time in network order: latency moves in coarse steps (kernels work in blocks of channels), so
        a policy can end well under its target with room in earlier groups. MACs-only budgets are left as
        the wall made them (their gap is small; tests/search/test_env.py)."""
        if self.budget.latency is None:
            return
        self.counts = self.grow(self.counts)

    def grow(self, counts: np.ndarray) -> np.ndarray:
        """``counts`` with the budget's unused room given back, one channel step at a time in network order,
        within each group's ceiling (the band); the search's final policy gets this when it ends beyond
        ``UNDER_TOLERANCE`` under its target with room left (coarse channel steps on a small net)."""
        counts, grown = np.asarray(counts, dtype=int).copy(), True
        while grown:
            grown = False
            for i in range(self.n):
                more = self.one_step_more(counts, i)
                if more is not None and self.budget.fits(more)[0]:
                    counts, grown = more, True
        return counts

    def one_step_more(self, counts: np.ndarray, i: int) -> np.ndarray | None:
        """``counts`` with group ``i`` one channel step larger (None when it is at its ceiling)."""
        if counts[i] >= self.hi_counts[i]:
            return None
        more = counts.copy()
        more[i] = min(self.hi_counts[i], counts[i] + self.structure.count_step(self.groups[i], self.round_to))
        return more

    def finish(self) -> dict:
        """Score the completed policy; called at the last step."""
        self.fill()
        achieved = self.structure.macs(self.counts) / self.total
        info: dict[str, Any] = {"counts": self.counts.copy(), "achieved": achieved, "reward": 0.0}
        lat = self.budget.latency_fraction(self.counts)
        if lat is not None:
            info["latency_fraction"] = float(lat[0])
        if self.scorer is not None:
            reward, extra = self.scorer(self.counts.copy())
            info.update(extra)
            info["reward"] = reward
        if self.on_episode_end is not None:
            self.on_episode_end(info)
        return info

    def within_tolerance(self, counts: np.ndarray) -> bool:
        """True when the policy keeps at most the target and either lies within ``UNDER_TOLERANCE`` under
        it or is as full as the rounding allows: no group can keep one more channel step without passing it."""
        counts = np.asarray(counts, dtype=int)
        if not self.budget.fits(counts, slack=1e-9)[0]:
            return False
        if self.budget.reaches(counts, under=UNDER_TOLERANCE)[0]:
            return True
        for i in range(self.n):
            more = self.one_step_more(counts, i)
            if more is not None and self.budget.fits(more, slack=1e-9)[0]:
                return False
        return True


__all__ = ["PruningEnv", "OBS_FEATURES"]
