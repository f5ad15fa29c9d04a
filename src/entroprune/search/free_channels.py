"""Free channels: after a latency-targeted search, the channel steps the runtime runs at no measured cost.

A latency table interpolates between the channel counts it timed; kernels do not. On the main job's VGG
(torch, batch 64) a last conv of 64 channels ran about 1.6% faster than one of 48 (kernels vectorise over
blocks of channels), a step the table priced dearer, so the search's wall refused it and the
latency-targeted net kept fewer MACs than a MACs-targeted net of the same measured latency
(docs/measurements/latency_target.md). This pass asks the runtime itself: each one-step-wider neighbour of
the chosen policy is timed in alternation with the chosen policy, and a step whose whole net is not slower
is kept. Every candidate is timed against the chosen policy, not against the last step taken, so small
timing errors cannot add up: the policy returned was itself timed not slower than the one chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch.nn as nn

from ..latency import PairTimer
from ..prune import prune_model
from ..structure import Structure

#: Timed rounds per comparison: candidates differ from the chosen net by a few percent at most, so the
#: comparison takes more rounds than a latency table's entries (LatencyConfig.repeats).
FREE_CHANNEL_REPEATS = 21

#: Passes over the groups at most: a group's free steps can depend on its neighbours' widths (a conv's cost
#: is bilinear in its input and output channels), so a pass that kept a step is followed by another.
FREE_CHANNEL_PASSES = 3


def free_channels(model: nn.Module, structure: Structure, counts: np.ndarray,
                  one_step_more: Callable[[np.ndarray, int], np.ndarray | None],
                  allowed: Callable[[np.ndarray], bool], pair: PairTimer,
                  passes: int = FREE_CHANNEL_PASSES,
                  on_trial: Callable[[dict[str, Any]], None] | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``counts`` widened by every channel step that does not make the pruned net slower on ``pair``'s runtime.

    ``one_step_more(counts, i)``: group ``i`` one channel step wider within the search's ceilings (None at a
    ceiling); ``allowed``: the targets a step must still meet that timing does not decide (a MACs target).
    ``on_trial`` sees each record as it is made (a progress bar). Returns the counts and one record per timed step (its group, channels before and after, its time
    relative to the chosen policy's, whether it was kept).
    """
    shape = tuple(structure.example_input.shape[1:])
    chosen = prune_model(model, structure, counts)[0].eval()
    current, trials = np.asarray(counts, dtype=int).copy(), []
    for _ in range(passes):
        grown = False
        for i, g in enumerate(structure.groups):
            while (more := one_step_more(current, i)) is not None and allowed(more):
                t_chosen, t_more = pair([chosen, prune_model(model, structure, more)[0].eval()], shape)
                ratio = t_more / t_chosen
                trials.append({"group": g.name, "from": int(current[i]), "to": int(more[i]),
                               "time_ratio": float(ratio), "kept": bool(ratio <= 1.0)})
                if on_trial is not None:
                    on_trial(trials[-1])
                if ratio > 1.0:
                    break
                current, grown = more, True
        if not grown:  # a pass that kept nothing: the next would time the same steps again
            break
    return current, trials


__all__ = ["free_channels", "FREE_CHANNEL_REPEATS", "FREE_CHANNEL_PASSES"]
