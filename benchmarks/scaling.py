"""Search episodes per second with 1 and 2 reward workers (Ray), and a projection beyond.

    python benchmarks/scaling.py [--episodes 40] [--workers 1 2] [--update-docs]

For each reward (entropy, accuracy) it runs the same DDPG search (episode batch = workers)
on one local process and on a local Ray with N actors of one thread each, and reports
episodes per second and the ratio to one worker measured in the same run. From the
one-worker run it also splits an episode into its driver part (agent, environment, logging:
sequential whatever the workers) and its reward part (what workers parallelise), plus the
per-batch Ray overhead seen with N workers, and projects episodes per second for more
workers with an Amdahl model: batch time = N * driver + reward + overhead.
``--update-docs`` writes the tables into docs/scaling.md between its markers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, timing_checkpoint  # noqa: E402

from entroprune.api import search_checkpoint  # noqa: E402
from entroprune.search import SearchConfig  # noqa: E402
from entroprune.search.rewards import RewardConfig  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"


def reward_seconds(folder: Path) -> float:
    """Mean seconds per episode spent scoring (everything logged except the agent)."""
    entries = [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]
    return float(np.mean([sum(v for k, v in e["times"].items() if k != "agent") for e in entries]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg")
    ap.add_argument("--checkpoint", default=None, help="time a trained checkpoint instead")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--project", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--update-docs", action="store_true")
    args = ap.parse_args()
    ckpt = timing_checkpoint(args.model, given=args.checkpoint)
    machine = machine_description()
    rows, lines = [], []
    head = ("| reward | workers | threads per worker | episodes/s | ratio to 1 worker | Ray start-up (s) |\n"
            "|---|---|---|---|---|---|")
    lines.append(head)
    for kind in ("entropy", "accuracy"):
        base = None
        for workers in args.workers:
            torch.set_num_threads(2 if workers == 1 else 1)
            cfg = SearchConfig(macs_target=0.2, episodes=args.episodes, warmup=args.episodes // 2, round_to=8,
                               min_keep=0.05, val_size=args.val_size, episode_batch=workers, importance="l1",
                               reward=RewardConfig(kind=kind))
            out = Path(tempfile.mkdtemp(prefix="entroprune-scaling-"))
            t0 = time.perf_counter()
            res = search_checkpoint(ckpt, out, cfg, quiet=True, force=True, workers=workers)
            wall = time.perf_counter() - t0
            search_s = res.summary["search_time_s_this_session"]
            row = {"reward": kind, "workers": workers, "threads": torch.get_num_threads() if workers == 1 else 1,
                   "eps_per_s": args.episodes / search_s, "search_s": search_s, "setup_s": wall - search_s,
                   "reward_s_per_episode": reward_seconds(out)}
            if workers == 1:
                base = row
                row["driver_s_per_episode"] = search_s / args.episodes - row["reward_s_per_episode"]
            rows.append(row)
            ratio = row["eps_per_s"] / base["eps_per_s"] if base else float("nan")
            line = (f"| {kind} | {workers} | {row['threads']} | {row['eps_per_s']:.2f} | {ratio:.2f} "
                    f"| {row['setup_s']:.1f} |")
            lines.append(line)
            print(line, flush=True)
    # Projection from the measured parts (per reward): driver, reward, Ray overhead per batch.
    proj = ["| reward | driver s/episode | reward s/episode (1 worker) | Ray overhead s/batch | "
            + " | ".join(f"{n} workers" for n in args.project) + " |",
            "|---|---|---|---|" + "---|" * len(args.project)]
    for kind in ("entropy", "accuracy"):
        one = next(r for r in rows if r["reward"] == kind and r["workers"] == 1)
        many = [r for r in rows if r["reward"] == kind and r["workers"] > 1]
        d, rw = one["driver_s_per_episode"], one["reward_s_per_episode"]
        over = 0.0
        if many:  # batch time measured with N workers, less what the model explains
            r = max(many, key=lambda r: r["workers"])
            n = r["workers"]
            # a worker has 1 thread where the one-worker run had 2: use its own reward time
            over = max(0.0, n / r["eps_per_s"] - n * d - r["reward_s_per_episode"])
            rw = r["reward_s_per_episode"]
        cells = [f"{n / (n * d + rw + over) / one['eps_per_s']:.1f}x" for n in args.project]
        proj.append(f"| {kind} | {d:.4f} | {one['reward_s_per_episode']:.4f} | {over:.4f} | " + " | ".join(cells) + " |")
    stamp = (f"Measured by `python benchmarks/scaling.py --episodes {args.episodes}` on {time.strftime('%Y-%m-%d')}, "
             f"model `{args.model}` (Fashion-MNIST shapes), {machine}; accuracy reward on {args.val_size} "
             "validation images; episode batch = workers.")
    text = "\n".join([stamp, "", *lines, "", "Projected speed-up over one worker (one-thread reward workers, "
                      "each on its own core or GPU):", "", *proj])
    print(text)
    Path(tempfile.gettempdir(), "entroprune-scaling.json").write_text(json.dumps(rows, indent=2))
    if args.update_docs:
        doc = DOC.read_text()
        new = re.sub(r"(<!-- scaling:begin -->\n).*?(\n<!-- scaling:end -->)", lambda m: m.group(1) + text + m.group(2),
                     doc, flags=re.S)
        DOC.write_text(new)
        print(f"updated {DOC}")


if __name__ == "__main__":
    main()
