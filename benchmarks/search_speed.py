"""Episodes per second of the search: entropy vs accuracy reward, zero-mask vs physically
pruned scoring (``RewardConfig.physical``), side by side in one run.

    python benchmarks/search_speed.py [--episodes 30] [--threads 1 2] [--scoring mask physical]
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
from entroprune.search import SearchConfig  # noqa: E402
from entroprune.search.rewards import RewardConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["vgg", "resnet20"])
    ap.add_argument("--checkpoints", nargs="*", default=[], help="model=path pairs to time trained nets")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--scoring", nargs="+", default=["mask"], choices=["mask", "physical"])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.2])
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--min-keep", type=float, default=0.2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    given = dict(kv.split("=", 1) for kv in args.checkpoints)
    print(f"# search speed, {args.episodes} DDPG episodes per cell; {machine_description(threads=False)}")
    print("| model | target | reward | scoring | threads | episodes/s | s/episode | time split (s/episode) |")
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for model in args.models:
        ckpt = timing_checkpoint(model, given=given.get(model))
        for threads in args.threads:
            torch.set_num_threads(threads)
            for target in args.targets:
                for kind in ("entropy", "accuracy"):
                    for scoring in args.scoring:  # alternated, so both see the same machine load
                        cfg = SearchConfig(macs_target=target, episodes=args.episodes, warmup=args.episodes // 3,
                                           val_size=args.val_size, round_to=args.round_to,
                                           min_keep=args.min_keep, importance="l1",
                                           reward=RewardConfig(kind=kind, physical=scoring == "physical"))
                        out = Path(tempfile.mkdtemp(prefix="entroprune-speed-"))
                        t0 = time.perf_counter()
                        res = search_checkpoint(ckpt, out, cfg, quiet=True, force=True)
                        elapsed = time.perf_counter() - t0
                        split = res.summary["mean_time_split_s"]
                        per_ep = res.summary["search_time_s_this_session"] / args.episodes
                        row = {"model": model, "target": target, "reward": kind, "scoring": scoring,
                               "threads": threads, "eps_per_s": 1 / per_ep, "s_per_episode": per_ep, "split": split,
                               "wall_incl_setup_s": elapsed}
                        results.append(row)
                        print(f"| {model} | {target:.0%} | {kind} | {scoring} | {threads} | {1 / per_ep:.2f} | "
                              f"{per_ep:.3f} | " + ", ".join(f"{k} {v:.3f}" for k, v in split.items()) + " |",
                              flush=True)

    def find(**kw):
        return next((r for r in results if all(r[k] == v for k, v in kw.items())), None)

    for model in args.models:
        for threads in args.threads:
            for target in args.targets:
                e = find(model=model, threads=threads, target=target, reward="entropy", scoring=args.scoring[0])
                a = find(model=model, threads=threads, target=target, reward="accuracy", scoring=args.scoring[0])
                print(f"{model}, {target:.0%}, {threads} threads ({args.scoring[0]}): entropy episode "
                      f"{a['s_per_episode'] / e['s_per_episode']:.1f}x cheaper than accuracy episode")
                for kind in ("entropy", "accuracy"):
                    m = find(model=model, threads=threads, target=target, reward=kind, scoring="mask")
                    p = find(model=model, threads=threads, target=target, reward=kind, scoring="physical")
                    if m and p:
                        print(f"{model}, {target:.0%}, {threads} threads, {kind}: physical scoring "
                              f"{m['s_per_episode'] / p['s_per_episode']:.2f}x the speed of masks")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
