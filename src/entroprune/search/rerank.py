"""The search's second stage: its best distinct policies and the uniform and global ones, re-scored after label-free
recovery; a searched winner confirmed under other recovery seeds, and uniform left only for a margin."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..structure import Structure
from ..utils import progress_bar
from .agents.baselines import GlobalAgent
from .budget import Budget
from .config import SearchConfig
from .policies import fixed_policy_counts, uniform_ratio
from .rewards import RewardEvaluator


def rerank(model: nn.Module, structure: Structure, config: SearchConfig, calib: torch.Tensor,
           val: tuple[torch.Tensor, torch.Tensor] | None, recovery_images: torch.Tensor | None,
           entries: list[dict], quiet: bool = False, budget: Budget | None = None) -> tuple[list[dict[str, Any]], int]:
    """Re-score the search's best distinct policies and the uniform and global ones after recovery.

    The search's own reward is read off freshly pruned, nearly broken nets; this second stage reads
    ``rerank_reward`` off nets that work again, and the uniform and global policies are always in
    the pool, so the search never returns a policy its score ranks below theirs.
    Returns the candidates (best first by the search's reward, then uniform, global) and the index
    of the chosen one.
    """
    pool: list[dict[str, Any]] = []
    seen: set[tuple[int, ...]] = set()
    for e in sorted((e for e in entries if e["finite"]), key=lambda e: (-e["reward"], e["episode"])):
        counts = structure.keep_counts(e["policy"])
        if tuple(counts) in seen:
            continue
        seen.add(tuple(counts))
        pool.append({"candidate": f"search (episode {e['episode']})", "source": "search", "counts": counts,
                     "achieved": e["achieved"], "search_reward": e["reward"]})
        if len(pool) >= config.rerank_top_k:
            break
    n = len(structure.groups)
    fixed = {"uniform": [uniform_ratio(structure, config, budget)] * n,
             "global": GlobalAgent.solve(model, structure, config.macs_target, config.min_keep, config.step, budget)}
    for name, ratios in fixed.items():
        counts, achieved = fixed_policy_counts(structure, config, ratios, budget)
        if tuple(counts) in seen:  # the search found it too: keep one candidate, say both
            next(c for c in pool if tuple(c["counts"]) == tuple(counts))["candidate"] += f" = {name}"
            continue
        seen.add(tuple(counts))
        pool.append({"candidate": name, "source": name, "counts": counts, "achieved": achieved,
                     "search_reward": None})
    def score(seed: int, candidates: list[dict[str, Any]], label: str) -> list[float | None]:
        evaluator = RewardEvaluator(model, structure, config.rerank_reward_config(), calib, val,
                                    recovery_images=recovery_images, seed=seed)
        try:
            with progress_bar(disable=quiet) as bar:
                task = bar.add_task(label, total=len(candidates), info="")
                out = []
                for c in candidates:
                    res = evaluator.evaluate(c["counts"])
                    out.append(res.reward if res.finite else None)
                    bar.advance(task)
                return out
        finally:
            evaluator.close()

    refit = "refitted, " if config.rerank_refit else ""
    for c, r in zip(pool, score(config.seed, pool, f"re-rank ({config.rerank_reward}, {refit}"
                                                     f"{config.recovery_steps} recovery steps)"), strict=True):
        c["reward"] = r
    scored = [i for i, c in enumerate(pool) if c["reward"] is not None]
    if not scored:
        raise ConfigError("every re-ranked policy gave a non-finite score; the model or data contain NaN/Inf values")
    pick = max(scored, key=lambda i: (pool[i]["reward"], -i))
    return pool, prefer_uniform(pool, confirm(pool, pick, scored, config, score), config.uniform_margin)


#: Other recovery seeds of the confirmation: the search's seed + CONFIRM_SEED_STEP * (1, 2, ...).
CONFIRM_SEED_STEP = 1000


def confirm(pool: list[dict[str, Any]], pick: int, scored: list[int], config: SearchConfig,
            score: Callable[[int, list[dict[str, Any]], str], list[float | None]]) -> int:
    """A searched winner must beat the fixed policies on the mean over more recovery seeds; the max of
    several noisy scores is biased upward, the fixed policies were not selected for their score."""
    fixed = [i for i in scored if pool[i]["source"] != "search"]
    if pool[pick]["source"] != "search" or not fixed or config.confirm_seeds == 0:
        return pick
    trial = [pick, *fixed]
    for c in (pool[i] for i in trial):
        c["confirm_rewards"] = [c["reward"]]
    for k in range(1, config.confirm_seeds + 1):
        rewards = score(config.seed + CONFIRM_SEED_STEP * k, [pool[i] for i in trial],
                        f"confirm the winner (recovery seed {k + 1} of {config.confirm_seeds + 1})")
        for i, r in zip(trial, rewards, strict=True):
            pool[i]["confirm_rewards"].append(r)
    return confirmed(pool, pick, fixed)


def mean_reading(candidate: dict[str, Any]) -> float:
    """A candidate's score: the mean over its confirmation readings where they ran, else its one reading;
    -inf where any reading failed."""
    rs = candidate.get("confirm_rewards") or [candidate["reward"]]
    return -math.inf if any(r is None for r in rs) else sum(rs) / len(rs)


def confirmed(pool: list[dict[str, Any]], pick: int, fixed: list[int]) -> int:
    """The confirmation's verdict: the searched ``pick`` if its mean beats every fixed policy's, else the
    best fixed one (the lower index on a tie)."""
    best_fixed = max(fixed, key=lambda i: (mean_reading(pool[i]), -i))
    return pick if mean_reading(pool[pick]) > mean_reading(pool[best_fixed]) else best_fixed


def uniform_candidate(pool: list[dict[str, Any]]) -> int | None:
    """The uniform policy's index in the pool (a searched candidate equal to it counts), or None."""
    return next((i for i, c in enumerate(pool) if c["source"] == "uniform" or c["candidate"].endswith("= uniform")),
                None)


def prefer_uniform(pool: list[dict[str, Any]], pick: int, margin: float) -> int:
    """``pick`` if it beats the uniform policy by ``margin`` of uniform's ``|score|``, else uniform: a
    policy that differs from uniform only within the score's noise is no reason to leave it."""
    uniform = uniform_candidate(pool)
    if uniform is None or uniform == pick or pool[uniform]["reward"] is None:
        return pick
    u = mean_reading(pool[uniform])
    if mean_reading(pool[pick]) >= u + margin * abs(u):
        return pick
    pool[pick]["beaten_by_margin"] = True  # the search.json says why the best score did not win
    return uniform


__all__ = ["rerank", "confirm", "confirmed", "mean_reading", "uniform_candidate", "prefer_uniform", "CONFIRM_SEED_STEP"]
