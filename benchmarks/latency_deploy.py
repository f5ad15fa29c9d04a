"""Which runtime turns fewer MACs into less time: torch eager, TorchScript (as `export --format torchscript`
writes it, loaded with ``torch.jit.optimize_for_inference``) and onnxruntime, on pruned nets and their
originals timed in alternation, in several fresh processes.

    python benchmarks/latency_deploy.py [--models vgg resnet20 mobilenetv2] [--processes 3] [--macs 0.2]

Each process loads the arena's baseline, prunes it to the uniform policy at ``--macs`` of its MACs (the main
job's search settings: channels rounded to 8, min keep 0.2) and times both nets on every runtime (batch 64,
``--repeats`` rounds, median per-round ratio, glibc's heap kept). Latency does not depend on the weights, so
nothing is fine-tuned. Writes docs/measurements/latency_deploy.md and .json. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from entroprune.latency import RUNTIME_NAMES

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "docs" / "measurements" / "arena" / "baselines"

CHILD = """
import json, torch
from entroprune.api import build_structure, load_model
from entroprune.config import RunConfig
from entroprune.latency import paired_latency
from entroprune.prune import prune_model
from entroprune.search import fixed_policy_counts, uniform_ratio
torch.set_num_threads({threads})
model, loaded = load_model({ckpt!r})
structure = build_structure(model, loaded.spec)
cfg = RunConfig().search
cfg.macs_target = {macs}
counts = fixed_policy_counts(structure, cfg, [uniform_ratio(structure, cfg)] * len(structure.groups))[0]
net = prune_model(model, structure, counts)[0].eval()
out = {{"macs": structure.macs(counts) / structure.total_macs}}
import entroprune.latency as latency
for rt in {runtimes!r}:
    latency.DEPLOY_EAGER = rt != "torch-loaded"
    t = paired_latency([model.eval(), net], tuple(loaded.spec.input_size), {batch}, rt.split("-")[0], {repeats})
    out[rt] = {{"unpruned_ms": t[0], "pruned_ms": t[1]}}
from torch.profiler import profile
from entroprune.export import deployed_eager
x = torch.randn({batch}, *loaded.spec.input_size)
for key, m in (("unpruned, as loaded", model.eval()), ("pruned, as loaded", net),
               ("unpruned, deployed", deployed_eager(model, x[:2])), ("pruned, deployed", deployed_eager(net, x[:2]))):
    with torch.no_grad():
        m(x)
        with profile() as prof:
            for _ in range({repeats}):
                m(x)
    shares = {{}}
    for e in prof.key_averages():
        kind = next((k for k, ops in OPS.items() if any(o in e.key for o in ops)), "other")
        shares[kind] = shares.get(kind, 0.0) + e.self_cpu_time_total
    out.setdefault("eager_profile", {{}})[key] = {{k: v / sum(shares.values()) for k, v in shares.items()}}
print(json.dumps(out))
"""

#: Eager torch's time by kind of op (self CPU time under torch.profiler, first matching name).
OPS = {"conv": ["convolution"], "pooling": ["pool"], "batch norm": ["batch_norm"], "activation": ["relu", "clamp",
       "hardtanh"]}


#: The runtimes timed: the tool's, and eager torch as loaded (no folding, default layout) after eager torch
#: as the tool deploys it (:func:`entroprune.export.deployed_eager`).
LABELS = {"torch": RUNTIME_NAMES["torch"] + ", deployed", "torch-loaded": RUNTIME_NAMES["torch"] + ", as loaded",
          **{k: v for k, v in RUNTIME_NAMES.items() if k != "torch"}}


def run_child(name: str, args: argparse.Namespace) -> dict:
    code = CHILD.format(threads=args.threads, ckpt=str(Path(args.baselines) / name / "model.pt"), macs=args.macs,
                        batch=args.batch, repeats=args.repeats, runtimes=list(LABELS))
    code = f"OPS = {OPS!r}\n" + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def span(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}" if len(values) > 1 else f"{values[0]:{fmt}}"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine_description, write_page

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vgg", "resnet20", "mobilenetv2"])
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--macs", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baselines", default=str(BASELINES))
    ap.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "latency_deploy"))
    args = ap.parse_args()
    t0, rows = time.perf_counter(), []
    for _ in range(args.processes):  # models interleaved, so a slow spell of the VM does not hit one model only
        for name in args.models:
            r = run_child(name, args)
            rows.append({"model": name, **r})
            print(name, " ".join(f"{label} {r[rt]['unpruned_ms'] / r[rt]['pruned_ms']:.2f}x"
                                 for rt, label in LABELS.items()), flush=True)
    lines = ["# Speed-up of pruned nets by deployment runtime", "",
             f"Made by `python benchmarks/latency_deploy.py{''.join(' ' + a for a in sys.argv[1:])}` on "
             f"{machine_description(threads=False)}, {args.threads} threads, in {time.perf_counter() - t0:.0f} s. "
             f"Each of {args.processes} fresh processes per model: the arena's baseline and its uniform policy at "
             f"{args.macs:.0%} of the MACs (channels rounded to 8, min keep 0.2, as the main job searches), timed "
             f"in alternation on each runtime (batch {args.batch}, {args.repeats} rounds, median per-round ratio, "
             "glibc's heap kept). Ranges are min-max over the processes. *TorchScript*: the net traced and frozen "
             "(what `entroprune export --format torchscript` writes), loaded with "
             "`torch.jit.optimize_for_inference` (batch norms folded, activations kept in oneDNN's layout). "
             "*torch eager, deployed*: the net as `entroprune.export.deployed_eager` prepares it (batch norms "
             "folded, weights and so activations channels-last), what every eager latency of the tool times; "
             "*as loaded*: the checkpoint's module as it is.", "",
             "| model | MACs reduction | runtime | unpruned (ms) | pruned (ms) | speed-up (x) | speed-up / MACs reduction |",
             "|---|---|---|---|---|---|---|"]
    for name in args.models:
        rs = [r for r in rows if r["model"] == name]
        red = 1 / rs[0]["macs"]
        for rt, label in LABELS.items():
            u, p = [r[rt]["unpruned_ms"] for r in rs], [r[rt]["pruned_ms"] for r in rs]
            s = [a / b for a, b in zip(u, p, strict=True)]
            lines.append(f"| {name} | {red:.2f}x | {label} | {span(u, '.1f')} | {span(p, '.1f')} | {span(s, '.2f')} "
                         f"| {span([v / red for v in s], '.2f')} |")
    kinds = [*OPS, "other"]
    lines += ["", "Where eager torch spends its time (share of self CPU time under `torch.profiler`, batch "
              f"{args.batch}, first process): per-channel passes (pooling, batch norm, activations) shrink only "
              "linearly with the channels, the convs with their product; as loaded they run in the default "
              "(NCHW) layout, deployed in channels-last, with the norms folded away.", "",
              "| model | net | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for name in args.models:
        prof = next(r for r in rows if r["model"] == name)["eager_profile"]
        for key in prof:
            lines.append(f"| {name} | {key} | " + " | ".join(f"{prof[key].get(k, 0):.0%}" for k in kinds) + " |")
    write_page(Path(args.out), lines, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
