"""The fixed policies and the search space: the band around uniform, 1x1 groups held at the uniform ratio under
an entropy reward, torch-pruning's global policy."""

import json

import numpy as np
import pytest
import torch

from entroprune.api import load_model, search_checkpoint
from entroprune.models import build_model
from entroprune.search import SearchConfig, band_bounds, uniform_ratio
from entroprune.search.rewards import RewardConfig
from entroprune.structure import Structure
from tests.search.test_rerank import cfg


def test_band_bounds_every_episode(digits_ckpt, tmp_path):
    c = cfg(band=0.3, rerank_top_k=0, round_to=1, episodes=30)
    search_checkpoint(digits_ckpt, tmp_path / "s", c, quiet=True)
    model, ckpt = load_model(digits_ckpt)
    structure = Structure(model, ckpt.spec.example_input())
    r = uniform_ratio(structure, c)
    lo, hi = band_bounds(structure, c)
    assert np.allclose(lo, max(c.min_keep, 0.7 * r)) and np.allclose(hi, min(1.0, 1.3 * r))
    for line in (tmp_path / "s" / "episodes.jsonl").read_text().splitlines():
        policy = json.loads(line)["policy"]
        for g in structure.groups:
            count = round(policy[g.name] * g.channels)
            assert structure.round_channels(g.channels, lo[0]) <= count <= structure.round_channels(g.channels, hi[0])
    # without the band the same search leaves it
    search_checkpoint(digits_ckpt, tmp_path / "n", cfg(band=None, rerank_top_k=0, round_to=1, episodes=30), quiet=True)
    outside = 0
    for line in (tmp_path / "n" / "episodes.jsonl").read_text().splitlines():
        policy = json.loads(line)["policy"]
        outside += any(not (lo[0] - 1e-9 <= policy[g.name] <= hi[0] + 1e-9) for g in structure.groups)
    assert outside > 0


def test_entropy_search_keeps_1x1_groups_at_the_uniform_ratio():
    """VGG-16 on 28x28 ends in convs with 1x1 maps, which no entropy reward can see."""
    torch.manual_seed(0)
    model = build_model("vgg16", 10, 1, 0.125).eval()
    structure = Structure(model, torch.randn(1, 1, 28, 28))
    flat = set(structure.flat_groups)
    assert flat
    c = SearchConfig(macs_target=0.3, round_to=1)
    r = uniform_ratio(structure, c)
    lo, hi = band_bounds(structure, c)
    for i, g in enumerate(structure.groups):
        if g.name in flat:
            assert lo[i] == hi[i] == pytest.approx(r)
        else:
            assert lo[i] < r < hi[i]
    lo_acc, hi_acc = band_bounds(structure, SearchConfig(macs_target=0.3, reward=RewardConfig(kind="accuracy")))
    assert (lo_acc < hi_acc).all()  # the accuracy reward sees them: searched like the rest


def test_global_policy_meets_the_target_and_differs_from_uniform(digits_ckpt, tmp_path):
    res = search_checkpoint(digits_ckpt, tmp_path / "g", SearchConfig(agent="global", macs_target=0.3, calib_size=64,
                                                                      val_size=64, round_to=1), quiet=True)
    uni = search_checkpoint(digits_ckpt, tmp_path / "u", SearchConfig(agent="uniform", macs_target=0.3, calib_size=64,
                                                                      val_size=64, round_to=1), quiet=True)
    assert 0.27 <= res.achieved <= 0.3 + 1e-9 and res.episodes == 1
    assert res.policy != uni.policy
