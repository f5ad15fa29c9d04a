import math

import pytest
import torch

from entroprune.entropy import (
    VARIANTS,
    EntropyProbe,
    activation_points,
    cooccurrence_entropy,
    distribution_entropy,
    layer_entropy,
    select_layers,
)
from entroprune.models import build_model


@pytest.fixture(autouse=True)
def _seeded():
    """Random maps and models drawn from a fixed seed in every test, whatever ran before."""
    torch.manual_seed(0)


def slow_distribution(m: torch.Tensor) -> float:
    vals = [max(float(v), 0.0) for v in m.flatten()]
    s = sum(vals)
    if s == 0 or len(vals) < 2:
        return 0.0
    return -sum(v / s * math.log(v / s) for v in vals if v > 0) / math.log(len(vals))


def slow_cooccurrence(m: torch.Tensor, levels: int = 16) -> float:
    h, w = m.shape
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-12 * (1 + abs(hi)):
        return 0.0
    q = [[min(levels - 1, int((float(m[i, j]) - lo) / (hi - lo) * levels)) for j in range(w)]
         for i in range(h)]
    counts: dict[tuple[int, int], int] = {}
    for i in range(h):
        for j in range(w):
            if j + 1 < w:
                counts[(q[i][j], q[i][j + 1])] = counts.get((q[i][j], q[i][j + 1]), 0) + 1
            if i + 1 < h:
                counts[(q[i][j], q[i + 1][j])] = counts.get((q[i][j], q[i + 1][j]), 0) + 1
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def test_constant_and_zero_maps_give_zero():
    const = torch.full((3, 5, 5), 2.5)
    assert torch.equal(cooccurrence_entropy(const), torch.zeros(3))
    zeros = torch.zeros(4, 6, 6, 6)
    for v in VARIANTS:
        out = layer_entropy(zeros, v)
        assert torch.isfinite(out).all() and torch.equal(out, torch.zeros(4))


def test_point_mass_and_uniform_distribution():
    m = torch.zeros(7, 7)
    m[3, 4] = 5.0
    assert distribution_entropy(m).item() == 0.0
    assert distribution_entropy(torch.ones(7, 7)).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_positive_scale_invariance(variant):
    act = torch.rand(3, 4, 9, 9)
    a = layer_entropy(act, variant)
    b = layer_entropy(act * 37.5, variant)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_channel_order_invariance(variant):
    act = torch.rand(2, 6, 8, 8)
    perm = torch.randperm(6)
    assert torch.allclose(layer_entropy(act, variant), layer_entropy(act[:, perm], variant), atol=1e-6)


def test_matches_slow_reference():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 4, 6, 7, generator=g) - 0.3  # some negative values (rectified)
    fast_d = distribution_entropy(maps)
    fast_c = cooccurrence_entropy(maps)
    for i in range(5):
        for j in range(4):
            ref_d = slow_distribution(maps[i, j])
            ref_c = slow_cooccurrence(maps[i, j])
            assert abs(fast_d[i, j].item() - ref_d) <= 1e-5 * max(1.0, ref_d)
            assert abs(fast_c[i, j].item() - ref_c) <= 1e-5 * max(1.0, ref_c)


def test_kept_channels_only():
    act = torch.rand(2, 4, 5, 5)
    act[:, 2:] = 0  # "pruned" channels
    kept = torch.tensor([0, 1])
    assert torch.allclose(layer_entropy(act, "distribution", kept),
                          layer_entropy(act[:, :2], "distribution"))
    assert (layer_entropy(act, "distribution") < layer_entropy(act, "distribution", kept)).all()


def test_probe_on_model_and_layer_selection():
    model = build_model("vgg", 10, 1, 0.25).eval()
    x = torch.randn(6, 1, 16, 16)
    points = activation_points(model, x[:1])
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert set(points) == set(convs)
    assert all("features" in p for p in points.values())
    assert points[convs[0]] != convs[0]  # the BN after it, not the conv
    with EntropyProbe(model, convs, points, variants=VARIANTS) as probe:
        res = probe.measure(x, batch_size=4)
    assert set(res) == set(VARIANTS)
    for v in VARIANTS:
        assert all(math.isfinite(val) for val in res[v].values())
    assert all(0 <= val <= 1 for val in res["distribution"].values())
    assert select_layers(convs, "last") == convs[-1:]
    assert select_layers(convs, "last:2") == convs[-2:]
    assert select_layers(convs, f"{convs[1]},{convs[0]}") == convs[:2]
    with pytest.raises(ValueError):
        select_layers(convs, "nosuch")


def test_probe_records_only_inside_measure():
    model = build_model("vgg", 10, 1, 0.25).eval()
    x = torch.randn(4, 1, 16, 16)
    points = activation_points(model, x[:1])
    convs = list(points)
    with EntropyProbe(model, convs, points) as probe:
        first = probe.measure(x)
        sums = dict(probe.sums)
        with torch.no_grad():
            model(torch.randn(8, 1, 16, 16))  # e.g. an accuracy forward: must not be recorded
        assert probe.sums == sums and probe.count == 4
        assert probe.measure(x) == first


@pytest.mark.parametrize("variants", [("cooccurrence-avg",), ("distribution-avg", "cooccurrence-avg"),
                                      ("cooccurrence-avg", "distribution")])
def test_probe_with_kept_channels_matches_layer_entropy(variants):
    """The probe's kept-channel path (it selects before rectifying when every variant averages
    channels) gives exactly what layer_entropy gives on the layer's activations."""
    model = build_model("vgg", 10, 1, 0.25).eval()
    x = torch.randn(5, 1, 16, 16)
    points = activation_points(model, x[:1])
    convs = list(points)
    mods = dict(model.named_modules())
    acts = {}
    handles = [mods[points[c]].register_forward_hook(lambda m, i, o, c=c: acts.__setitem__(c, o.detach().clone()))
               for c in convs]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    kept = {c: torch.arange(0, acts[c].shape[1], 2) for c in convs[:2]}
    kept[convs[2]] = torch.tensor([], dtype=torch.long)  # a layer with nothing kept
    with EntropyProbe(model, convs, points, variants=variants) as probe:
        probe.reset(kept)
        res = probe.measure(x)
    for v in variants:
        for c in convs:
            want = layer_entropy(acts[c], v, kept.get(c)).sum().item() / len(x)
            assert res[v][c] == pytest.approx(want, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("variant", ["distribution", "cooccurrence", "cooccurrence-avg"])
def test_one_dimensional_maps_are_read_as_one_row(variant):
    """A Conv1d's (N, C, L) maps: entropy over the L positions, neighbours along the signal, as the slow
    references compute them on a 1 x L map; a smooth, concentrated bump reads lower than noise."""
    act = torch.rand(3, 4, 50) - 0.2
    per_image = layer_entropy(act, variant)
    assert torch.equal(per_image, layer_entropy(act.unsqueeze(2), variant))
    slow = slow_distribution if variant == "distribution" else slow_cooccurrence
    if not variant.endswith("-avg"):
        ref = torch.tensor([sum(slow(act[i, j][None]) for j in range(4)) / 4 for i in range(3)])
        assert torch.allclose(per_image, ref, atol=1e-5)
    bump = torch.exp(-((torch.arange(50.0) - 25) / 4) ** 2).expand(3, 4, 50)
    assert (layer_entropy(bump, variant) < layer_entropy(torch.rand(3, 4, 50), variant)).all()


@pytest.mark.parametrize("variant", ["distribution", "cooccurrence", "cooccurrence-avg"])
def test_three_dimensional_maps_are_read_slice_by_slice(variant):
    """A Conv3d's (N, C, D, H, W) maps: each slice's spatial entropy (a video's frame, a volume's slice), the mean
    over the D slices, with the kept channels as for 2-D maps; a slice of noise among smooth ones raises it."""
    act = torch.rand(3, 4, 5, 6, 7) - 0.2
    kept = torch.tensor([0, 2, 3])
    per_image = layer_entropy(act, variant, kept)
    slices = torch.stack([layer_entropy(act[:, :, d], variant, kept) for d in range(5)], 1)
    assert per_image.shape == (3,) and torch.allclose(per_image, slices.mean(1), atol=1e-6)
    yy, xx = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    smooth = torch.exp(-((yy - 3) ** 2 + (xx - 3) ** 2) / 4).expand(3, 4, 5, 6, 7).clone()
    noisy = smooth.clone()
    noisy[:, :, 2] = torch.rand(3, 4, 6, 7)
    assert (layer_entropy(smooth, variant) < layer_entropy(noisy, variant)).all()


def test_probe_on_three_dimensional_net():
    """Conv3d layers are measured at their BatchNorm3d, as Conv2d layers at theirs."""
    nn = torch.nn
    model = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
                          nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    x = torch.randn(6, 1, 4, 8, 8)
    points = activation_points(model, x[:1])
    assert points == {"0": "1", "3": "3"}
    with EntropyProbe(model, list(points), points, variants=VARIANTS) as probe:
        res = probe.measure(x, batch_size=4)
    assert all(math.isfinite(v) and v > 0 for r in res.values() for v in r.values())


def test_probe_on_one_dimensional_net():
    """Conv1d layers are measured at their BatchNorm1d, as Conv2d layers at theirs."""
    nn = torch.nn
    model = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    x = torch.randn(6, 2, 40)
    points = activation_points(model, x[:1])
    assert points == {"0": "1", "3": "3"}
    with EntropyProbe(model, list(points), points, variants=VARIANTS) as probe:
        res = probe.measure(x, batch_size=4)
    assert all(math.isfinite(v) and v > 0 for r in res.values() for v in r.values())


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_transposed_conv_maps_are_measured(dims):
    """A U-Net's decoder map (a transposed conv's output) is read like any conv's: the probe hooks it, and its
    entropy follows which of its channels are kept (it was left out: an entropy search set that group blind)."""
    import tests.archs

    torch.manual_seed(0)
    net = tests.archs.UNet(dims=dims).eval()
    x = torch.randn(4, 1, *(8,) * dims)
    points = activation_points(net, x[:1])
    assert list(points) == ["d1", "d2", "up", "u1"]  # in forward order, the transposed conv among them
    with EntropyProbe(net, ["up"], points) as probe:
        full = probe.measure(x)["distribution"]["up"]
        probe.reset({"up": torch.arange(4)})  # a quarter of its 16 channels kept
        quarter = probe.measure(x)["distribution"]["up"]
    assert math.isfinite(full) and full > 0 and quarter != full
