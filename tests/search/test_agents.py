"""DDPG's recipe, part by part: warm-up, exploration decay, reward baseline and scaling, and the
direction it learns in (a one-step bandit whose best action is known)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from entroprune.search.agents.ddpg import DDPGAgent

OBS = np.full(4, 0.5, dtype=np.float32)


def fill(agent: DDPGAgent, actions, rewards, done: float = 1.0) -> None:
    """Write transitions straight into the replay buffer (no updates)."""
    for a, r in zip(actions, rewards, strict=True):
        i = agent.pos
        agent.buffer["obs"][i] = torch.as_tensor(OBS)
        agent.buffer["act"][i, 0] = float(a)
        agent.buffer["rew"][i, 0] = float(r)
        agent.buffer["next"][i] = torch.as_tensor(OBS)
        agent.buffer["done"][i, 0] = done
        agent.pos, agent.size = agent.pos + 1, agent.size + 1


def near_any(values: torch.Tensor, allowed: list[float]) -> bool:
    """Every value equals one of ``allowed`` (to float32 precision)."""
    v = values.flatten().double().numpy()[:, None]
    return bool((np.abs(v - np.asarray(allowed)[None]).min(1) < 1e-5).all())


def test_warmup_is_uniform_and_seeded_then_exploration_narrows():
    a, b = DDPGAgent(4, seed=3, warmup=50), DDPGAgent(4, seed=3, warmup=50)
    warm = [a.act(OBS, e) for e in range(50)]
    assert warm == [b.act(OBS, e) for e in range(50)]  # own generator: same seed, same actions
    assert min(warm) < 0.15 and max(warm) > 0.85  # spread over [0, 1], not around the actor
    assert a.sigma(49) == a.sigma(50) == 0.5 and a.sigma(60) == pytest.approx(0.5 * 0.95 ** 10)
    early = np.std([a.act(OBS, 50) for _ in range(300)])
    late = np.std([a.act(OBS, 150) for _ in range(300)])  # sigma 0.5 * 0.95**100 = 0.003
    assert late < 0.05 * early and late < 0.01


def test_reward_baseline_is_amcs_moving_average_and_rewards_are_scaled(monkeypatch):
    agent = DDPGAgent(4, seed=0, warmup=0, batch_size=8, baseline_alpha=0.25)
    captured = []
    real = torch.nn.functional.mse_loss
    monkeypatch.setattr(torch.nn.functional, "mse_loss", lambda q, target: captured.append(target) or real(q, target))
    fill(agent, [0.5] * 16, [2.0] * 16)
    agent.update()
    assert agent.moving_average == pytest.approx(2.0)  # the first batch's mean
    agent.buffer["rew"][:16] = 4.0
    agent.update()
    assert agent.moving_average == pytest.approx(2.0 + 0.75 * (4.0 - 2.0))  # AMC: ma += (1 - alpha)(mean - ma)
    # done transitions: the critic's target is the scaled, baseline-subtracted reward itself
    agent.buffer["rew"][:16, 0] = torch.tensor([0.0, 1.0] * 8)
    agent.update()
    ma, std = agent.moving_average, float(agent.buffer["rew"][:16].std())
    assert near_any(captured[-1], [(0 - ma) / std, (1 - ma) / std])
    unscaled = DDPGAgent(4, seed=0, warmup=0, batch_size=8, scale_rewards=False)
    fill(unscaled, [0.5] * 16, [0.0, 1.0] * 8)
    unscaled.update()
    assert near_any(captured[-1], [-unscaled.moving_average, 1 - unscaled.moving_average])


def test_ddpg_learns_the_better_action_of_a_bandit():
    """Reward peaks at action 0.8: after learning from uniformly tried actions the actor's action must
    approach it (a flipped actor loss or critic target drives it to the other end)."""
    agent = DDPGAgent(4, seed=0, warmup=0, batch_size=64, hidden=64)
    rng = np.random.default_rng(0)
    actions = rng.uniform(0, 1, 512)
    fill(agent, actions, -(actions - 0.8) ** 2)
    for _ in range(2000):  # measured: 0.999 after 500 steps (critic still near-linear), 0.78-0.80 from 1500
        agent.update()
    with torch.no_grad():
        chosen = float(agent.actor(torch.as_tensor(OBS)[None]).item())
    assert abs(chosen - 0.8) < 0.1, chosen
