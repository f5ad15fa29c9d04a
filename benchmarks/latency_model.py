"""How well the latency model predicts measured latency (issue 20): for each model and backend, fit it
(layer tables + whole pruned nets) and time random pruned nets it never saw.

    python benchmarks/latency_model.py [--models vgg mobilenetv2] [--backends torch onnxruntime]

Writes docs/measurements/latency_model.md and .json. Run it on an idle machine: a benchmark or a test
suite beside it makes the timings, and so the errors, meaningless.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description  # noqa: E402

from entroprune.latency import (  # noqa: E402
    FreshTimer,
    LatencyConfig,
    LatencyModel,
    PairTimer,
    fit_latency_model,
    fresh_timer,
    in_fresh,
    measured_fraction,
    wall_pair_timer,
    wall_timer,
    whole_fractions,
)
from entroprune.models import build_model  # noqa: E402
from entroprune.structure import Structure  # noqa: E402

#: Keep ratios of the uniform policies also predicted: small nets, where latency targets such as 25% live, which
#: random policies (mostly mid-sized) rarely probe.
UNIFORM_KEEPS = (0.3, 0.4, 0.5)


def fractions(model: torch.nn.Module, structure: Structure, rows: list[np.ndarray], pair: PairTimer,
              fresh: FreshTimer | None) -> np.ndarray:
    """Whole pruned nets' latency fractions, timed as the fit times its own (in fresh processes if it did)."""
    return whole_fractions(model, structure, rows, lambda c: measured_fraction(model, structure, c, pair), fresh)[0]


def uniform_errors(model: torch.nn.Module, structure: Structure, lm: LatencyModel, round_to: int,
                   pair: PairTimer, fresh: FreshTimer | None) -> list[float]:
    """Signed relative error (predicted / measured - 1) of the uniform policies at :data:`UNIFORM_KEEPS`, each
    timed in alternation with the unpruned net as the fit times its policies."""
    rows = [structure.keep_counts(keep, round_to) for keep in UNIFORM_KEEPS]
    return (lm.fraction(np.array(rows)) / fractions(model, structure, rows, pair, fresh) - 1).tolist()


def repeatability(model: torch.nn.Module, structure: Structure, rep: dict, pair: PairTimer,
                  fresh: FreshTimer | None) -> float:
    """Median disagreement (|second / first - 1|) between two measurements of each held-out policy's latency
    fraction, the second made after the whole fit: the noise floor the model's error is read against."""
    again = fractions(model, structure, [np.array(h["counts"]) for h in rep["held_out"]], pair, fresh)
    return float(np.median([abs(a / h["measured_fraction"] - 1) for a, h in zip(again, rep["held_out"], strict=True)]))


def fit_and_check(name: str, width: float, backend: str, args: argparse.Namespace) -> dict:
    """Fit one latency model and measure its errors and noise floor (one row of the page)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1, width_mult=width).eval()
    structure = Structure(model, torch.zeros(1, 1, 28, 28))
    lo = structure.keep_counts(args.min_keep, args.round_to)
    pair = wall_pair_timer(args.batch, backend, args.repeats)
    fresh = fresh_timer(args.batch, backend, args.repeats, args.processes)
    lm, rep = fit_latency_model(model, structure, lo, wall_timer(args.batch, backend, args.repeats),
                                held_out=args.held_out, round_to=args.round_to, seed=0, pair=pair, fresh=fresh)
    rep["uniform_errors"] = uniform_errors(model, structure, lm, args.round_to, pair, fresh)
    rep["repeatability"] = repeatability(model, structure, rep, pair, fresh)
    return rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vgg", "mobilenetv2"])
    ap.add_argument("--widths", nargs="+", type=float, default=[1.0, 1.0], help="width per model")
    ap.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--held-out", type=int, default=10)
    ap.add_argument("--min-keep", type=float, default=0.2)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=LatencyConfig.repeats, help="alternation rounds per timing")
    ap.add_argument("--processes", type=int, default=LatencyConfig.processes,
                    help="fresh processes the whole nets are timed in, as the tool fits (0: the fitting process, as "
                         "before; docs/measurements/latency_model.md was made so)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "latency_model"))
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "WIDTH", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        name, width, backend = args.one
        print(json.dumps(fit_and_check(name, float(width), backend, args)))
        return
    rows, t_start = [], time.perf_counter()
    for name, width in zip(args.models, args.widths, strict=True):
        for backend in args.backends:
            # each (model, backend) in a fresh process, as `entroprune latency` fits one: a long process's
            # history can move MobileNetV2's eager latency between modes (docs/method.md)
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", name, str(width), backend],
                                 capture_output=True, text=True, check=True)
            rep = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"model": name, "width": width, "backend": backend, **rep})
            print(f"{name} w{width} {backend}: median error {rep['median_error']:.1%}, worst {rep['max_error']:.1%}, "
                  f"fit {rep['fit_time_s']:.0f} s", flush=True)
    machine = f"{machine_description(threads=False)}, {args.threads} threads"
    lines = ["# Latency model: predicted against measured latency of random pruned nets", "",
             f"Machine: {machine}; batch {args.batch}; 28x28 single-channel inputs (Fashion-MNIST's); search space: "
             f"keep ratio >= {args.min_keep}, channels rounded to {args.round_to}. Made by "
             f"`python benchmarks/latency_model.py{''.join(' ' + a for a in sys.argv[1:])}` in "
             f"{time.perf_counter() - t_start:.0f} s.", "",
             "Each (model, backend): every conv and linear layer timed alone over a grid of its channel counts, "
             "the rest of the net fitted on 10 whole pruned nets (unpruned, smallest, 8 random), then "
             f"{args.held_out} other random pruned nets timed and predicted. Every whole net is timed in "
             f"alternation with the unpruned one ({args.repeats} rounds, the median of the per-round ratios"
             + (f"; in both orders,{in_fresh(args.processes)}" + (", the median over them" if args.processes > 1 else "")
                if args.processes else "; in the fitting process") + "), and "
             "the error is on that latency fraction, the quantity a latency target bounds. Goal (issue 20): median "
             "error within 10%.", "",
             "Repeatability: each held-out net's fraction measured again after the fit; the median disagreement "
             "between the two measurements is the noise floor the model's error is read against.", "",
             "Uniform policies (one keep ratio for every group, " + ", ".join(f"{k:.0%}" for k in UNIFORM_KEEPS)
             + "): the predicted latency fraction against the measured one, signed (predicted / measured - 1), each "
             "timed in alternation with the unpruned net: the small nets where latency targets live.", "",
             "| model | backend | unpruned (ms) | median error | worst error | repeatability | uniform policies' error "
             "| layer timings | fit time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} (width {r['width']}) | {r['backend']} | {r['full_latency_s'] * 1000:.2f} | "
                     f"{r['median_error']:.1%} | {r['max_error']:.1%} | {r['repeatability']:.1%} | "
                     + " / ".join(f"{e:+.0%}" for e in r["uniform_errors"])
                     + f" | {r['layer_timings']} | {r['fit_time_s']:.0f} |")
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
