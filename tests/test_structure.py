import copy
import json

import numpy as np
import pytest
import torch

from entroprune.errors import ConfigError
from entroprune.models import build_model
from entroprune.prune import Masker, prune_model, recalibrate_bn, replay_pruning_history
from entroprune.structure import Structure, count_macs_params
from tests.archs import (
    SK,
    AttentionHeads,
    AuxHeadNet,
    ChannelSlice,
    DenseBlock,
    DWMult,
    Gen,
    GroupNormNet,
    Incep,
    NestedConcat,
    ResNeXtBlock,
    Shuffle,
    UNet,
)

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


def test_bn_recalibration_is_the_exact_average_over_every_batch():
    """The statistics are the mean over all calibration batches, each weighing the same (momentum None), not a
    moving average that forgets the first batches; stale statistics are forgotten entirely."""
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    bn.num_batches_tracked.fill_(1000)  # a trained net's: a running average that kept counting would keep them
    images = torch.randn(48, 1, 8, 8) * torch.linspace(0.5, 3.0, 48).view(48, 1, 1, 1)  # batches that differ
    recalibrate_bn(torch.nn.Sequential(conv, bn), images, batch_size=16)
    with torch.no_grad():
        per_batch = [conv(images[i:i + 16]) for i in range(0, 48, 16)]
    mean = torch.stack([b.mean((0, 2, 3)) for b in per_batch]).mean(0)
    var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in per_batch]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5) and torch.allclose(bn.running_var, var, rtol=1e-4)
    assert bn.momentum == 0.1 and not bn.training


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


def test_l1_and_l2_rank_spread_and_peaked_filters_apart():
    """A filter of many small weights outranks one with a single large weight under L1, not under L2."""
    model = build_model("vgg", 10, 1, 0.25).eval()
    conv = model.features[0]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-3)  # everything else in the group (BN, the next conv's inputs) negligible
        conv.weight[1] = 1.0  # spread: L1 9, L2 3
        conv.weight[2, 0, 1, 1] = 5.0  # peaked: L1 5, L2 5
    x = torch.randn(1, 1, 16, 16)
    assert Structure(model, x, importance="l1").groups[0].kept(1) == [1]
    assert Structure(model, x, importance="l2").groups[0].kept(1) == [2]


@pytest.mark.parametrize("name,norm", [("vgg", "l2"), ("vgg16", "l2"), ("resnet20", "l1"), ("mobilenetv2", "l1")])
def test_auto_ranking_is_l2_on_a_plain_chain_and_l1_where_groups_couple_convs(name, norm):
    """``auto``: every group of a VGG has one producing conv; ResNet's residual streams and MobileNetV2's
    depthwise blocks couple several, so they keep L1. The orders are that norm's, group by group."""
    model = build_model(name, 10, 1, 0.25).eval()
    x = torch.randn(1, 1, 28, 28)
    auto, same, other = (Structure(model, x, importance=r) for r in ("auto", norm, {"l1": "l2", "l2": "l1"}[norm]))
    assert (auto.importance, auto.norm, same.norm) == ("auto", norm, norm)
    assert [g.order for g in auto.groups] == [g.order for g in same.groups]
    assert [g.order for g in auto.groups] != [g.order for g in other.groups]


def test_rounding_and_policy_validation(structures):
    _, s = structures["vgg"]
    assert Structure.round_channels(64, 0.3, 8) == 16
    assert Structure.round_channels(64, 0.01, 8) == 8
    assert Structure.round_channels(6, 0.01, 8) == 1
    # one ratio for every group is the uniform policy, as a list of the same ratio
    assert s.keep_counts(0.3, 8).tolist() == s.keep_counts([0.3] * len(s.groups), 8).tolist()
    assert s.keep_counts(0.3, 8).tolist() != s.keep_counts(0.6, 8).tolist()
    with pytest.raises(ValueError):  # a list must still name every group: only a single ratio is spread
        s.keep_counts([0.3], 8)
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


def test_every_layer_feeding_an_output_is_protected(tmp_path):
    import entroprune as ep

    torch.manual_seed(0)
    net = AuxHeadNet().eval()
    x = torch.randn(32, 1, 16, 16)
    structure = Structure(net, x[:1])
    assert {"fc", "aux"} <= set(structure.protected)
    assert "aux" not in {g.name for g in structure.groups}
    res = ep.search_module(net, x[:1], x, tmp_path / "s", ep.SearchConfig(macs_target=0.5, episodes=4, warmup=2,
                                                                        calib_size=32, rerank_top_k=0))
    pruned, _ = ep.prune_module(net, x[:1], res)
    main, aux = pruned(x[:2])
    assert main.shape == (2, 3) and aux.shape == (2, 5)


def test_ignored_layers_stay_whole_and_reach_prune(tmp_path):
    import entroprune as ep

    torch.manual_seed(0)
    net = AuxHeadNet().eval()
    x = torch.randn(32, 1, 16, 16)
    cfg = ep.SearchConfig(macs_target=0.7, episodes=3, warmup=1, calib_size=32, rerank_top_k=0, ignored_layers=["c1"])
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
        Structure(AuxHeadNet().eval(), torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize("net_class", [DenseBlock, NestedConcat])
def test_concat_costs_are_exact_and_the_search_meets_its_target(net_class, tmp_path):
    import entroprune as ep

    torch.manual_seed(0)
    net = net_class().eval()
    x = torch.randn(64, 1, 16, 16)
    s = Structure(net, x[:1])
    full = count_macs_params(net, x[:1])[0]
    rng = np.random.default_rng(0)
    for _ in range(5):  # the closed form against torch-pruning's counter on the physically pruned net
        counts = [int(rng.integers(1, g.channels + 1)) for g in s.groups]
        pruned = prune_model(net, s, counts)[0]
        assert s.macs(counts) == pytest.approx(count_macs_params(pruned, x[:1])[0], rel=1e-9)
    # keeping 20% everywhere is reachable, so a 25% target must be (it was refused as "unreachable")
    cfg = ep.SearchConfig(macs_target=0.25, episodes=4, warmup=2, calib_size=32, rerank_top_k=0, band=None,
                          min_keep=0.2, round_to=1)  # the floor above is the unrounded one
    res = ep.search_module(net, x[:1], x, tmp_path / "s", cfg)
    pruned, _ = ep.prune_module(net, x[:1], res)
    measured = count_macs_params(pruned, x[:1])[0] / full
    assert 0.95 * 0.25 <= measured <= 0.25 + 1e-9, measured


@pytest.mark.parametrize("net_class", [ResNeXtBlock, GroupNormNet])
@pytest.mark.parametrize("round_to", [1, 8])
def test_grouped_convs_and_groupnorm_lose_whole_chunks(net_class, round_to):
    """A grouped conv's (or GroupNorm's) channels are pruned evenly per group: counts are multiples of its
    groups, the pruned net runs, its MACs match the closed form, and (with BN) it equals the masked net."""
    torch.manual_seed(0)
    net = _randomise_bn(net_class()).eval()
    x = torch.randn(4, 1, 16, 16)
    s = Structure(net, x[:1])
    steps = {g.name: g.step for g in s.groups}
    assert steps == ({"stem": 2, "reduce": 4, "grouped": 4, "pair": 2} if net_class is ResNeXtBlock
                     else {"c0": 4, "c1": 4})
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
        if net_class is ResNeXtBlock:  # GroupNorm's statistics differ once channels are removed
            assert (masked - out).abs().max().item() <= 1e-5


def test_search_and_prune_a_grouped_conv_net(tmp_path):
    import entroprune as ep

    torch.manual_seed(0)
    net = ResNeXtBlock().eval()
    x = torch.randn(64, 1, 16, 16)
    cfg = ep.SearchConfig(macs_target=0.4, episodes=4, warmup=2, calib_size=32, rerank_top_k=0)
    res = ep.search_module(net, x[:1], x, tmp_path / "s", cfg)
    pruned, _ = ep.prune_module(net, x[:1], res)
    assert pruned.grouped.groups == 4 and pruned.grouped.out_channels % 4 == 0
    measured = count_macs_params(pruned, x[:1])[0] / count_macs_params(net, x[:1])[0]
    assert 0.95 * 0.4 <= measured <= 0.4 + 1e-9, measured


@pytest.mark.parametrize("dims, shape", [(2, (16, 16)), (3, (6, 8, 8))])
def test_transposed_conv_is_a_prunable_root(dims, shape):
    """A U-Net's transposed conv (2-D, and 3-D as volume segmentation nets have it) roots a group: the zero-masks
    the search scores with compute what the physically pruned net computes, and the closed-form MACs count it."""
    torch.manual_seed(0)
    net = _randomise_bn(UNet(dims=dims)).eval()
    x = torch.randn(4, 1, *shape)
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



def test_a_three_dimensional_group_with_one_pixel_slices_is_flat():
    """A 3-D conv's maps are read slice by slice, so what no entropy can see is a group whose slices are 1x1,
    whatever its depth (a 2x1x1 map has two positions, no spatial entropy in either slice)."""
    nn = torch.nn
    net = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv3d(8, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    s = Structure(net, torch.randn(1, 1, 4, 2, 2))
    assert (s.out_sizes["0"], s.out_sizes["2"], s.out_sizes["4"]) == (4, 1, 1)
    assert s.flat_groups == ["2", "4"] and s.flat(["0", "2"]) == ["2"]

@pytest.mark.parametrize("net_class,bad", [(SK, "b1"), (Gen, "lin"), (Shuffle, "g"), (Incep, "b1"),
                                           (DWMult, "c0")])
def test_a_group_torch_pruning_gets_wrong_is_one_line_and_the_rest_prunes(net_class, bad, tmp_path):
    """The structure tries each group alone; one that breaks the forward (or cannot be ranked) is named
    with the fix, and leaving it whole lets the rest be pruned into a net that runs."""
    import entroprune as ep

    torch.manual_seed(0)
    net = net_class().eval()
    x = torch.randn(32, 1, 16, 16)
    with pytest.raises(ConfigError, match=rf"`ignored_layers={bad}`") as err:
        Structure(net, x[:1])
    assert "\n" not in str(err.value)
    # 0.75: with lin left whole the generator's floor is 70.6% of the MACs (a target under it is unreachable)
    cfg = ep.SearchConfig(macs_target=0.75, episodes=3, warmup=1, calib_size=16, rerank_top_k=0, ignored_layers=[bad],
                          round_to=1)  # the floor above is the unrounded one
    res = ep.search_module(net, x[:1], x, tmp_path / "s", cfg)
    pruned, _ = ep.prune_module(net, x[:1], res)
    assert pruned(x[:2]).shape == (2, 10)
    assert count_macs_params(pruned, x[:1])[0] <= 0.75 * count_macs_params(net, x[:1])[0] * (1 + 1e-9)


def test_a_runaway_group_search_is_refused_in_one_line_not_a_hang():
    """torch-pruning's search for an attention block's qkv group grows without end (a hang, then memory
    exhausted: VainF/Torch-Pruning#430); the structure stops it and names the group. An alarm turns a hang into
    a failure where this process can set one."""
    import signal
    import threading

    from torch_pruning.dependency import graph

    def hung(*_):
        raise TimeoutError("the structure did not stop torch-pruning's runaway group search")

    alarm = threading.current_thread() is threading.main_thread()
    if alarm:
        previous = signal.signal(signal.SIGALRM, hung)
        signal.alarm(60)
    base = graph.Group
    try:
        with pytest.raises(ConfigError, match=r"cannot follow where the channels of group qkv go .*"
                                              r"`ignored_layers=qkv`") as err:
            Structure(AttentionHeads().eval(), torch.randn(1, 1, 16, 16))
    finally:
        if alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    assert "\n" not in str(err.value)
    assert graph.Group is base  # torch-pruning's own class back for every later user


def test_the_final_prune_is_checked_against_the_masked_net(monkeypatch):
    """The structure probes each group at two counts; the prune that is kept is compared with the net with the
    same channels zeroed, so a cut torch-pruning maps wrongly at another count is refused in one line naming the
    group, never written. Here the slice joins the forward after the structure was built (unseen by its
    probes): a count that keeps a sliced channel out breaks the side branch."""
    torch.manual_seed(0)
    net = ChannelSlice(sliced=False).eval()
    x = torch.randn(1, 1, 16, 16)
    s = Structure(net, x, importance="l1")  # this seed's L1 ranking gives both kinds of count (below)
    net.sliced = True
    j = s.by_name["c0"].index
    # torch-pruning cuts the side conv's inputs by the kept indices under 6; the slice takes the first 6 kept
    # channels: the same ones only where those are all under 6
    right = [c for c in range(1, 16) if max(sorted(s.groups[j].kept(c))[:6]) < 6]
    wrong = [c for c in range(1, 16) if c not in right]
    assert right and wrong  # this seed's ranking gives both kinds of count
    for c in right + wrong:
        counts = s.full_counts()
        counts[j] = c
        if c in right:
            pruned, _ = prune_model(net, s, counts, check=True)
            masked = Masker(copy.deepcopy(net), s)
            masked.apply(counts)
            assert torch.allclose(pruned(x), masked.model(x), atol=1e-5)
            continue
        with pytest.raises(ConfigError, match=r"prunes group\(s\) c0 of this model wrongly .*`ignored_layers=c0`") as err:
            prune_model(net, s, counts, check=True)
        assert "\n" not in str(err.value)
    # a failure inside torch-pruning's cut is the same one line, naming the group
    counts = s.full_counts()
    counts[j] = 8
    monkeypatch.setattr("torch_pruning.DependencyGraph.get_pruning_group",
                        lambda *a, **k: (_ for _ in ()).throw(IndexError("index 15 is out of bounds")))
    with pytest.raises(ConfigError, match=r"group\(s\) c0 .*IndexError: index 15 is out of bounds"):
        prune_model(net, s, counts)


def test_one_example_input_tensor_of_the_right_shape():
    net = AuxHeadNet().eval()
    with pytest.raises(ConfigError, match="several inputs are not supported"):
        Structure(net, (torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16)))
    with pytest.raises(ConfigError, match=r"cannot run on an example input of shape \(1, 3, 16, 16\)"):
        Structure(net, torch.randn(1, 3, 16, 16))
    # the MACs count the API exports takes the same example, with the same one-line refusals
    with pytest.raises(ConfigError, match="several inputs are not supported"):
        count_macs_params(net, (torch.randn(1, 1, 16, 16),))
    with pytest.raises(ConfigError, match=r"cannot run on an example input of shape \(1, 3, 16, 16\)"):
        count_macs_params(net, torch.randn(1, 3, 16, 16))
    assert net.training is False
