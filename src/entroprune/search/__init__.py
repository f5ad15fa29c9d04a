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

from .agents import AGENTS, FIXED_AGENTS
from .config import SearchConfig, SearchResult
from .env import PruningEnv
from .loop import LOG_FILE, POLICY_FILE, STATE_FILE, SearchInterrupted, run_search
from .policies import band_bounds, fixed_policy_counts, matching_macs_target, uniform_ratio
from .recovery import Recovery
from .rerank import rerank
from .rewards import REWARDS, RewardConfig, RewardEvaluator, RewardResult

__all__ = ["AGENTS", "FIXED_AGENTS", "LOG_FILE", "POLICY_FILE", "REWARDS", "STATE_FILE", "PruningEnv", "Recovery",
           "RewardConfig", "RewardEvaluator", "RewardResult", "SearchConfig", "SearchInterrupted", "SearchResult",
           "band_bounds", "fixed_policy_counts", "matching_macs_target", "rerank", "run_search", "uniform_ratio"]
