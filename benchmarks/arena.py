"""The arena: does the search beat the policies a user gets without one? Resumable, in parts.

    python benchmarks/arena.py [--grid benchmarks/arena.yaml] [--only vgg] [--sources S ...] [--max-cells N]
        [--max-minutes M] [--baselines-only]
    python benchmarks/make_arena.py        # docs/arena.md and the README table from the CSV

Every cell searches (or solves) a policy for one (model, target) pair, prunes it, gives it the
main job's fine-tune (3 epochs with distillation) with the cell's seed and records its test
accuracy in ``docs/measurements/arena/results.csv``. ``uniform`` and ``global`` policies are
deterministic, so only their fine-tunes differ between seeds. The ``default`` source searches and
prunes as the tool's defaults do and records the search settings it ran with: cells run before a
change of the tool's defaults are stale, never mixed with newer ones, and run again (every other
source searches with the grid's ``pinned`` settings, the defaults it was recorded with). A policy
an earlier cell already fine-tuned with the same seed takes that cell's results (the fine-tune is
deterministic; the row names it in ``finetune_from``), so a change to the search costs searches
wherever it picks policies the arena has fine-tuned before. The runner is reproduce.py's (same skipping, parts, baselines).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import reproduce  # noqa: E402
from policy_space import enumerate_policies  # noqa: E402

from entroprune.api import build_structure, load_model  # noqa: E402
from entroprune.config import PruneConfig  # noqa: E402
from entroprune.prune import policy_to_ratios  # noqa: E402
from entroprune.search import SearchConfig, SearchResult  # noqa: E402
from entroprune.search.policies import search_env  # noqa: E402
from entroprune.search.rewards import RewardConfig  # noqa: E402
from entroprune.settings import UNNAMED_IMPORTANCE  # noqa: E402
from entroprune.structure import Structure  # noqa: E402
from entroprune.utils import write_json  # noqa: E402

#: ``random-K``: the K-th random policy inside the default's band (one draw of the random agent, seeded by
#: K, the same policy for every fine-tune seed): what lies near uniform in the default's own search space.
RANDOM_DRAWS = 20
#: ``space-K``: the K-th policy of the default's whole search space (every policy its band, rounding and MACs
#: wall let through, as benchmarks/policy_space.py counts them, in sorted order of channel counts): where the
#: space is small, fine-tuning all of it says what the best pick in it is worth, whatever the score.
#: ``wide-K``: the K-th policy outside the default's band but inside the whole space (min_keep, rounding and the
#: MACs wall, no band), same order: with ``space-K`` it covers every policy the tool's settings allow.
SPACE_MAX = 400
#: ``*-l2*``: the source with the channels each group keeps ranked by the L2 norm of their weights
#: (``SearchConfig.importance``) instead of L1: on plain chains L2 kept better channels for the plain cut
#: (docs/measurements/channel_ranking.md); does it for the refit? ``*-auto``: ranked by ``auto`` (L2 on a plain
#: chain, L1 elsewhere; the default's from part 53 on). ``*-l1``: ranked by L1 (``default-l1``: the default
#: before part 53).
RANKED = {"-l2": "l2", "-auto": "auto", "-l1": "l1"}


def ranking_tag(source: str) -> str:
    """The source's ranking tag (one of :data:`RANKED`), or "" for the ranking it searches with by default."""
    return next((t for t in RANKED if t in source), "")


SOURCES = ("uniform", "global", "entropy", "accuracy", "default", "default-random", "entropy-recovered",
           "default-wide", "default-kl", "default-kl-random", "uniform-refit", "global-refit", "default-refit",
           "default-scored-refit", "uniform-refit-norms", "default-refit-norms", "default-scored-refit-norms",
           "uniform-refit-body", "default-recovered", "uniform-l2-refit", "default-l2", "default-auto", "uniform-auto-refit",
           "default-l1") \
    + tuple(f"random-{k}" for k in range(1, RANDOM_DRAWS + 1)) \
    + tuple(f"{kind}-{k}" for kind in ("space", "wide") for k in range(1, SPACE_MAX + 1))
FIELDS = reproduce.FIELDS + ["chosen", "search_settings", "finetune_from", "refit"]
SINGLE = ("random-", "space-", "wide-")


def is_draw(source: str) -> bool:
    """Sources ``random-K``, ``space-K`` and ``wide-K``: single policies (make_arena summarises them per pair,
    not a row each)."""
    return source.startswith(SINGLE)


Space = tuple[Structure, str, "list[tuple[int, ...]] | None"]
_SPACES: dict[tuple[str, int, str, str], Space] = {}


def _space(path: Path, cfg: SearchConfig, kind: str) -> Space:
    """The structure, model name and sorted policies of one space (None: more than SPACE_MAX), enumerated once
    per process: a part's space-K cells share it (each enumeration costs about a second on a small net)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k != "seed"}  # the seed does not move the space
    key = (str(Path(path).resolve()), Path(path).stat().st_mtime_ns, json.dumps(settings, sort_keys=True), kind)
    if key not in _SPACES:
        net, ckpt = load_model(path)
        structure = build_structure(net, ckpt.spec)
        found = enumerate_policies(search_env(structure, cfg), SPACE_MAX)
        if kind == "wide" and found is not None:
            whole = enumerate_policies(search_env(structure, replace(cfg, band=None)), SPACE_MAX)
            found = None if whole is None else whole - found
        _SPACES[key] = (structure, ckpt.spec.model, None if found is None else sorted(found))
    return _SPACES[key]


def space_policy(path: Path, folder: Path, cfg: SearchConfig, k: int, kind: str = "space") -> SearchResult:
    """Write the K-th policy of the default's search space (``cfg``'s band, rounding and wall; ``kind`` wide:
    of the policies the band leaves out) as the cell's policy.json, in the search's own format, so that prune
    and the fine-tune reuse treat it as any other."""
    structure, model, found = _space(path, cfg, kind)
    if found is None or k > len(found):
        raise SystemExit(f"{kind}-{k}: the {kind} space of {path} at {cfg.macs_target:.0%} holds "
                         f"{'more than ' + str(SPACE_MAX) if found is None else len(found)} policies; list only "
                         f"{kind}-K up to its size, on pairs whose space is at most SPACE_MAX")
    counts = found[k - 1]
    policy = policy_to_ratios(structure, counts)
    named = {g.name: int(c) for g, c in zip(structure.groups, counts, strict=True)}
    chosen = f"{kind} {k} of {len(found)}"  # make_arena reads the space's size from it
    write_json(folder / "policy.json", {"policy": policy, "counts": named, "macs_target": cfg.macs_target,
                                        "round_to": 1, "chosen": chosen, "model": model})
    return SearchResult(policy=policy, counts=named, reward=float("nan"), achieved=float("nan"), episodes=0,
                        spearman=None, summary={"chosen": chosen})


def search(path: Path, folder: Path, cfg: SearchConfig, source: str) -> SearchResult:
    kind, _, k = source.partition("-")
    return space_policy(path, folder, cfg, int(k), kind) if kind in ("space", "wide") \
        else reproduce.search_cell(path, folder, cfg, source)


def prune_kind(source: str) -> str:
    """How a source's policy is pruned (the results' ``refit`` column): ``default`` as the tool's defaults prune
    (:class:`PruneConfig`), every other source by its suffix (reproduce.REFIT_KINDS; none: a plain cut)."""
    if source.replace(ranking_tag(source), "") != "default":
        return reproduce.refit_kind(source)
    p = PruneConfig()
    return "" if not p.refit else "norms" if p.refit_norms else "yes" if p.refit_head else "body"


def search_config(grid: dict, model: str, target: float, source: str, seed: int) -> SearchConfig:
    """One source's search settings; the pair's target and the arena's search space for all. A ``*-refit``
    source searches as its source does; only its prune differs (reproduce.REFIT_KINDS). ``default`` takes the
    tool's defaults, re-ranking as its prune refits; every other source the grid's ``pinned`` settings over them
    (the defaults its cells were recorded with), so a change of the tool's defaults leaves them standing."""
    if tag := ranking_tag(source):  # the source with each group's channels ranked otherwise
        return replace(search_config(grid, model, target, source.replace(tag, ""), seed), importance=RANKED[tag])
    if suffix := reproduce.refit_suffix(source):  # default-refit: the default of its cells, before the switch
        base = source.removesuffix(suffix)
        return search_config(grid, model, target, "default-recovered" if base == "default" else base, seed)
    space = {"macs_target": target, "seed": seed, "min_keep": grid["min_keep"], "round_to": grid["round_to"]}
    if source == "default":
        # default_settings: a smoke arena's shorter default search (the tests'); the arena itself leaves it out,
        # so this source runs the tool's defaults. Recorded with the cell's settings like any other option.
        return SearchConfig(**{**grid.get("default_settings", {}), **space}).resolved(PruneConfig().refit)
    space = {**grid.get("pinned", {}), **space}
    if source.startswith("default") or source == "entropy-recovered":
        cfg = SearchConfig(**{**grid.get("default_settings", {}), **space})
        if source == "default-recovered":  # the default before the refit: plain cuts, re-ranked after recovery
            return cfg
        if source == "entropy-recovered":
            return replace(cfg, rerank_reward="entropy")
        if source == "default-wide":  # the whole [min_keep, 1] range, as the one-stage sources search it
            return replace(cfg, band=None)
        if source == "default-scored":  # (-refit) re-scored on the refitted nets the prune makes, no recovery steps
            return replace(cfg, rerank_refit=True, recovery_steps=0)
        if source.startswith("default-kl"):  # the search itself reads the recovered KL (a reward worth optimising)
            cfg = replace(cfg, episodes=grid["kl_episodes"], warmup=grid["kl_warmup"],
                          reward=RewardConfig(kind="kl", recovery_steps=grid["kl_recovery_steps"]))
        return replace(cfg, agent="random") if source.endswith("-random") else cfg
    # no re-ranking, nothing to confirm or prefer: the zeros keep these cells' settings what they ran with
    fixed = {"rerank_top_k": 0, "confirm_seeds": 0, "uniform_margin": 0.0}
    if source in ("uniform", "global"):
        return SearchConfig(agent=source, episodes=1, **space, **fixed)
    if source.startswith(("space-", "wide-")):  # the default's search space enumerated (its settings: its band)
        return SearchConfig(**space)
    if is_draw(source):  # the draw's seed, not the cell's: one policy, fine-tuned per seed
        return SearchConfig(agent="random", episodes=1, **{**space, "seed": int(source.split("-")[1])}, **fixed)
    kind = "accuracy" if source == "accuracy" else "entropy"
    return SearchConfig(agent="ddpg", episodes=grid["search_episodes"], warmup=grid["warmup"],
                        val_size=grid["accuracy_val_size"], **space, band=None, **fixed,
                        reward=RewardConfig(kind=kind, variant="cooccurrence", layers="last"))


def settings(cfg: SearchConfig) -> str:
    """The search settings apart from target and seed: what makes two cells of one source comparable."""
    d = cfg.to_dict()
    for k in ("macs_target", "seed"):
        d.pop(k)
    return json.dumps(d, sort_keys=True)


#: Options that changed what a search does when they came in: a cell recorded before one existed searched
#: as if it had this value (any other new option counts at its default, which kept the old behaviour).
PREDATES = {"confirm_seeds": 0, "uniform_margin": 0.0, "importance": UNNAMED_IMPORTANCE, "rerank_refit": False}


def same_settings(recorded: str, today: str) -> bool:
    """Equal settings, where an option added since the cell ran counts as equal at the value the cell
    searched with: :data:`PREDATES`'s, else its default."""
    from dataclasses import asdict

    from entroprune.search import SearchConfig

    def fill(rec: dict, now: dict, default: dict) -> dict:
        out = dict(rec)
        for k, v in now.items():
            if k not in out and k in PREDATES:
                out[k] = PREDATES[k]
            elif k not in out and k in default and default[k] == v:
                out[k] = v
            elif isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = fill(out[k], v, default.get(k, {}) if isinstance(default.get(k), dict) else {})
        return out

    rec, now = json.loads(recorded), json.loads(today)
    return fill(rec, now, json.loads(json.dumps(asdict(SearchConfig())))) == now


def is_current(grid: dict, row: dict) -> bool:
    """A recorded cell stands for its source while today's code would search it with the same settings and
    prune it the same way (its ``refit`` column: a cell relabelled when the refit changed is stale)."""
    if (row.get("refit") or "") != prune_kind(row["source"]):
        return False
    today = settings(search_config(grid, row["model"], float(row["target"]), row["source"], int(row["seed"])))
    return same_settings(row.get("search_settings") or "{}", today)


def configure(grid: dict, model: str, target: float, source: str, seed: int) -> SearchConfig:
    return search_config(grid, model, target, source, seed)


def cells_of(grid: dict) -> list[tuple[str, float, str, int]]:
    """Pair by pair, seed by seed, so a part that stops early still covers whole comparisons; each pair's
    follow-up cells (the agent comparison, the paper's reward after recovery) right after it. A follow-up
    entry may name its own seeds as a fourth element (the random draws run with fine-tune seed 0 only)."""
    cells = []
    for m, t in grid["pairs"]:
        cells += [(m, float(t), s, int(seed)) for seed in grid["seeds"] for s in grid["sources"]]
        cells += [(m, float(t), s, int(seed)) for fm, ft, entry, *own in grid.get("followup") or []
                  if (fm, float(ft)) == (m, float(t)) for s in expand(entry)
                  for seed in (own[0] if own else grid["seeds"])]
    return cells


def expand(entry: str) -> list[str]:
    """A follow-up source, or a run of numbered ones: ``space-1:40`` is space-1 ... space-40."""
    name, _, last = entry.partition(":")
    if not last:
        return [entry]
    prefix, _, first = name.rpartition("-")
    return [f"{prefix}-{k}" for k in range(int(first), int(last) + 1)]


def policies_of(rows: list[dict], model: str, target: float) -> list[dict]:
    """The pair's distinct fine-tuned policies, pruned without the refit (``*-refit`` cells left out): sources that found each, per-seed test accuracies (``acc``:
    the first machine's that ran the seed, ``acc_machine`` that machine; ``runs``: every machine's, keyed by
    (seed, machine))."""
    found: dict[str, dict] = {}
    for r in rows:
        # a refitted prune is another net from the same policy: the allocation studies compare plain prunes
        if (r["model"], float(r["target"])) != (model, target) or not r.get("policy") or r.get("refit"):
            continue
        key = json.dumps(json.loads(r["policy"]), sort_keys=True)  # arena_scores.py's cache key too
        p = found.setdefault(key, {"key": key, "policy": json.loads(key), "sources": set(), "acc": {}, "runs": {},
                                   "acc_machine": {}})
        p["sources"].add(r["source"])
        # one fine-tune per (policy, seed, machine): reused rows agree; another machine's is another reading
        p["acc"].setdefault(int(r["seed"]), float(r["test_accuracy"]))
        p["acc_machine"].setdefault(int(r["seed"]), r.get("machine", ""))
        p["runs"][(int(r["seed"]), r.get("machine", ""))] = float(r["test_accuracy"])
    return [{**p, "sources": sorted(p["sources"])} for p in found.values()]


def arena_grid(grid: dict) -> dict:
    """reproduce.py's runner reads ``models`` (baselines) from the pairs."""
    return {**grid, "models": list(dict.fromkeys(m for m, _ in grid["pairs"]))}


if __name__ == "__main__":
    reproduce.main(doc=__doc__, default_grid="arena.yaml", sources=dict.fromkeys(SOURCES),
                   cells_of=cells_of, configure=configure, fields=FIELDS, prepare=arena_grid,
                   extra=lambda cfg: {"search_settings": settings(cfg)}, is_current=is_current, reuse_finetunes=True,
                   search=search, prune_kind=prune_kind)
