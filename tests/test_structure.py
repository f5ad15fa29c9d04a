import copy
import json

import numpy as np
import pytest
import torch

from entroprune.errors import ConfigError
from entroprune.models import build_model
from entroprune.prune import Masker, prune_model, recalibrate_bn, replay_pruning_history
from entroprune.structure import Structure, count_macs_params

EXPECTED_GROUPS = {"vgg": 6, "vgg16": 13, "resnet20": 12, "resnet56": 30, "mobilenetv2": 23}  # at width 0.25 the stem stream spans two stages


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.normal_(generator=g)
            m.bias.data.normal_(generator=g)
    return model


@pytest.fixture(scope="module")
def structures():
    out = {}
    for name in EXPECTED_GROUPS:
        torch.manual_seed(0)
        model = _randomise_bn(build_model(name, 10, 1, 0.25 if name != "resnet20" else 0.5)).eval()
        out[name] = (model, Structure(model, torch.randn(1, 1, 16, 16)))
    return out


@pytest.mark.parametrize("name", list(EXPECTED_GROUPS))
def test_group_counts(structures, name):
    _, s = structures[name]
    assert len(s.groups) == EXPECTED_GROUPS[name]
    assert s.classifier not in [g.name for g in s.groups]


def test_resnet20_stages_are_coupled(structures):
    _, s = structures["resnet20"]
    streams = [g for g in s.groups if sum(".conv2" in m for m in g.members) == 3]
    assert len(streams) == 3
    assert [g.name for g in streams] == ["conv1", "layer2.0.conv2", "layer3.0.conv2"]
    for g in streams[1:]:
        stage = g.name.split(".")[0]
        assert f"{stage}.0.shortcut.0" in g.members
        assert {f"{stage}.{i}.conv2" for i in range(3)} <= set(g.members)


def test_depthwise_joins_producer(structures):
    _, s = structures["mobilenetv2"]
    model = structures["mobilenetv2"][0]
    mods = dict(model.named_modules())
    for g in s.groups:
        for m in g.members:
            mod = mods[m]
            if isinstance(mod, torch.nn.Conv2d) and mod.groups > 1:
                assert g.name != m  # never its own root: it follows its producer
    assert all(g.layer_type != "depthwise" for g in s.groups)


@pytest.mark.parametrize("name", list(EXPECTED_GROUPS))
def test_analytic_macs_match_torch_pruning(structures, name):
    model, s = structures[name]
    rng = np.random.default_rng(1)
    for _ in range(2):
        counts = s.keep_counts(rng.uniform(0.05, 1.0, len(s.groups)))
        pruned, _ = prune_model(model, s, counts)
        macs, params = count_macs_params(pruned, s.example_input)
        assert s.macs(counts) == pytest.approx(macs, rel=0.01)
        assert s.params(counts) == pytest.approx(params, rel=0.01)
    full_macs, _ = count_macs_params(model, s.example_input)
    assert s.macs(s.full_counts()) == pytest.approx(full_macs, rel=1e-6)


@pytest.mark.parametrize("name", ["vgg", "resnet20", "mobilenetv2"])
def test_masks_equal_physical_pruning(structures, name):
    model, s = structures[name]
    model = copy.deepcopy(model)
    x = torch.randn(4, 1, 16, 16)
    ref = model(x).detach()
    counts = s.keep_counts(np.random.default_rng(2).uniform(0.1, 1.0, len(s.groups)))
    masker = Masker(model, s)
    masker.apply(counts)
    masked = model(x).detach()
    pruned, history = prune_model(model, s, counts)
    assert (masked - pruned(x)).abs().max().item() <= 1e-5
    masker.restore()
    assert torch.equal(model(x), ref)
    fresh = build_model(name, 10, 1, 0.25 if name != "resnet20" else 0.5)
    replay_pruning_history(fresh, x[:1], history)
    fresh.load_state_dict(pruned.state_dict())
    assert (fresh.eval()(x) - pruned(x)).abs().max().item() <= 1e-6


def test_bn_recalibration_masked_equals_physical(structures):
    model, s = structures["resnet20"]
    model = copy.deepcopy(model)
    counts = s.keep_counts([0.5] * len(s.groups))
    calib = torch.randn(64, 1, 16, 16)
    x = torch.randn(4, 1, 16, 16)
    pruned, _ = prune_model(model, s, counts)
    Masker(model, s).apply(counts)
    recalibrate_bn(model, calib, batch_size=16)
    recalibrate_bn(pruned, calib, batch_size=16)
    assert not model.training
    assert (model(x) - pruned(x)).abs().max().item() <= 1e-4
    bn = model.bn1
    assert bn.momentum == 0.1 and bn.num_batches_tracked.item() == 4


def test_channel_choice_by_magnitude():
    model = build_model("vgg", 10, 1, 0.25).eval()
    conv = model.features[0]
    with torch.no_grad():
        conv.weight.mul_(0.01)
        conv.weight[3] *= 1000.0  # the one strong filter
    s = Structure(model, torch.randn(1, 1, 16, 16))
    assert s.groups[0].kept(1) == [3]
    s2 = Structure(model, torch.randn(1, 1, 16, 16), importance="l2")
    assert s2.groups[0].kept(1) == [3]
    with pytest.raises(ConfigError):
        Structure(model, torch.randn(1, 1, 16, 16), importance="nosuch")


def test_rounding_and_policy_validation(structures):
    _, s = structures["vgg"]
    assert Structure.round_channels(64, 0.3, 8) == 16
    assert Structure.round_channels(64, 0.01, 8) == 8
    assert Structure.round_channels(6, 0.01, 8) == 1
    with pytest.raises(ConfigError, match="unknown groups"):
        s.policy_counts({"nosuch": 0.5})
    with pytest.raises(ConfigError, match="lacks groups"):
        s.policy_counts({s.groups[0].name: 0.5})
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        s.policy_counts({g.name: 1.5 for g in s.groups})


def test_model_with_nothing_to_prune():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
    with pytest.raises(ConfigError, match="nothing to prune"):
        Structure(model, torch.randn(1, 1, 8, 8))


class _AuxHeadNet(torch.nn.Module):
    """A main classifier and an auxiliary conv head: two outputs, both shapes must survive pruning."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.aux = torch.nn.Conv2d(16, 5, 1)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        a = self.aux(h).mean((2, 3))
        h = torch.relu(self.c2(h))
        return self.fc(h.mean((2, 3))), a


def test_every_layer_feeding_an_output_is_protected(tmp_path):
    import entroprune as ep

    torch.manual_seed(0)
    net = _AuxHeadNet().eval()
    x = torch.randn(32, 1, 12, 12)
    structure = Structure(net, x[:1])
    assert {"fc", "aux"} <= set(structure.protected)
    assert "aux" not in {g.name for g in structure.groups}
    res = ep.search_module(net, x[:1], x, tmp_path / "s", ep.SearchConfig(flops_target=0.5, episodes=4, warmup=2,
                                                                        calib_size=32, rerank_top_k=0))
    pruned, _ = ep.prune_module(net, x[:1], res)
    main, aux = pruned(x[:2])
    assert main.shape == (2, 3) and aux.shape == (2, 5)


def test_ignored_layers_stay_whole_and_reach_prune(tmp_path):
    import entroprune as ep

    torch.manual_seed(0)
    net = _AuxHeadNet().eval()
    x = torch.randn(32, 1, 12, 12)
    cfg = ep.SearchConfig(flops_target=0.7, episodes=3, warmup=1, calib_size=32, rerank_top_k=0, ignored_layers=["c1"])
    res = ep.search_module(net, x[:1], x, tmp_path / "s", cfg)
    assert "c1" not in res.policy and res.ignored_layers == ["c1"]
    pruned, _ = ep.prune_module(net, x[:1], res)
    assert pruned.c1.out_channels == 16 and pruned.c2.out_channels < 16
    saved = json.loads((tmp_path / "s" / "policy.json").read_text())
    assert saved["ignored_layers"] == ["c1"]
    with pytest.raises(ConfigError, match="not modules of the model"):
        Structure(net, x[:1], ignored=["conv9"])


def test_untraceable_model_is_one_line(monkeypatch):
    import torch_pruning as tp

    def fail(self, *a, **k):
        raise IndexError("list index out of range")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", fail)
    with pytest.raises(ConfigError, match="torch-pruning cannot trace this model .IndexError"):
        Structure(_AuxHeadNet().eval(), torch.randn(1, 1, 12, 12))


# Concatenation: a conv reading torch.cat costs a sum over the parts' kept fractions, not a product.
class _DenseBlock(torch.nn.Module):
    """DenseNet-style: each conv reads the concatenation of all before it."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.b0 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c1, self.b1 = nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(24, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x0 = torch.relu(self.b0(self.c0(x)))
        x01 = torch.cat([x0, torch.relu(self.b1(self.c1(x0)))], 1)
        x2 = torch.relu(self.b2(self.c2(x01)))
        x3 = torch.relu(self.b3(self.c3(torch.cat([x01, x2], 1))))
        return self.fc(x3.mean((2, 3)))


class _NestedConcat(torch.nn.Module):
    """torch-pruning's cascaded-concat pattern: a concat inside a concat, groups read twice."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.a, self.b = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.c, self.d = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(48, 32, 3, padding=1)
        self.e, self.fc = nn.Conv2d(64, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        a = torch.relu(self.a(x))
        b = torch.relu(self.b(a))
        c = torch.relu(self.c(b))
        d = torch.relu(self.d(torch.cat([a, torch.cat([b, c], 1)], 1)))
        e = torch.relu(self.e(torch.cat([d, b, c], 1)))
        return self.fc(e.mean((2, 3)))


@pytest.mark.parametrize("net_class", [_DenseBlock, _NestedConcat])
def test_concat_costs_are_exact_and_the_search_meets_its_target(net_class, tmp_path):
    import entroprune as ep

    torch.manual_seed(0)
    net = net_class().eval()
    x = torch.randn(64, 1, 12, 12)
    s = Structure(net, x[:1])
    full = count_macs_params(net, x[:1])[0]
    rng = np.random.default_rng(0)
    for _ in range(5):  # the closed form against torch-pruning's counter on the physically pruned net
        counts = [int(rng.integers(1, g.channels + 1)) for g in s.groups]
        pruned = prune_model(net, s, counts)[0]
        assert s.macs(counts) == pytest.approx(count_macs_params(pruned, x[:1])[0], rel=1e-9)
    # keeping 20% everywhere is reachable, so a 25% target must be (it was refused as "unreachable")
    cfg = ep.SearchConfig(flops_target=0.25, episodes=4, warmup=2, calib_size=32, rerank_top_k=0, band=None,
                          min_keep=0.2)
    res = ep.search_module(net, x[:1], x, tmp_path / "s", cfg)
    pruned, _ = ep.prune_module(net, x[:1], res)
    measured = count_macs_params(pruned, x[:1])[0] / full
    assert 0.95 * 0.25 <= measured <= 0.25 + 1e-9, measured


class _ResNeXtBlock(torch.nn.Module):
    """A residual block around a grouped 3x3 conv (groups=4), as in ResNeXt; a groups=2 conv after it."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.bs = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.reduce, self.br = nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32)
        self.grouped, self.bg = nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32)
        self.expand, self.be = nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32)
        self.pair, self.bp = nn.Conv2d(32, 16, 3, padding=1, groups=2), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.bs(self.stem(x)))
        y = torch.relu(self.br(self.reduce(h)))
        y = torch.relu(self.bg(self.grouped(y)))
        h = torch.relu(h + self.be(self.expand(y)))
        return self.fc(torch.relu(self.bp(self.pair(h))).mean((2, 3)))


class _GroupNormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.n0 = nn.Conv2d(1, 24, 3, padding=1), nn.GroupNorm(4, 24)
        self.c1, self.n1 = nn.Conv2d(24, 32, 3, padding=1), nn.GroupNorm(8, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.n1(self.c1(torch.relu(self.n0(self.c0(x))))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("net_class", [_ResNeXtBlock, _GroupNormNet])
@pytest.mark.parametrize("round_to", [1, 8])
def test_grouped_convs_and_groupnorm_lose_whole_chunks(net_class, round_to):
    """A grouped conv's (or GroupNorm's) channels are pruned evenly per group: counts are multiples of its
    groups, the pruned net runs, its MACs match the closed form, and (with BN) it equals the masked net."""
    torch.manual_seed(0)
    net = _randomise_bn(net_class()).eval()
    x = torch.randn(4, 1, 12, 12)
    s = Structure(net, x[:1])
    steps = {g.name: g.step for g in s.groups}
    assert steps == ({"stem": 2, "reduce": 4, "grouped": 4, "pair": 2} if net_class is _ResNeXtBlock
                     else {"c0": 4, "c1": 8})
    rng = np.random.default_rng(round_to)
    for _ in range(4):
        counts = s.keep_counts(rng.uniform(0.1, 1.0, len(s.groups)), round_to)
        assert all(c % g.step == 0 and c > 0 for c, g in zip(counts, s.groups, strict=True))
        masker = Masker(net, s)
        masker.apply(counts)
        masked = net(x).detach()
        masker.restore()
        pruned, _ = prune_model(net, s, counts)
        out = pruned(x)
        assert out.shape == (4, 10)
        assert s.macs(counts) == pytest.approx(count_macs_params(pruned, x[:1])[0], rel=1e-9)
        if net_class is _ResNeXtBlock:  # GroupNorm's statistics differ once channels are removed
            assert (masked - out).abs().max().item() <= 1e-5


def test_search_and_prune_a_grouped_conv_net(tmp_path):
    import entroprune as ep

    torch.manual_seed(0)
    net = _ResNeXtBlock().eval()
    x = torch.randn(64, 1, 12, 12)
    cfg = ep.SearchConfig(flops_target=0.4, episodes=4, warmup=2, calib_size=32, rerank_top_k=0)
    res = ep.search_module(net, x[:1], x, tmp_path / "s", cfg)
    pruned, _ = ep.prune_module(net, x[:1], res)
    assert pruned.grouped.groups == 4 and pruned.grouped.out_channels % 4 == 0
    measured = count_macs_params(pruned, x[:1])[0] / count_macs_params(net, x[:1])[0]
    assert 0.95 * 0.4 <= measured <= 0.4 + 1e-9, measured


# Patterns torch-pruning maps wrongly or cannot rank, and a transposed conv (issue 18).
class _UNet(torch.nn.Module):
    """A U-Net step: a strided conv, a transposed conv back up, a skip concatenation."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.d1 = C(1, 16, 3, padding=1)
        s.d2 = C(16, 32, 3, stride=2, padding=1)
        s.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        s.u1 = C(32, 16, 3, padding=1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        a = torch.relu(s.d1(x))
        b = torch.relu(s.d2(a))
        u = torch.relu(s.up(b))
        return s.fc(torch.relu(s.u1(torch.cat([a, u], 1))).mean((2, 3)))


class _SK(torch.nn.Module):
    """SKNet-style attention: two branches stacked, weights reshaped to (branch, channel)."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.c0 = C(1, 16, 3, padding=1)
        s.b1 = C(16, 16, 3, padding=1)
        s.b2 = C(16, 16, 5, padding=2)
        s.att = nn.Linear(16, 32)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = torch.relu(s.c0(x))
        u = torch.stack([s.b1(h), s.b2(h)], 1)
        w = torch.softmax(s.att(u.sum(1).mean((2, 3))).view(-1, 2, 16, 1, 1), 1)
        return s.fc((u * w).sum(1).mean((2, 3)))


class _Gen(torch.nn.Module):
    """A Linear reshaped into conv channels, as in a generator."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.lin = nn.Linear(144, 16 * 4 * 4)
        s.c = C(16, 16, 3, padding=1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = s.lin(x.flatten(1)).view(-1, 16, 4, 4)
        return s.fc(torch.relu(s.c(h)).mean((2, 3)))


class _Shuffle(torch.nn.Module):
    """ShuffleNet's channel shuffle after a grouped 1x1 conv."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.c0 = C(1, 16, 3, padding=1)
        s.g = C(16, 16, 1, groups=4)
        s.c2 = C(16, 16, 3, padding=1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = torch.relu(s.g(torch.relu(s.c0(x))))
        h = h.view(-1, 4, 4, 12, 12).transpose(1, 2).reshape(-1, 16, 12, 12)
        return s.fc(torch.relu(s.c2(h)).mean((2, 3)))


class _DWMult(torch.nn.Module):
    """A depthwise conv with a channel multiplier (8 in, 16 out, groups=8)."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.c0 = C(1, 8, 3, padding=1)
        s.dw = C(8, 16, 3, padding=1, groups=8)
        s.c2 = C(16, 16, 1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        return s.fc(torch.relu(s.c2(torch.relu(s.dw(torch.relu(s.c0(x)))))).mean((2, 3)))


class _Incep(torch.nn.Module):
    """Inception-like: branches concatenated, then added to a 1x1 projection."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.c0 = C(1, 16, 3, padding=1)
        s.b1 = C(16, 8, 1)
        s.b2 = C(16, 8, 3, padding=1)
        s.proj = C(16, 16, 1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = torch.relu(s.c0(x))
        y = torch.cat([s.b1(h), s.b2(h)], 1) + s.proj(h)
        return s.fc(torch.relu(y).mean((2, 3)))


def test_transposed_conv_is_a_prunable_root():
    torch.manual_seed(0)
    net = _randomise_bn(_UNet()).eval()
    x = torch.randn(4, 1, 12, 12)
    s = Structure(net, x[:1])
    assert "up" in s.by_name
    rng = np.random.default_rng(0)
    for _ in range(3):
        counts = s.keep_counts(rng.uniform(0.1, 1.0, len(s.groups)))
        masker = Masker(net, s)
        masker.apply(counts)
        masked = net(x).detach()
        masker.restore()
        pruned, _ = prune_model(net, s, counts)
        assert pruned.up.out_channels == counts[s.by_name["up"].index]
        assert (masked - pruned(x)).abs().max().item() <= 1e-5
        assert s.macs(counts) == pytest.approx(count_macs_params(pruned, x[:1])[0], rel=1e-9)


@pytest.mark.parametrize("net_class,bad", [(_SK, "b1"), (_Gen, "lin"), (_Shuffle, "g"), (_Incep, "b1"),
                                           (_DWMult, "c0")])
def test_a_group_torch_pruning_gets_wrong_is_one_line_and_the_rest_prunes(net_class, bad, tmp_path):
    """The structure tries each group alone; one that breaks the forward (or cannot be ranked) is named
    with the fix, and leaving it whole lets the rest be pruned into a net that runs."""
    import entroprune as ep

    torch.manual_seed(0)
    net = net_class().eval()
    x = torch.randn(32, 1, 12, 12)
    with pytest.raises(ConfigError, match=rf"--ignore {bad}\b") as err:
        Structure(net, x[:1])
    assert "\n" not in str(err.value)
    cfg = ep.SearchConfig(flops_target=0.7, episodes=3, warmup=1, calib_size=16, rerank_top_k=0, ignored_layers=[bad])
    res = ep.search_module(net, x[:1], x, tmp_path / "s", cfg)
    pruned, _ = ep.prune_module(net, x[:1], res)
    assert pruned(x[:2]).shape == (2, 10)
    assert count_macs_params(pruned, x[:1])[0] < count_macs_params(net, x[:1])[0]
