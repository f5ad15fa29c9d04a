import copy

import pytest
import torch
import torch.nn as nn

import entroprune.refit as refit_module
from entroprune.models import build_model
from entroprune.prune import Masker, prune_model, refitted
from entroprune.refit import refit_kept, refit_order
from entroprune.structure import Structure


class Doubled(nn.Module):
    """conv1's filters 4-7 are twice filters 0-3 (ReLU commutes with a positive scale), so cutting 0-3 loses
    nothing that conv2 cannot get back by reading 4-7 at half weight: a refit must find that exactly."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 5, 3, padding=1)
        self.head = nn.Linear(5, 4)
        with torch.no_grad():
            self.conv1.weight[4:] = 2 * self.conv1.weight[:4]
            self.conv1.bias[4:] = 2 * self.conv1.bias[:4]

    def forward(self, x):
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_a_refit_recovers_what_the_kept_channels_still_carry(monkeypatch):
    """Exactly, with the ridge made negligible (at its default it shrinks the weights by about 0.1%)."""
    monkeypatch.setattr(refit_module, "REFIT_RIDGE", 1e-9)
    torch.manual_seed(0)
    model, x = Doubled().eval(), torch.randn(64, 3, 8, 8)
    structure = Structure(model, x[:1])
    counts = [4 if g.name == "conv1" else g.channels for g in structure.groups]
    assert sorted(structure.groups[0].kept(4)) == [4, 5, 6, 7]  # L1 keeps the doubled filters
    plain, _ = prune_model(model, structure, counts, check=True)
    fitted, _ = prune_model(model, structure, counts, check=True, refit_images=x)
    want = _outputs(model, x)
    assert (_outputs(plain, x) - want).abs().max() > 0.05  # the cut alone loses conv2's reading of 0-3
    assert torch.allclose(_outputs(fitted, x), want, atol=1e-5)
    # conv2 reads channel 4+j at its own weight plus half of what it gave channel j
    w = model.conv2.weight.detach()
    assert torch.allclose(fitted.conv2.weight, w[:, 4:] + w[:, :4] / 2, atol=1e-5)
    assert model.conv2.weight.shape[1] == 8  # the model itself is untouched


class DoubledAs(Doubled):
    """Doubled with convs of another kind: the refit reads their inputs padded as their forward pads them (a
    transposed conv2 reads a plain conv1 of its dimension)."""

    def __init__(self, conv, **pad):
        super().__init__()
        plain = {nn.ConvTranspose1d: nn.Conv1d, nn.ConvTranspose2d: nn.Conv2d, nn.ConvTranspose3d: nn.Conv3d}
        first = plain[conv](3, 8, 3, padding=1) if conv in plain else conv(3, 8, 3, **pad)
        self.conv1, self.conv2 = first, conv(8, 5, 4, dilation=3, **pad)
        with torch.no_grad():
            self.conv1.weight[4:] = 2 * self.conv1.weight[:4]
            self.conv1.bias[4:] = 2 * self.conv1.bias[:4]

    def forward(self, x):
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(2).mean(2))


@pytest.mark.parametrize(("conv", "pad"), [
    (nn.Conv2d, {"padding": "same", "padding_mode": "reflect"}),  # 3 * (4 - 1) odd: one more on the right
    (nn.Conv2d, {"padding": "valid"}),
    (nn.Conv2d, {"padding": 2, "padding_mode": "circular"}),
    (nn.Conv1d, {"padding": 1, "padding_mode": "replicate"}),
    (nn.Conv1d, {"padding": "same"}),
    (nn.Conv3d, {"padding": "same", "padding_mode": "replicate"}),
    (nn.Conv3d, {"padding": (0, 1, 2), "stride": (1, 2, 1)}),
    (nn.ConvTranspose2d, {"stride": 2, "padding": 1, "output_padding": 1}),
    (nn.ConvTranspose1d, {"stride": 3, "padding": 10}),  # past the kernel's reach, 3 * (4 - 1): a crop
    (nn.ConvTranspose3d, {"stride": (1, 2, 1), "padding": (0, 1, 2)}),
])
def test_a_refit_recovers_it_whatever_the_convs_dimension_and_padding(monkeypatch, conv, pad):
    monkeypatch.setattr(refit_module, "REFIT_RIDGE", 1e-9)
    torch.manual_seed(0)
    model = DoubledAs(conv, **pad).eval()
    dims = 1 if conv in (nn.Conv1d, nn.ConvTranspose1d) else 2 if conv in (nn.Conv2d, nn.ConvTranspose2d) else 3
    x = torch.randn(64, 3, *{1: (16,), 2: (12, 12), 3: (14, 24, 12)}[dims])
    structure = Structure(model, x[:1])
    counts = [4 if g.name == "conv1" else g.channels for g in structure.groups]
    fitted, _ = prune_model(model, structure, counts, check=True, refit_images=x)
    assert torch.allclose(_outputs(fitted, x), _outputs(model, x), atol=1e-5)
    inputs = 0 if isinstance(model.conv2, nn.modules.conv._ConvTransposeNd) else 1  # the dim holding conv2's inputs
    w = model.conv2.weight.detach()
    want = w.narrow(inputs, 4, 4) + w.narrow(inputs, 0, 4) / 2
    assert torch.allclose(fitted.conv2.weight, want, atol=1e-5)


class SizedUp(nn.Module):
    """A transposed conv called with its output size, which sets its output padding at the call."""

    def __init__(self):
        super().__init__()
        self.conv1, self.up = nn.Conv2d(3, 8, 3, padding=1), nn.ConvTranspose2d(8, 5, 3, stride=2, padding=1)

    def forward(self, x):
        return self.up(torch.relu(self.conv1(x)), output_size=[2 * x.shape[2], 2 * x.shape[3]]).mean((2, 3))


def test_a_transposed_conv_given_its_output_size_at_the_call_keeps_its_weights():
    torch.manual_seed(0)
    model, x = SizedUp().eval(), torch.randn(32, 3, 8, 8)
    structure = Structure(model, x[:1])
    masked = copy.deepcopy(model)
    masker = Masker(masked, structure)
    counts = [4 if g.name == "conv1" else g.channels for g in structure.groups]
    masker.apply(counts)
    assert refit_kept(model, masked, masker.kept_channels(counts), x) == []  # its rows could not be read right


class ChannelsLast(nn.Module):
    """Doubled's conv1, then a linear layer over its maps read channels last (a ConvNeXt MLP)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.lin, self.head = Doubled().conv1, nn.Linear(8, 5), nn.Linear(5, 4)

    def forward(self, x):
        return self.head(self.lin(torch.relu(self.conv1(x)).permute(0, 2, 3, 1)).mean((1, 2)))


def test_a_linear_layer_reading_maps_channels_last_is_fitted_on_sampled_positions(monkeypatch):
    """As a conv is, REFIT_SAMPLES positions an image rather than every one (all of 1024 images' were rows: 4.8 GB
    of float64 targets for a 256-wide layer on 48x48 maps), and what the cut channels carried is still made up."""
    monkeypatch.setattr(refit_module, "REFIT_RIDGE", 1e-9)
    rows = {}
    equations = refit_module._normal_equations

    def counted(mod, batches, gen):
        got = equations(mod, batches, gen)
        rows[tuple(mod.weight.shape)] = got and got[3]  # lin's is (5, 8) until the physical cut
        return got

    monkeypatch.setattr(refit_module, "_normal_equations", counted)
    torch.manual_seed(0)
    model, x = ChannelsLast().eval(), torch.randn(64, 3, 8, 8)
    structure = Structure(model, x[:1])
    counts = [4 if g.name == "conv1" else g.channels for g in structure.groups]
    fitted, _ = prune_model(model, structure, counts, check=True, refit_images=x)
    assert rows[(5, 8)] == len(x) * refit_module.REFIT_SAMPLES < len(x) * 8 * 8
    assert torch.allclose(_outputs(fitted, x), _outputs(model, x), atol=1e-5)


def test_a_refit_with_nothing_cut_keeps_the_net():
    torch.manual_seed(0)
    model, x = Doubled().eval(), torch.randn(32, 3, 8, 8)
    structure = Structure(model, x[:1])
    full = [g.channels for g in structure.groups]
    fitted = refitted(model, structure, full, x)
    assert all(torch.equal(p, q) for p, q in zip(fitted.parameters(), model.parameters(), strict=True))


def test_a_refit_brings_a_pruned_net_closer_to_the_unpruned_one():
    """On a net with BatchNorm, residual streams and depthwise convs: every layer the refit touches matches
    the unpruned net better than the cut alone, and the net's outputs do too."""
    torch.manual_seed(0)
    for name in ("resnet20", "mobilenetv2"):
        model = build_model(name, 10, 1, width_mult=0.25).eval()
        x = torch.randn(128, 1, 28, 28)
        structure = Structure(model, x[:1])
        counts = structure.keep_counts(0.5)
        plain, _ = prune_model(model, structure, counts, check=True)
        fitted, _ = prune_model(model, structure, counts, check=True, refit_images=x[:96])
        held = x[96:]  # images the refit did not see
        want = _outputs(model, held)
        assert (_outputs(fitted, held) - want).pow(2).mean() < 0.5 * (_outputs(plain, held) - want).pow(2).mean()


def test_depthwise_and_shared_layers_keep_their_weights():
    torch.manual_seed(0)
    model = build_model("mobilenetv2", 10, 1, width_mult=0.25).eval()
    x = torch.randn(32, 1, 28, 28)
    order = refit_order(model, x)
    mods = dict(model.named_modules())
    depthwise = [n for n, m in mods.items() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and not set(depthwise) & set(order)
    structure = Structure(model, x[:1])
    masked = copy.deepcopy(model)
    masker = Masker(masked, structure)
    counts = structure.keep_counts(0.5)
    masker.apply(counts)
    before = {n: mods[n].weight.detach().clone() for n in depthwise}
    done = refit_kept(model, masked, masker.kept_channels(counts), x)
    after = dict(masked.named_modules())
    # the stem reads the images themselves: nothing to refit; the classifier, on 32 images for its 608 kept
    # inputs, stays as cut (REFIT_HEAD_ROWS)
    assert done == order[1:-1] and order[-1] == "classifier"
    for n in depthwise:  # the masker zeroed their cut channels; the refit left the rest as it was
        kept = masker.kept_channels(counts).get(n)
        assert torch.equal(after[n].weight[kept], before[n][kept])

    shared = nn.Conv2d(4, 4, 3, padding=1)
    twice = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), shared, nn.ReLU(), shared)
    assert refit_order(twice, x) == ["0"]


def test_a_refit_without_the_head_leaves_the_layers_the_model_returns():
    """refit_head False: the classifier keeps the cut's weights (no normalisation follows it, so its refitted
    scale is the logits'); every other layer is refitted as before, the same weights bit for bit."""
    from entroprune.refit import output_layers

    torch.manual_seed(0)
    model = build_model("vgg", 10, 1, width_mult=0.25).eval()
    x = torch.randn(48, 1, 28, 28)
    assert output_layers(model, x) == {"classifier"}
    assert output_layers(Doubled(), torch.randn(2, 3, 8, 8)) == {"head"}
    structure = Structure(model, x[:1])
    counts = structure.keep_counts(0.4)
    whole, body = refitted(model, structure, counts, x), refitted(model, structure, counts, x, head=False)
    cut = copy.deepcopy(model)
    Masker(cut, structure).apply(counts)
    assert not torch.equal(whole.classifier.weight, cut.classifier.weight)
    assert torch.equal(body.classifier.weight, cut.classifier.weight)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][1:]  # the stem reads the images
    mods_whole, mods_body = dict(whole.named_modules()), dict(body.named_modules())
    assert all(torch.equal(mods_whole[n].weight, mods_body[n].weight) for n in convs)


def test_a_head_with_too_few_equations_per_input_stays_as_cut_and_says_so():
    """A layer the model returns is refitted only on REFIT_HEAD_ROWS images per kept input (MobileNetV2's
    classifier, refitted on 1.7, cost 7.6-10.0 points after the fine-tune); the body is refitted regardless."""
    from entroprune.refit import REFIT_HEAD_ROWS

    torch.manual_seed(0)
    model = build_model("vgg", 10, 1, width_mult=0.25).eval()
    x = torch.randn(48, 1, 28, 28)
    structure = Structure(model, x[:1], importance="l1")  # the L1 pick: 12 live inputs (L2's has 13)
    counts = structure.keep_counts(0.4)  # 12 inputs into the classifier: 48 images give 4 each, 24 give 2
    cut = copy.deepcopy(model)
    Masker(cut, structure).apply(counts)
    assert 24 < REFIT_HEAD_ROWS * 12 <= 48
    assert not torch.equal(refitted(model, structure, counts, x).classifier.weight, cut.classifier.weight)
    with pytest.warns(UserWarning, match=r"left `classifier` as cut: 24 equations for its 12 kept inputs \(2.0 each"):
        few = refitted(model, structure, counts, x[:24])
    assert torch.equal(few.classifier.weight, cut.classifier.weight)
    assert not torch.equal(few.features[3].weight, cut.features[3].weight)  # the body is refitted on as few


def test_the_refit_is_seeded():
    torch.manual_seed(0)
    model = build_model("vgg", 10, 1, width_mult=0.25).eval()
    x = torch.randn(64, 1, 28, 28)
    structure = Structure(model, x[:1])
    counts = structure.keep_counts(0.4)
    a, b, c = (refitted(model, structure, counts, x, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_prune_checkpoint_refits_when_asked_and_records_it(digits_ckpt, tmp_path):
    from entroprune.api import evaluate_checkpoint, load_model, prune_checkpoint

    model, ckpt = load_model(digits_ckpt)
    structure = Structure(model, ckpt.spec.example_input())
    policy = {"policy": {g.name: 0.3 for g in structure.groups}}
    acc = {}
    for refit, folder in ((None, "default"), (False, "plain")):
        prune_checkpoint(digits_ckpt, policy, tmp_path / folder, **({} if refit is None else {"refit": refit}))
        pruning = load_model(tmp_path / folder / "model.pt")[1].pruning
        assert pruning["refit"] is (refit is None) and pruning["norm"] == "l1"  # refit on by default
        acc[folder] = evaluate_checkpoint(tmp_path / folder / "model.pt")[1]["test_accuracy"]
    assert acc["default"] > acc["plain"] + 5  # before any fine-tune: the refit gives accuracy back


def test_a_prune_that_cuts_otherwise_than_the_search_scored_warns(digits_ckpt, tmp_path):
    """A policy re-ranked on refitted nets, cut plainly (or the reverse), fine-tunes a net its choice was not made
    for: one warning naming both ways to agree; none where they agree or the search did not re-rank."""
    import warnings

    from entroprune.api import load_model, prune_checkpoint

    model, ckpt = load_model(digits_ckpt)
    ratios = {g.name: 0.5 for g in Structure(model, ckpt.spec.example_input()).groups}
    for scored, refit, warned in ((True, False, "refitted, but this prune cuts it plainly"),
                                  (False, True, "cut plainly, but this prune refits it"),
                                  (True, True, None), (False, False, None), (None, False, None)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prune_checkpoint(digits_ckpt, {"policy": ratios, "rerank_refit": scored}, tmp_path / "p", force=True,
                             refit=refit)
        said = [str(w.message) for w in caught if "scoring its candidates" in str(w.message)]
        assert len(said) == (warned is not None) and all(warned in m for m in said)
    # refitted both ways, with another of the refit's options
    for head, warned in ((True, "refitted with `refit_head=True`, but this prune refits it with `refit_head=False`"),
                         (False, None)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prune_checkpoint(digits_ckpt, {"policy": ratios, "rerank_refit": True, "rerank_refit_head": head,
                                           "rerank_refit_norms": False}, tmp_path / "p", force=True, refit_head=False)
        said = [str(w.message) for w in caught if "scoring its candidates" in str(w.message)]
        assert len(said) == (warned is not None) and all(warned in m for m in said)


def test_large_maps_unfold_in_pieces_and_wide_layers_are_left(monkeypatch):
    """Unfolding a few images at a time gives the same refit as all at once; a layer reading more inputs than
    REFIT_MAX_INPUTS keeps its weights (its normal equations would not fit in memory)."""
    torch.manual_seed(0)
    model = build_model("vgg", 10, 1, width_mult=0.25).eval()
    x = torch.randn(48, 1, 28, 28)
    structure = Structure(model, x[:1])
    counts = structure.keep_counts(0.4)
    whole = refitted(model, structure, counts, x)
    monkeypatch.setattr(refit_module, "_UNFOLD_ELEMENTS", 1)  # one image at a time
    pieces = refitted(model, structure, counts, x)
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), pieces.parameters(), strict=True))
    widest = max(m.weight[0].numel() for m in whole.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    monkeypatch.setattr(refit_module, "REFIT_MAX_INPUTS", widest - 1)
    masked = copy.deepcopy(model)
    masker = Masker(masked, structure)
    masker.apply(counts)
    done = refit_kept(model, masked, masker.kept_channels(counts), x)
    left = [n for n, m in masked.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight[0].numel() == widest]
    assert left and not set(left) & set(done)
    cut_only = copy.deepcopy(model)
    Masker(cut_only, structure).apply(counts)
    for n in left:  # as the masker left it
        assert torch.equal(dict(masked.named_modules())[n].weight, dict(cut_only.named_modules())[n].weight)


def test_a_refit_that_fails_is_one_line_naming_the_way_out(monkeypatch):
    from entroprune.errors import ConfigError

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)\nmore detail")

    monkeypatch.setattr(refit_module, "refit_kept", broken)
    model, x = Doubled().eval(), torch.randn(8, 3, 8, 8)
    structure = Structure(model, x[:1])
    counts = [4 if g.name == "conv1" else g.channels for g in structure.groups]
    with pytest.raises(ConfigError, match=r"refit failed on this model \(RuntimeError: mat1 and mat2 shapes cannot "
                                          r"be multiplied \(4x3 and 5x6\)\); prune without it \(`refit=False`\), and "
                                          r"re-rank a search's candidates without it \(`rerank_refit=False`\)$"):
        prune_model(model, structure, counts, refit_images=x)
    from entroprune.search.rewards import RewardConfig, RewardEvaluator  # a scored candidate's refit alike

    ev = RewardEvaluator(model, structure, RewardConfig(kind="kl", refit=True), x)
    with pytest.raises(ConfigError, match=r"refit failed on this model \(RuntimeError: mat1"):
        ev.evaluate(counts)
    ev.close()
    for oom in ("CUDA out of memory. Tried to allocate 9.00 GiB",  # the CLI's own out-of-memory line takes these
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 9000000000 bytes"):
        monkeypatch.setattr(refit_module, "refit_kept", lambda *a, m=oom, **k: (_ for _ in ()).throw(RuntimeError(m)))
        with pytest.raises(RuntimeError, match="allocate"):
            prune_model(model, structure, counts, refit_images=x)


def _randomise_batchnorm(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(1e-4, 2.0)  # small variances too, where BatchNorm's eps matters


def test_matched_norms_leave_the_function_and_give_the_cut_filters_norms():
    """The refit's filters scaled back to the plain cut's norms; the BatchNorm reading each conv makes up for
    it, eps included, so the refitted net computes what it computed."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 1, width_mult=0.25).eval()
    _randomise_batchnorm(model)
    x = torch.randn(64, 1, 28, 28)
    structure = Structure(model, x[:1])
    counts = structure.keep_counts(0.5)
    fitted = refitted(model, structure, counts, x)
    matched = refitted(model, structure, counts, x, match_norms=True)
    assert torch.allclose(_outputs(matched, x), _outputs(fitted, x), rtol=1e-4, atol=1e-4)
    mods, orig = dict(matched.named_modules()), dict(model.named_modules())
    changed = [n for n, m in dict(fitted.named_modules()).items()
               if isinstance(m, nn.Conv2d) and not torch.equal(m.weight, mods[n].weight)]
    assert "layer2.0.shortcut.0" in changed and len(changed) >= 15
    for n in changed:
        w = mods[n].weight.flatten(1)
        rows = w.norm(dim=1) > 0
        cut = (orig[n].weight.flatten(1) * (w.abs().sum(0) > 0)).norm(dim=1)
        assert torch.allclose(w.norm(dim=1)[rows], cut[rows], rtol=1e-4)


class ReadTwice(nn.Module):
    """conv2's output feeds its BatchNorm and the sum after it: scaling conv2 would change the net."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        return self.head((self.bn(y) + y).mean((2, 3)))


def test_matched_norms_leave_a_conv_read_beside_its_batchnorm_as_refitted():
    torch.manual_seed(0)
    model = ReadTwice().eval()
    _randomise_batchnorm(model)
    x = torch.randn(64, 1, 8, 8)
    structure = Structure(model, x[:1])
    counts = [4 if g.name == "conv1" else g.channels for g in structure.groups]
    fitted = refitted(model, structure, counts, x)
    matched = refitted(model, structure, counts, x, match_norms=True)
    assert not torch.equal(fitted.conv2.weight, model.conv2.weight)  # the refit did change it
    assert all(torch.equal(p, q) for p, q in zip(fitted.state_dict().values(), matched.state_dict().values(),
                                                 strict=True))


def test_matched_norms_without_the_refit_are_refused_before_any_work(digits_ckpt, tmp_path):
    from entroprune.api import prune_checkpoint, prune_module
    from entroprune.errors import ConfigError

    with pytest.raises(ConfigError, match="set `refit` too"):
        prune_checkpoint(digits_ckpt, {"policy": {}}, tmp_path / "out", refit=False, refit_norms=True)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="set `refit` too"):
        prune_module(Doubled(), torch.randn(1, 3, 8, 8), {}, refit=False, refit_norms=True)


class Branchy(Doubled):
    """A forward that branches on the data: torch.fx cannot trace it."""

    def forward(self, x):
        return super().forward(x if x.sum() > 0 else -x)


def _refit_weights(model, structure, counts, x, batch_size):
    masked = copy.deepcopy(model)
    masker = Masker(masked, structure)
    masker.apply(counts)
    done = refit_kept(model, masked, masker.kept_channels(counts), x, batch_size=batch_size)
    return done, masked.state_dict()


def test_the_one_pass_refit_is_the_partial_forwards_refit_bit_for_bit(monkeypatch):
    """The refit steps both nets once through their traced graphs (O(layers)) instead of a forward from the
    images per layer (O(layers^2)); where a net does not trace or its activations for all the images would
    take too much memory it takes the partial forwards. The same weights either way, to the bit."""
    partial = []
    real = refit_module._partial_forwards
    monkeypatch.setattr(refit_module, "_partial_forwards", lambda *a, **k: partial.append(a[3]) or real(*a, **k))
    torch.manual_seed(0)
    for name in ("vgg", "resnet20", "mobilenetv2"):
        model = build_model(name, 10, 1, width_mult=0.25).eval()
        x = torch.randn(72, 1, 28, 28)
        structure = Structure(model, x[:1])
        counts = structure.keep_counts(0.5)
        done, one = _refit_weights(model, structure, counts, x, batch_size=32)  # three batches, the last short
        assert done and not partial
        with monkeypatch.context() as m:
            m.setattr(refit_module, "REFIT_PASS_BYTES", 0)
            again, forwards = _refit_weights(model, structure, counts, x, batch_size=32)
        assert again == done and len(partial) > len(done)  # the stem's reading too (unchanged: not refitted)
        assert all(torch.equal(one[k], forwards[k]) for k in one), name
        partial.clear()
    model, x = Branchy().eval(), torch.randn(32, 3, 8, 8)
    structure = Structure(model, x[:1])
    counts = [4 if g.name == "conv1" else g.channels for g in structure.groups]
    done, _ = _refit_weights(model, structure, counts, x, batch_size=16)
    assert done == ["conv2", "head"] and len(partial) == len(refit_order(model, x)) == 3


def test_the_one_pass_reads_the_images_that_fit_its_memory_rather_than_forward_per_layer(monkeypatch):
    """Where the activations of all the calibration images would pass REFIT_PASS_BYTES, the one pass reads the
    first that fit (saying so) instead of a forward from the images per layer (hours on a large net): the
    weights are those of a refit given just those images. Under REFIT_PASS_MIN_IMAGES it takes the forwards."""
    torch.manual_seed(0)
    model = build_model("vgg", 10, 1, width_mult=0.25).eval()
    x = torch.randn(160, 1, 28, 28)
    structure = Structure(model, x[:1])
    counts = structure.keep_counts(0.5)
    masked = copy.deepcopy(model)
    Masker(masked, structure).apply(counts)
    per_image = refit_module._pass_bytes_per_image(torch.fx.symbolic_trace(masked), x)
    monkeypatch.setattr(refit_module, "REFIT_PASS_BYTES", int(per_image * 100) + 1)
    with pytest.warns(UserWarning, match="the refit read 100 of the 160 calibration images: their activations"):
        done, some = _refit_weights(model, structure, counts, x, batch_size=32)
    monkeypatch.setattr(refit_module, "REFIT_PASS_BYTES", 1 << 40)
    again, first = _refit_weights(model, structure, counts, x[:100], batch_size=32)
    assert done == again and all(torch.equal(some[k], first[k]) for k in some)
    monkeypatch.setattr(refit_module, "REFIT_PASS_BYTES", int(per_image * 63))  # not even the floor's 64
    partial = []
    real = refit_module._partial_forwards
    monkeypatch.setattr(refit_module, "_partial_forwards", lambda *a, **k: partial.append(a[3]) or real(*a, **k))
    _, every = _refit_weights(model, structure, counts, x, batch_size=32)
    assert partial and any(not torch.equal(every[k], some[k]) for k in some)  # all 160 images, read layer by layer


def test_the_one_pass_refit_matches_the_partial_forwards_on_every_architecture_of_the_zoo(monkeypatch):
    """Concats, transposed convs, interpolation, attention, several outputs, 1-D and 3-D nets: whatever the graph
    looks like, stepping it gives each layer the input and target the partial forwards give it, to the bit.
    (The transformer encoder does not trace: it takes the partial forwards both times.)"""
    from tests.archs import ARCHITECTURES, INPUT_SHAPES

    traced = 0
    for name, (factory, bad) in ARCHITECTURES.items():
        torch.manual_seed(0)
        net = factory().eval()
        x = torch.randn(40, *INPUT_SHAPES.get(name, (1, 16, 16)))
        structure = Structure(net, x[:1], ignored=[bad] if bad else [])
        counts = structure.keep_counts(0.5)
        masked = copy.deepcopy(net)
        Masker(masked, structure).apply(counts)
        traced += refit_module._OnePass.build(net, masked, refit_order(masked, x), x, 16) is not None
        done, one = _refit_weights(net, structure, counts, x, batch_size=16)
        with monkeypatch.context() as m:
            m.setattr(refit_module, "REFIT_PASS_BYTES", 0)
            again, forwards = _refit_weights(net, structure, counts, x, batch_size=16)
        assert again == done and all(torch.equal(one[k], forwards[k]) for k in one), name
    assert traced == len(ARCHITECTURES) - 1
