"""Rewards: zero-mask scoring and physically pruned scoring agree on every kind of net."""

import numpy as np
import pytest
import torch

from entroprune.models import build_model
from entroprune.rewards import RewardConfig, RewardEvaluator
from entroprune.structure import Structure


@pytest.mark.parametrize("name", ["vgg", "resnet20", "mobilenetv2"])
@pytest.mark.parametrize("variant", ["cooccurrence-avg", "distribution"])
def test_physical_scoring_equals_masked_scoring(name, variant):
    torch.manual_seed(0)
    model = build_model(name, 10, 1, 0.25).eval()
    for m in model.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    x = torch.randn(48, 1, 32, 32)
    val = (torch.randn(40, 1, 32, 32), torch.randint(0, 10, (40,)))
    structure = Structure(model, x[:1])
    full = {p: v.clone() for p, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    scores = {}
    for physical in (False, True):
        cfg = RewardConfig(kind="combined", variant=variant, physical=physical)
        ev = RewardEvaluator(model, structure, cfg, x, val)
        rng = np.random.default_rng(0)
        scores[physical] = []
        for _ in range(3):
            ratios = rng.uniform(0.2, 1.0, len(structure.groups))
            res = ev.evaluate(structure.keep_counts(ratios, 2), with_accuracy=True)
            scores[physical].append((res.entropy, res.accuracy))
        ev.close()
        assert all(torch.equal(v, full[p]) for p, v in model.state_dict().items())  # the model is untouched
    masked, physical = np.array(scores[False]), np.array(scores[True])
    assert physical[:, 0] == pytest.approx(masked[:, 0], rel=1e-4, abs=1e-6)
    assert np.abs(physical[:, 1] - masked[:, 1]).max() <= 1 / 40 + 1e-9  # at most one borderline image
    assert "pruning" in res.times and "masking" not in res.times


def test_cli_search_reward_defaults_are_reward_config_defaults():
    """The CLI keeps torch out of import, so its defaults are literals: they must follow RewardConfig's."""
    import inspect

    from entroprune import cli

    params = inspect.signature(cli.search).parameters
    default = RewardConfig()
    cli_names = {"variant": "variant", "entropy_layers": "layers", "normalize": "normalize",
                 "bn_recalibration": "bn_recalibration", "accuracy_weight": "accuracy_weight",
                 "maximize": "maximize", "physical_scoring": "physical"}
    assert {c: params[c].default for c in cli_names} == {c: getattr(default, f) for c, f in cli_names.items()}


def test_entropy_layers_skip_1x1_maps():
    """VGG-16 on 28x28 images ends in three 1x1 maps: `last` must read the last spatial one."""
    from entroprune.errors import ConfigError

    torch.manual_seed(0)
    model = build_model("vgg16", 10, 1, 0.25).eval()
    x = torch.randn(16, 1, 28, 28)
    structure = Structure(model, x[:1])
    ev = RewardEvaluator(model, structure, RewardConfig(variant="cooccurrence", layers="last"), x)
    a = ev.evaluate(structure.keep_counts([0.3] * len(structure.groups), 1)).entropy
    b = ev.evaluate(structure.keep_counts([0.9] * len(structure.groups), 1)).entropy
    ev.close()
    assert len(ev.layers) == 1 and a != b  # on a 1x1 layer every policy would score the same
    ev = RewardEvaluator(model, structure, RewardConfig(layers="all"), x)
    ev.close()
    assert len(ev.layers) == 10  # 13 convs, the last three at 1x1
    last_conv = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with pytest.raises(ConfigError, match="1x1"):
        RewardEvaluator(model, structure, RewardConfig(layers=last_conv), x)
