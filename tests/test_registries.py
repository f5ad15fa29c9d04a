"""Rewards, entropy variants and datasets are registries: a new entry is usable everywhere by its name."""

import re

import numpy as np
import pytest
import torch

from entroprune import entropy
from entroprune.data import DATASETS, load_dataset, register_dataset
from entroprune.errors import ConfigError, DataError
from entroprune.search import RewardConfig, SearchConfig
from entroprune.search.rewards import REWARDS, register_reward


@pytest.fixture
def restore():
    saved = dict(REWARDS), dict(entropy.MAP_ENTROPIES), list(entropy.VARIANTS), dict(DATASETS)
    yield
    REWARDS.clear(), REWARDS.update(saved[0])
    entropy.MAP_ENTROPIES.clear(), entropy.MAP_ENTROPIES.update(saved[1])
    entropy.VARIANTS[:] = saved[2]
    DATASETS.clear(), DATASETS.update(saved[3])


def test_a_registered_reward_and_variant_drive_a_search(digits_ckpt, tmp_path, restore):
    from entroprune.api import search_checkpoint

    @register_reward("twice-kl", {"kl"})
    def twice_kl(config, m):
        return -2.0 * m["kl"]

    @entropy.register_entropy("energy")
    def energy(maps, levels, rectified):
        return maps.clamp_min(0).pow(2).mean((-2, -1))

    assert "energy-avg" in entropy.VARIANTS
    cfg = SearchConfig(macs_target=0.5, episodes=4, warmup=2, calib_size=64, rerank_top_k=0,
                       reward=RewardConfig(kind="twice-kl"))
    res = search_checkpoint(digits_ckpt, tmp_path / "kl", cfg, quiet=True)
    lines = (tmp_path / "kl" / "episodes.jsonl").read_text().splitlines()
    assert res.reward <= 0 and len(lines) == 4
    cfg = SearchConfig(macs_target=0.5, episodes=3, warmup=2, calib_size=64, rerank_top_k=0,
                       reward=RewardConfig(kind="entropy", variant="energy"))
    assert np.isfinite(search_checkpoint(digits_ckpt, tmp_path / "en", cfg, quiet=True).reward)
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(entropy.map_entropy(x, "energy"), x.pow(2).mean((-2, -1)))


def test_unknown_names_list_the_registry(restore):
    with pytest.raises(ConfigError, match="choose one of entropy, accuracy, combined, kl"):
        RewardConfig(kind="nope").validate()
    with pytest.raises(ConfigError, match="choose one of distribution, cooccurrence, distribution-avg"):
        RewardConfig(variant="nope").validate()


def test_a_registered_dataset_loads_by_name(restore):
    rng = np.random.default_rng(0)

    @register_dataset("noise")
    def noise(data_dir, image_size, in_channels):
        return rng.random((60, 1, 8, 8), dtype=np.float32), np.arange(60) % 3, None

    data = load_dataset("noise", seed=0)
    assert data.name == "noise" and data.num_classes == 3


def test_a_registered_dataset_of_signals_is_refused_with_the_route_that_prunes_them(restore):
    """Datasets hold images; (N, C, L) signals crashed the split's mean with an IndexError. The Python API
    prunes 1-D nets on loaders of the user's own (tests/test_pipeline.py)."""

    @register_dataset("signals")
    def signals(data_dir, image_size, in_channels):
        return np.zeros((60, 2, 64), dtype=np.float32), np.arange(60) % 3, None

    with pytest.raises(DataError, match=re.escape("dataset signals's images have shape (60, 2, 64), not (N, C, H, W); "
                                                  "datasets hold images: prune a model of 1-D signals through the "
                                                  "Python API")):
        load_dataset("signals", seed=0)
