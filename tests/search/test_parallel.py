"""Parallel reward evaluation: episode batches, a local Ray with two workers, clear errors."""

import json
import sys

import pytest

from entroprune.api import search_checkpoint
from entroprune.errors import ConfigError, RunError
from entroprune.search import SearchConfig
from tests.conftest import assert_budget


def cfg(**kw):
    base = dict(macs_target=0.3, episodes=12, warmup=6, calib_size=64, val_size=64, checkpoint_every=4,
                round_to=2,
                rerank_top_k=0, band=None)  # the AMC loop itself; re-ranking and band: test_rerank.py
    base.update(kw)
    return SearchConfig(**base)


def episodes(folder):
    return [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]


def test_batch_of_one_is_the_sequential_loop(digits_ckpt, tmp_path):
    """episode_batch=1 must be AMC's loop exactly: act per layer, score the episode, learn, next episode.
    The reference is that loop written out here on the same environment, agent and reward."""
    import numpy as np

    from entroprune.api import build_structure, load_data_for_spec, load_model
    from entroprune.search.agents.ddpg import DDPGAgent
    from entroprune.search.env import PruningEnv
    from entroprune.search.rewards import RewardEvaluator

    c = cfg(episode_batch=1)
    search_checkpoint(digits_ckpt, tmp_path / "b", c, quiet=True)
    model, ckpt = load_model(digits_ckpt)
    data = load_data_for_spec(ckpt.spec, calib_size=None)
    calib = data.normalize(data.calib.x[: c.calib_size])
    val = (data.normalize(data.val.x[: c.val_size]), data.val.y[: c.val_size])
    structure = build_structure(model, ckpt.spec)
    env = PruningEnv(structure, None, c.macs_target, c.min_keep, c.round_to)
    agent = DDPGAgent(env.observation_space.shape[0], c.seed, warmup=c.warmup)
    scorer = RewardEvaluator(model.eval(), structure, c.reward, calib, val)
    reference = []
    for episode in range(c.episodes):
        obs, _ = env.reset()
        transitions, done = [], False
        while not done:
            a = agent.act(obs, episode)
            nxt, _, done, _, info = env.step([c.min_keep + a * (1 - c.min_keep)])
            applied = (info["applied"] - c.min_keep) / (1 - c.min_keep)
            transitions.append((obs, float(np.clip(applied, 0, 1)), nxt, done))
            obs = nxt
        reward = scorer.evaluate(info["counts"]).reward
        agent.observe(transitions, reward, episode)
        reference.append((info["counts"].tolist(), reward))
    scorer.close()
    logged = episodes(tmp_path / "b")
    assert [structure.keep_counts(e["policy"]).tolist() for e in logged] == [r[0] for r in reference]
    assert [e["reward"] for e in logged] == pytest.approx([r[1] for r in reference], rel=1e-9)


def test_batched_search_meets_budget_and_shares_warmup(digits_ckpt, tmp_path):
    seq = search_checkpoint(digits_ckpt, tmp_path / "seq", cfg(), quiet=True)
    bat = search_checkpoint(digits_ckpt, tmp_path / "bat", cfg(episode_batch=4), quiet=True)
    assert_budget(digits_ckpt, bat, 0.3)
    assert bat.episodes == 12
    s, b = episodes(tmp_path / "seq"), episodes(tmp_path / "bat")
    assert [e["episode"] for e in b] == list(range(12))
    # warm-up actions come from the agent's seeded generator, not from what it learnt
    assert [e["policy"] for e in s[:6]] == [e["policy"] for e in b[:6]]
    assert seq.summary["config"]["episode_batch"] == 1 and bat.summary["config"]["episode_batch"] == 4


def test_batched_search_resumes_exactly(digits_ckpt, tmp_path):
    full = search_checkpoint(digits_ckpt, tmp_path / "full", cfg(episode_batch=4), quiet=True)
    search_checkpoint(digits_ckpt, tmp_path / "part", cfg(episode_batch=4, episodes=8), quiet=True)
    import torch

    state = torch.load(tmp_path / "part" / "search_state.pt", weights_only=True)
    assert state["episode"] == 8
    state["config"] = json.dumps(cfg(episode_batch=4).resolved().to_dict())  # as a search records it
    torch.save(state, tmp_path / "part" / "search_state.pt")
    resumed = search_checkpoint(digits_ckpt, tmp_path / "part", cfg(episode_batch=4), resume=True, quiet=True)
    assert resumed.policy == full.policy and resumed.reward == full.reward


def test_ray_two_workers_give_a_valid_policy(digits_ckpt, tmp_path):
    pytest.importorskip("ray")
    ray_run = search_checkpoint(digits_ckpt, tmp_path / "ray", cfg(episode_batch=2), workers=2, quiet=True)
    assert_budget(digits_ckpt, ray_run, 0.3)
    assert ray_run.summary["workers"] == 2
    policy = json.loads((tmp_path / "ray" / "policy.json").read_text())
    assert policy["achieved"] == ray_run.achieved and policy["policy"] == ray_run.policy
    # the same batches scored in this process: same policies tried, same rewards (to rounding)
    local = search_checkpoint(digits_ckpt, tmp_path / "local", cfg(episode_batch=2), quiet=True)
    r, loc = episodes(tmp_path / "ray"), episodes(tmp_path / "local")
    assert len(r) == len(loc) == 12  # every episode, the learnt ones after the warm-up too
    assert [e["policy"] for e in r] == [e["policy"] for e in loc]
    assert [e["reward"] for e in r] == pytest.approx([e["reward"] for e in loc], rel=1e-4)
    assert local.summary["workers"] == 1


def test_workers_without_ray_is_a_clear_error(digits_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ConfigError, match=r"pip install 'entroprune\[ray\]'"):
        search_checkpoint(digits_ckpt, tmp_path / "s", cfg(), workers=2, quiet=True)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(workers=0), "`workers` must be >= 1"),
    (dict(ray_address="auto"), "`ray_address` needs `workers` >= 2"),
    (dict(workers=2, ray_address="127.0.0.1:1"), "cannot reach the Ray cluster at 127.0.0.1:1"),
    (dict(workers=2, ray_address="nonsense"), "is not auto or HOST:PORT"),
])
def test_bad_worker_options(digits_ckpt, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        search_checkpoint(digits_ckpt, tmp_path / "s", cfg(), quiet=True, **kwargs)
    assert not (tmp_path / "s").exists()


def test_sb3_agents_refuse_batches(digits_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="Stable-Baselines3 agents step one environment"):
        search_checkpoint(digits_ckpt, tmp_path / "s", cfg(agent="sb3:td3", episode_batch=2), quiet=True)
    assert not (tmp_path / "s" / "episodes.jsonl").exists()


def test_episode_batch_must_be_positive():
    with pytest.raises(ConfigError, match="`episode_batch` must be >= 1"):
        cfg(episode_batch=0).validate()


def test_dead_worker_is_one_line(digits_ckpt):
    ray = pytest.importorskip("ray")
    from entroprune.api import build_structure, load_data_for_spec, load_model
    from entroprune.search.rewards import RewardConfig
    from entroprune.search.scoring import RayScorer

    model, ckpt = load_model(digits_ckpt)
    data = load_data_for_spec(ckpt.spec)
    structure = build_structure(model, ckpt.spec)
    scorer = RayScorer(model, structure, RewardConfig(), data.normalize(data.calib.x[:32]), None, workers=2)
    try:
        full = structure.full_counts()
        assert len(scorer.score([full, full], [False, False])) == 2
        ray.kill(scorer.actors[1])
        with pytest.raises(RunError, match="a Ray worker failed .*`resume=True`"):
            scorer.score([full, full], [False, False])
    finally:
        scorer.close()
    assert not ray.is_initialized()
