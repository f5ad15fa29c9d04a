"""Does DDPG beat its own random warm-up, and random search? Best and mean rewards per seed.

    python benchmarks/ddpg_warmup.py [--episodes 150] [--warmup 20] [--lr-actor 1e-3] [--seeds 0 1 2 3]
    python benchmarks/ddpg_warmup.py --checkpoint runs/cache/<baseline>/model.pt --episodes 300 \\
        --warmup 100 --target 0.2 --round-to 8 --min-keep 0.2 --calib-size 256 --sigma-decay 0.95 0.99 --random

Without --checkpoint it trains the small digits VGG the tests use (width 0.5, 3 epochs, seed 0)
and searches at 30% of the MACs. The second form is the main job's search (`configs/default.yaml`)
on its baseline, as it was before the band and the re-ranking (the search alone: no re-ranking here).
--reward kl --recovery-steps 20 --band 0.5 is the arena's default-kl search; each --ddpg spec adds DDPG
rows with those hyperparameters (e.g. sigma=0.3,lr_critic=0.0001). Each --sigma-decay value is a DDPG row per seed; --random adds random search
(the `random` agent: the best of as many uniformly random policies). Printed per run: best reward
in the warm-up and after it, the episode of the best, the mean of the warm-up and of the last 20
episodes, and how many distinct policies the last 100 episodes tried (rounded channel counts:
noise too small to move a count by one rounding step tries nothing new).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from entroprune.api import search_checkpoint, train_baseline
from entroprune.search import SearchConfig
from entroprune.search.rewards import RewardConfig
from entroprune.utils import machine_description


def row(name: str, seed: int, log: Path, warmup: int) -> str:
    eps = [json.loads(line) for line in log.read_text().splitlines() if line]
    r = [e["reward"] for e in eps]
    w = warmup
    distinct = len({json.dumps(e["policy"], sort_keys=True) for e in eps[-100:]})
    best = int(np.argmax(r))
    return (f"| {name} | {seed} | {max(r[:w]):.4f} | {max(r[w:]):.4f} | {best} | {np.mean(r[:w]):.4f} "
            f"| {np.mean(r[-20:]):.4f} | {distinct} | {'yes' if max(r[w:]) > max(r[:w]) else 'no'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="baseline to search on (default: train the small digits VGG)")
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--min-keep", type=float, default=0.2)
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--lr-actor", type=float, default=1e-3)
    ap.add_argument("--sigma-decay", type=float, nargs="+", default=[0.95], help="DDPG rows, one per value")
    ap.add_argument("--ddpg", nargs="+", default=[], metavar="K=V[,K=V]",
                    help="more DDPG rows, each with these hyperparameters (e.g. sigma=0.3,lr_critic=0.0001)")
    ap.add_argument("--random", action="store_true", help="add random search with the same episodes")
    ap.add_argument("--reward", default="entropy", help="the search's reward kind (kl: agreement with the unpruned net)")
    ap.add_argument("--recovery-steps", type=int, default=0, help="label-free recovery before each episode's score")
    ap.add_argument("--band", type=float, default=None, help="keep ratios within (1 +- band) x uniform's (default: "
                    "none, the whole [min_keep, 1] range the first runs searched)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="entroprune-ddpg-"))
    ckpt = Path(args.checkpoint) if args.checkpoint else root / "base" / "model.pt"
    if not args.checkpoint:
        train_baseline("vgg", "digits", root / "base", epochs=3, width_mult=0.5, seed=0, quiet=True)
    print(f"{ckpt}: episodes {args.episodes}, warm-up {args.warmup}, target {args.target}, round_to "
          f"{args.round_to}, actor lr {args.lr_actor}; {machine_description()}")
    print("| agent | seed | best in warm-up | best after | best episode | mean of warm-up | mean of last 20 "
          "| distinct policies in last 100 | beat warm-up best |")
    print("|---|---|---|---|---|---|---|---|---|")
    runs = [(f"ddpg sigma_decay {d}", "ddpg", {"lr_actor": args.lr_actor, "sigma_decay": d}) for d in args.sigma_decay]
    for spec in args.ddpg:
        extra = {k: float(v) for k, v in (kv.split("=") for kv in spec.split(","))}
        runs.append((f"ddpg {spec}", "ddpg", {"lr_actor": args.lr_actor, "sigma_decay": args.sigma_decay[0], **extra}))
    runs += [("random search", "random", {})] if args.random else []
    for i, (name, agent, ddpg) in enumerate(runs):
        for seed in args.seeds:
            cfg = SearchConfig(macs_target=args.target, episodes=args.episodes, warmup=args.warmup, agent=agent,
                               calib_size=args.calib_size, val_size=128, seed=seed, round_to=args.round_to,
                               min_keep=args.min_keep, ddpg=ddpg, band=args.band, rerank_top_k=0, importance="l1",
                               reward=RewardConfig(kind=args.reward, recovery_steps=args.recovery_steps))
            out = root / f"{i}-{agent}-{seed}"
            search_checkpoint(ckpt, out, cfg, quiet=True)
            print(row(name, seed, out / "episodes.jsonl", args.warmup), flush=True)


if __name__ == "__main__":
    main()
