"""The architecture suite: "any nn.Module" on 29 small nets built on the patterns real model families
use. Each is searched at 50% and 25% of its MACs, pruned, run, counted by torch-pruning and exported to
ONNX; a pattern torch-pruning maps wrongly must be refused in one line naming the layer, after which
leaving that layer whole prunes the rest (docs/architectures.md: python benchmarks/architectures.py)."""

from __future__ import annotations

import pytest

from tests.archs import ARCHITECTURES, SLACK, SLACK_AFTER_IGNORE, run_architecture


# The SE block's squeeze conv sees 1x1 maps: the search's warning about it is expected there.
@pytest.mark.filterwarnings("ignore:groups se_reduce output 1x1 maps")
@pytest.mark.parametrize("target", [0.5, 0.25])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architecture_prunes_or_is_refused_in_one_line(name, target, tmp_path):
    bad = ARCHITECTURES[name][1]
    row = run_architecture(name, target, tmp_path)
    if bad is None:
        assert row["refusal"] is None
    else:  # refused, naming the layer and the fix, in one line; then the user leaves it whole
        assert f"`ignored_layers={bad}`" in row["refusal"] and "\n" not in row["refusal"]
        assert "cannot run on an example input" not in row["refusal"]  # the net runs: the cut is at fault, not the input
        if row["target"] != target:
            assert "is unreachable" in row["unreachable"] and "\n" not in row["unreachable"]
    assert row["shapes_kept"]  # the model's outputs keep their shape
    slack = SLACK_AFTER_IGNORE if bad else SLACK.get(name, 0.02)
    assert row["macs"] <= row["target"] + 1e-9, row  # torch-pruning's counter
    assert row["target"] - slack <= row["macs"] or row["full"], row  # under it only where no step fits
    assert row["onnx_max_diff"] <= 1e-4
