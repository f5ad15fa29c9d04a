"""Free channels: after a latency-targeted search, the channel steps the runtime runs at no measured cost.

Kernels work in blocks of channels, so a wider layer can run as fast as a narrower one (two policies of
equal MACs differed almost 2x in time: docs/measurements/latency_rounding.md); a latency table that
interpolates between the counts it timed cannot see such steps and prices them dearer, so the search's wall
refuses them. This pass asks the runtime itself: each one-step-wider neighbour of the chosen policy is timed
in alternation with the chosen policy (in both orders), and a step whose whole net is not slower is kept.
Every candidate is timed against the chosen policy, not against the last step taken, so small timing errors
cannot add up. Keeping every step whose one timing read it no slower still favours the steps whose noise read
fast (on MobileNetV2, 11 steps kept this way made a net 2.8% slower than the chosen one in fresh processes:
docs/measurements/latency_target_mobilenetv2.md), so the widened net is timed against the chosen one once more
and returned only if that timing, which selected nothing, reads it no slower too. The search's loop takes that
timing in fresh processes, as a deployment starts: in the search's own process a widened MobileNetV2 read 1.2%
faster than the pick where each of five fresh processes read it 0.5-3.8% slower
(docs/measurements/latency_target_mobilenetv2_fit2.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch.nn as nn

from ..latency import PairTimer, both_orders, in_fresh
from ..prune import prune_model
from ..structure import Structure

#: Timed rounds per comparison: candidates differ from the chosen net by a few percent at most, so the
#: comparison takes more rounds than a latency table's entries (LatencyConfig.repeats).
FREE_CHANNEL_REPEATS = 21

#: Passes over the groups at most: a group's free steps can depend on its neighbours' widths (a conv's cost
#: is bilinear in its input and output channels), so a pass that kept a step is followed by another.
FREE_CHANNEL_PASSES = 3


def _ratio(pair: PairTimer, chosen: nn.Module, wider: nn.Module, shape: tuple[int, ...]) -> float:
    """The wider net's time over the chosen one's, timed in both orders (:func:`both_orders`): the order bias
    of alternation is as large as the steps this pass decides on."""
    t_chosen, t_wider = both_orders(pair, [chosen, wider], shape)
    return t_wider / t_chosen


def free_channels(model: nn.Module, structure: Structure, counts: np.ndarray,
                  one_step_more: Callable[[np.ndarray, int], np.ndarray | None],
                  allowed: Callable[[np.ndarray], bool], pair: PairTimer,
                  passes: int = FREE_CHANNEL_PASSES,
                  on_trial: Callable[[dict[str, Any]], None] | None = None,
                  confirm: Callable[[nn.Module, nn.Module, tuple[int, ...]], float | None] | None = None
                  ) -> tuple[np.ndarray, list[dict[str, Any]], float | None]:
    """``counts`` widened by every channel step that does not make the pruned net slower on ``pair``'s runtime.

    ``one_step_more(counts, i)``: group ``i`` one channel step wider within the search's ceilings (None at a
    ceiling); ``allowed``: the targets a step must still meet that timing does not decide (a MACs target).
    ``on_trial`` sees each record as it is made (a progress bar); ``confirm(chosen, widened, shape)``: the
    confirming timing's ratio (without it, or where it returns None, one more timing on ``pair``). Returns the counts, one record per timed step
    (its group, channels before and after, its time relative to the chosen policy's, whether it was kept) and
    the confirming timing of the widened net relative to the chosen one (None when no step was kept); when
    that reads it slower, the chosen counts come back and the kept steps are marked ``dropped``.
    """
    shape = tuple(structure.example_input.shape[1:])
    chosen = prune_model(model, structure, counts)[0].eval()
    current, widened, trials = np.asarray(counts, dtype=int).copy(), chosen, []
    for _ in range(passes):
        grown = False
        for i, g in enumerate(structure.groups):
            while (more := one_step_more(current, i)) is not None and allowed(more):
                wider = prune_model(model, structure, more)[0].eval()
                ratio = _ratio(pair, chosen, wider, shape)
                trials.append({"group": g.name, "from": int(current[i]), "to": int(more[i]),
                               "time_ratio": float(ratio), "kept": bool(ratio <= 1.0)})
                if on_trial is not None:
                    on_trial(trials[-1])
                if ratio > 1.0:
                    break
                current, widened, grown = more, wider, True
        if not grown:  # a pass that kept nothing: the next would time the same steps again
            break
    if widened is chosen:
        return current, trials, None
    confirmation = confirm(chosen, widened, shape) if confirm is not None else None
    if confirmation is None:
        confirmation = _ratio(pair, chosen, widened, shape)
    if confirmation <= 1.0:
        return current, trials, confirmation
    for t in trials:
        if t["kept"]:
            t["kept"], t["dropped"] = False, True
    return np.asarray(counts, dtype=int).copy(), trials, confirmation


def _steps(trials: list[dict[str, Any]], flag: str) -> str:
    return ", ".join(f"{t['group']} {t['from']}->{t['to']}" for t in trials if t.get(flag))


def steps_summary(summary: dict[str, Any]) -> str:
    """What the free-channel pass of a search's ``summary`` (search.json) came to, in one clause for the CLI
    and the report: how many timed steps ran no slower, which, and what the confirming timing made of them."""
    trials, ratio = summary.get("free_channels") or [], summary.get("free_channels_confirmation")
    kept, dropped = _steps(trials, "kept"), _steps(trials, "dropped")
    processes = summary.get("free_channels_confirming_processes") or 0
    confirmed = "" if ratio is None else (f"the widened net then timed {ratio:.3f}x the chosen one on a confirming "
                                          f"timing{in_fresh(processes)}")
    if dropped:
        n = sum(bool(t.get("dropped")) for t in trials)
        return f"{n} of {len(trials)} timed steps ran no slower ({dropped}), but {confirmed}, so they were dropped"
    if not kept:
        return f"0 of {len(trials)} timed steps ran no slower; none kept"
    return (f"{sum(bool(t['kept']) for t in trials)} of {len(trials)} timed steps ran no slower and were kept "
            f"({kept})" + (f"; {confirmed}" if confirmed else ""))


__all__ = ["free_channels", "steps_summary", "FREE_CHANNEL_REPEATS", "FREE_CHANNEL_PASSES"]
