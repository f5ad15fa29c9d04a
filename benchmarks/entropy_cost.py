"""Cost of each entropy variant against one forward pass (default model, 256 images).

    python benchmarks/entropy_cost.py [--checkpoint runs/base/model.pt] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, median_time, timing_checkpoint  # noqa: E402

from entroprune.api import load_data_for_spec, load_model  # noqa: E402
from entroprune.entropy import VARIANTS, activation_points, layer_entropy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--model", default="vgg")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, ckpt = load_model(timing_checkpoint(args.model, given=args.checkpoint))
    data = load_data_for_spec(ckpt.spec)
    x = data.normalize(data.test.x[: args.batch])
    points = activation_points(model, x[:1])
    mods = dict(model.named_modules())
    acts: dict[str, torch.Tensor] = {}
    hooks = [mods[p].register_forward_hook(lambda m, i, o, c=c: acts.__setitem__(c, o.detach().clamp_min(0)))
             for c, p in points.items()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        forward = median_time(lambda: model(x), args.repeats)
    print(f"# entropy cost, {ckpt.spec.model}, batch {args.batch} {ckpt.spec.dataset} images, "
          f"{len(acts)} conv layers; {machine_description()}")
    print(f"forward pass: {1000 * forward:.1f} ms")
    print("| variant | ms (all layers) | ratio to forward | ms (last layer) | ratio to forward |")
    print("|---|---|---|---|---|")
    last = list(acts.values())[-1]  # `--entropy-layers last`, the default selection
    for v in VARIANTS:
        t = median_time(lambda v=v: [layer_entropy(a, v, rectified=True) for a in acts.values()], args.repeats)
        t_last = median_time(lambda v=v: layer_entropy(last, v, rectified=True), args.repeats)
        print(f"| {v} | {1000 * t:.1f} | {t / forward:.2f} | {1000 * t_last:.1f} | {t_last / forward:.3f} |")


if __name__ == "__main__":
    main()
