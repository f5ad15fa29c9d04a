"""Stable-Baselines3 agents (TD3, SAC, PPO) trained on the same PruningEnv.

Resumable like the DDPG search: at episode boundaries where SB3 has stored every transition
and finished its updates (the start of a rollout), :func:`snapshot` captures the networks,
optimisers, replay buffer, counters and every generator SB3 draws from as tensors and plain
numbers (loadable with ``weights_only=True``, unlike SB3's own pickled zip), and
:func:`run_sb3` continues from such a snapshot as if it had never stopped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError
from ..env import PruningEnv

SB3_ALGOS = ("td3", "sac", "ppo")
_BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _build(algo: str, env: PruningEnv, seed: int, warmup: int):
    common = {"seed": seed, "verbose": 0, "device": "cpu"}
    model = _build_algo(algo, env, warmup, common)
    # SB3's default logger makes an empty tempdir/SB3-<time> folder on every learn(), even at verbose 0: one left
    # behind per search; a logger of no outputs writes nothing
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _build_algo(algo: str, env: PruningEnv, warmup: int, common: dict[str, Any]):
    from stable_baselines3 import PPO, SAC, TD3

    if algo == "td3":
        from stable_baselines3.common.noise import NormalActionNoise

        noise = NormalActionNoise(np.zeros(1), 0.2 * np.ones(1) * (1 - env.min_keep))
        return TD3("MlpPolicy", env, action_noise=noise, learning_starts=warmup * env.n, gamma=1.0,
                   policy_kwargs={"net_arch": [300, 300]}, batch_size=64, **common)
    if algo == "sac":
        return SAC("MlpPolicy", env, learning_starts=warmup * env.n, gamma=1.0,
                   policy_kwargs={"net_arch": [300, 300]}, batch_size=64, **common)
    n_steps = max(env.n * 8, 16)
    return PPO("MlpPolicy", env, n_steps=n_steps, batch_size=min(64, n_steps), gamma=1.0, **common)


def snapshot(model) -> dict[str, Any]:
    """Everything SB3 needs to go on from here, as tensors and plain numbers."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "params": model.get_parameters(),
        "variables": {k: getattr(model, k).detach().clone() for k in ("log_ent_coef",)
                      if isinstance(getattr(model, k, None), torch.Tensor)},
        "counters": {"num_timesteps": model.num_timesteps, "n_updates": model._n_updates,
                     "episode_num": model._episode_num},
        "rng": {"torch": torch.get_rng_state(),
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
                "python": [py_state[0], list(py_state[1]), py_state[2]],
                "action_space": model.action_space.np_random.bit_generator.state},
    }
    buf = getattr(model, "replay_buffer", None)
    if buf is not None:
        n = buf.buffer_size if buf.full else buf.pos
        state["buffer"] = {"pos": buf.pos, "full": buf.full,
                           **{k: torch.from_numpy(getattr(buf, k)[:n].copy()) for k in _BUFFER_FIELDS}}
    return state


def _restore(model, state: dict[str, Any]) -> None:
    model.set_parameters(state["params"], exact_match=True)
    for k, v in state["variables"].items():
        getattr(model, k).data.copy_(v)
    c = state["counters"]
    model.num_timesteps, model._n_updates, model._episode_num = c["num_timesteps"], c["n_updates"], c["episode_num"]
    if "buffer" in state:
        buf, b = model.replay_buffer, state["buffer"]
        for k in _BUFFER_FIELDS:
            arr = b[k].numpy()
            getattr(buf, k)[: len(arr)] = arr
        buf.pos, buf.full = int(b["pos"]), bool(b["full"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    p = rng["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    model.action_space.np_random.bit_generator.state = rng["action_space"]


def run_sb3(algo: str, env: PruningEnv, episodes: int, seed: int, warmup: int = 0,
            on_step: Callable[[], bool] | None = None, resume: dict[str, Any] | None = None,
            on_boundary: Callable[[Callable[[], dict[str, Any]], bool], None] | None = None) -> None:
    """Train an SB3 algorithm for ``episodes`` episodes; the env reports each episode.

    Off-policy algorithms start learning after ``warmup`` episodes of random actions
    (SB3's ``learning_starts``), like AMC's warm-up. ``on_step`` returning False stops early.
    ``on_boundary(take_snapshot, final)`` is called wherever a snapshot is consistent (every
    episode for TD3/SAC, every rollout of 8 episodes for PPO, and at the end); ``resume`` is
    such a snapshot to continue from.
    """
    from stable_baselines3.common.callbacks import BaseCallback

    if algo not in SB3_ALGOS:
        raise ConfigError(f"unknown SB3 algorithm {algo!r}; choose one of {', '.join(SB3_ALGOS)}")
    steps = episodes * env.n
    model = _build(algo, env, seed, warmup)
    if resume is not None:
        _restore(model, resume)

    class Hook(BaseCallback):
        def _on_rollout_start(self) -> None:
            # a rollout starts after the last transition was stored and learnt from
            if on_boundary is not None and env.t == 0 and self.model.num_timesteps > 0:
                on_boundary(lambda: snapshot(self.model), False)

        def _on_step(self) -> bool:
            return True if on_step is None else on_step()

    remaining = steps - model.num_timesteps
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=Hook(), reset_num_timesteps=resume is None)
    if on_boundary is not None and model.num_timesteps >= steps:
        on_boundary(lambda: snapshot(model), True)
