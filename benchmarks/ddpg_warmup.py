"""Does DDPG beat its own random warm-up? Best and mean rewards per seed, on digits.

    python benchmarks/ddpg_warmup.py [--episodes 150] [--warmup 20] [--lr-actor 1e-3] [--seeds 0 1 2 3]

Trains the same small digits VGG the tests use (width 0.5, 3 epochs, seed 0) once, then runs
entropy-reward searches at 30% of the MACs and prints, per seed: best reward in the warm-up,
best after it, mean reward of the warm-up and of the last 20 episodes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from entroprune.api import search_checkpoint, train_baseline
from entroprune.search import SearchConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--lr-actor", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="entroprune-ddpg-"))
    train_baseline("vgg", "digits", root / "base", epochs=3, width_mult=0.5, seed=0, quiet=True)
    print(f"episodes {args.episodes}, warm-up {args.warmup}, actor lr {args.lr_actor}")
    print("| seed | best in warm-up | best after | mean of warm-up | mean of last 20 | beat warm-up best |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        cfg = SearchConfig(flops_target=0.3, episodes=args.episodes, warmup=args.warmup, calib_size=64,
                           val_size=128, seed=seed, ddpg={"lr_actor": args.lr_actor})
        search_checkpoint(root / "base" / "model.pt", root / f"s{seed}", cfg, quiet=True)
        r = [json.loads(line)["reward"] for line in (root / f"s{seed}" / "episodes.jsonl").read_text().splitlines()]
        w = args.warmup
        print(f"| {seed} | {max(r[:w]):.4f} | {max(r[w:]):.4f} | {np.mean(r[:w]):.4f} | {np.mean(r[-20:]):.4f} "
              f"| {'yes' if max(r[w:]) > max(r[:w]) else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
