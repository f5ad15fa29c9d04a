"""The architecture suite as a table: what "any nn.Module" means, measured (docs/architectures.md).

    python benchmarks/architectures.py

Runs tests/archs.py's 29 small architectures at 50% and 25% of their MACs (the same runs as
tests/test_architectures.py, which asserts on them) and writes what each gave.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from entroprune.cli import FLAG_NAMES  # noqa: E402
from entroprune.errors import as_flags  # noqa: E402
from tests.archs import ARCHITECTURES, run_architecture  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the exporter's tracer warnings; the suite asserts the tool's own
    lines = ["# Architectures: what entroprune prunes, and what it refuses", "",
             "Written by `python benchmarks/architectures.py` from the runs `tests/test_architectures.py` asserts on",
             "(tiny nets with random weights, 1x16x16 inputs, 64-sample signals for the 1-D nets, 6-slice volumes for the 3-D ones; a 3-episode search",
             "with `band: null`, `min_keep: 0.05`, `round_to: 1` (the nets are a few channels wide), then pruning, a forward and an ONNX round trip; here also",
             "torch.export's capture of the pruned net, `export --format pt2`, run on the same inputs). MACs are",
             "torch-pruning's count of the pruned net against the original's (channels ranked by the default, `auto`;",
             "under the target by more than 2 points only where no group can keep one more channel step). A refused",
             "pattern is one line naming",
             "the group; leaving that layer whole (`--ignore`, `SearchConfig.ignored_layers`) prunes the rest.", "",
             "| architecture | refused, then left whole | target | MACs kept | outputs | ONNX max diff | pt2 max diff |",
             "|---|---|---|---|---|---|---|"]
    pt2_refusals: dict[str, str] = {}
    for name in ARCHITECTURES:
        for target in (0.5, 0.25):
            with tempfile.TemporaryDirectory() as tmp:
                row = run_architecture(name, target, Path(tmp), pt2=True)
            ignored = ", ".join(row["ignored"]) or "-"
            shown = f"{row['target']:.2f}" + (f" (asked {target:.2f}: unreachable)" if row["unreachable"] else "")
            lines.append(f"| {name} | {ignored} | {shown} | {row['macs']:.1%} | "
                         f"{'same shapes' if row['shapes_kept'] else 'CHANGED'} | {row['onnx_max_diff']:.1e} | "
                         f"{'refused' if row['pt2_max_diff'] is None else format(row['pt2_max_diff'], '.1e')} |")
            if row["pt2_max_diff"] is None:
                pt2_refusals.setdefault(name, row["pt2_refusal"])
            print(lines[-1], flush=True)
    lines += ["", "Refusal messages, one line each:", ""]
    for name, (_, bad) in ARCHITECTURES.items():
        if bad:
            with tempfile.TemporaryDirectory() as tmp:
                lines.append(f"- {name}: `{as_flags(run_architecture(name, 0.5, Path(tmp))['refusal'], FLAG_NAMES)}`")
    if pt2_refusals:
        lines += ["", "What torch.export refused (`export --format pt2`; ONNX and TorchScript export these):", ""]
        lines += [f"- {name}: `{message}`" for name, message in pt2_refusals.items()]
    (ROOT / "docs" / "architectures.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
