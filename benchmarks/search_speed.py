"""Episodes per second of the search: entropy vs accuracy reward, side by side.

    python benchmarks/search_speed.py [--episodes 30] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, timing_checkpoint  # noqa: E402

from entroprune.api import search_checkpoint  # noqa: E402
from entroprune.rewards import RewardConfig  # noqa: E402
from entroprune.search import SearchConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["vgg", "resnet20"])
    ap.add_argument("--checkpoints", nargs="*", default=[], help="model=path pairs to time trained nets")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    given = dict(kv.split("=", 1) for kv in args.checkpoints)
    print(f"# search speed, {args.episodes} DDPG episodes per cell, target 0.2; {machine_description()}")
    print("| model | reward | threads | episodes/s | s/episode | time split (s/episode) |")
    print("|---|---|---|---|---|---|")
    results = []
    for model in args.models:
        ckpt = timing_checkpoint(model, given=given.get(model))
        for threads in args.threads:
            torch.set_num_threads(threads)
            for kind in ("entropy", "accuracy"):
                cfg = SearchConfig(flops_target=0.2, episodes=args.episodes, warmup=args.episodes // 3,
                                   val_size=args.val_size, reward=RewardConfig(kind=kind))
                out = Path(tempfile.mkdtemp(prefix="entroprune-speed-"))
                t0 = time.perf_counter()
                res = search_checkpoint(ckpt, out, cfg, quiet=True, force=True)
                elapsed = time.perf_counter() - t0
                split = res.summary["mean_time_split_s"]
                per_ep = res.summary["search_time_s_this_session"] / args.episodes
                row = {"model": model, "reward": kind, "threads": threads, "eps_per_s": 1 / per_ep,
                       "s_per_episode": per_ep, "split": split, "wall_incl_setup_s": elapsed}
                results.append(row)
                print(f"| {model} | {kind} | {threads} | {1 / per_ep:.2f} | {per_ep:.3f} | "
                      + ", ".join(f"{k} {v:.3f}" for k, v in split.items()) + " |", flush=True)
    for model in args.models:
        for threads in args.threads:
            e = next(r for r in results if r["model"] == model and r["threads"] == threads and r["reward"] == "entropy")
            a = next(r for r in results if r["model"] == model and r["threads"] == threads and r["reward"] == "accuracy")
            print(f"{model}, {threads} threads: entropy episode {a['s_per_episode'] / e['s_per_episode']:.1f}x "
                  "cheaper than accuracy episode")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
