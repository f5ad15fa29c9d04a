"""The search: an agent proposes per-group keep ratios in a Gymnasium environment, rewards score them,
and the best are re-ranked after label-free recovery.

* :mod:`.config` — a search's settings (:class:`SearchConfig`) and result;
* :mod:`.loop` — the search loop: episodes, logging, resume, the run folder;
* :mod:`.policies` — the uniform and fixed policies, the band around uniform, the search's environment;
* :mod:`.rerank` — the second stage: candidates re-scored after recovery, confirmation, the uniform margin;
* :mod:`.env` — the environment and its action wall;
* :mod:`.budget` — what a policy may spend: MACs and, when asked, predicted latency;
* :mod:`.free_channels` — after a latency-targeted search, the channel steps the runtime runs at no cost;
* :mod:`.rewards` — entropy, accuracy, combined and kl rewards;
* :mod:`.recovery` — label-free distillation before a candidate is scored;
* :mod:`.scoring` — scoring episode batches in this process or on Ray actors;
* :mod:`.agents` — DDPG, Stable-Baselines3, uniform, global and random agents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name is imported on first use (__getattr__)
    from .agents import AGENTS, FIXED_AGENTS
    from .config import RewardConfig, SearchConfig, SearchResult
    from .env import PruningEnv
    from .loop import LOG_FILE, POLICY_FILE, STATE_FILE, SearchInterrupted, run_search
    from .policies import band_bounds, fixed_policy_counts, matching_macs_target, uniform_ratio
    from .recovery import Recovery
    from .reward_kinds import REWARDS
    from .rewards import RewardEvaluator, RewardResult

__all__ = ["AGENTS", "FIXED_AGENTS", "LOG_FILE", "POLICY_FILE", "REWARDS", "STATE_FILE", "PruningEnv", "Recovery",
           "RewardConfig", "RewardEvaluator", "RewardResult", "SearchConfig", "SearchInterrupted", "SearchResult",
           "band_bounds", "fixed_policy_counts", "matching_macs_target", "run_search", "uniform_ratio"]

# Where each name lives: `entroprune.search.config` (the settings the command line reads) imports no torch,
# and neither does this package until a name below is used. (The re-ranking is `entroprune.search.rerank.rerank`:
# a name of the package's own would be replaced by the submodule of the same name as soon as that is imported.)
_HOMES = {
    **dict.fromkeys(["AGENTS", "FIXED_AGENTS"], "agents"),
    **dict.fromkeys(["RewardConfig", "SearchConfig", "SearchResult"], "config"),
    "PruningEnv": "env",
    **dict.fromkeys(["LOG_FILE", "POLICY_FILE", "STATE_FILE", "SearchInterrupted", "run_search"], "loop"),
    **dict.fromkeys(["band_bounds", "fixed_policy_counts", "matching_macs_target", "uniform_ratio"], "policies"),
    "Recovery": "recovery",
    "REWARDS": "reward_kinds",
    **dict.fromkeys(["RewardEvaluator", "RewardResult"], "rewards"),
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES, __all__)
