import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from entroprune.api import search_checkpoint
from entroprune.search import SearchConfig
from entroprune.search.rewards import RewardConfig
from tests.conftest import assert_budget


def _wait_for_episodes(out, n: int, state: bool = False, timeout: float = 120) -> None:
    """Until a search subprocess has logged ``n`` episodes (and saved its state, with ``state``)."""
    deadline = time.time() + timeout
    log = out / "episodes.jsonl"
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= n and (not state or (out / "search_state.pt").exists()):
            return
        time.sleep(0.05)


def cfg(**kw):
    # the AMC loop itself (re-ranking and band: test_rerank.py), unrounded: the default's multiples of 8 leave
    # the small digits net too few policies for the learning tests to tell an agent from its warm-up
    base = dict(macs_target=0.3, episodes=24, warmup=8, calib_size=64, val_size=128, checkpoint_every=4,
                rerank_top_k=0, band=None, round_to=1)
    base.update(kw)
    return SearchConfig(**base)


@pytest.mark.parametrize("agent", ["ddpg", "uniform"])
def test_a_parameter_target_holds_beside_the_macs_target(digits_ckpt, tmp_path, agent):
    """Where the MACs target alone keeps more parameters than allowed, the search (the wall, the uniform and global
    policies of the re-ranking) keeps both, as torch-pruning counts the pruned net; the summary says so."""
    from tests.conftest import measured_fractions

    free = search_checkpoint(digits_ckpt, tmp_path / "free", cfg(agent="uniform", macs_target=0.5), quiet=True)
    params_free = measured_fractions(digits_ckpt, free.counts)[1]
    target = round(0.7 * params_free, 3)
    res = search_checkpoint(digits_ckpt, tmp_path / agent, cfg(agent=agent, macs_target=0.5, params_target=target,
                                                              episodes=12, warmup=4, rerank_top_k=3,
                                                              recovery_steps=2), quiet=True)
    macs, params = measured_fractions(digits_ckpt, res.counts)
    assert macs <= 0.5 * (1 + 1e-6) and params <= target * (1 + 1e-6), (macs, params, target)
    assert res.summary["params_fraction"] == pytest.approx(params, rel=1e-3) and res.summary["params_target"] == target
    if agent == "ddpg":  # uniform and global were pooled under the same budget
        assert {c["source"] for c in res.summary["rerank"]} >= {"uniform", "global"}


def test_an_unreachable_parameter_target_is_one_line(digits_ckpt, tmp_path):
    from entroprune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"`params_target` 0.001 is unreachable: the smallest policy the search "
                                          r"space allows keeps [0-9.]+% of the parameters"):
        search_checkpoint(digits_ckpt, tmp_path / "s", cfg(params_target=0.001), quiet=True)
    assert not (tmp_path / "s" / "policy.json").exists()


def test_search_is_deterministic(digits_ckpt, tmp_path):
    a = search_checkpoint(digits_ckpt, tmp_path / "a", cfg(), quiet=True)
    b = search_checkpoint(digits_ckpt, tmp_path / "b", cfg(), quiet=True)
    assert a.policy == b.policy and a.reward == b.reward
    policy = json.loads((tmp_path / "a" / "policy.json").read_text())
    assert policy["policy"] == a.policy and policy["seed"] == 0
    assert_budget(digits_ckpt, a, 0.3)
    assert policy["achieved"] == a.achieved and a.summary["within_tolerance"]
    lines = (tmp_path / "a" / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == list(range(24))
    assert {"pruning", "bn_recalibration", "entropy", "reward_forward", "agent"} <= set(json.loads(lines[0])["times"])


def test_resume_gives_same_policy(digits_ckpt, tmp_path):
    full = search_checkpoint(digits_ckpt, tmp_path / "full", cfg(), quiet=True)
    # an interrupted run: the first 10 episodes (state saved at 8), plus a log beyond it
    search_checkpoint(digits_ckpt, tmp_path / "part", cfg(episodes=10), quiet=True)
    state = torch.load(tmp_path / "part" / "search_state.pt", weights_only=True)
    state["config"] = json.dumps(cfg().resolved().to_dict())  # as a search records it: its defaults settled
    state_8 = dict(state)
    assert state_8["episode"] == 10
    torch.save(state_8, tmp_path / "part" / "search_state.pt")
    before = (tmp_path / "part" / "episodes.jsonl").read_text().splitlines()
    import entroprune.search.rewards as rewards

    scored, original = [], rewards.RewardEvaluator.evaluate

    def counting(self, counts, with_accuracy=False):
        scored.append(1)
        return original(self, counts, with_accuracy)

    rewards.RewardEvaluator.evaluate = counting
    try:
        resumed = search_checkpoint(digits_ckpt, tmp_path / "part", cfg(), resume=True, quiet=True)
    finally:
        rewards.RewardEvaluator.evaluate = original
    assert resumed.policy == full.policy and resumed.reward == full.reward
    lines = (tmp_path / "part" / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == list(range(24))
    assert lines[:10] == before[:10]  # the saved episodes are kept as they were, not redone
    assert len(scored) == 14  # only the episodes that remained were scored


def test_resume_refuses_another_checkpoint(digits_ckpt, tmp_path):
    from entroprune.errors import ConfigError

    search_checkpoint(digits_ckpt, tmp_path / "s", cfg(episodes=10), quiet=True)
    other = tmp_path / "other.pt"
    other.write_bytes(digits_ckpt.read_bytes())
    with pytest.raises(ConfigError, match="another checkpoint"):
        search_checkpoint(other, tmp_path / "s", cfg(episodes=10), resume=True, quiet=True)
    # the same checkpoint with another channel ranking would mix two searches in one log
    with pytest.raises(ConfigError, match=r'other settings \(`importance` "auto" there, "l2" now\)'):
        search_checkpoint(digits_ckpt, tmp_path / "s", cfg(episodes=10), resume=True, quiet=True, importance="l2")
    # the same path holding another net (retrained in place): refused by its weights
    moved = tmp_path / "same_path.pt"
    moved.write_bytes(digits_ckpt.read_bytes())
    search_checkpoint(moved, tmp_path / "t", cfg(episodes=10), quiet=True)
    raw = torch.load(moved, weights_only=True)
    raw["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in raw["state_dict"].items()}
    torch.save(raw, moved)
    with pytest.raises(ConfigError, match="another checkpoint_weights_sha256"):
        search_checkpoint(moved, tmp_path / "t", cfg(episodes=10), resume=True, quiet=True)
    # the same weights in a file of other training times (a removed cache retrained with the same seed) resume
    same = tmp_path / "same_weights.pt"
    same.write_bytes(digits_ckpt.read_bytes())
    search_checkpoint(same, tmp_path / "u", cfg(episodes=10), quiet=True)
    raw = torch.load(same, weights_only=True)
    torch.save({**raw, "metrics": {"retrained": 1}}, same)
    search_checkpoint(same, tmp_path / "u", cfg(episodes=10), resume=True, quiet=True)


def test_a_search_state_naming_no_ranking_resumes_as_l1(digits_ckpt, tmp_path):
    """A state saved before the ranking could be chosen names none in its settings or inputs: it searched by
    L1 then, so it resumes under `importance: l1` and is refused under today's default, `auto`."""
    from entroprune.errors import ConfigError
    from entroprune.search.loop import STATE_FILE

    search_checkpoint(digits_ckpt, tmp_path / "s", cfg(episodes=10, importance="l1"), quiet=True)
    state = torch.load(tmp_path / "s" / STATE_FILE, weights_only=True)
    config, meta = json.loads(state["config"]), json.loads(state["meta"])
    assert config.pop("importance") == meta.pop("importance") == "l1"
    torch.save({**state, "config": json.dumps(config), "meta": json.dumps(meta)}, tmp_path / "s" / STATE_FILE)
    with pytest.raises(ConfigError, match=r'other settings \(`importance` "l1" there, "auto" now\)'):
        search_checkpoint(digits_ckpt, tmp_path / "s", cfg(episodes=10), resume=True, quiet=True)
    search_checkpoint(digits_ckpt, tmp_path / "s", cfg(episodes=10, importance="l1"), resume=True, quiet=True)


def test_a_search_state_from_before_the_refits_options_resumes_as_it_refitted(digits_ckpt, tmp_path):
    """A state saved before the reward's `refit_norms` and `refit_head` existed scored refitted candidates with
    the classifier refitted and no norms: it resumes where today's settings refit so (unset or so set) and is
    refused where they refit otherwise."""
    from entroprune.errors import ConfigError
    from entroprune.search import RewardConfig
    from entroprune.search.loop import STATE_FILE

    search_checkpoint(digits_ckpt, tmp_path / "s", cfg(episodes=10), quiet=True)
    state = torch.load(tmp_path / "s" / STATE_FILE, weights_only=True)
    config = json.loads(state["config"])
    assert config["reward"].pop("refit_norms") is None and config["reward"].pop("refit_head") is None
    torch.save({**state, "config": json.dumps(config)}, tmp_path / "s" / STATE_FILE)
    saved = (tmp_path / "s" / STATE_FILE).read_bytes()
    with pytest.raises(ConfigError, match=r"other settings \(`reward` .* there, .* now\)"):
        search_checkpoint(digits_ckpt, tmp_path / "s", cfg(episodes=10, reward=RewardConfig(refit_head=False)),
                          resume=True, quiet=True)
    for reward in (RewardConfig(), RewardConfig(refit_head=True, refit_norms=False)):
        (tmp_path / "s" / STATE_FILE).write_bytes(saved)
        search_checkpoint(digits_ckpt, tmp_path / "s", cfg(episodes=10, reward=reward), resume=True, quiet=True)


def test_ddpg_improves_over_warmup(digits_ckpt, tmp_path):
    """Over four seeds, not a chosen one: every seed raises the mean reward of its last episodes above
    its random warm-up's, and at least half beat the warm-up's best (measured: 2 of 4 with today's reward, the
    same seeds and last-20 gains of 0.04-0.09 with 100 episodes as with 150, in 60% of the time;
    docs/method.md's 3 of 4 predates the one-pass reward)."""
    beat_best = 0
    for seed in range(4):
        res = search_checkpoint(digits_ckpt, tmp_path / f"d{seed}", cfg(episodes=100, warmup=20, seed=seed),
                                quiet=True)
        rewards = [json.loads(line)["reward"]
                   for line in (tmp_path / f"d{seed}" / "episodes.jsonl").read_text().splitlines()]
        assert np.mean(rewards[-20:]) > np.mean(rewards[:20]), seed  # the policy itself got better
        assert res.reward == max(rewards)
        beat_best += max(rewards[20:]) > max(rewards[:20])
    assert beat_best >= 2


@pytest.mark.parametrize("agent", ["uniform", "random", "sb3:td3", "sb3:sac", "sb3:ppo"])
def test_other_agents_meet_budget(digits_ckpt, tmp_path, agent, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    res = search_checkpoint(digits_ckpt, tmp_path / agent.replace(":", "_"),
                            cfg(agent=agent, episodes=6, warmup=2), quiet=True)
    assert_budget(digits_ckpt, res, 0.3)
    assert res.episodes == (1 if agent == "uniform" else 6)
    assert list((tmp_path / "tmp").iterdir()) == []  # SB3's logger left a folder in tempdir per search


@pytest.mark.parametrize("agent", ["sb3:td3", "sb3:sac", "sb3:ppo"])
def test_sb3_search_resumes_after_a_crash(digits_ckpt, tmp_path, monkeypatch, agent):
    """A crash in episode 11 of 20, then --resume: the same episodes as an uninterrupted run."""
    import entroprune.search.loop as search_mod

    c = cfg(agent=agent, episodes=20, warmup=4)
    full = search_checkpoint(digits_ckpt, tmp_path / "full", c, quiet=True)
    scored, calls = search_mod._scored, []

    def crash_in_episode_11(*args, **kw):
        calls.append(1)
        if len(calls) == 11:
            raise RuntimeError("simulated crash")
        return scored(*args, **kw)

    monkeypatch.setattr(search_mod, "_scored", crash_in_episode_11)
    with pytest.raises(RuntimeError, match="simulated crash"):
        search_checkpoint(digits_ckpt, tmp_path / "part", c, quiet=True)
    monkeypatch.setattr(search_mod, "_scored", scored)
    state = torch.load(tmp_path / "part" / "search_state.pt", weights_only=True)
    assert state["episode"] == 8  # TD3/SAC: every 4 episodes; PPO: at its 8-episode rollouts
    assert len((tmp_path / "part" / "episodes.jsonl").read_text().splitlines()) == 10
    resumed = search_checkpoint(digits_ckpt, tmp_path / "part", c, resume=True, quiet=True)
    a = [json.loads(line) for line in (tmp_path / "full" / "episodes.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "part" / "episodes.jsonl").read_text().splitlines()]
    assert [e["episode"] for e in b] == list(range(20))
    assert [e["policy"] for e in b] == [e["policy"] for e in a]
    assert resumed.policy == full.policy and resumed.reward == full.reward


@pytest.mark.parametrize("kind", ["accuracy", "combined"])
def test_accuracy_rewards(digits_ckpt, tmp_path, kind):
    res = search_checkpoint(digits_ckpt, tmp_path / kind, cfg(episodes=4, reward=RewardConfig(kind=kind)),
                            quiet=True)
    assert_budget(digits_ckpt, res, 0.3)
    if kind == "accuracy":
        assert 0 <= res.reward <= 1


def test_diagnostics_report_spearman(digits_ckpt, tmp_path):
    res = search_checkpoint(digits_ckpt, tmp_path / "diag", cfg(episodes=12, diagnose_every=2), quiet=True)
    assert res.summary["diagnosed_episodes"] == 6
    # recomputed from the log: the diagnosed episodes' rewards against their accuracies
    from scipy.stats import spearmanr

    log = [json.loads(line) for line in (tmp_path / "diag" / "episodes.jsonl").read_text().splitlines()]
    diag = [e for e in log if e["episode"] % 2 == 0]
    assert all(e["accuracy"] is not None for e in diag) and all(e["accuracy"] is None for e in log if e not in diag)
    rho = spearmanr([e["reward"] for e in diag], [e["accuracy"] for e in diag]).statistic
    assert res.spearman == pytest.approx(float(rho)) if rho == rho else res.spearman is None


def test_entropy_reward_runs_on_unlabelled_images(tmp_path, digits_ckpt):
    """The entropy reward needs no labels: search with a flat folder of images, greyscale and colour
    and of two sizes mixed, as a user's folder holds them (converted to the model's input)."""
    import numpy as np
    from PIL import Image

    from entroprune.data import load_dataset

    d = load_dataset("digits")
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(40):
        img = Image.fromarray((d.test.x[i, 0].numpy() * 255).astype(np.uint8))
        if i % 2:
            img = img.convert("RGB").resize((24, 24))
        img.save(folder / f"{i}.png")
    res = search_checkpoint(digits_ckpt, tmp_path / "u", cfg(episodes=4, calib_size=16), dataset="imagefolder",
                            data_dir=folder, quiet=True)
    assert_budget(digits_ckpt, res, 0.3)
    assert res.summary["reference_accuracy"] is None


def test_sigkill_then_resume(digits_ckpt, tmp_path):
    """Kill a search mid-run, resume it, and get the uninterrupted run's policy."""
    full = search_checkpoint(digits_ckpt, tmp_path / "full", cfg(episodes=40), quiet=True)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "entroprune.cli", "search", str(digits_ckpt), "--macs-target", "0.3",
            "--episodes", "40", "--warmup", "8", "--calib-size", "64", "--val-size", "128",
            "--checkpoint-every", "4", "--out", str(out), "--quiet", "--device", "cpu", "--rerank-top-k", "0",
            "--band", "none", "--round-to", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_episodes(out, 14, state=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "policy.json").exists()
    res = subprocess.run(args + ["--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    policy = json.loads((out / "policy.json").read_text())
    assert policy["policy"] == full.policy
    episodes = [json.loads(line)["episode"] for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert episodes == list(range(40))


@pytest.mark.parametrize("agent", ["ddpg", "sb3:td3"])
def test_sigint_saves_state_and_says_how_to_resume(digits_ckpt, tmp_path, agent):
    out = tmp_path / "int"
    args = [sys.executable, "-m", "entroprune.cli", "search", str(digits_ckpt), "--macs-target", "0.3",
            "--episodes", "400", "--warmup", "8", "--calib-size", "64", "--out", str(out), "--quiet",
            "--device", "cpu", "--agent", agent]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_episodes(out, 5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "--resume" in stderr and "Traceback" not in stderr
    state = torch.load(out / "search_state.pt", weights_only=True)
    lines = (out / "episodes.jsonl").read_text().splitlines()
    assert state["episode"] == len(lines) < 400


def test_ctrl_c_in_the_last_episode_still_stops_before_the_reranking(digits_ckpt, tmp_path, monkeypatch):
    """A first Ctrl-C pressed during the last episode was lost: the re-ranking, and a run's later stages, went on
    as if it had never been pressed. It stops with every episode saved; the resume re-ranks."""
    import entroprune.search.loop as loop
    from entroprune.errors import SearchInterrupted

    real = loop.rollout

    def rollout(env, agent, episode):
        if episode == 9:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        return real(env, agent, episode)

    monkeypatch.setattr(loop, "rollout", rollout)
    config = SearchConfig(macs_target=0.3, episodes=10, warmup=4, calib_size=64, recovery_steps=2)
    with pytest.raises(SearchInterrupted, match="after 10 episodes"):
        search_checkpoint(digits_ckpt, tmp_path / "s", config, quiet=True)
    assert not (tmp_path / "s" / "policy.json").exists()
    monkeypatch.setattr(loop, "rollout", real)
    result = search_checkpoint(digits_ckpt, tmp_path / "s", config, quiet=True, resume=True)
    assert result.summary["rerank"] and (tmp_path / "s" / "policy.json").exists()


def test_second_sigint_stops_at_once_and_the_search_still_resumes(digits_ckpt, tmp_path):
    """Two Ctrl-Cs: no waiting for the episode, exit 130 with one line, and the last saved state still
    resumes to a log with every episode exactly once."""
    out = tmp_path / "int2"
    args = [sys.executable, "-m", "entroprune.cli", "search", str(digits_ckpt), "--macs-target", "0.3",
            "--episodes", "60", "--warmup", "8", "--calib-size", "64", "--checkpoint-every", "2",
            "--rerank-top-k", "0", "--out", str(out), "--quiet", "--device", "cpu"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_episodes(out, 5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)  # two signals before Python runs its handler count as one
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    # usually "interrupted" (stopped mid-episode); the episode may end between the two signals, so the
    # handler's own counting is test_interrupt_handler_counts_ctrl_c's job
    assert proc.returncode == 130 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    saved = torch.load(out / "search_state.pt", weights_only=True)["episode"]
    assert 0 < saved < 60
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    episodes = [json.loads(line)["episode"] for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert episodes == list(range(60))


def test_ctrl_c_during_shutdown_adds_nothing_to_the_one_line(digits_ckpt, tmp_path):
    """A second Ctrl-C pressed after the stop message (while torch's finalizers run) must not print a
    KeyboardInterrupt traceback under it."""
    out = tmp_path / "late"
    args = [sys.executable, "-m", "entroprune.cli", "search", str(digits_ckpt), "--macs-target", "0.3",
            "--episodes", "400", "--warmup", "8", "--calib-size", "64", "--rerank-top-k", "0",
            "--out", str(out), "--quiet", "--device", "cpu"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_episodes(out, 3)
    proc.send_signal(signal.SIGINT)
    first = proc.stderr.readline()  # the stop message: the command is now on its way out
    for _ in range(20):  # keep pressing while the interpreter shuts down
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGINT)
        time.sleep(0.005)
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert "--resume" in first
    assert proc.returncode == 130 and rest.strip() == "" and "Traceback" not in rest, rest


def test_interrupt_handler_counts_ctrl_c():
    from entroprune.search.loop import _Interrupt

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    with _Interrupt() as first:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert first.requested  # the first asks the loop to stop after the episode
        with pytest.raises(KeyboardInterrupt):  # the second stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_non_finite_rewards_are_survived(digits_ckpt, tmp_path, monkeypatch):
    from entroprune.search import rewards

    calls = {"n": 0}
    original = rewards.RewardEvaluator.aggregate

    def flaky(self, values, variant):
        calls["n"] += 1
        return float("nan") if calls["n"] % 3 == 0 else original(self, values, variant)

    monkeypatch.setattr(rewards.RewardEvaluator, "aggregate", flaky)
    from entroprune.search.agents.ddpg import DDPGAgent

    learnt = []
    real_observe = DDPGAgent.observe
    monkeypatch.setattr(DDPGAgent, "observe", lambda self, tr, reward, ep: learnt.append(reward)
                        or real_observe(self, tr, reward, ep))
    res = search_checkpoint(digits_ckpt, tmp_path / "nan", cfg(episodes=12), quiet=True)
    entries = [json.loads(line) for line in (tmp_path / "nan" / "episodes.jsonl").read_text().splitlines()]
    assert len(entries) == 12 and len(learnt) == 12
    assert any(not e["finite"] and e["reward"] is None for e in entries)
    assert res.summary["non_finite_episodes"] >= 3 and np.isfinite(res.reward)
    # the agent learns the worst finite reward seen so far in place of a non-finite one
    for i, e in enumerate(entries):
        seen = [x["reward"] for x in entries[:i + 1] if x["finite"]]
        assert learnt[i] == (e["reward"] if e["finite"] else (min(seen) if seen else -1.0))


def test_search_with_physical_scoring(digits_ckpt, tmp_path):
    res = search_checkpoint(digits_ckpt, tmp_path / "p", cfg(episodes=6, warmup=3,
                                                             reward=RewardConfig(physical=True)), quiet=True)
    assert_budget(digits_ckpt, res, 0.3)
    assert "pruning" in res.summary["mean_time_split_s"]


def test_search_warns_about_groups_the_entropy_reward_cannot_see(tmp_path):
    """A conv on a 1x1 map has constant spatial entropy: the search must say it picks that group blind."""
    from entroprune.api import search_module

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(8, 8, 1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(32, 1, 8, 8)
    with pytest.warns(UserWarning, match=r"groups 4 output 1x1 maps, which the entropy reward cannot see"):
        search_module(net, x[:1], x, tmp_path / "ddpg", cfg(episodes=2, warmup=1, macs_target=0.6, min_keep=0.2))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the uniform policy does not search: nothing to warn about
        search_module(net, x[:1], x, tmp_path / "uniform", cfg(agent="uniform", macs_target=0.6, min_keep=0.2))



def test_the_channel_ranking_travels_from_the_search_to_the_cut(tmp_path):
    """`importance` in the search's config decides which channels the pruned net keeps: the result and
    policy.json carry it, prune_module cuts by it, and a structure ranked otherwise is refused."""
    from entroprune.api import prune_module, search_module
    from entroprune.errors import ConfigError
    from entroprune.search import run_search
    from entroprune.structure import Structure

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 6 * 6, 3)).eval()
    with torch.no_grad():  # of four kept: L1 keeps filters 1-4, L2 keeps 0 and 2-4
        net[0].weight.fill_(0.001)
        net[0].weight[0, 0, 0, 0] = 3.0  # one large weight: L1 3, L2^2 9
        net[0].weight[1].fill_(0.5)  # spread weights: L1 4.5, L2^2 2.25
        net[0].weight[2:5].fill_(0.6)  # L1 5.4, L2^2 3.24: kept by both
        net[3].weight.fill_(0.1)  # the next conv's input channels weigh the same under both
    x = torch.randn(16, 1, 6, 6)
    kept = {}
    for rank in ("l1", "l2", "auto"):  # auto: L2 on this plain chain
        res = search_module(net, x[:1], x, tmp_path / rank, cfg(agent="uniform", macs_target=0.35, min_keep=0.1,
                                                                 rerank_top_k=0, importance=rank))
        assert res.importance == rank and res.counts["0"] == 4, res.counts
        assert json.loads((tmp_path / rank / "policy.json").read_text())["importance"] == rank
        pruned, _ = prune_module(net, x[:1], res)
        w = pruned[0].weight.detach()
        kept[rank] = (any(torch.equal(f, net[0].weight[0]) for f in w), any(torch.equal(f, net[0].weight[1]) for f in w))
    assert kept == {"l1": (False, True), "l2": (True, False), "auto": (True, False)}, kept
    with pytest.raises(ConfigError, match="ranks channels by l2 but the search's `importance` is auto"):
        run_search(net, Structure(net, x[:1], importance="l2"), x, None, cfg(agent="uniform"), tmp_path / "mixed",
                   quiet=True)
