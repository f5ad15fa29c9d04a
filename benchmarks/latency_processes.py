"""How much a speed-up moves between processes: the main job's pruned net and its original, timed by
``latency_rows`` (every runtime, as `entroprune evaluate --latency` times them) once in each of several
fresh processes.

    python benchmarks/latency_processes.py [--model vgg] [--processes 7] [--macs 0.2]

The net: the arena's baseline pruned to torch-pruning's global policy at ``--macs`` of the MACs with the
main job's search settings (channels rounded to 8, min keep 0.2): the policy the main job's re-ranking
chose on 2026-12-02 and 03. Latency does not depend on the weights, so nothing is fine-tuned. Writes
docs/measurements/latency_processes.md and .json. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description  # noqa: E402

from entroprune.api import build_structure, load_model  # noqa: E402
from entroprune.config import RunConfig  # noqa: E402
from entroprune.latency import RUNTIME_NAMES as NAMES  # noqa: E402
from entroprune.latency import RUNTIMES, latency_rows  # noqa: E402
from entroprune.prune import prune_model  # noqa: E402
from entroprune.search import fixed_policy_counts  # noqa: E402
from entroprune.search.agents import GlobalAgent  # noqa: E402

BASELINES = ROOT / "docs" / "measurements" / "arena" / "baselines"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg")
    ap.add_argument("--processes", type=int, default=7)
    ap.add_argument("--macs", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=RunConfig.latency_repeats)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baselines", default=str(BASELINES))
    ap.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "latency_processes"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, loaded = load_model(Path(args.baselines) / args.model / "model.pt")
    structure = build_structure(model, loaded.spec)
    cfg = RunConfig().search
    cfg.macs_target = args.macs
    ratios = GlobalAgent.solve(model, structure, cfg.macs_target, cfg.min_keep, cfg.step)
    counts = fixed_policy_counts(structure, cfg, ratios)[0]
    net = prune_model(model, structure, counts)[0].eval()
    reduction = structure.total_macs / structure.macs(counts)
    shape = tuple(loaded.spec.input_size)
    rows = []
    for i in range(args.processes):
        base, pruned = latency_rows([model.eval(), net], shape, args.repeats, processes=1)
        rows.append({rt: base[f"{rt}_b64_ms"] / pruned[f"{rt}_b64_ms"] for rt in RUNTIMES.values()})
        print(f"process {i + 1}: " + ", ".join(f"{NAMES[rt]} {s:.2f}x" for rt, s in rows[-1].items()), flush=True)
    lines = ["# Speed-up from one fresh process to the next", "",
             f"Made by `python benchmarks/latency_processes.py{''.join(' ' + a for a in sys.argv[1:])}` on "
             f"{machine_description(threads=False)}, {args.threads} threads, in {time.perf_counter() - t0:.0f} s. "
             f"The arena's {args.model} and its global policy at {args.macs:.0%} of the MACs ({reduction:.2f}x fewer; "
             "channels rounded to 8, min keep 0.2), timed as `evaluate --latency` times them (every runtime, "
             f"batch 64, {args.repeats} rounds in alternation, median per-round ratio, glibc's heap kept), once in "
             f"each of {args.processes} fresh processes. The tool reports the median over three such processes "
             "(`entroprune.latency.FRESH_PROCESSES`).", "",
             "| process | " + " | ".join(f"{NAMES[rt]} speed-up (x)" for rt in RUNTIMES.values()) + " |",
             "|---|" + "---|" * len(RUNTIMES)]
    lines += [f"| {i + 1} | " + " | ".join(f"{r[rt]:.2f}" for rt in RUNTIMES.values()) + " |"
              for i, r in enumerate(rows)]
    lines += ["| median | " + " | ".join(f"{statistics.median(r[rt] for r in rows):.2f}" for rt in RUNTIMES.values())
              + " |", "| median / MACs reduction | " + " | ".join(
                  f"{statistics.median(r[rt] for r in rows) / reduction:.2f}" for rt in RUNTIMES.values()) + " |"]
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "macs_reduction": reduction,
                                                    "speedups": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
