"""Free channels: steps kept only where the runtime (a deterministic fake here) runs the wider net no slower."""

import numpy as np
import torch
import torch.nn as nn

from entroprune.models import build_model
from entroprune.prune import prune_model
from entroprune.search.free_channels import free_channels, steps_summary
from entroprune.structure import Structure
from tests.test_latency import stepped_timer


def _vgg():
    torch.manual_seed(0)
    model = build_model("vgg", num_classes=10, in_channels=1, width_mult=0.5).eval()
    return model, Structure(model, torch.zeros(1, 1, 28, 28))


def _stepper(structure, ceiling):
    def one_step_more(counts, i):
        if counts[i] >= ceiling[i]:
            return None
        more = counts.copy()
        more[i] += 1
        return more
    return one_step_more


def _stepped_pair(mods, shape):
    return [stepped_timer(m, shape) for m in mods]


def _channels(module: nn.Module) -> int:
    return sum(m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d))


def test_every_step_inside_a_kernel_block_is_kept_and_none_past_it():
    """Kernels in blocks of 8 channels: each group widens to its block's end (its ceiling permitting), no further,
    and the result times exactly as the chosen policy."""
    model, structure = _vgg()
    full = structure.full_counts()
    counts = np.array([9, 10, 17, 20, 33, 41])[: len(full)]
    ceiling = full.copy()
    ceiling[0] = 12  # a ceiling inside the block stops the group there
    got, trials, _ = free_channels(model, structure, counts, _stepper(structure, ceiling), lambda c: True, _stepped_pair)
    want = np.minimum(np.ceil(counts / 8) * 8, ceiling).astype(int)
    assert list(got) == list(want)
    assert all(t["kept"] == (t["time_ratio"] <= 1.0) for t in trials)
    refused = [t for t in trials if not t["kept"]]
    assert refused and all(t["from"] % 8 == 0 for t in refused)  # only steps into a new block cost time
    shape = (1, 28, 28)
    assert stepped_timer(prune_model(model, structure, got)[0], shape) == \
        stepped_timer(prune_model(model, structure, counts)[0], shape)


def test_other_targets_bound_the_steps_and_nothing_is_timed_at_a_ceiling():
    model, structure = _vgg()
    counts = np.array([9, 10, 17, 20, 33, 41])
    got, trials, _ = free_channels(model, structure, counts, _stepper(structure, structure.full_counts()),
                                lambda c: c.sum() <= counts.sum() + 3, _stepped_pair)
    assert got.sum() == counts.sum() + 3 and all(t["kept"] for t in trials)
    got, trials, _ = free_channels(model, structure, counts, _stepper(structure, counts), lambda c: True, _stepped_pair)
    assert list(got) == list(counts) and trials == []


def test_each_step_is_timed_against_the_chosen_policy_so_errors_cannot_add_up():
    """A runtime where every channel costs 0.4%, timed with a 0.5% bias in the wider net's favour: one step looks
    free against the chosen net, two do not. Compared step by step with the last one kept, every step would
    pass and the net would grow without bound."""
    model, structure = _vgg()
    counts = np.array([9, 10, 17, 20, 33, 41])
    base = _channels(prune_model(model, structure, counts)[0])

    def biased(mods, shape):  # the wider net, whichever place it is timed in, reads 0.5% fast
        return [(1 + 0.004 * (_channels(m) - base)) * (0.995 if _channels(m) > base else 1.0) for m in mods]

    got, trials, _ = free_channels(model, structure, counts, _stepper(structure, structure.full_counts()),
                                lambda c: True, biased)
    assert got.sum() == counts.sum() + 1 and list(got[1:]) == list(counts[1:])
    assert [t["kept"] for t in trials] == [True] + [False] * (len(trials) - 1)


def test_the_timing_order_cannot_buy_a_step():
    """A runtime where the second net of each alternation runs 1% faster (as measured on the VM) and a step costs
    0.5%: timed in one order the step would look free; in both orders it is refused."""
    model, structure = _vgg()
    counts = np.array([9, 10, 17, 20, 33, 41])
    base = _channels(prune_model(model, structure, counts)[0])

    def second_faster(mods, shape):
        t = [1 + 0.005 * (_channels(m) - base) for m in mods]
        return [t[0], t[1] * 0.99]

    got, trials, _ = free_channels(model, structure, counts, _stepper(structure, structure.full_counts()),
                                lambda c: True, second_faster)
    assert list(got) == list(counts) and trials and not any(t["kept"] for t in trials)
    assert all(abs(t["time_ratio"] - 1.005) < 1e-9 for t in trials)


def test_steps_kept_on_lucky_timings_are_dropped_when_the_widened_net_times_slower():
    """The winner's curse: a runtime where every channel costs 0.4% and each net reads 2% fast the first time it
    is timed. Each step, new when timed, can look free; the widened net, timed once more against the chosen
    one, reads its true cost, so the chosen policy comes back and the steps are marked dropped. With exact
    timings (the stepped timer) the confirmation keeps what the pass kept."""
    model, structure = _vgg()
    counts = np.array([9, 10, 17, 20, 33, 41])
    base = _channels(prune_model(model, structure, counts)[0])
    seen = {base}  # only the new, wider nets get a lucky first reading

    def lucky_first(mods, shape):
        out = []
        for m in mods:
            c = _channels(m)
            out.append((1 + 0.004 * (c - base)) * (1.0 if c in seen else 0.98))
            seen.add(c)
        return out

    got, trials, confirmation = free_channels(model, structure, counts, _stepper(structure, structure.full_counts()),
                                              lambda c: True, lucky_first)
    assert any(t.get("dropped") for t in trials) and not any(t["kept"] for t in trials)
    assert list(got) == list(counts) and confirmation is not None and confirmation > 1.0
    dropped = sum(bool(t.get("dropped")) for t in trials)
    summary = {"free_channels": trials, "free_channels_confirmation": confirmation}
    assert steps_summary(summary).startswith(f"{dropped} of {len(trials)} timed steps ran no slower (")
    assert steps_summary({**summary, "free_channels_confirming_processes": 3}).endswith(
        f"), but the widened net then timed {confirmation:.3f}x the chosen one on a confirming timing in 3 fresh "
        "processes, so they were dropped")
    got, trials, confirmation = free_channels(model, structure, counts, _stepper(structure, structure.full_counts()),
                                              lambda c: True, _stepped_pair)
    assert got.sum() > counts.sum() and confirmation == 1.0 and not any(t.get("dropped") for t in trials)
    kept, summary = sum(t["kept"] for t in trials), {"free_channels": trials, "free_channels_confirmation": 1.0}
    assert steps_summary(summary).startswith(f"{kept} of {len(trials)} timed steps ran no slower and were kept (")
    assert steps_summary(summary).endswith("); the widened net then timed 1.000x the chosen one on a confirming timing")
    assert steps_summary({"free_channels": [{**t, "kept": False} for t in trials]}) == \
        f"0 of {len(trials)} timed steps ran no slower; none kept"


def test_the_confirming_timing_is_the_one_given_and_the_pass_times_it_itself_without_one():
    """The loop confirms in fresh processes (``confirm``): its reading decides even where the pass's own timer
    read every kept step free, and a ``confirm`` that cannot time (None: nets that cannot travel) falls back to
    one more timing on the pass's timer."""
    model, structure = _vgg()
    counts = np.array([9, 10, 17, 20, 33, 41])
    seen = []

    def slower(chosen, widened, shape):
        seen.append((_channels(chosen), _channels(widened)))
        return 1.01

    got, trials, ratio = free_channels(model, structure, counts, _stepper(structure, structure.full_counts()),
                                       lambda c: True, _stepped_pair, confirm=slower)
    assert ratio == 1.01 and list(got) == list(counts) and any(t.get("dropped") for t in trials)
    kept_before = sum(t["to"] - t["from"] for t in trials if t.get("dropped"))
    base = _channels(prune_model(model, structure, counts)[0])
    assert seen == [(base, base + kept_before)]  # the pick against the whole widened net
    got, trials, ratio = free_channels(model, structure, counts, _stepper(structure, structure.full_counts()),
                                       lambda c: True, _stepped_pair, confirm=lambda *a: None)
    assert ratio == 1.0 and got.sum() > counts.sum() and not any(t.get("dropped") for t in trials)
