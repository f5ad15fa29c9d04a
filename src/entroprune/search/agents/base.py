"""What every in-house agent provides to the search loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch


class Agent(ABC):
    """Chooses a normalised action in [0, 1] per step; learns from finished episodes.

    The environment maps an action ``a`` to the keep ratio ``min_keep + a * (1 - min_keep)``
    before its wall clips it. Agents own their random generators (seeded once), so a search
    is reproducible and its state can be saved and resumed exactly.
    """

    #: the name the CLI, configs and the registry (``entroprune.search.agents.REGISTRY``) know it by.
    name = "agent"
    #: episodes this agent needs at most (a policy solved rather than searched needs one); None = as many as asked.
    max_episodes: int | None = None
    #: whether its actions depend on what it learnt (an entropy search with such an agent sets groups the
    #: reward cannot see blind, so the loop warns); fixed and random agents do not.
    learns: bool = False

    def __init__(self, obs_dim: int, seed: int = 0):
        self.obs_dim = obs_dim
        self.rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator().manual_seed(seed)

    @classmethod
    def from_config(cls, obs_dim: int, config: Any) -> Agent:
        """Build the agent for a search (``config``: its :class:`~entroprune.search.SearchConfig`)."""
        return cls(obs_dim, config.seed)

    def setup(self, model: Any, structure: Any, config: Any, budget: Any = None) -> None:
        """Solve what the agent needs from the model before the first episode (default: nothing);
        ``budget`` (a :class:`~entroprune.search.budget.Budget`) when the search has a latency target."""

    @abstractmethod
    def act(self, obs: np.ndarray, episode: int) -> float:
        """Normalised action for this step of episode ``episode`` (0-based)."""

    def observe(self, transitions: list[tuple[np.ndarray, float, np.ndarray, bool]], reward: float,
                episode: int) -> None:
        """A finished episode: (obs, applied normalised action, next obs, done) and its reward."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "torch_rng": self.torch_rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.torch_rng.set_state(state["torch_rng"])
