"""1-D nets, measured: a keyword-spotting-style Conv1d net on sequential Fashion-MNIST, pruned by the tool's
default search and by the uniform policy to the same MACs, each fine-tuned the main job's way
(docs/measurements/one_d.md).

    python benchmarks/one_d.py [--seeds 0 1 2] [--macs 0.2] [--dataset fashion-mnist]

Each image is read as a signal, the "sequential" form of the dataset that recurrent and temporal-convolution nets
are tested on: its rows are time steps, its columns the features of a step (28 channels x 28 samples). The net
(the zoo's ``kws``: a Conv1d stem, two stages of inverted residual blocks of 1-D convs with BatchNorm1d, a
pooled Linear head) is
trained here, then goes through the Python API as a user's own 1-D model would: ``search_module`` with the
default SearchConfig (only the MACs target set) and the uniform agent, ``prune_module`` (BN recalibrated),
``finetune_module`` with the unpruned net as teacher (the main job's 3 epochs, lr 0.02, labels and
distillation), scored on the test set. Seed s searches and fine-tunes with s. Resumable: the baseline and each
finished cell are files in ``--work``.
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
from common import write_page  # noqa: E402

import entroprune as ep  # noqa: E402
from entroprune.config import FinetuneConfig  # noqa: E402
from entroprune.data import fashion_mnist_available, load_dataset  # noqa: E402
from entroprune.models import KWS  # noqa: E402
from entroprune.train import evaluate  # noqa: E402
from entroprune.utils import machine_description  # noqa: E402

SOURCES = {"default": "the default search (search_module, only the MACs target set)",
           "uniform": "the uniform policy (agent uniform)"}


def signals(data, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's normalised images as (N, columns, rows) signals: rows are the time steps."""
    images = getattr(data, split)
    return data.normalize(images.x)[:, 0].transpose(1, 2).contiguous(), images.y


def loader(x: torch.Tensor, y: torch.Tensor, seed: int, shuffle: bool = True) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(seed))


def baseline(data, args: argparse.Namespace) -> KWS:
    """The unpruned net, trained once with seed 0 (cached)."""
    x, y = signals(data, "train")
    torch.manual_seed(0)
    net = KWS(data.num_classes, x.shape[1], args.width / 48)
    path = Path(args.work) / "baseline.pt"
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    t0 = time.perf_counter()
    ep.finetune_module(net, loader(x, y, 0), epochs=args.epochs, lr=0.1, seed=0, quiet=args.quiet)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    (path.parent / "baseline.json").write_text(json.dumps({"train_s": time.perf_counter() - t0}))
    return net.eval()


def cell(net: KWS, data, source: str, seed: int, args: argparse.Namespace) -> dict:
    """One source and seed: search, prune, fine-tune, test (cached)."""
    out = Path(args.work) / f"{source}-s{seed}"
    result = out / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    x, y = signals(data, "train")
    tx, ty = signals(data, "test")
    # round_to 1: docs/measurements/one_d.md was measured before the default became 8
    cfg = ep.SearchConfig(macs_target=args.macs, seed=seed, agent="uniform" if source == "uniform" else "ddpg",
                          round_to=1, importance="l1")  # and L1, the default it was measured with
    if args.episodes:
        cfg.episodes, cfg.warmup = args.episodes, args.episodes // 2
    calib = x[: cfg.calib_size + cfg.recovery_images]
    t0 = time.perf_counter()
    res = ep.search_module(net, x[:1], calib, out / "search", cfg)
    search_s = time.perf_counter() - t0
    pruned, _ = ep.prune_module(net, x[:1], res, calib=x[:1024], refit=False)  # the plain cut measured
    before = evaluate(pruned, loader(tx, ty, 0, shuffle=False))["accuracy"]
    t0 = time.perf_counter()
    ep.finetune_module(pruned, loader(x, y, seed), epochs=args.ft_epochs, lr=FinetuneConfig.lr, teacher=net,
                       seed=seed, quiet=args.quiet)
    finetune_s = time.perf_counter() - t0
    macs, params = ep.count_macs_params(pruned, x[:1])
    full_macs, full_params = ep.count_macs_params(net, x[:1])
    row = {"source": source, "seed": seed, "test_accuracy": evaluate(pruned, loader(tx, ty, 0, shuffle=False))["accuracy"],
           "before_finetune": before, "macs_fraction": macs / full_macs, "params_fraction": params / full_params,
           "chosen": res.summary.get("chosen"), "policy": res.policy, "search_s": search_s, "finetune_s": finetune_s}
    out.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(row, indent=1))
    return row


def page(rows: list[dict], base_acc: float, net: KWS, data, args: argparse.Namespace) -> None:
    x, _ = signals(data, "train")
    full_macs, full_params = ep.count_macs_params(net, x[:1])
    uniform = {r["seed"]: r["test_accuracy"] for r in rows if r["source"] == "uniform"}
    lines = ["# 1-D nets: a keyword-spotting-style net pruned through the Python API", "",
             f"Written by `python benchmarks/one_d.py --seeds {' '.join(map(str, args.seeds))} --macs {args.macs}"
             f"{' --dataset ' + args.dataset if args.dataset != 'fashion-mnist' else ''}` (what and why: its docstring)."
             f" Machine: {machine_description()}.", "",
             f"Data: {data.name} read as signals of {x.shape[1]} channels x {x.shape[2]} samples (rows as time steps). "
             f"Unpruned net: {full_params:,} parameters, {int(full_macs):,} MACs, trained {args.epochs} epochs: "
             f"**{base_acc:.2f}%** test accuracy. Every policy: {args.ft_epochs} epochs of the main job's fine-tune "
             "(labels and distillation from the unpruned net); Δ uniform is paired by seed.", "",
             "| source | seeds | test acc (%) | Δ uniform (points) | before fine-tune (%) | MACs kept | params kept | "
             "search (s) | fine-tune (s) | re-ranking chose |", "|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for source, what in SOURCES.items():
        mine = sorted((r for r in rows if r["source"] == source), key=lambda r: r["seed"])
        if not mine:
            continue
        accs = [r["test_accuracy"] for r in mine]
        deltas = [r["test_accuracy"] - uniform[r["seed"]] for r in mine if r["seed"] in uniform]
        sd = lambda v: f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else ""  # noqa: E731
        chosen = {c: sum(r["chosen"] == c for r in mine) for c in dict.fromkeys(r["chosen"] for r in mine)}
        lines.append(f"| {source}: {what} | {len(mine)} | {statistics.mean(accs):.2f}{sd(accs)} | "
                     f"{'-' if source == 'uniform' or not deltas else f'{statistics.mean(deltas):+.2f}{sd(deltas)}'} | "
                     f"{statistics.mean(r['before_finetune'] for r in mine):.1f} | "
                     f"{statistics.mean(r['macs_fraction'] for r in mine):.1%} | "
                     f"{statistics.mean(r['params_fraction'] for r in mine):.1%} | "
                     f"{statistics.mean(r['search_s'] for r in mine):.0f} | {statistics.mean(r['finetune_s'] for r in mine):.0f} | "
                     f"{'-' if source == 'uniform' else ', '.join(f'{c} {n}x' for c, n in chosen.items())} |")
        summary[source] = {"accuracy": accs, "delta_uniform": deltas}
    write_page(Path(args.out), lines, {"baseline_accuracy": base_acc, "macs": full_macs, "params": full_params,
                                       "summary": summary, "rows": rows, "machine": machine_description()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--macs", type=float, default=0.2)
    p.add_argument("--dataset", default="fashion-mnist" if fashion_mnist_available() else "digits")
    p.add_argument("--epochs", type=int, default=3, help="baseline training epochs")
    p.add_argument("--ft-epochs", type=int, default=FinetuneConfig.epochs)
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--episodes", type=int, default=0, help="search episodes (0: the default's)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--work", default=str(ROOT / "runs" / "one_d"))
    p.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "one_d"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, seed=0)
    net = baseline(data, args)
    tx, ty = signals(data, "test")
    base_acc = evaluate(net, loader(tx, ty, 0, shuffle=False))["accuracy"]
    rows = [cell(net, data, source, seed, args) for seed in args.seeds for source in SOURCES]
    page(rows, base_acc, net, data, args)


if __name__ == "__main__":
    main()
