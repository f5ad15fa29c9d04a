"""What does pruning without labels cost? The main job's net pruned to the uniform policy, fine-tuned the main
job's way (3 epochs, distillation: cross-entropy on the labels plus the unpruned net's soft outputs) and
label-free (the same training images with their labels removed, the unpruned net's outputs the only target),
both scored on the labelled test set.

    python benchmarks/label_free.py [--seeds 0 1 2] [--macs 0.2] [--main-job]

The unlabelled copy is an .npz of the dataset's own arrays without ``y`` (test images, where the dataset has a
split of its own, keep theirs; only the final evaluation, on the labelled dataset, reads labels), so both
fine-tunes train on the same images, carved into the same splits;
BN is recalibrated on the same calibration images. Resumable: a finished fine-tune (its metrics.json in
``--work``) is not run again. Writes docs/measurements/label_free.md and .json.

``--main-job`` adds the whole main job (``entroprune run --checkpoint``, its settings from ``--run-config``,
default the main job's own) per seed, on the checkpoint and on a copy of it whose dataset is the unlabelled
.npz: the label-free run's report (top-1 agreement with the original, against its uniform reference line)
beside what the labelled test set says of the same nets. A finished run (its result.json) is not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import write_page  # noqa: E402

from entroprune.api import (  # noqa: E402
    evaluate_checkpoint,
    finetune_checkpoint,
    load_model,
    prune_checkpoint,
)
from entroprune.config import FinetuneConfig, RunConfig  # noqa: E402
from entroprune.data import DATASETS  # noqa: E402
from entroprune.utils import machine_description  # noqa: E402

BASELINE = ROOT / "docs" / "measurements" / "arena" / "baselines" / "vgg" / "model.pt"
ARMS = {"labelled": "labels + distillation (the main job's fine-tune)",
        "label-free": "distillation alone, labels removed"}


def unlabelled_copy(spec, work: Path) -> Path:
    """The checkpoint's dataset as an .npz without training labels (same images, same order)."""
    path = work / f"{spec.dataset}-unlabelled.npz"
    if not path.exists():
        x, _, test, *_ = DATASETS[spec.dataset](spec.data_dir, None, None)  # a fourth item: class names
        # without a test split of its own, both copies carve the same one (same images, same seed)
        np.savez(path, x=x, **({} if test is None else {"x_test": test[0], "y_test": test[1]}))
    return path


def uniform_policy(ckpt: Path, macs: float, work: Path) -> Path:
    """The uniform policy at ``macs`` of the MACs with the main job's search settings, as a policy.json: the
    main job's own uniform reference line (the pipeline computes it)."""
    from entroprune.api import build_structure
    from entroprune.pipeline import _uniform_policy

    model, loaded = load_model(ckpt)
    cfg = RunConfig().search
    cfg.macs_target = macs
    path = work / "policy.json"
    path.write_text(json.dumps({"policy": _uniform_policy(build_structure(model, loaded.spec), cfg, None),
                                "agent": "uniform"}))
    return path


def fine_tuned(pruned: Path, arm: str, seed: int, npz: Path, args: argparse.Namespace) -> float:
    """Test accuracy (labelled test set) after one arm's fine-tune with ``seed`` (cached in ``--work``)."""
    out = Path(args.work) / f"{arm}-s{seed}"
    result = out / "result.json"
    if not result.exists():
        unlabelled = {"dataset": "npz", "data_dir": npz} if arm == "label-free" else {}
        finetune_checkpoint(pruned, out, epochs=args.epochs, distill=True, seed=seed, force=True, quiet=args.quiet,
                            **unlabelled)
        acc = evaluate_checkpoint(out / "model.pt")[-1]["test_accuracy"]  # the checkpoint's own, labelled
        result.write_text(json.dumps({"test_accuracy": acc}))
    return float(json.loads(result.read_text())["test_accuracy"])


def labelled_accuracy(path: Path, spec) -> float:
    """A fine-tuned net's accuracy on the labelled test set of ``spec``'s dataset (whatever data it was tuned on)."""
    return evaluate_checkpoint(path, dataset=spec.dataset, data_dir=spec.data_dir)[-1]["test_accuracy"]


def main_job(arm: str, seed: int, ckpt: Path, spec, args: argparse.Namespace) -> dict:
    """The main job on ``ckpt`` with ``seed`` (cached in ``--work``): what its report says (test accuracy, or
    agreement without labels, of the searched net and the uniform reference) and both nets' labelled accuracy."""
    from entroprune.config import load_config
    from entroprune.pipeline import run_pipeline
    from entroprune.report import score_key

    out = Path(args.work) / f"run-{arm}-s{seed}"
    result = out / "result.json"
    if not result.exists():
        shutil.rmtree(out, ignore_errors=True)  # an interrupted run starts over
        cfg = load_config(args.run_config)
        cfg.checkpoint, cfg.seed, cfg.threads = str(ckpt), seed, args.threads
        run = run_pipeline(cfg, quiet=args.quiet, say=(lambda _: None) if args.quiet else print, run_dir=out / "run")
        ev = json.loads((run / "evaluation.json").read_text())
        ref, key = ev["uniform_reference"], score_key(ev["rows"][-1])
        # a labelled run's report already holds both nets' test accuracy; a label-free one's must be read
        if key == "test_accuracy":
            searched, uniform = ev["rows"][-1][key], ref[key]
        else:
            searched = labelled_accuracy(run / "finetuned" / "model.pt", spec)
            uniform = searched if ref["same_as_searched"] else labelled_accuracy(
                run / "uniform" / "finetuned" / "model.pt", spec)
        policy = json.loads((run / "search" / "policy.json").read_text())["policy"]
        result.write_text(json.dumps({"score": key, "searched_score": ev["rows"][-1][key], "uniform_score": ref[key],
                                      "searched": searched, "uniform": uniform, "chosen": ev["chosen"],
                                      "policy": policy, "seconds": ev["timings_s"]["total"]}))
    return json.loads(result.read_text())


def main_job_lines(baseline: Path, npz: Path, seeds: list[int], args: argparse.Namespace) -> tuple[list[str], dict]:
    """The page's section on the whole main job with and without labels, and its numbers."""
    from dataclasses import replace

    from entroprune.checkpoint import save_checkpoint

    model, loaded = load_model(baseline)
    copy = Path(args.work) / "unlabelled-checkpoint.pt"  # the same weights, its dataset the unlabelled .npz
    save_checkpoint(copy, replace(loaded.spec, dataset="npz", data_dir=str(npz.resolve())), model)
    runs = {"labelled": [main_job("labelled", s, baseline, loaded.spec, args) for s in seeds],
            "label-free": [main_job("label-free", s, copy, loaded.spec, args) for s in seeds]}
    lab, free = runs["labelled"], runs["label-free"]
    lines = ["", "## The main job without labels", "",
             f"The main job (`entroprune run --checkpoint`, {'settings ' + os.path.relpath(args.run_config, ROOT) if args.run_config else 'its default settings'}) per seed, on the checkpoint and on a copy of it whose "
             "dataset is the unlabelled .npz (a label-free run: its fine-tunes distil from the original, its report "
             "gives top-1 agreement with the original on held-out images where it would give test accuracy). "
             "Searched: the run's net; uniform: its reference line (the uniform policy, same fine-tune); "
             "Δ: searched minus uniform. Test accuracy on the labelled test set, read afterwards for both runs' nets.",
             "", "| seed | with labels: searched / uniform, Δ (test acc, %) | label-free, its report: searched / "
             "uniform, Δ (agreement, %) | label-free, the labelled test set: searched / uniform, Δ (test acc, %) | "
             "label-free policy = labelled run's (chosen) |", "|---|---|---|---|---|"]

    def cell(a: float, b: float) -> str:
        return f"{a:.2f} / {b:.2f}, {a - b:+.2f}"

    for s, a, f in zip(seeds, lab, free, strict=True):
        lines.append(f"| {s} | {cell(a['searched'], a['uniform'])} | {cell(f['searched_score'], f['uniform_score'])} "
                     f"| {cell(f['searched'], f['uniform'])} | {'yes' if f['policy'] == a['policy'] else 'no'} "
                     f"({a['chosen']} / {f['chosen']}) |")
    if len(seeds) > 1:
        def mean(rs: list[dict], k: str) -> float:
            return statistics.mean(r[k] for r in rs)

        lines.append(f"| mean | {cell(mean(lab, 'searched'), mean(lab, 'uniform'))} | "
                     f"{cell(mean(free, 'searched_score'), mean(free, 'uniform_score'))} | "
                     f"{cell(mean(free, 'searched'), mean(free, 'uniform'))} | |")
    return lines, runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=str(BASELINE), help="an unpruned checkpoint (default: the arena's VGG)")
    ap.add_argument("--macs", type=float, default=0.2, help="MACs kept by the uniform policy")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tune seeds")
    ap.add_argument("--epochs", type=int, default=FinetuneConfig.epochs)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "runs" / "label_free"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "label_free"))
    ap.add_argument("--main-job", action="store_true", help="also run the whole main job with and without labels")
    ap.add_argument("--run-config", default=None, help="the main job's config YAML (default: its defaults)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    _, loaded = load_model(args.baseline)
    npz = unlabelled_copy(loaded.spec, work)
    pruned = work / "pruned" / "model.pt"
    if not pruned.exists():
        prune_checkpoint(args.baseline, uniform_policy(Path(args.baseline), args.macs, work), pruned.parent,
                         force=True, refit=False)  # the plain cut the page measured
    rows = evaluate_checkpoint(pruned)
    acc = {arm: [fine_tuned(pruned, arm, s, npz, args) for s in args.seeds] for arm in ARMS}
    delta = [f - a for f, a in zip(acc["label-free"], acc["labelled"], strict=True)]

    def fmt(xs: list[float], sign: str = "") -> str:
        return f"{statistics.mean(xs):{sign}.2f}" + (f" ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else "")

    # every setting that moves a number, when not its default (--work and --quiet move none)
    flags = "".join(f" --{name} {value}" for name, value, default in (
        ("baseline", os.path.relpath(args.baseline, ROOT), os.path.relpath(BASELINE, ROOT)),
        ("macs", args.macs, 0.2), ("seeds", " ".join(map(str, args.seeds)), "0 1 2"),
        ("epochs", args.epochs, FinetuneConfig.epochs), ("threads", args.threads, 2),
        ("out", os.path.relpath(args.out, ROOT), os.path.relpath(ap.get_default("out"), ROOT)),
        ("run-config", args.run_config and os.path.relpath(args.run_config, ROOT), None)) if value != default)
    flags += " --main-job" if args.main_job else ""
    lines = ["# Pruning without labels", "",
             f"Generated by `python benchmarks/label_free.py{flags}` on {machine_description()}. The checkpoint ({os.path.relpath(args.baseline, ROOT)}: {loaded.spec.model} on "
             f"{loaded.spec.dataset}, {rows[0]['test_accuracy']:.2f}%) pruned to the uniform policy at "
             f"{args.macs:.0%} of the MACs with the main job's search settings (channels rounded to 8, min keep "
             f"0.2): {rows[-1]['macs'] / rows[0]['macs']:.1%} of the MACs, {rows[-1]['test_accuracy']:.2f}% before "
             f"fine-tuning. Each arm fine-tunes it {args.epochs} epoch(s) on the same training images (the same splits "
             "and BN calibration images), seeds " + ", ".join(map(str, args.seeds)) + "; test accuracy on the "
             "labelled test set (mean ± std over the seeds; Δ: label-free minus labelled, paired by seed).", "",
             "| fine-tune | test acc (%) | " + " | ".join(f"seed {s}" for s in args.seeds) + " |",
             "|---|---|" + "---|" * len(args.seeds)]
    for arm, what in ARMS.items():
        lines.append(f"| {arm}: {what} | {fmt(acc[arm])} | " + " | ".join(f"{a:.2f}" for a in acc[arm]) + " |")
    lines += [f"| Δ | {fmt(delta, '+')} | " + " | ".join(f"{d:+.2f}" for d in delta) + " |"]
    runs: dict = {}
    if args.main_job:
        more, runs = main_job_lines(Path(args.baseline), npz, args.seeds, args)
        lines += more
    write_page(Path(args.out), lines, {"baseline": str(args.baseline), "macs": args.macs, "seeds": args.seeds,
                                       "main_job": runs,
                                       "baseline_accuracy": rows[0]["test_accuracy"],
                                       "pruned_accuracy": rows[-1]["test_accuracy"],
                                       "macs_fraction": rows[-1]["macs"] / rows[0]["macs"],
                                       "accuracy": acc, "delta": delta, "machine": machine_description()})


if __name__ == "__main__":
    main()
