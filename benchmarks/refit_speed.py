"""How long the least-squares refit takes: one stepped pass over the net's graph against the partial forwards.

For each pair, the arena's uniform policy on the arena's baseline, refitted as ``prune --refit`` runs it (on
the calibration split): the wall time of the refit as the tool runs it (one forward over the images, stepped
layer by layer through the net's torch.fx graph) and of the partial forwards it replaced (two forwards from
the images per layer, stopped at it; still the path of nets that do not trace), measured in the same run on
this machine, and whether both give the same weights to the bit. The one-pass time is the faster of two
runs, the partial forwards' a single run (minutes on MobileNetV2). Run it alone: it is a timing.

    python benchmarks/refit_speed.py --pairs vgg:0.2 resnet20:0.2 vgg16:0.2 mobilenetv2:0.2
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from channel_ranking import uniform_policy  # noqa: E402
from common import machine_description, pair_study, write_page  # noqa: E402
from reproduce import ensure_baseline  # noqa: E402

import entroprune.refit as refit_module  # noqa: E402
from entroprune.api import build_structure, load_data_for_spec, load_model  # noqa: E402
from entroprune.prune import refitted  # noqa: E402


def timed(base: Path, policy: dict[str, float], round_to: int) -> dict:
    """Seconds of the one-pass refit (best of two) and of the partial forwards, the layers and images."""
    model, ckpt = load_model(base)
    structure = build_structure(model, ckpt.spec, "l1")  # the arena's ranking
    counts = structure.policy_counts(policy, round_to)
    data = load_data_for_spec(ckpt.spec)
    images = data.normalize(data.calib.x)

    def run() -> tuple[float, torch.nn.Module]:
        start = time.perf_counter()
        with warnings.catch_warnings():  # a head left as cut: the same either way, not this page's subject
            warnings.simplefilter("ignore")
            net = refitted(model, structure, counts, images)
        return time.perf_counter() - start, net

    (first, net), (second, _) = run(), run()
    with mock.patch.object(refit_module._OnePass, "build", classmethod(lambda cls, *a, **k: None)):
        partial, old = run()
    same = all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), old.state_dict().values(), strict=True))
    order = refit_module.refit_order(model, images)
    return {"one_pass_s": min(first, second), "partial_s": partial, "same_weights": same, "images": len(images),
            "layers": len(order), "traced": refit_module._OnePass.build(model, net, order, images, 256) is not None}


def main(argv: list[str] | None = None) -> None:
    args, grid, arena = pair_study(__doc__, "refit_speed", argv)
    lines = ["# Refit time", "", f"Made by `python benchmarks/refit_speed.py --pairs {' '.join(args.pairs)}` (what and "
             f"why: its docstring) on {machine_description()}, nothing else running. "
             "The arena's uniform policy of each pair, refitted on the calibration split.", "",
             "| pair | layers read (refit order) | images | one pass (s) | partial forwards (s) | speed-up | same weights |",
             "|---|---|---|---|---|---|---|"]
    payload = {"machine": machine_description(), "threads": grid["threads"]}
    for pair in args.pairs:
        model, target, policy = uniform_policy(arena, pair)
        t = timed(ensure_baseline(grid, model) / "model.pt", policy, grid["round_to"])
        payload[pair] = t
        lines.append(f"| {model} {target:.0%} | {t['layers']} | {t['images']} | {t['one_pass_s']:.1f} | "
                     f"{t['partial_s']:.1f} | {t['partial_s'] / t['one_pass_s']:.1f}x | "
                     f"{'yes' if t['same_weights'] else 'NO'} |")
    write_page(Path(args.out), lines, payload)


if __name__ == "__main__":
    main()
