"""The fixed policies every search measures itself against (uniform, global) and the space it searches in: the
uniform keep ratio, the band around it, the action wall's counts of a fixed policy, and the search's environment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..latency import ROUNDING_STEPS, LatencyModel
from ..structure import Structure
from .agents import FIXED_AGENTS
from .agents.baselines import UniformAgent
from .budget import Budget
from .config import SearchConfig
from .env import PruningEnv
from .rewards import REWARDS


def uniform_ratio(structure: Structure, config: SearchConfig, budget: Budget | None = None) -> float:
    """The uniform policy's keep ratio under the search's target (or ``budget``), floor and rounding."""
    u = UniformAgent.solve(structure, config.macs_target, config.min_keep, config.step, budget)
    return config.min_keep + u * (1 - config.min_keep)


def band_bounds(structure: Structure, config: SearchConfig,
                budget: Budget | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-group keep-ratio bounds of the search space (None: AMC's [min_keep, 1] everywhere)."""
    if config.band is None or config.agent in FIXED_AGENTS:
        return None
    r = uniform_ratio(structure, config, budget if budget is not None and budget.beyond_macs else None)
    n = len(structure.groups)
    lo, hi = np.full(n, max(config.min_keep, r * (1 - config.band))), np.full(n, min(1.0, r * (1 + config.band)))
    if REWARDS[config.reward.kind].needs == {"entropy"}:  # groups no entropy reward can see stay at the uniform ratio
        blind = set(structure.flat_groups)
        for i, g in enumerate(structure.groups):
            if g.name in blind:
                lo[i] = hi[i] = r
    return lo, hi


def config_env(structure: Structure, config: SearchConfig, latency: LatencyModel | None = None,
               ratio_bounds: tuple[np.ndarray, np.ndarray] | None = None, step: int | None = None) -> PruningEnv:
    """The environment ``config``'s targets, floor and rounding (``step`` over its own) describe, scoring
    nothing: the one place a config's fields become PruningEnv's arguments (its refusals name the config keys)."""
    return PruningEnv(structure, None, config.macs_target, config.min_keep, config.step if step is None else step,
                      ratio_bounds=ratio_bounds, latency=latency,
                      latency_target=config.latency_target if latency else None, params_target=config.params_target)


def search_env(structure: Structure, config: SearchConfig, budget: Budget | None = None,
               latency: LatencyModel | None = None) -> PruningEnv:
    """The search's environment (its band, rounding and wall), scoring nothing: the search steps it, and
    benchmarks/policy_space.py enumerates the same space from it."""
    return config_env(structure, config, latency, band_bounds(structure, config, budget))


def uniform_policies(structure: Structure, macs_target: float, min_keep: float,
                     steps: Sequence[int] = ROUNDING_STEPS) -> dict[int, np.ndarray]:
    """The uniform policy at ``macs_target`` rounded to each channel step a group can take (the rounding
    choice times these: :func:`entroprune.latency.choose_rounding`)."""
    widest = max(int(c) for c in structure.full_counts())
    policies = {}
    for step in steps:
        if step >= widest:
            continue
        cfg = SearchConfig(macs_target=macs_target, min_keep=min_keep, round_to=step)
        try:  # a step so coarse that the target is out of reach is no candidate
            config_env(structure, cfg)
        except ConfigError:
            continue
        policies[step] = fixed_policy_counts(structure, cfg, [uniform_ratio(structure, cfg)] * len(structure.groups))[0]
    return policies


def matching_macs_target(structure: Structure, latency: LatencyModel, fraction: float, min_keep: float,
                         round_to: int) -> float:
    """The MACs target whose uniform policy ``latency`` predicts at ``fraction`` of the unpruned net's latency
    (bisection: the prediction grows with the target): where a MACs-targeted search of the same latency as a
    latency-targeted one is aimed (the main job's MACs-targeted reference, benchmarks/latency_target.py)."""
    def predicted(m: float) -> float:
        cfg = SearchConfig(macs_target=m, min_keep=min_keep, round_to=round_to)
        counts = fixed_policy_counts(structure, cfg, [uniform_ratio(structure, cfg)] * len(structure.groups))[0]
        return float(latency.fraction(np.asarray(counts)[None])[0])

    floor = structure.macs(structure.keep_counts(min_keep, round_to))
    lo, hi = floor / structure.total_macs + 1e-6, 1.0  # below the floor no target is reachable
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predicted(mid) < fraction else (lo, mid)
    # rounded down, so that the uniform policy stays under ``fraction``, but never below the reachable floor
    # (a fraction the smallest policy already exceeds aims at the floor)
    return max(math.floor(lo * 1e4) / 1e4, math.ceil(floor / structure.total_macs * 1e4) / 1e4)


def fixed_policy_counts(structure: Structure, config: SearchConfig, ratios: list[float],
                        budget: Budget | None = None) -> tuple[np.ndarray, float]:
    """Channel counts of a fixed policy after the action wall (as its agent's one episode gets them)."""
    env = config_env(structure, config, budget.latency if budget is not None else None)
    env.reset()
    info: dict[str, Any] = {}
    for r in ratios:
        info = env.step([r])[4]
    return info["counts"], info["achieved"]


__all__ = ["uniform_ratio", "band_bounds", "config_env", "search_env", "uniform_policies", "matching_macs_target",
           "fixed_policy_counts"]
