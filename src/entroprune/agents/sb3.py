"""Stable-Baselines3 agents (TD3, SAC, PPO) trained on the same PruningEnv."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..env import PruningEnv
from ..errors import ConfigError

SB3_ALGOS = ("td3", "sac", "ppo")


def run_sb3(algo: str, env: PruningEnv, episodes: int, seed: int, warmup: int = 0,
            on_step: Callable[[], bool] | None = None) -> None:
    """Train an SB3 algorithm for ``episodes`` episodes; the env reports each episode.

    Off-policy algorithms start learning after ``warmup`` episodes of random actions
    (SB3's ``learning_starts``), like AMC's warm-up. ``on_step`` returning False stops early.
    """
    from stable_baselines3 import PPO, SAC, TD3
    from stable_baselines3.common.callbacks import BaseCallback

    if algo not in SB3_ALGOS:
        raise ConfigError(f"unknown SB3 algorithm {algo!r}; choose one of {', '.join(SB3_ALGOS)}")
    steps = episodes * env.n
    common = {"seed": seed, "verbose": 0, "device": "cpu"}
    if algo == "td3":
        from stable_baselines3.common.noise import NormalActionNoise

        noise = NormalActionNoise(np.zeros(1), 0.2 * np.ones(1) * (1 - env.min_keep))
        model = TD3("MlpPolicy", env, action_noise=noise, learning_starts=warmup * env.n, gamma=1.0,
                    policy_kwargs={"net_arch": [300, 300]}, batch_size=64, **common)
    elif algo == "sac":
        model = SAC("MlpPolicy", env, learning_starts=warmup * env.n, gamma=1.0,
                    policy_kwargs={"net_arch": [300, 300]}, batch_size=64, **common)
    else:
        n_steps = max(env.n * 8, 16)
        model = PPO("MlpPolicy", env, n_steps=n_steps, batch_size=min(64, n_steps), gamma=1.0, **common)

    class Hook(BaseCallback):
        def _on_step(self) -> bool:
            return True if on_step is None else on_step()

    model.learn(total_timesteps=steps, callback=Hook())
