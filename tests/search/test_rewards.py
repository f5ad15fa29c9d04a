"""Rewards: zero-mask scoring and physically pruned scoring agree on every kind of net."""

import numpy as np
import pytest
import torch

from entroprune.models import build_model
from entroprune.search.rewards import RewardConfig, RewardEvaluator
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
    from entroprune.search import SearchConfig

    search = SearchConfig()
    names = ("macs_target", "agent", "episodes", "min_keep", "warmup", "calib_size", "val_size",
             "diagnose_every", "checkpoint_every", "rerank_top_k", "rerank_reward", "confirm_seeds",
             "uniform_margin", "recovery_steps", "recovery_images")
    assert {n: params[n].default for n in names} == {n: getattr(search, n) for n in names}
    # options that also take a word ('none', 'auto') are strings on the command line
    assert params["band"].default == str(search.band)
    assert cli._parse_round_to(params["round_to"].default) == search.round_to


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


def _structured_vs_noise_net(structured_first: bool) -> torch.nn.Module:
    """Four 3x3 filters on a noise image: two blur it (smooth maps, low co-occurrence entropy), two
    shift it (noise maps, high entropy). The pair with the larger L1 norm is the one pruning keeps."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    blur, shift = torch.full((3, 3), 1 / 9), torch.zeros(3, 3)
    shift[0, 0] = 1.0
    big, small = (3.0, 1.0) if structured_first else (1.0, 3.0)
    with torch.no_grad():
        net[0].weight.copy_(torch.stack([blur * big, blur * big, shift * small, shift * small]).unsqueeze(1))
        net[2].weight.fill_(0.1)
    return net.eval()


def _hand_cooccurrence(maps: np.ndarray, levels: int = 16) -> float:
    """Mean over maps of the adjacent-pair level histogram's entropy, in bits (the method's formula)."""
    out = []
    for m in maps:
        lo, hi = m.min(), m.max()
        q = np.zeros_like(m, dtype=int) if hi - lo <= 1e-12 * (1 + abs(hi)) else \
            np.clip(np.floor((m - lo) / (hi - lo) * levels), 0, levels - 1).astype(int)
        pairs = np.concatenate([(q[:, :-1] * levels + q[:, 1:]).ravel(), (q[:-1, :] * levels + q[1:, :]).ravel()])
        p = np.bincount(pairs, minlength=levels * levels) / len(pairs)
        p = p[p > 0]
        out.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(out))


def test_entropy_reward_prefers_structured_channels_and_matches_the_formula():
    """The reward is minus the entropy of the kept channels: keeping smooth maps must score higher than
    keeping noise, --maximize reverses that, and the value equals a hand computation."""
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    rewards = {}
    for structured_first in (True, False):
        net = _structured_vs_noise_net(structured_first)
        structure = Structure(net, x[:1])
        counts = [2 if g.name == "0" else g.channels for g in structure.groups]
        kept = sorted(structure.by_name["0"].kept(2))
        assert kept == ([0, 1] if structured_first else [2, 3])  # the larger L1 norm is kept
        with torch.no_grad():
            maps = net[0](x)[:, kept].clamp_min(0).reshape(-1, 12, 12).numpy()
        hand = _hand_cooccurrence(maps)
        for maximize in (False, True):
            cfg = RewardConfig(kind="entropy", variant="cooccurrence", layers="0", normalize=False,
                               bn_recalibration=False, maximize=maximize)
            ev = RewardEvaluator(net, structure, cfg, x)
            res = ev.evaluate(counts)
            ev.close()
            assert res.entropy == pytest.approx(hand, rel=1e-5)
            assert res.reward == pytest.approx(hand if maximize else -hand, rel=1e-5)
            rewards[(structured_first, maximize)] = res.reward
        # the combined reward's formula, and the accuracy reward as a plain fraction
        ev = RewardEvaluator(net, structure, RewardConfig(kind="combined", variant="cooccurrence", layers="0",
                                                          normalize=False, bn_recalibration=False,
                                                          accuracy_weight=2.5), x, (x, y))
        res = ev.evaluate(counts)
        pruned = ev._pruned_copy(np.asarray(counts))
        with torch.no_grad():
            acc = float((pruned(x).argmax(1) == y).float().mean())
        ev.close()
        assert res.accuracy == pytest.approx(acc) and res.reward == pytest.approx(-hand + 2.5 * acc, rel=1e-5)
    assert rewards[(True, False)] > rewards[(False, False)] + 0.2  # smooth maps kept: higher reward (by 0.26 bits)
    assert rewards[(True, True)] < rewards[(False, True)] - 0.2   # --maximize: the opposite


def test_normalized_entropy_is_relative_to_the_unpruned_net():
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    net = _structured_vs_noise_net(True)
    structure = Structure(net, x[:1])
    counts = [2 if g.name == "0" else g.channels for g in structure.groups]
    raw, rel = (RewardEvaluator(net, structure, RewardConfig(variant="cooccurrence", layers="0", normalize=n,
                                                             bn_recalibration=False), x) for n in (False, True))
    full = raw.evaluate(structure.full_counts()).entropy
    assert rel.evaluate(structure.full_counts()).entropy == pytest.approx(1.0)
    assert rel.evaluate(counts).entropy == pytest.approx(raw.evaluate(counts).entropy / full, rel=1e-6)
    raw.close()
    rel.close()
