"""Which entropy variant tracks accuracy? Rank correlation over random policies.

For one checkpoint and MACs target, sample random policies under the action wall, and for
each measure every entropy variant on every conv layer (BN recalibrated on the
calibration images, as in the search) and the validation accuracy without fine-tuning
and, with ``--finetune-images N``, the validation accuracy after a short fine-tune of the
physically pruned network (SGD, cosine, the same budget for every policy). Reports
Spearman(-entropy, accuracy) per variant, layer selection and normalisation, next to the
accuracy reward (accuracy before fine-tuning) and the smallest keep ratio of the policy as
naive baselines. Writes a JSON and a Markdown table. Never touches the test split.

With ``--recovery-steps N`` it also scores every policy the way the search's re-ranking does, on a
physically pruned copy, before and after N steps of label-free recovery (distillation from the
unpruned net on unlabelled training images): the tool's default entropy reward, the accuracy
reward and the KL to the unpruned net's outputs, each against the truth. ``--uniform`` adds the
uniform policy to the sampled ones and reports its rank. The main job's fine-tune as the truth:
``--finetune-epochs 3 --finetune-lr 0.02 --distill`` on the whole training split.

    python benchmarks/reward_study.py runs/base/model.pt --target 0.2 --policies 60 \
        --out docs/measurements/reward_study_vgg_0.2.md
    python benchmarks/reward_study.py runs/repro/baselines/vgg/model.pt --target 0.1 --policies 20 \
        --min-keep 0.05 --round-to 8 --finetune-images 10000 --out docs/measurements/reward_study_ft_vgg_0.1.md
    python benchmarks/reward_study.py docs/measurements/arena/baselines/vgg/model.pt --target 0.2 --policies 20 \
        --min-keep 0.2 --round-to 8 --finetune-images 60000 --finetune-epochs 3 --finetune-lr 0.02 --distill \
        --recovery-steps 40 --uniform --out docs/measurements/recovery_study_vgg_0.2.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from entroprune.api import build_structure, load_data_for_spec, load_model
from entroprune.entropy import VARIANTS, EntropyProbe, activation_points, select_layers
from entroprune.prune import Masker, bn_calibration, prune_model, recalibrate_bn
from entroprune.search import SearchConfig, fixed_policy_counts, uniform_ratio
from entroprune.search.env import PruningEnv
from entroprune.search.rewards import RewardConfig, RewardEvaluator
from entroprune.train import TrainConfig, evaluate, train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--target", type=float, default=0.2)
    ap.add_argument("--policies", type=int, default=60)
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--min-keep", type=float, default=0.1)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--finetune-images", type=int, default=0, help="fine-tune each policy on this many "
                    "training images (0 = no fine-tuning)")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--finetune-lr", type=float, default=0.01)
    ap.add_argument("--distill", action="store_true", help="fine-tune with distillation from the unpruned net")
    ap.add_argument("--recovery-steps", type=int, default=0, help="also score each policy after this many "
                    "label-free recovery steps (0 = not)")
    ap.add_argument("--recovery-images", type=int, default=2048)
    ap.add_argument("--uniform", action="store_true", help="add the uniform policy to the random ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="Markdown output (a .json is written beside it)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, ckpt = load_model(args.checkpoint)
    data = load_data_for_spec(ckpt.spec)
    structure = build_structure(model, ckpt.spec, "l1")  # the ranking the study was measured with
    calib = data.normalize(data.calib.x[: args.calib_size])
    val_loader = data.loader("val", 512, limit=args.val_size)
    masker = Masker(model, structure)
    points = activation_points(model, calib[:1])
    layers = [c for c in points if any(c in g.members for g in structure.groups)]
    flat = set(structure.flat(layers))
    layers = [c for c in layers if c not in flat]  # 1x1 maps have no spatial entropy
    probe = EntropyProbe(model, layers, points, VARIANTS)
    env = PruningEnv(structure, None, args.target, min_keep=args.min_keep, round_to=args.round_to)
    rng = np.random.default_rng(args.seed)

    def measure(counts):
        masker.apply(counts)
        probe.reset(masker.kept_channels(counts))
        with bn_calibration(model):
            values = probe.measure(calib, len(calib), keep_mode=True)
        acc = evaluate(model, val_loader)["accuracy"]
        return values, acc

    def finetuned_accuracy(counts):
        """Validation accuracy of the physically pruned net after the fixed short fine-tune."""
        pruned, _ = prune_model(clean, structure, counts)  # a hook-free copy of the original
        recalibrate_bn(pruned, calib)
        train = data.loader("train", 128, shuffle=True, augment="flip", seed=args.seed, limit=args.finetune_images)
        train_model(pruned, None, TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, schedule="cosine"),
                    seed=args.seed, train_loader=train, quiet=True, teacher=clean if args.distill else None)
        recalibrate_bn(pruned, data.normalize(data.train.x[:2048]))
        return evaluate(pruned, val_loader)["accuracy"]

    clean = load_model(args.checkpoint)[0] if args.finetune_images or args.recovery_steps else None
    reference, ref_acc = measure(structure.full_counts())
    scorers = {}
    if args.recovery_steps:  # the re-ranking's scores, on pruned copies of a second, hook-free net
        pool = data.normalize(data.train.x[: args.recovery_images])
        val_xy = (data.normalize(data.val.x[: args.val_size]), data.val.y[: args.val_size])
        for steps in (0, args.recovery_steps):
            cfg = RewardConfig(kind="combined", recovery_steps=steps)  # entropy: the tool's default variant
            scorers[steps] = RewardEvaluator(clean, structure, cfg, calib, val_xy, recovery_images=pool, seed=args.seed)

    def rerank_scores(counts):
        out = {}
        for steps, ev in scorers.items():
            res = ev.evaluate(counts, with_accuracy=True)
            tag = "recovered" if steps else "fresh"
            out.update({f"entropy_{tag}": -res.entropy, f"accuracy_{tag}": res.accuracy,
                        f"kl_{tag}": -res.extra["kl"]})
        return out

    policies = []
    if args.uniform:
        search = SearchConfig(macs_target=args.target, min_keep=args.min_keep, round_to=args.round_to)
        policies.append(fixed_policy_counts(structure, search, [uniform_ratio(structure, search)] * len(structure.groups))[0])
    rows = []
    t0 = time.perf_counter()
    for _ in range(args.policies):
        env.reset()
        done = False
        scale = rng.uniform(0.3, 3.0)  # vary how lopsided the random policies are
        while not done:
            _, _, done, _, _ = env.step([args.min_keep + rng.beta(scale, scale) * (1 - args.min_keep)])
        policies.append(env.counts.copy())
    for i, counts in enumerate(policies):
        values, acc = measure(counts)
        after = finetuned_accuracy(counts) if args.finetune_images else None
        rows.append({"uniform": args.uniform and i == 0, "scores": rerank_scores(counts) if scorers else {},
                     "counts": counts.tolist(), "values": values, "accuracy": acc, "accuracy_after": after,
                     "min_keep": float(np.min(structure.fractions(counts))),
                     "achieved": structure.macs(counts) / structure.total_macs})
    elapsed = time.perf_counter() - t0
    masker.restore()

    before = np.array([r["accuracy"] for r in rows])
    tuned = args.finetune_images > 0
    acc = np.array([r["accuracy_after"] for r in rows]) if tuned else before
    results = []
    for variant in VARIANTS:
        for sel in ("all", "last", "last:2"):
            chosen = select_layers(layers, sel)
            for normalize in (False, True):
                score = []
                for r in rows:
                    vals = [r["values"][variant][c] / (reference[variant][c] if normalize and reference[variant][c] > 1e-12 else 1.0)
                            for c in chosen]
                    score.append(-float(np.mean(vals)))
                rho = spearmanr(score, acc).statistic
                results.append({"variant": variant, "layers": sel, "normalize": normalize, "spearman": float(rho)})
    naive = float(spearmanr([r["min_keep"] for r in rows], acc).statistic)
    rerank_rho = {k: float(spearmanr([r["scores"][k] for r in rows], acc).statistic) for k in rows[0]["scores"]}
    uniform_rank = None
    if args.uniform:  # 1 = best of all the policies by the truth
        uniform_rank = int(1 + sum(a > acc[0] for a in acc[1:]))
    acc_reward = float(spearmanr(before, acc).statistic) if tuned else None
    results.sort(key=lambda r: -np.nan_to_num(r["spearman"], nan=-9))
    summary = {"checkpoint": args.checkpoint, "model": ckpt.spec.model, "dataset": ckpt.spec.dataset,
               "target": args.target, "policies": args.policies, "val_images": args.val_size,
               "calib_images": len(calib), "reference_accuracy": ref_acc,
               "accuracy_range": [float(acc.min()), float(np.median(acc)), float(acc.max())],
               "spearman_min_keep_baseline": naive, "spearman_accuracy_reward": acc_reward,
               "finetune_images": args.finetune_images, "finetune_epochs": args.finetune_epochs,
               "accuracy_before_range": [float(before.min()), float(np.median(before)), float(before.max())],
               "round_to": args.round_to, "min_keep": args.min_keep, "results": results, "seconds": elapsed,
               "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
               "recovery_steps": args.recovery_steps, "spearman_rerank_scores": rerank_rho,
               "uniform_rank": uniform_rank, "distill": args.distill, "finetune_lr": args.finetune_lr}
    when = (f"after fine-tuning each pruned net for {args.finetune_epochs} epoch(s) on {args.finetune_images} "
            f"training images (SGD, cosine, lr {args.finetune_lr}{', distillation' if args.distill else ''})"
            if tuned else "without fine-tuning")
    md = [f"Reward study: `{ckpt.spec.model}` on `{ckpt.spec.dataset}`, {args.policies} random policies at "
          f"{args.target:.0%} of the MACs (min keep {args.min_keep}, channels rounded to {args.round_to}), "
          f"BN recalibrated on {len(calib)} images, accuracy on {args.val_size} validation images {when} "
          f"(unpruned {ref_acc:.2f}%; pruned min / median / max {acc.min():.1f} / {np.median(acc):.1f} / "
          f"{acc.max():.1f}%). Spearman of the smallest keep ratio with that accuracy: "
          f"{'n/a (every policy has the same smallest keep ratio)' if naive != naive else f'{naive:+.3f}'}"
          + (f"; of the accuracy reward (accuracy before fine-tuning, min / median / max {before.min():.1f} / "
             f"{np.median(before):.1f} / {before.max():.1f}%): {acc_reward:+.3f}" if tuned else "") + ".", "",
          "| variant | layers | normalised | Spearman(-entropy, accuracy) |", "|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['layers']} | {'yes' if r['normalize'] else 'no'} | {r['spearman']:+.3f} |"
           for r in results]
    md.append("")
    if rerank_rho:
        md += [f"The re-ranking's scores (pruned copies, BN recalibrated), before and after {args.recovery_steps} "
               "steps of label-free recovery; Spearman with the same accuracy:", "",
               "| score | fresh | after recovery |", "|---|---|---|"]
        names = {"entropy": "-entropy (cooccurrence, last layer)", "kl": "-KL to the unpruned net",
                 "accuracy": "accuracy (labels)"}
        md += [f"| {label} | {rerank_rho[k + '_fresh']:+.3f} | {rerank_rho[k + '_recovered']:+.3f} |"
               for k, label in names.items()]
        md.append("")
    if uniform_rank is not None:
        md += [f"The uniform policy ranks {uniform_rank} of {len(rows)} by that accuracy ({acc[0]:.2f}%).", ""]
    md.append(f"Made by `python benchmarks/reward_study.py {args.checkpoint} --target {args.target} "
              f"--policies {args.policies} --min-keep {args.min_keep} --round-to {args.round_to} "
              f"--finetune-images {args.finetune_images} --finetune-epochs {args.finetune_epochs} "
              f"--finetune-lr {args.finetune_lr}{' --distill' if args.distill else ''} --recovery-steps "
              f"{args.recovery_steps}{' --uniform' if args.uniform else ''} --seed {args.seed}` on {summary['date']} ({elapsed:.0f} s, "
              f"{torch.get_num_threads()} threads).")
    text = "\n".join(md)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
