"""The second stage of the search: label-free recovery, the kl reward, re-ranking (the band: test_policies.py)."""

import json

import pytest
import torch
import torch.nn.functional as F

from entroprune.api import load_model, search_checkpoint
from entroprune.data import load_dataset
from entroprune.search import SearchConfig, uniform_ratio
from entroprune.search.rewards import RewardConfig, RewardEvaluator
from entroprune.structure import Structure


def digits_setup(path, n_calib=128):
    model, ckpt = load_model(path)
    data = load_dataset("digits", seed=0, min_size=ckpt.spec.input_size[-1])
    calib = data.normalize(data.calib.x[:n_calib])
    pool = data.normalize(data.train.x[:512])
    val = (data.normalize(data.val.x[:200]), data.val.y[:200])
    return model.eval(), Structure(model, ckpt.spec.example_input()), calib, pool, val


def test_kl_reward_is_zero_for_the_unpruned_net_and_matches_a_hand_computation(digits_ckpt):
    model, structure, calib, _, _ = digits_setup(digits_ckpt)
    ev = RewardEvaluator(model, structure, RewardConfig(kind="kl", bn_recalibration=False), calib)
    full = ev.evaluate(structure.full_counts())
    assert full.reward == pytest.approx(0.0, abs=1e-6)
    counts = structure.keep_counts([0.3] * len(structure.groups))
    res = ev.evaluate(counts)
    net = ev._pruned_copy(counts)
    with torch.no_grad():
        p, q = F.softmax(model(calib), 1), F.softmax(net(calib), 1)
    hand = float((p * (p.log() - q.log())).sum(1).mean())
    assert hand > 0.01 and res.reward == pytest.approx(-hand, rel=1e-4)  # minus the divergence: lower is worse
    ev.close()


def test_recovery_brings_a_pruned_net_back(digits_ckpt):
    """Distillation on unlabelled images must lower the divergence and raise accuracy (a no-op fails)."""
    model, structure, calib, pool, val = digits_setup(digits_ckpt)
    counts = structure.keep_counts([0.25] * len(structure.groups), 2)
    scores = {}
    for steps in (0, 60):
        cfg = RewardConfig(kind="kl", recovery_steps=steps)
        ev = RewardEvaluator(model, structure, cfg, calib, val, recovery_images=pool)
        res = ev.evaluate(counts, with_accuracy=True)
        scores[steps] = (res.reward, res.accuracy)
        assert ("recovery" in res.times) == bool(steps)
        ev.close()
    assert scores[60][0] > scores[0][0] + 0.05
    assert scores[60][1] >= scores[0][1] + 0.10, scores


def test_recovery_needs_physical_scoring():
    from entroprune.errors import ConfigError

    with pytest.raises(ConfigError, match="physical"):
        RewardConfig(recovery_steps=5, physical=False).validate()
    with pytest.raises(ConfigError, match="physical"):
        RewardConfig(refit=True, physical=False).validate()


def test_a_refitted_candidate_is_scored_on_the_net_the_final_prune_makes(digits_ckpt, monkeypatch):
    """With the refit the score is read off the net `prune` writes (refitted on the training images the recovery
    would use, never the scored ones): closer to the unpruned net than the bare cut. Both refits take the one
    pass, the candidate's too though its net carries the entropy probe's hooks."""
    import entroprune.refit as refit_module
    from entroprune.prune import prune_model

    def no_partial(*args, **kwargs):
        raise AssertionError("the refit took the partial forwards")

    monkeypatch.setattr(refit_module, "_partial_forwards", no_partial)

    model, structure, calib, pool, val = digits_setup(digits_ckpt)
    counts = structure.keep_counts([0.25] * len(structure.groups), 2)
    # refitted as the prune would with its options: the classifier left as cut
    ev = RewardEvaluator(model, structure, RewardConfig(kind="kl", refit=True, refit_head=False), calib, val,
                         recovery_images=pool)
    want, _ = prune_model(model, structure, counts, refit_images=pool[:1024], refit_head=False)
    body, full = ev._pruned_copy(counts).state_dict(), prune_model(model, structure, counts, refit_images=pool[:1024])[0]
    assert all(torch.equal(a, b) for a, b in zip(body.values(), want.state_dict().values(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(body.values(), full.state_dict().values(), strict=True))
    ev.close()
    read = {}
    for refit in (False, True):
        ev = RewardEvaluator(model, structure, RewardConfig(kind="kl", refit=refit), calib, val, recovery_images=pool)
        read[refit] = ev.evaluate(counts).reward
        if refit:
            net = ev._pruned_copy(counts)
            want, _ = prune_model(model, structure, counts, refit_images=pool[:1024])
            assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), want.state_dict().values(),
                                                          strict=True))
        ev.close()
    assert read[True] > read[False] + 0.05  # minus the KL: the refitted net agrees better


def test_the_rerank_refit_reaches_the_rerankings_evaluator():
    assert SearchConfig(rerank_refit=True).rerank_reward_config().refit
    assert not SearchConfig(rerank_refit=False).rerank_reward_config().refit
    assert not SearchConfig(rerank_refit=True).reward.refit  # the search's own reward reads fresh cuts


def test_the_rerankings_defaults_follow_the_prune():
    """Unset, the re-ranking scores the nets the prune will make: refitted ones as they are (they work), plain
    cuts after the recovery steps that make them work; an explicit setting always stands."""
    from entroprune.config import PruneConfig
    from entroprune.search.config import PLAIN_RECOVERY_STEPS

    def settled(refit=None, **kw):
        c = SearchConfig(**kw).resolved(refit)
        return c.rerank_refit, c.recovery_steps

    assert PruneConfig().refit and settled() == (True, 0)  # a search alone: as the prune's default cuts
    assert settled(True) == (True, 0) and settled(False) == (False, PLAIN_RECOVERY_STEPS) and PLAIN_RECOVERY_STEPS > 0
    assert settled(False, rerank_refit=True) == (True, 0) and settled(True, rerank_refit=False)[0] is False
    assert settled(True, recovery_steps=7) == (True, 7) and settled(False, recovery_steps=0) == (False, 0)
    assert SearchConfig(rerank_refit=False).rerank_reward_config().recovery_steps == PLAIN_RECOVERY_STEPS
    assert SearchConfig().rerank_reward_config().recovery_steps == 0 and SearchConfig().rerank_reward_config().refit
    resolved = SearchConfig().resolved()
    assert resolved.resolved(False) == resolved  # settled once: a later prune setting no longer moves it
    # the refit's options: as the prune's where given, else its defaults; a setting of the reward's own stands
    assert SearchConfig().resolved().reward.refit_options() == (PruneConfig().refit_norms, PruneConfig().refit_head)
    assert SearchConfig().resolved(True, True, False).rerank_reward_config().refit_options() == (True, False)
    own = SearchConfig(reward=RewardConfig(refit_head=True)).resolved(True, None, False)
    assert own.rerank_reward_config().refit_options() == (False, True)


def cfg(**kw):
    base = dict(macs_target=0.3, episodes=16, warmup=6, calib_size=64, val_size=128, recovery_steps=10,
                recovery_images=256, rerank_top_k=3)
    base.update(kw)
    return SearchConfig(**base)


def test_rerank_pool_holds_uniform_and_global_and_returns_its_best(digits_ckpt, tmp_path, monkeypatch):
    import entroprune.search.rewards as rewards

    made = []  # every evaluator's reward config and recovery image count: the re-ranking's must recover
    original = rewards.RewardEvaluator.__init__

    def recording(self, model, structure, config, *args, recovery_images=None, **kw):
        made.append((config, None if recovery_images is None else len(recovery_images)))
        original(self, model, structure, config, *args, recovery_images=recovery_images, **kw)

    monkeypatch.setattr(rewards.RewardEvaluator, "__init__", recording)
    res = search_checkpoint(digits_ckpt, tmp_path / "s", cfg(confirm_seeds=0, uniform_margin=0.0), quiet=True)
    assert made[0][0].kind == "entropy" and made[0][0].recovery_steps == 0  # the search itself: fresh nets
    assert [(c.kind, c.recovery_steps, n) for c, n in made[1:]] == [("kl", 10, 256)]  # one re-ranking, recovered
    pool = res.summary["rerank"]
    names = " ".join(c["candidate"] for c in pool)
    assert "uniform" in names and "global" in names
    assert sum(c["source"] == "search" for c in pool) == 3
    best = max(pool, key=lambda c: c["reward"])
    assert res.policy == best["policy"] and res.reward == best["reward"]
    assert res.summary["chosen"] == best["source"]
    saved = json.loads((tmp_path / "s" / "policy.json").read_text())
    assert saved["policy"] == best["policy"] and saved["chosen"] == best["source"]
    assert saved["rerank_refit"] is res.summary["config"]["rerank_refit"] is True  # what `prune` checks its cut by
    assert (saved["rerank_refit_norms"], saved["rerank_refit_head"]) == (False, True)  # and the refit's options
    # the search's candidates are its best distinct policies, in the order its own reward ranks them
    log = [json.loads(line) for line in (tmp_path / "s" / "episodes.jsonl").read_text().splitlines()]
    searched = [c for c in pool if c["source"] == "search"]
    assert searched[0]["search_reward"] == max(e["reward"] for e in log)
    assert [c["search_reward"] for c in searched] == sorted((c["search_reward"] for c in searched), reverse=True)


def test_rerank_returns_uniform_when_it_scores_best(digits_ckpt, tmp_path, monkeypatch):
    """The tool never returns a policy its score ranks below the uniform one."""
    import entroprune.search.rewards as rewards

    uniform_counts = {}
    original = rewards.RewardEvaluator.evaluate

    def rigged(self, counts, with_accuracy=False):
        res = original(self, counts, with_accuracy)
        if self.recovery is not None and tuple(counts) == uniform_counts.get("u"):
            res.reward = 1e9
        return res

    monkeypatch.setattr(rewards.RewardEvaluator, "evaluate", rigged)
    model, ckpt = load_model(digits_ckpt)
    structure = Structure(model, ckpt.spec.example_input())
    from entroprune.search import fixed_policy_counts

    c = cfg()
    uniform_counts["u"] = tuple(fixed_policy_counts(structure, c, [uniform_ratio(structure, c)] * len(structure.groups))[0])
    res = search_checkpoint(digits_ckpt, tmp_path / "s", c, quiet=True)
    assert res.summary["chosen"] == "uniform" or "= uniform" in max(res.summary["rerank"], key=lambda x: x["reward"])["candidate"]


def test_uniform_is_left_only_for_a_margin():
    from entroprune.search.rerank import prefer_uniform

    def pool(search, uniform, glob, confirmed=None):
        p = [{"candidate": "search (episode 3)", "source": "search", "reward": search},
             {"candidate": "uniform", "source": "uniform", "reward": uniform},
             {"candidate": "global", "source": "global", "reward": glob}]
        for c, rs in zip(p, confirmed or [], strict=False):
            c["confirm_rewards"] = rs
        return p

    assert prefer_uniform(pool(-0.15, -0.20, -0.30), 0, 0.1) == 0  # 25% closer to the unpruned net: leave uniform
    near = pool(-0.19, -0.20, -0.30)
    assert prefer_uniform(near, 0, 0.1) == 1 and near[0]["beaten_by_margin"]  # 5%: within the noise, stay
    assert prefer_uniform(pool(-0.19, -0.20, -0.30), 0, 0.0) == 0  # margin 0: the best score wins
    assert prefer_uniform(pool(-0.3, -0.20, -0.17), 2, 0.1) == 2 and prefer_uniform(pool(-0.3, -0.2, -0.19), 2, 0.1) == 1
    assert prefer_uniform(pool(0.9, 0.8, 0.1), 0, 0.1) == 0 and prefer_uniform(pool(0.85, 0.8, 0.1), 0, 0.1) == 1
    # the confirmation's mean decides where it ran: a lucky first reading does not carry the margin
    lucky = pool(-0.10, -0.20, -0.30, confirmed=[[-0.10, -0.25, -0.25], [-0.20, -0.20, -0.20], [-0.3] * 3])
    assert prefer_uniform(lucky, 0, 0.1) == 1
    # uniform found by the search itself is the uniform candidate
    same = [{"candidate": "search (episode 1) = uniform", "source": "search", "reward": -0.2},
            {"candidate": "global", "source": "global", "reward": -0.19}]
    assert prefer_uniform(same, 1, 0.1) == 0 and prefer_uniform(same, 1, 0.0) == 1


def test_the_confirmation_hands_a_lost_win_to_the_best_fixed_policy():
    """The confirmation's verdict on mean readings: the searched pick where its mean beats every fixed policy's,
    else the best fixed one (not the first or the worst: uniform and global often score apart), the lower index
    on a tie."""
    from entroprune.search.rerank import confirmed

    def pool(*means):
        return [{"candidate": f"c{i}", "source": "search" if i == 0 else "fixed", "reward": m[0],
                 "confirm_rewards": list(m)} for i, m in enumerate(means)]

    assert confirmed(pool((-0.2, -0.2), (-0.3, -0.3), (-0.25, -0.25)), 0, [1, 2]) == 0
    assert confirmed(pool((-0.2, -0.4), (-0.5, -0.5), (-0.25, -0.25)), 0, [1, 2]) == 2  # its mean -0.3 loses
    assert confirmed(pool((-0.2, -0.4), (-0.25, -0.25), (-0.5, -0.5)), 0, [1, 2]) == 1
    assert confirmed(pool((-0.3, -0.3), (-0.3, -0.3), (-0.3, -0.3)), 0, [1, 2]) == 1  # a tie is no win
    assert confirmed(pool((-0.1, None), (-0.5, -0.5), (-0.6, -0.6)), 0, [1, 2]) == 1  # a failed reading never wins


def test_search_with_a_wide_margin_returns_uniform(digits_ckpt, tmp_path):
    res = search_checkpoint(digits_ckpt, tmp_path / "s", cfg(confirm_seeds=0, uniform_margin=5.0), quiet=True)
    pool = res.summary["rerank"]
    uniform = next(c for c in pool if c["source"] == "uniform" or c["candidate"].endswith("= uniform"))
    assert res.policy == uniform["policy"]
    best = max(pool, key=lambda c: c["reward"])
    assert best is uniform or best.get("beaten_by_margin")


@pytest.mark.parametrize("lasting", [False, True])
def test_a_searched_win_must_hold_under_other_recovery_seeds(digits_ckpt, tmp_path, monkeypatch, lasting):
    """A searched policy that wins under the search's recovery seed only (a lucky draw) hands the choice
    to the better fixed policy; one that wins under every seed keeps it."""
    import entroprune.search.rewards as rewards
    from entroprune.search.rerank import CONFIRM_SEED_STEP

    init, evaluate, lucky = rewards.RewardEvaluator.__init__, rewards.RewardEvaluator.evaluate, {}

    def remember_seed(self, *args, seed=0, **kw):
        init(self, *args, seed=seed, **kw)
        self.seed_used = seed

    def rigged(self, counts, with_accuracy=False):
        res = evaluate(self, counts, with_accuracy)
        if self.recovery is not None:  # the re-ranking: the first searched candidate is the lucky one
            lucky.setdefault("counts", tuple(counts))
            if tuple(counts) == lucky["counts"]:  # kl rewards are <= 0: 0 beats every other policy
                res.reward = 0.0 if lasting or self.seed_used == 0 else -10.0
        return res

    monkeypatch.setattr(rewards.RewardEvaluator, "__init__", remember_seed)
    monkeypatch.setattr(rewards.RewardEvaluator, "evaluate", rigged)
    res = search_checkpoint(digits_ckpt, tmp_path / "s", cfg(confirm_seeds=2, uniform_margin=0.0), quiet=True)
    pool = res.summary["rerank"]
    winner = next(c for c in pool if c["reward"] == 0.0)
    fixed = [c for c in pool if c["source"] != "search"]
    assert len(winner["confirm_rewards"]) == 3 and all(len(c["confirm_rewards"]) == 3 for c in fixed)
    assert [c for c in pool if "confirm_rewards" in c] == [winner, *fixed]  # only those are scored again
    if lasting:
        assert res.summary["chosen"] == "search" and res.policy == winner["policy"]
    else:
        best = max(fixed, key=lambda c: sum(c["confirm_rewards"]))
        assert res.summary["chosen"] == best["source"] and res.policy == best["policy"]
        assert winner["confirm_rewards"] == [0.0, -10.0, -10.0]
    assert CONFIRM_SEED_STEP > 0
