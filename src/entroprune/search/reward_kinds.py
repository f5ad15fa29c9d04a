"""Reward kinds by name: the readings each takes off a pruned net and the formula that makes them one number.

Free of torch (the evaluator that takes the readings is :mod:`entroprune.search.rewards`), so that a config's
reward is checked, and the command line starts, without importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..plugins import Registry

if TYPE_CHECKING:
    from .config import RewardConfig


@dataclass(frozen=True)
class RewardKind:
    """A reward: the readings it takes off a pruned net (``entropy``, ``accuracy``, ``kl``) and how it
    turns them into one number, higher = better."""

    needs: frozenset[str]
    formula: Callable[[RewardConfig, dict[str, float | None]], float]

    @property
    def needs_labels(self) -> bool:
        """Validation accuracy is the only reading that needs labelled images."""
        return "accuracy" in self.needs


#: The reward kinds by name; :func:`register_reward` adds one (the CLI, configs and the re-ranking read it).
REWARDS: Registry[RewardKind] = Registry("reward")


def register_reward(name: str, needs: set[str]) -> Callable[[Callable], Callable]:
    def add(formula: Callable[[RewardConfig, dict[str, float | None]], float]) -> Callable:
        REWARDS[name] = RewardKind(frozenset(needs), formula)
        return formula
    return add


def _sign(config: RewardConfig) -> float:
    return 1.0 if config.maximize else -1.0  # the paper minimises entropy; ``maximize`` is for research


@register_reward("entropy", {"entropy"})
def _entropy_reward(config: RewardConfig, m: dict[str, float | None]) -> float:
    return _sign(config) * m["entropy"]


@register_reward("accuracy", {"accuracy"})
def _accuracy_reward(config: RewardConfig, m: dict[str, float | None]) -> float:
    return m["accuracy"]  # AMC's reward


@register_reward("combined", {"entropy", "accuracy"})
def _combined_reward(config: RewardConfig, m: dict[str, float | None]) -> float:
    return _sign(config) * m["entropy"] + config.accuracy_weight * m["accuracy"]


@register_reward("kl", {"kl"})
def _kl_reward(config: RewardConfig, m: dict[str, float | None]) -> float:
    return -m["kl"]  # label-free: agreement with the unpruned net's outputs
