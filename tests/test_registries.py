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


def test_a_registered_dataset_of_signals_loads_and_other_shapes_are_refused(restore):
    """A reader may return images (N, C, H, W), 1-D signals (N, C, L) or volumes (N, C, D, H, W); anything else
    crashed the split's mean with an IndexError."""

    @register_dataset("signals2")
    def signals(data_dir, image_size, in_channels):
        return np.random.default_rng(0).random((60, 2, 64), dtype=np.float32), np.arange(60) % 3, None

    @register_dataset("flat")
    def flat(data_dir, image_size, in_channels):
        return np.zeros((60, 64), dtype=np.float32), np.arange(60) % 3, None

    data = load_dataset("signals2", seed=0)
    assert (data.in_channels, data.image_size, len(data.mean)) == (2, (64,), 2)
    x, _ = next(iter(data.loader("train", 8)))
    assert x.shape == (8, 2, 64) and data.example_input().shape == (1, 2, 64)
    with pytest.raises(DataError, match=re.escape("dataset flat's inputs have shape (60, 64); a reader returns "
                                                  "images (N, C, H, W), 1-D signals (N, C, L) or volumes (N, C, D, H, W)")):
        load_dataset("flat", seed=0)

    @register_dataset("six")
    def six(data_dir, image_size, in_channels):
        return np.zeros((60, 1, 2, 2, 2, 2), dtype=np.float32), np.arange(60) % 3, None

    with pytest.raises(DataError, match=re.escape("dataset six's inputs have shape (60, 1, 2, 2, 2, 2)")):
        load_dataset("six", seed=0)


def test_the_help_names_every_built_in_model_and_dataset():
    """The command line's help lists the zoo and the datasets from settings (it imports no torch): the same names,
    in the registries' order, as the registries hold before any plugin."""
    from entroprune.data import DATASETS
    from entroprune.models import MODELS, ZOO
    from entroprune.settings import BUILT_IN_DATASETS, ZOO_MODELS

    assert ZOO_MODELS == tuple(m for m in MODELS if m in ZOO) and set(ZOO_MODELS) == ZOO
    assert set(BUILT_IN_DATASETS) <= set(DATASETS) and list(BUILT_IN_DATASETS) == list(DATASETS)[:len(BUILT_IN_DATASETS)]
