"""How much larger the least-squares refit makes the filters it fits (the premise of ``PruneConfig.refit_norms``).

The refit makes up for cut inputs by weighting the kept ones more; behind BatchNorm a filter's norm divides
SGD's effective step on it by its square, so the fine-tune moves a refitted net less than a plainly cut one.
This measures the premise on the arena's uniform policy of each pair (the arena's baseline, the refit as
``prune --refit`` runs it): for every refitted conv, the median over its kept filters of the refitted norm
over the unpruned filter's norm. Seconds a pair; no training. What the norms did after the fine-tune:
docs/arena.md, sources ``*-refit-norms``. And the head (the layers whose outputs the model returns, which no
normalisation follows: their scale is the logits'), refitted as a whole: the RMS of its weights over the
unpruned layer's, and the refit's equations per unknown there (``*-refit-body`` leaves it as cut), refitted
here whatever its equations: what ``entroprune.refit.REFIT_HEAD_ROWS`` weighs (under it, the refit leaves the
head as cut).

    python benchmarks/refit_norms.py --pairs vgg:0.2 resnet20:0.2 vgg:0.1 vgg16:0.2 mobilenetv2:0.2
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from channel_ranking import uniform_policy  # noqa: E402
from common import pair_heading, pair_study, write_page  # noqa: E402
from reproduce import ensure_baseline  # noqa: E402

import entroprune.refit as refit_module  # noqa: E402
from entroprune.api import build_structure, load_data_for_spec, load_model  # noqa: E402
from entroprune.prune import Masker, refitted  # noqa: E402
from entroprune.refit import output_layers  # noqa: E402


def ratios(base: Path, policy: dict[str, float], round_to: int) -> tuple[dict[str, float], dict[str, dict]]:
    """Each refitted conv's median ratio of refitted to unpruned filter norm over its kept filters; and each head
    layer's RMS ratio with the equations (calibration images: one per image) per kept input it was refitted on."""
    model, ckpt = load_model(base)
    structure = build_structure(model, ckpt.spec, "l1")  # the arena's ranking
    counts = structure.policy_counts(policy, round_to)
    data = load_data_for_spec(ckpt.spec)
    images = data.normalize(data.calib.x)
    with mock.patch.object(refit_module, "REFIT_HEAD_ROWS", 0.0):  # the head refitted regardless: what the guard weighs
        fitted = refitted(model, structure, counts, images)
    kept = Masker(fitted, structure).kept_channels(counts)
    mods = dict(model.named_modules())
    heads = {}
    for name in sorted(output_layers(model, images)):
        new, old = dict(fitted.named_modules())[name].weight.detach(), mods[name].weight.detach()
        if isinstance(mods[name], torch.nn.Linear) and not torch.equal(new, old):
            inputs = int((new.abs().sum(0) > 0).sum())  # the refit zeroes the columns of cut inputs
            heads[name] = {"rms_ratio": float(new.pow(2).mean().sqrt() / old.pow(2).mean().sqrt()),
                           "equations_per_input": len(images) / inputs}
    out = {}
    for name, mod in fitted.named_modules():
        if not isinstance(mod, torch.nn.Conv2d):
            continue
        rows = kept.get(name, torch.arange(mod.weight.shape[0]))
        new, old = mod.weight[rows].flatten(1), mods[name].weight[rows].flatten(1)
        if not torch.equal(new, old):  # the masker zeroes cut outputs only: a kept filter changed is a refitted one
            out[name] = float((new.norm(dim=1) / old.norm(dim=1)).median())
    return out, heads


def main(argv: list[str] | None = None) -> None:
    args, grid, arena = pair_study(__doc__, "refit_norms", argv)
    lines = ["# Refitted filter norms", "", f"Made by `python benchmarks/refit_norms.py --pairs {' '.join(args.pairs)}` "
             "(what and why: its docstring). Per refitted conv of the arena's uniform policy: the median over its "
             "kept filters of the refitted norm over the unpruned norm (1 = unchanged).", ""]
    payload = {}
    for pair in args.pairs:
        model, target, policy = uniform_policy(arena, pair)
        found, heads = ratios(ensure_baseline(grid, model) / "model.pt", policy, grid["round_to"])
        payload[pair] = {**found, "head": heads}
        lines += [*pair_heading(model, target, arena), "| conv | median ratio |", "|---|---|",
                  *(f"| {n} | {r:.2f} |" for n, r in found.items()), "",
                  f"Range {min(found.values()):.2f}-{max(found.values()):.2f}x over {len(found)} convs."
                  + "".join(f" The head `{n}`: RMS {h['rms_ratio']:.2f}x the unpruned layer's, refitted on "
                            f"{h['equations_per_input']:.1f} equations per kept input"
                            + (f" (under {refit_module.REFIT_HEAD_ROWS:g}: the refit leaves it as cut)."
                               if h["equations_per_input"] < refit_module.REFIT_HEAD_ROWS else ".")
                            for n, h in heads.items()), ""]
    write_page(Path(args.out), lines, payload)


if __name__ == "__main__":
    main()
