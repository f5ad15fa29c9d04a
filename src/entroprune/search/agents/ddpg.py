"""DDPG as in AMC (He et al. 2018, mit-han-lab/amc), readable top to bottom.

Recipe: actor and critic with two hidden layers of 300 units; ``warmup`` episodes of
uniformly random actions; afterwards truncated-normal exploration around the actor's
action with ``sigma`` decaying by ``sigma_decay`` per episode; every transition of an
episode stored with the episode's final reward; a moving-average reward baseline
subtracted from sampled rewards; one gradient step per stored transition; soft target
updates; discount 1.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .base import Agent


class Actor(nn.Module):
    def __init__(self, obs_dim: int, hidden: int = 300):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class Critic(nn.Module):
    def __init__(self, obs_dim: int, hidden: int = 300):
        super().__init__()
        self.fc_obs = nn.Linear(obs_dim, hidden)
        self.fc_act = nn.Linear(1, hidden)
        self.net = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc_obs(obs) + self.fc_act(act))


class DDPGAgent(Agent):
    """AMC's DDPG agent.

    :param obs_dim: observation size.
    :param seed: seeds network initialisation, exploration and replay sampling.
    :param hidden: units in each of the two hidden layers (AMC: 300).
    :param lr_actor: Adam learning rate of the actor (AMC: 1e-4; here 1e-3: with 1e-4 the actor
        barely moved within a 100-300 episode search, measured in tests/search/test_loop.py).
    :param lr_critic: Adam learning rate of the critic (AMC: 1e-3).
    :param warmup: episodes of uniformly random actions before learning (AMC: 100).
    :param sigma: initial std of the truncated-normal exploration noise (AMC: 0.5).
    :param sigma_decay: per-episode decay of sigma after warm-up (AMC: 0.95).
    :param tau: soft target update rate (AMC: 0.01).
    :param gamma: discount (AMC: 1.0).
    :param batch_size: transitions per gradient step (AMC: 64).
    :param buffer_size: replay capacity in transitions.
    :param baseline_alpha: moving-average factor of the reward baseline (AMC: 0.5).
    :param scale_rewards: divide baseline-subtracted rewards by the std of the rewards in the
        replay buffer (not in AMC). Entropy rewards of different policies differ by ~1%, and
        unscaled the critic needs far more updates to resolve them than a 300-episode search
        gives; scaling makes the reward's units irrelevant.
    """

    name = "ddpg"
    learns = True

    @classmethod
    def from_config(cls, obs_dim: int, config: Any) -> DDPGAgent:
        return cls(obs_dim, config.seed, warmup=config.warmup, **config.ddpg)

    def __init__(self, obs_dim: int, seed: int = 0, hidden: int = 300, lr_actor: float = 1e-3,
                 lr_critic: float = 1e-3, warmup: int = 100, sigma: float = 0.5, sigma_decay: float = 0.95,
                 tau: float = 0.01, gamma: float = 1.0, batch_size: int = 64, buffer_size: int = 6000,
                 baseline_alpha: float = 0.5, scale_rewards: bool = True):
        super().__init__(obs_dim, seed)
        self.warmup, self.sigma0, self.sigma_decay = warmup, sigma, sigma_decay
        self.tau, self.gamma, self.batch_size, self.baseline_alpha = tau, gamma, batch_size, baseline_alpha
        self.scale_rewards = scale_rewards
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor, self.critic = Actor(obs_dim, hidden), Critic(obs_dim, hidden)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr_critic)
        self.buffer_size = buffer_size
        self.buffer = {"obs": torch.zeros(buffer_size, obs_dim), "act": torch.zeros(buffer_size, 1),
                       "rew": torch.zeros(buffer_size, 1), "next": torch.zeros(buffer_size, obs_dim),
                       "done": torch.zeros(buffer_size, 1)}
        self.size = self.pos = 0
        self.moving_average: float | None = None

    def sigma(self, episode: int) -> float:
        return self.sigma0 * self.sigma_decay ** max(0, episode - self.warmup)

    # ---------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, episode: int) -> float:
        if episode < self.warmup:
            return float(self.rng.uniform(0.0, 1.0))
        from scipy.stats import truncnorm  # here, not at the top: scipy.stats costs every CLI command ~2 s to import

        mu = float(self.actor(torch.as_tensor(obs, dtype=torch.float32)[None]).item())
        sigma = self.sigma(episode)
        a, b = (0.0 - mu) / sigma, (1.0 - mu) / sigma
        return float(np.clip(truncnorm.rvs(a, b, loc=mu, scale=sigma, random_state=self.rng), 0.0, 1.0))

    # ---------------------------------------------------------------- learning
    def observe(self, transitions, reward: float, episode: int) -> None:
        for obs, act, nxt, done in transitions:  # every step carries the episode's reward
            i = self.pos
            self.buffer["obs"][i] = torch.as_tensor(obs)
            self.buffer["act"][i, 0] = act
            self.buffer["rew"][i, 0] = reward
            self.buffer["next"][i] = torch.as_tensor(nxt)
            self.buffer["done"][i, 0] = float(done)
            self.pos = (self.pos + 1) % self.buffer_size
            self.size = min(self.size + 1, self.buffer_size)
            if episode >= self.warmup:
                self.update()

    def update(self) -> None:
        if self.size < self.batch_size:
            return
        idx = torch.randint(0, self.size, (self.batch_size,), generator=self.torch_rng)
        obs, act, rew = self.buffer["obs"][idx], self.buffer["act"][idx], self.buffer["rew"][idx]
        nxt, done = self.buffer["next"][idx], self.buffer["done"][idx]
        batch_mean = float(rew.mean())
        if self.moving_average is None:
            self.moving_average = batch_mean
        else:
            self.moving_average += (1 - self.baseline_alpha) * (batch_mean - self.moving_average)
        rew = rew - self.moving_average
        if self.scale_rewards:
            rew = rew / (float(self.buffer["rew"][: self.size].std()) + 1e-8)
        with torch.no_grad():
            target_q = rew + self.gamma * (1 - done) * self.critic_target(nxt, self.actor_target(nxt))
        critic_loss = nn.functional.mse_loss(self.critic(obs, act), target_q)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss = -self.critic(obs, self.actor(obs)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, tp_ in zip(net.parameters(), target.parameters(), strict=True):
                    tp_.mul_(1 - self.tau).add_(p, alpha=self.tau)

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "buffer": {k: v.clone() for k, v in self.buffer.items()}, "size": self.size, "pos": self.pos,
            "moving_average": self.moving_average})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for key in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, key).load_state_dict(state[key])
        self.buffer = {k: v.clone() for k, v in state["buffer"].items()}
        self.size, self.pos, self.moving_average = state["size"], state["pos"], state["moving_average"]
