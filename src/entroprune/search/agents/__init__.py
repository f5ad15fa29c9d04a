"""Agents that choose per-group keep ratios, by name. ``sb3:*`` names run Stable-Baselines3."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .base import Agent
from .baselines import FixedPolicyAgent, GlobalAgent, RandomAgent, UniformAgent
from .ddpg import DDPGAgent

#: in-house agents by name; each class declares what the loop needs to know (max_episodes, learns).
REGISTRY: dict[str, type[Agent]] = {cls.name: cls for cls in (DDPGAgent, UniformAgent, GlobalAgent, RandomAgent)}
SB3_AGENTS = ("sb3:td3", "sb3:sac", "sb3:ppo")
AGENTS = (*REGISTRY, *SB3_AGENTS)
#: agents whose one policy is solved rather than searched
FIXED_AGENTS = tuple(name for name, cls in REGISTRY.items() if cls.max_episodes == 1)


def check_agent(name: str) -> None:
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")


def learns(name: str) -> bool:
    """Whether the agent's actions follow what it learnt (every Stable-Baselines3 agent does)."""
    check_agent(name)
    return name in SB3_AGENTS or REGISTRY[name].learns


def make_agent(name: str, obs_dim: int, config: Any) -> Agent:
    """Build an in-house agent for a search (SB3 agents are driven by :mod:`entroprune.search.agents.sb3`)."""
    check_agent(name)
    if name not in REGISTRY:
        raise ConfigError(f"{name} is a Stable-Baselines3 agent; run it through the search loop")
    return REGISTRY[name].from_config(obs_dim, config)


__all__ = ["AGENTS", "FIXED_AGENTS", "REGISTRY", "SB3_AGENTS", "Agent", "DDPGAgent", "FixedPolicyAgent",
           "GlobalAgent", "RandomAgent", "UniformAgent", "check_agent", "learns", "make_agent"]
