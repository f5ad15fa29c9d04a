"""The latency model: layer tables, their interpolation and the fit, with deterministic fake timers
(no wall-clock measurement in tests; the busy-machine check reads CPU accounting, not timings)."""

import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from entroprune.latency import _interp2, build_layer, fit_latency_model, in_fresh, layer_shapes
from entroprune.models import build_model
from entroprune.prune import prune_model
from entroprune.structure import Structure, count_macs_params


def macs_timer(module: nn.Module, shape: tuple[int, ...]) -> float:
    """A 'latency' that is exactly the MACs: bilinear in a layer's channel counts."""
    return count_macs_params(module, torch.zeros(1, *shape))[0] * 1e-9


def stepped_timer(module: nn.Module, shape: tuple[int, ...]) -> float:
    """Kernels that work in blocks of 8 channels: time grows by steps, not smoothly, plus a fixed cost."""
    total = 0.0
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            cin = m.in_features if isinstance(m, nn.Linear) else m.in_channels
            cout = m.out_features if isinstance(m, nn.Linear) else m.out_channels
            total += np.ceil(cin / 8) * np.ceil(cout / 8) * 1e-4
    return total + 2e-3


def stepped_clock(monkeypatch) -> list[int]:
    """The stepped fake timer in place of every clock the search reads: the latency fit's, the pair timings',
    and the fresh processes' that confirm free channels (those would time real nets on a loaded machine).
    Returns a list that records how many fresh processes each confirmation asked for."""
    import entroprune.latency

    asked: list[int] = []

    def pair(mods, shape):
        return [stepped_timer(m, shape) for m in mods]

    def fresh(models, shape, batch, backend, repeats, processes=3, beside_first=False):
        asked.append(processes)
        return [pair(models, shape) for _ in range(processes)]

    monkeypatch.setattr(entroprune.latency, "wall_timer", lambda batch, backend, repeats=7: stepped_timer)
    monkeypatch.setattr(entroprune.latency, "wall_pair_timer", lambda batch, backend, repeats=7: pair)
    monkeypatch.setattr(entroprune.latency, "fresh_pair_times", fresh)
    return asked


def _net(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1, width_mult=0.5).eval()
    structure = Structure(model, torch.zeros(1, 1, 28, 28))
    return model, structure, np.array([structure.round_group(g, 0.2) for g in structure.groups])


@pytest.mark.parametrize("name", ["vgg", "resnet20", "mobilenetv2"])
def test_layer_shapes_follow_the_pruned_net(name):
    """Each layer's channels as the groups' affine functions match the physically pruned net (residual
    streams and depthwise convs included)."""
    model, structure, _ = _net(name)
    shapes = layer_shapes(model, structure)
    rng = np.random.default_rng(0)
    counts = np.array([structure.round_group(g, rng.uniform(0.2, 1)) for g in structure.groups])
    pruned = dict(prune_model(model, structure, counts)[0].named_modules())
    for s in shapes:
        cin, cout = s.channels((structure.full_counts() - counts)[None].astype(float))
        m = pruned[s.name]
        real = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
        assert (int(cin[0]), int(cout[0])) == real, s.name


@pytest.mark.parametrize("arch", ["1-d keyword spotting (residual, depthwise)", "1-d u-net (transposed conv + skip concat)",
                                  "3-d video net (residual, depthwise)", "3-d u-net (transposed conv + skip concat)"])
def test_one_and_three_dimensional_nets_get_layers_of_their_own_kind(arch):
    """1-D and 3-D convs are timed as the layers they are, at their signal length or volume (a Conv2d table
    would time something else), follow the pruned net, and survive the JSON round trip."""
    import json

    from entroprune.latency import LatencyModel
    from tests.archs import ARCHITECTURES, INPUT_SHAPES

    torch.manual_seed(0)
    model = ARCHITECTURES[arch][0]().eval()
    example = torch.zeros(1, *INPUT_SHAPES[arch])
    structure = Structure(model, example)
    mods = dict(model.named_modules())
    lengths = {}

    def record(name, inp, out):
        lengths[name] = (inp[0].shape[2:], out.shape[2:])

    handles = [m.register_forward_hook(lambda m, i, o, n=n: record(n, i, o))
               for n, m in mods.items() if isinstance(m, nn.modules.conv._ConvNd)]
    model(example)
    for h in handles:
        h.remove()
    shapes = layer_shapes(model, structure)
    counts = np.array([structure.round_group(g, 0.5) for g in structure.groups])
    pruned = dict(prune_model(model, structure, counts)[0].named_modules())
    for s in shapes:
        layer, shape = build_layer(s, s.in_full, s.out_full)
        assert type(layer) is type(mods[s.name]), s.name
        if isinstance(layer, nn.modules.conv._ConvNd):
            assert (shape[1:], layer(torch.zeros(1, *shape)).shape[2:]) == lengths[s.name], s.name
        cin, cout = s.channels((structure.full_counts() - counts)[None].astype(float))
        m = pruned[s.name]
        assert (int(cin[0]), int(cout[0])) == ((m.in_features, m.out_features) if isinstance(m, nn.Linear)
                                               else (m.in_channels, m.out_channels)), s.name
    lo = structure.keep_counts(0.2, 1)
    # these nets are 10x smaller than the 2-D ones above: their 'latencies' scaled to the same milliseconds
    lm, report = fit_latency_model(model, structure, lo, lambda mod, shape: macs_timer(mod, shape) * 100,
                                   calibration=4, held_out=4)
    assert report["median_error"] < 0.01, report
    back = LatencyModel.from_dict(json.loads(json.dumps(lm.to_dict())))
    rows = np.stack([structure.full_counts(), lo])
    assert np.allclose(back.predict(rows), lm.predict(rows))


def test_interpolation_is_exact_on_a_bilinear_table_and_at_the_grid():
    gx, gy = np.array([8.0, 16.0, 32.0]), np.array([4.0, 12.0])
    table = np.outer(gx, gy) * 0.5
    x, y = np.array([8, 10, 31, 32]), np.array([4, 12, 7, 5])
    assert np.allclose(_interp2(x, y, gx, gy, table), 0.5 * x * y)
    assert np.allclose(_interp2(np.array([1.0]), np.array([1.0]), np.array([5.0]), np.array([3.0]), np.ones((1, 1))), 1)


@pytest.mark.parametrize("name", ["vgg", "resnet20"])
def test_a_latency_that_is_bilinear_per_layer_is_predicted_exactly(name):
    model, structure, lo = _net(name)
    lm, report = fit_latency_model(model, structure, lo, macs_timer, calibration=4, held_out=4)
    assert report["median_error"] < 0.01 and report["max_error"] < 0.02, report
    assert abs(lm.fraction(structure.full_counts())[0] - 1.0) < 1e-9


def test_stepped_kernels_and_fixed_costs_are_predicted_within_ten_percent():
    """With counts rounded to the kernels' block, as the search rounds them, the grid sees every step."""
    model, structure, lo = _net("vgg")
    lm, report = fit_latency_model(model, structure, lo, stepped_timer, calibration=8, held_out=8, round_to=8)
    assert report["median_error"] < 0.10, report
    # each layer timed alone paid the fixed cost of a forward that the whole net pays once: the constant
    # takes back the extra ones, and the layer tables keep their weight
    assert 0.8 < lm.coef[0] < 1.3 and lm.coef[2] < 0, lm.coef


def test_whole_nets_are_timed_in_fresh_processes_when_they_can_travel():
    """The calibration and held-out nets go to the fresh-process timer together, beside the unpruned net, and
    each net's fraction is the median over the processes; where they cannot travel (None) the fit times them
    in its own process, one beside the unpruned net at a time."""
    model, structure, lo = _net("vgg")
    calls = []

    def fresh(models, shape):  # process k reads every pruned net (1 + 0.1 k) times as slow as the clock does
        calls.append(len(models))
        return [[stepped_timer(m, shape) * (1 if i == 0 else 1 + 0.1 * k) for i, m in enumerate(models)]
                for k in range(3)]

    def pair(models, shape):
        return [stepped_timer(m, shape) for m in models]

    _, in_process = fit_latency_model(model, structure, lo, stepped_timer, calibration=4, held_out=3, round_to=8,
                                      pair=pair)
    _, report = fit_latency_model(model, structure, lo, stepped_timer, calibration=4, held_out=3, round_to=8,
                                  pair=pair, fresh=fresh)
    assert calls == [1 + 5 + 3]  # the unpruned net, the smallest and 4 random ones, 3 held out: one timing
    assert report["fit_processes"] == 3 and in_process["fit_processes"] == 0
    for a, b in zip(report["held_out"], in_process["held_out"], strict=True):
        assert a["counts"] == b["counts"] and a["measured_fraction"] == pytest.approx(1.1 * b["measured_fraction"])
    _, fallback = fit_latency_model(model, structure, lo, stepped_timer, calibration=4, held_out=3, round_to=8,
                                    pair=pair, fresh=lambda models, shape: None)
    assert fallback["fit_processes"] == 0 and fallback["held_out"] == in_process["held_out"]


def test_fresh_timer_and_its_config():
    from entroprune.errors import ConfigError
    from entroprune.latency import LatencyConfig, fresh_timer

    assert fresh_timer(8, processes=0) is None and callable(fresh_timer(8))
    assert LatencyConfig().processes == 3
    with pytest.raises(ConfigError, match="`processes` >= 0"):
        LatencyConfig(processes=-1).validate()


def noisy_elements_timer(seed: int):
    """A memory-bound runtime (VGG with torch at batch 64 on the 2-core VM): a whole net's time follows the
    values its layers write, within +-15% of noise (fixed per net and seed), while each layer timed alone
    follows its MACs."""
    def timer(module: nn.Module, shape: tuple[int, ...]) -> float:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return macs_timer(module, shape)
        written = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: written.append(out.numel()))
                 for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            module(torch.zeros(1, *shape))
        for h in hooks:
            h.remove()
        n = sum(p.numel() for p in module.parameters())
        return (sum(written) * 1e-6 + 1e-3) * (1 + 0.15 * np.random.default_rng(n + seed).uniform(-1, 1))
    return timer


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_a_noisy_memory_bound_net_is_fitted_with_no_negative_weight(seed):
    """The layer tables and the output values rise together over pruned nets; with noisy timings a free
    least-squares fit trades them with opposite signs (these seeds sent it to the layer sum alone, 40-50%
    error), a bounded one keeps the weight on the output values, where the time is."""
    model, structure, lo = _net("vgg")
    lm, report = fit_latency_model(model, structure, lo, noisy_elements_timer(seed), calibration=8, held_out=8,
                                   round_to=8)
    assert lm.coef[0] >= 0 and lm.coef[1] > 0, lm.coef
    assert report["median_error"] < 0.2, report


def test_paired_timings_compare_round_by_round():
    """A machine that slows down 3x for a phase: the ratio of two medians can pair one net's fast rounds
    with the other's slow ones, the median of per-round ratios keeps the true 0.5 (one round's pair
    straddles the change)."""
    from entroprune.latency import relative_medians

    full = [10.0, 10.0, 10.0, 10.0, 30.0, 30.0, 30.0]
    pruned = [5.0, 5.0, 5.0, 15.0, 15.0, 15.0, 15.0]  # the slow phase began in round 4, between the two nets
    assert np.median(pruned) / np.median(full) == 1.5  # what a ratio of medians would say
    t_full, t_pruned = relative_medians([full, pruned])
    assert t_full == 10.0 and t_pruned == pytest.approx(5.0)
    assert relative_medians([[4.0, 2.0, 8.0]]) == [4.0]


def test_both_orders_cancel_a_bias_toward_the_net_timed_later():
    """A machine on which each net timed after the first reads 3% faster per place: identical nets read
    apart in one order, alike in both; a net 10% slower keeps its 1.1 ratio."""
    from entroprune.latency import both_orders

    cost = {"a": 1.0, "b": 1.0, "c": 1.1}
    pair = lambda mods, shape: [cost[m] * 0.97 ** i for i, m in enumerate(mods)]  # noqa: E731
    assert pair(["a", "b"], ()) != pytest.approx([1.0, 1.0])
    a, b, c = both_orders(pair, ["a", "b", "c"], ())
    assert a == pytest.approx(b) and c / a == pytest.approx(1.1)


def test_build_layer_keeps_depthwise_and_grouped_convs_valid():
    model, structure, _ = _net("mobilenetv2")
    for s in layer_shapes(model, structure):
        layer, shape = build_layer(s, max(1, s.in_full // 2), max(1, s.out_full // 2))
        out = layer(torch.zeros(2, *shape))
        assert out.shape[0] == 2


def test_the_model_round_trips_through_json():
    import json

    from entroprune.latency import LatencyModel

    model, structure, lo = _net("mobilenetv2")
    lm, _ = fit_latency_model(model, structure, lo, macs_timer, calibration=3, held_out=0)
    back = LatencyModel.from_dict(json.loads(json.dumps(lm.to_dict())))
    rows = np.stack([structure.full_counts(), lo])
    assert np.allclose(back.predict(rows), lm.predict(rows))
    assert back.layers[3].name == lm.layers[3].name and back.layers[3].kernel == lm.layers[3].kernel


def test_latency_cli_writes_a_model_and_says_its_error(digits_ckpt, tmp_path):
    """The real timer on a tiny net (only the report's form is checked, never a time)."""
    import json
    import platform
    import subprocess
    import sys

    from entroprune.latency import LatencyModel

    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "latency", str(digits_ckpt), "--batch", "8",
                           "--held-out", "2", "--choose-rounding", "--processes", "1", "--out", str(tmp_path / "lat")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "median error" in proc.stdout and "2 random pruned nets" in proc.stdout
    assert "whole nets timed in a fresh process)" in " ".join(proc.stdout.split())  # rich wraps lines
    lm = LatencyModel.from_dict(json.loads((tmp_path / "lat" / "latency_model.json").read_text()))
    assert lm.meta["backend"] == "torch" and lm.meta["batch"] == 8 and lm.predict(lm.full_counts)[0] > 0
    # the model says under which allocator regime it was timed, and so does the CLI
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert lm.meta["heap_kept"] is glibc and ("glibc heap kept" in proc.stdout) is glibc
    # the rounding the fit used is the one measured (which one wins depends on the machine)
    rounding = json.loads((tmp_path / "lat" / "rounding.json").read_text())
    assert [r["round_to"] for r in rounding["rows"]][:3] == [1, 2, 4] and lm.meta["round_to"] == rounding["round_to"]
    assert f"rounding: {rounding['round_to']} channels" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "entroprune.cli", "latency", str(digits_ckpt), "--backend", "tflite",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--backend 'tflite' is not one of torch, torchscript, onnxruntime" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name", ["vgg", "mobilenetv2"])
def test_the_wall_holds_a_latency_target_and_both_together(name):
    """Random actions under a latency budget (with a stepped, MACs-unlike fake latency) end within it and
    close to it; with both budgets, both hold."""
    from entroprune.search.env import PruningEnv

    model, structure, _ = _net(name)
    lo = np.array([structure.round_group(g, 0.2, 8) for g in structure.groups])
    lm, _ = fit_latency_model(model, structure, lo, stepped_timer, calibration=4, held_out=0, round_to=8)
    rng = np.random.default_rng(0)
    for macs_target, lat_target in ((1.0, 0.5), (0.3, 0.6)):
        env = PruningEnv(structure, None, macs_target, 0.2, 8, latency=lm, latency_target=lat_target)
        for _ in range(10):
            env.reset()
            done, info = False, {}
            while not done:
                _, _, done, _, info = env.step([rng.uniform(0.2, 1.0)])
            assert info["latency_fraction"] <= lat_target * (1 + 1e-9) and info["achieved"] <= macs_target * (1 + 1e-9)
            assert env.within_tolerance(info["counts"]), info


def test_an_unreachable_latency_target_is_one_line():
    from entroprune.errors import ConfigError
    from entroprune.search.env import PruningEnv

    model, structure, lo = _net("vgg")
    lm, _ = fit_latency_model(model, structure, lo, stepped_timer, calibration=3, held_out=0)
    with pytest.raises(ConfigError, match="`latency_target` 0.01 is unreachable"):
        PruningEnv(structure, None, 1.0, 0.2, 1, latency=lm, latency_target=0.01)


def test_a_search_under_a_latency_target_fits_its_model_once_and_keeps_every_candidate_within(
        digits_ckpt, tmp_path, monkeypatch):
    """The search fits its latency model (with the stepped fake timer in place of the clock), saves it in the
    run folder, keeps the searched, uniform and global candidates within the predicted budget, and a second
    search reads the saved model instead of timing again."""
    import json

    asked = stepped_clock(monkeypatch)

    from entroprune.api import search_checkpoint
    from entroprune.latency import LatencyModel
    from entroprune.search import SearchConfig

    cfg = SearchConfig(macs_target=1.0, latency_target=0.7, latency_batch=8, episodes=6, warmup=3, calib_size=64,
                       rerank_top_k=2, recovery_steps=2, recovery_images=64, checkpoint_every=2, round_to=1)
    res = search_checkpoint(digits_ckpt, tmp_path / "s", cfg, quiet=True)
    model_file = tmp_path / "s" / "latency_model.json"
    lm = LatencyModel.from_dict(json.loads(model_file.read_text()))
    assert res.summary["latency_fraction"] <= 0.7 + 1e-9 and res.summary["latency_target"] == 0.7
    for c in res.summary["rerank"]:  # uniform and global were solved under the same budget
        counts = np.array([round(c["policy"][g] * lm.full_counts[i]) for i, g in enumerate(c["policy"])])
        assert lm.fraction(counts)[0] <= 0.7 + 1e-6, c["candidate"]
    # free channels: round_to 1 under kernels that work in blocks of 8 leaves steps that cost no time; the
    # result keeps them, times exactly as the chosen policy, and the table prices it dearer than the target
    from entroprune.api import build_structure, load_model
    from entroprune.prune import prune_model

    chosen = next(c for c in res.summary["rerank"] if c["source"] == res.summary["chosen"])
    kept = [t for t in res.summary["free_channels"] if t["kept"]]
    assert kept and all(t["time_ratio"] <= 1.0 for t in kept)
    # confirmed in fresh processes, as a deployment starts (here the fake clock's), before they were kept
    assert asked == [3, 3] and res.summary["free_channels_confirming_processes"] == 3
    assert lm.meta["report"]["fit_processes"] == 3  # the fit's whole nets, timed so too (the first ask)
    assert res.summary["free_channels_confirmation"] == pytest.approx(1.0)
    assert all(t["time_ratio"] > 1.0 for t in res.summary["free_channels"] if not t["kept"])
    model, ckpt = load_model(digits_ckpt)
    structure = build_structure(model, ckpt.spec)
    full = structure.full_counts()
    nets = [prune_model(model, structure, [round(p[g.name] * full[i]) for i, g in enumerate(structure.groups)])[0]
            for p in (chosen["policy"], res.policy)]
    assert stepped_timer(nets[1], (1, 8, 8)) == stepped_timer(nets[0], (1, 8, 8))
    assert res.summary["table_latency_with_free_channels"] > res.summary["latency_fraction"]
    # the table prices the widened net over the target; the pick, within it, is what within_tolerance judges
    assert res.summary["table_latency_with_free_channels"] > 0.7 and res.summary["within_tolerance"]
    stamp = model_file.stat().st_mtime_ns
    uniform = search_checkpoint(digits_ckpt, tmp_path / "s", SearchConfig(
        macs_target=1.0, latency_target=0.7, latency_batch=8, agent="uniform", latency_model=str(model_file)),
        quiet=True, force=True)
    assert uniform.summary["latency_fraction"] <= 0.7 + 1e-9 and model_file.stat().st_mtime_ns == stamp


def test_the_cores_other_processes_keep_busy_while_timing_are_measured(monkeypatch):
    """Latencies timed beside other work are not the machine's: the cores other processes used during the timing
    are read from /proc/stat, less this process's and its children's CPU time (a fresh timing process is one)."""
    import subprocess
    import sys

    from entroprune import latency

    if latency._cpu_seconds() is None:
        pytest.skip("no /proc/stat here")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with latency.others_busy() as busy:
            time.sleep(1.0)
    finally:
        hog.kill()
        hog.wait()
    assert busy["cores"] >= 0.5  # the loop (not waited for) had a core; more when anything else ran
    # this process's work is its own, however much it is: 3 busy CPU seconds in 2 s, 2 of them this process's
    readings = iter([(10.0, 100.0, 5.0), (12.0, 103.0, 7.0)])
    monkeypatch.setattr(latency, "_cpu_seconds", lambda: next(readings))
    with latency.others_busy() as busy:
        pass
    assert busy["cores"] == pytest.approx(0.5)
    monkeypatch.setattr(latency, "_cpu_seconds", lambda: None)  # not Linux: unknown, and no warning follows
    with latency.others_busy() as busy:
        pass
    assert busy["cores"] is None


def test_the_report_puts_predicted_beside_measured_latency():
    from entroprune.report import _latency_lines

    evaluation = {"rows": [{"torch_b64_ms": 20.0}, {"torch_b64_ms": 6.0}]}
    summary = {"latency_target": 0.3, "latency_fraction": 0.29, "latency_model": {"median_error": 0.04},
               "config": {"latency_backend": "torch"}}
    line = _latency_lines(evaluation, summary)[0]
    assert line == ("Latency target 30% of the original: 29.0% predicted, 30.0% measured (torch, batch 64); "
                    "the model's median error on random pruned nets: 4.0%.")
    summary["free_channels"] = [{"group": "conv2", "from": 48, "to": 64, "time_ratio": 0.98, "kept": True},
                                {"group": "conv1", "from": 8, "to": 16, "time_ratio": 1.2, "kept": False}]
    summary["table_latency_with_free_channels"] = 0.31
    assert _latency_lines(evaluation, summary)[0].endswith(
        "Free channels (each one-step-wider net timed in alternation with the chosen policy, the prediction above; "
        "kept where no slower): 1 of 2 timed steps ran no slower and were kept (conv2 48->64); the latency model "
        "prices the net with them at 31.0%.")
    del summary["free_channels"]
    assert _latency_lines(evaluation, {"reward": 1}) == []
    # a latency-targeted run's MACs-targeted reference, beside the result
    evaluation["rows"][1]["test_accuracy"] = 91.5
    evaluation["macs_reference"] = {"macs_target": 0.105, "latency_fraction": 0.241, "test_accuracy": 91.62}
    assert _latency_lines(evaluation, summary)[0].endswith(
        "MACs-targeted reference (the default search at 10.5% of the MACs, the MACs target whose uniform policy the "
        "latency model predicts at the same latency; same fine-tune): 24.1% of the original's latency measured, test "
        "accuracy 91.62% (this run: 30.0%, 91.50%, -0.12 points).")
    del evaluation["macs_reference"]
    # a TorchScript-targeted run is measured on TorchScript, not on eager torch
    evaluation["rows"][0]["ts_b64_ms"], evaluation["rows"][1]["ts_b64_ms"] = 10.0, 2.5
    summary["config"]["latency_backend"] = "torchscript"
    assert "25.0% measured (TorchScript, batch 64)" in _latency_lines(evaluation, summary)[0]


def blocked_macs_timer(module: nn.Module, shape: tuple[int, ...]) -> float:
    """MACs as kernels that work on whole blocks of 8 input and output channels pay them."""
    blocks = lambda c: np.ceil(c / 8) * 8  # noqa: E731
    total, hooks = [0.0], []

    def conv(m, inp, out):
        total[0] += blocks(m.in_channels // m.groups) * blocks(m.out_channels) * m.kernel_size[0] * \
            m.kernel_size[1] * out.shape[-1] * out.shape[-2] * 1e-9

    def linear(m, inp, out):
        total[0] += blocks(m.in_features) * blocks(m.out_features) * 1e-9

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    with torch.no_grad():
        module(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return total[0]


@pytest.mark.parametrize("name", ["vgg", "mobilenetv2"])
def test_rounding_choice_follows_the_backend(name):
    """The step with the most speed-up per MACs reduction wins (the smallest within 5% of the best): on VGG
    with kernels in blocks of 8 channels that is 8 (finer steps pay for whole blocks they do not use,
    coarser ones cannot round its 16-channel groups); where time follows the MACs, the finest step."""
    from entroprune.latency import choose_rounding
    from entroprune.search.policies import uniform_policies

    model, structure, _ = _net(name)
    policies = uniform_policies(structure, 0.3, 0.2)
    blocked = choose_rounding(model, structure, policies, lambda ms, shape: [blocked_macs_timer(m, shape) for m in ms])
    eff = {r["round_to"]: r["efficiency"] for r in blocked["rows"]}
    assert blocked["round_to"] == min(k for k, v in eff.items() if v >= 0.95 * max(eff.values())), eff
    assert all(r["macs_fraction"] <= 0.3 + 1e-9 for r in blocked["rows"])
    if name == "vgg":
        assert blocked["round_to"] == 8 and eff[8] > 1.05 * max(eff[1], eff[2], eff[16]), eff
    smooth = choose_rounding(model, structure, policies, lambda ms, shape: [macs_timer(m, shape) for m in ms])
    assert smooth["round_to"] == 1, {r["round_to"]: r["efficiency"] for r in smooth["rows"]}


def test_round_to_auto_measures_the_step_once_and_resume_reuses_it(digits_ckpt, tmp_path, monkeypatch):
    """`round_to: auto` takes the step choose_rounding measures (a fake timer here: kernels in blocks of 8
    channels, or time that follows the MACs) and searches with it; resume reads it back, never re-measures."""
    import json

    import entroprune.latency as latency
    from entroprune.api import load_model, search_checkpoint
    from entroprune.search import SearchConfig
    from entroprune.search.policies import uniform_policies

    def fake(timer):
        return lambda batch, backend="torch", *a, **k: (lambda ms, shape: [timer(m, shape) for m in ms])

    cfg = SearchConfig(macs_target=0.3, round_to="auto", episodes=4, warmup=2, rerank_top_k=0, calib_size=32,
                       val_size=0)
    model, ckpt = load_model(digits_ckpt)
    structure = Structure(model, ckpt.spec.example_input())
    policies = uniform_policies(structure, cfg.macs_target, cfg.min_keep)
    chosen = {}
    for name, timer in (("blocked", blocked_macs_timer), ("smooth", macs_timer)):
        monkeypatch.setattr(latency, "wall_pair_timer", fake(timer))
        res = search_checkpoint(digits_ckpt, tmp_path / name, cfg, quiet=True)
        expected = latency.choose_rounding(model, structure, policies, fake(timer)(64))["round_to"]
        rounding = json.loads((tmp_path / name / "rounding.json").read_text())
        step = chosen[name] = rounding["round_to"]
        assert step == expected and res.summary["config"]["round_to"] == step
        assert json.loads((tmp_path / name / "policy.json").read_text())["round_to"] == step
        assert all(c % step == 0 or c == g.channels for g, c in zip(structure.groups, res.counts.values(), strict=True))
    assert chosen["blocked"] != chosen["smooth"], chosen  # the measurement decides, not a fixed default

    def no_timing(*a, **k):
        raise AssertionError("resume measured the rounding again")

    monkeypatch.setattr(latency, "wall_pair_timer", no_timing)
    again = search_checkpoint(digits_ckpt, tmp_path / "blocked", cfg, resume=True, quiet=True)
    assert again.summary["config"]["round_to"] == chosen["blocked"]


def test_round_to_must_be_a_step_or_auto():
    from entroprune.errors import ConfigError
    from entroprune.search import SearchConfig

    for bad in ("eight", 0, True, 2.5):
        with pytest.raises(ConfigError, match="round_to"):
            SearchConfig(round_to=bad).validate()
    SearchConfig(round_to="auto").validate()
    with pytest.raises(ConfigError, match="auto"):
        SearchConfig(round_to="auto").step  # noqa: B018


def test_timings_keep_the_heap_unless_told_not_to(monkeypatch):
    """Every timing first pins glibc's heap (the same net's latency otherwise swings with the process's
    allocation history); the switch that benchmarks/latency_noise.py uses turns it off."""
    import platform

    from entroprune import latency

    calls = []
    monkeypatch.setattr(latency, "keep_heap", lambda: calls.append(1) or True)
    latency.paired_latency([nn.Linear(4, 2)], (4,), batch=2, repeats=1, warmup=0)
    assert calls == [1]
    monkeypatch.undo()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert latency.keep_heap() is True
    monkeypatch.setattr(latency, "KEEP_HEAP", False)
    assert latency.keep_heap() is False


def test_latency_rows_are_timed_in_fresh_processes_unless_the_model_cannot_travel(monkeypatch):
    """Importable models are timed in new processes, none in this one, and each figure is the median over them
    (the first model's latency; the others' ratio to it); a class defined here, which another process cannot
    import, is timed in this process. Every row says which."""
    import os
    import statistics

    from entroprune import latency

    class Local(nn.Module):  # not importable by another process
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    pids, runs = [], []
    real_paired, real_fresh = latency.paired_latency, latency._in_fresh_processes
    monkeypatch.setattr(latency, "paired_latency", lambda *a, **k: pids.append(os.getpid()) or real_paired(*a, **k))

    def fresh(*a):
        got = real_fresh(*a)
        runs.extend(got or [])
        return got
    monkeypatch.setattr(latency, "_in_fresh_processes", fresh)
    rows = latency.latency_rows([nn.Linear(4, 2), nn.Linear(4, 3)], (4,), repeats=1, processes=3)
    assert [r["latency_processes"] for r in rows] == [3, 3] and pids == [] and len(runs) == 3  # none timed here
    for key in [f"{rt}_b{b}_ms" for rt in latency.RUNTIMES.values() for b in (1, 64)]:
        first = [r[0][key] for r in runs]
        assert rows[0][key] == pytest.approx(statistics.median(first))
        assert rows[1][key] == pytest.approx(statistics.median(first) * statistics.median(
            r[1][key] / r[0][key] for r in runs))
    rows = latency.latency_rows([Local()], (4,), repeats=1)
    assert rows[0]["latency_processes"] == 0 and set(pids) == {os.getpid()} and rows[0]["ts_b64_ms"] > 0


def test_a_pair_is_timed_in_fresh_processes_unless_the_models_cannot_travel():
    """``fresh_pair_times``: one both-orders timing of the pair per new process (the free-channel confirmation's
    verdict); None for a class another process cannot import, so the caller times it itself."""
    from entroprune.latency import fresh_pair_times

    class Local(nn.Module):  # not importable by another process
        def forward(self, x):
            return x

    runs = fresh_pair_times([nn.Linear(4, 2), nn.Linear(4, 3)], (4,), 8, "torch", repeats=2, processes=2)
    assert runs is not None and len(runs) == 2 and all(len(r) == 2 and min(r) > 0 for r in runs)
    assert fresh_pair_times([Local(), Local()], (4,), 8, "torch", repeats=2, processes=1) is None


def test_fresh_processes_leave_the_callers_models_where_they_are():
    """The job's models travel as CPU copies: the fit hands over the search's own model, which may live on a
    GPU and must stay there (``.cpu()`` moves a module in place)."""
    import entroprune.latency as latency

    moved = []

    class Tracked(nn.Linear):  # local: cannot travel, so no process starts
        def cpu(self):
            moved.append(self)
            return super().cpu()

    net = Tracked(4, 2)
    assert latency._in_fresh_processes({"job": "pair", "models": [net], "shape": [4], "repeats": 1, "batch": 2,
                                        "backend": "torch"}, 1) is None
    assert moved and all(m is not net for m in moved)


def test_beside_first_times_each_model_in_a_pair_with_the_first(monkeypatch):
    """A fresh process asked for ``beside_first`` alternates only two nets at a time (the first and one other,
    in both orders), and reports each other net at its ratio to the first times the first's median time."""
    import entroprune.latency as latency

    seen = []

    def pair(mods, shape):
        seen.append(len(mods))
        return [stepped_timer(m, shape) for m in mods]

    monkeypatch.setattr(latency, "wall_pair_timer", lambda batch, backend, repeats=7: pair)
    models = [nn.Linear(64, 64), nn.Linear(64, 8), nn.Linear(64, 32), nn.Linear(16, 8)]
    times = latency._fresh_job({"job": "pair", "models": models, "shape": [64], "repeats": 2, "batch": 8,
                                "backend": "torch", "beside_first": True})
    assert seen == [2] * 6  # three pairs, each in both orders
    for m, t in zip(models[1:], times[1:], strict=True):
        assert t / times[0] == pytest.approx(stepped_timer(m, (64,)) / stepped_timer(models[0], (64,)))
    together = latency._fresh_job({"job": "pair", "models": models, "shape": [64], "repeats": 2, "batch": 8,
                                   "backend": "torch"})
    assert seen[6:] == [4, 4] and len(together) == 4


def test_a_latency_targeted_run_fine_tunes_the_macs_targeted_reference_of_the_same_latency(tmp_path, monkeypatch):
    """The main job under a latency target also searches at the MACs target whose uniform policy the run's
    latency model predicts at the result's latency, fine-tunes and times that net like the result, and the
    report sets the two side by side (fake timers for the fit; the final timing is real, nothing asserted on it)."""
    import json

    from entroprune.api import build_structure, load_model
    from entroprune.config import quick_config
    from entroprune.latency import LatencyModel
    from entroprune.pipeline import run_pipeline
    from entroprune.search import SearchConfig, fixed_policy_counts, uniform_ratio

    stepped_clock(monkeypatch)
    cfg = quick_config()
    cfg.out_root, cfg.reference_uniform, cfg.latency_repeats = str(tmp_path), False, 2
    cfg.search.macs_target, cfg.search.latency_target, cfg.search.latency_batch = 1.0, 0.7, 8
    run = run_pipeline(cfg, quiet=True, say=lambda _: None)
    ev = json.loads((run / "evaluation.json").read_text())
    ref, pr = ev["macs_reference"], ev["rows"][-1]
    fraction = json.loads((run / "search" / "search.json").read_text())["latency_fraction"]
    # aimed at the result's predicted latency: the uniform policy there is just under it, a little more is over
    lm = LatencyModel.from_dict(json.loads((run / "search" / "latency_model.json").read_text()))
    model, ckpt = load_model(next((tmp_path / "cache").iterdir()) / "model.pt")
    structure = build_structure(model, ckpt.spec)

    def predicted(m):
        c = SearchConfig(macs_target=m, min_keep=cfg.search.min_keep, round_to=cfg.search.round_to)
        return lm.fraction(fixed_policy_counts(structure, c, [uniform_ratio(structure, c)] * len(structure.groups))[0][None])[0]

    assert 0 < ref["macs_target"] < 1 and predicted(ref["macs_target"]) < fraction <= predicted(ref["macs_target"] + 1e-3)
    # a MACs-only search at that target, pruned and fine-tuned like the result
    summary = json.loads((run / "macs-reference" / "search" / "search.json").read_text())
    assert summary["config"]["latency_target"] is None and summary["config"]["macs_target"] == ref["macs_target"]
    assert ref["achieved"] <= ref["macs_target"] + 1e-6
    assert json.loads((run / "macs-reference" / "finetuned" / "metrics.json").read_text())["test_accuracy"] == \
        ref["test_accuracy"]
    assert ref["latency_fraction"] > 0 and ref["backend"] == "torch"
    report = (run / "report.md").read_text()
    assert (f"MACs-targeted reference (the default search at {ref['macs_target']:.1%} of the MACs" in report
            and f"test accuracy {ref['test_accuracy']:.2f}% (this run: {pr['torch_b64_ms'] / ev['rows'][0]['torch_b64_ms']:.1%}, "
            f"{pr['test_accuracy']:.2f}%, {pr['test_accuracy'] - ref['test_accuracy']:+.2f} points)" in report)


def test_a_run_refused_after_its_latency_fit_names_the_fit_to_reuse(tmp_path, monkeypatch):
    """An unreachable latency target is found only once the latency model is fitted (minutes of timing on a large
    net); the refusal said to raise the target, and the next run timed everything again. It names the kept fit,
    and a run given it reads it instead of fitting (fake timers)."""
    import re
    from pathlib import Path

    from entroprune.config import quick_config
    from entroprune.errors import ConfigError
    from entroprune.pipeline import run_pipeline

    stepped_clock(monkeypatch)
    cfg = quick_config()
    cfg.out_root, cfg.reference_uniform = str(tmp_path), False
    cfg.search.macs_target, cfg.search.latency_target, cfg.search.latency_batch = 1.0, 0.01, 8
    with pytest.raises(ConfigError, match="`latency_target` 0.01 is unreachable") as caught:
        run_pipeline(cfg, quiet=True, say=lambda _: None)
    kept = re.search(r"the latency model fitted for it is kept: `search\.latency_model: (\S+)` in the next run's "
                     r"config reuses it", str(caught.value))
    assert kept and Path(kept.group(1)).is_file()
    cfg.search.latency_model = kept.group(1)
    import entroprune.latency

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again")

    monkeypatch.setattr(entroprune.latency, "fit_latency_model", no_fit)
    with pytest.raises(ConfigError, match="`latency_target` 0.01 is unreachable") as again:
        run_pipeline(cfg, quiet=True, say=lambda _: None)
    assert "is kept" not in str(again.value)  # the user's own file: nothing to point at


def test_matching_macs_target_aims_the_uniform_policy_at_a_latency_and_never_below_the_floor():
    from entroprune.search import PruningEnv, SearchConfig, fixed_policy_counts, matching_macs_target, uniform_ratio

    model, structure, lo = _net("vgg")
    lm, _ = fit_latency_model(model, structure, lo, stepped_timer, calibration=3, held_out=0)

    def predicted(m):
        c = SearchConfig(macs_target=m, min_keep=0.2, round_to=8)
        return lm.fraction(fixed_policy_counts(structure, c, [uniform_ratio(structure, c)] * len(structure.groups))[0][None])[0]

    target = matching_macs_target(structure, lm, 0.5, 0.2, 8)
    assert predicted(target) < 0.5 <= predicted(target + 1e-3)
    # below what the smallest policy takes: the floor's target, which a search accepts
    floor = matching_macs_target(structure, lm, 1e-3, 0.2, 8)
    assert floor * structure.total_macs >= structure.macs(structure.keep_counts(0.2, 8))
    PruningEnv(structure, None, floor, 0.2, 8)


@pytest.mark.parametrize(("processes", "words"), [(0, ""), (1, " in a fresh process"), (3, " in 3 fresh processes")])
def test_in_fresh_says_where_whole_nets_were_timed(processes, words):
    assert in_fresh(processes) == words
