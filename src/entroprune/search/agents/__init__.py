"""Agents that choose per-group keep ratios. ``sb3:*`` names run Stable-Baselines3."""

from __future__ import annotations

from ...errors import ConfigError
from .base import Agent
from .baselines import FixedPolicyAgent, GlobalAgent, RandomAgent, UniformAgent
from .ddpg import DDPGAgent

AGENTS = ("ddpg", "uniform", "global", "random", "sb3:td3", "sb3:sac", "sb3:ppo")


def make_agent(name: str, obs_dim: int, seed: int = 0, **kwargs) -> Agent:
    """Build an in-house agent by name (SB3 agents are driven by :mod:`entroprune.search.agents.sb3`)."""
    if name == "ddpg":
        return DDPGAgent(obs_dim, seed, **kwargs)
    if name == "random":
        return RandomAgent(obs_dim, seed)
    if name == "uniform":
        return UniformAgent(obs_dim, seed)
    if name == "global":
        return GlobalAgent(obs_dim, seed, **kwargs)
    raise ConfigError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")


__all__ = ["AGENTS", "Agent", "DDPGAgent", "FixedPolicyAgent", "GlobalAgent", "RandomAgent", "UniformAgent", "make_agent"]
