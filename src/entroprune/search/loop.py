"""The search loop: an agent proposes policies in a PruningEnv; rewards score them; the best are re-ranked.

Outputs in the run folder: ``episodes.jsonl`` (one line per episode), ``policy.json`` (the
best policy), ``search.json`` (summary, diagnostics) and ``search_state.pt`` (everything a
``--resume`` needs, written atomically every few episodes and on Ctrl-C). Resuming replays
nothing: the agent, its generators and the log are restored to the last saved episode, so
the final policy equals the one an uninterrupted run with the same seed finds.
"""

from __future__ import annotations

import json
import math
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import ConfigError, SearchInterrupted
from ..latency import LatencyConfig, LatencyModel
from ..prune import counts_to_dict, policy_to_ratios
from ..settings import UNNAMED_IMPORTANCE
from ..structure import ROOTS, Structure
from ..utils import atomic_write, folder_lock, progress_bar, read_json, write_json
from .agents import FIXED_AGENTS, SB3_AGENTS, learns, make_agent
from .agents.base import Agent
from .budget import Budget
from .config import SearchConfig, SearchResult
from .env import OBS_FEATURES, PruningEnv
from .policies import search_env, uniform_policies
from .rerank import rerank
from .rewards import REWARDS, RewardResult
from .scoring import Scorer, make_scorer

STATE_FILE = "search_state.pt"
LOG_FILE = "episodes.jsonl"
POLICY_FILE = "policy.json"


class _Interrupt:
    """First Ctrl-C: finish the current episode, save, stop. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _Interrupt:
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _spearman(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(xs, ys).statistic
    return None if rho is None or not math.isfinite(rho) else float(rho)


def rollout(env: PruningEnv, agent: Agent, episode: int) -> dict[str, Any]:
    """One episode of the agent in the environment, unscored: its transitions and policy (public: the
    policy-space census draws episodes the way the search does)."""
    obs, _ = env.reset()
    transitions: list[tuple[np.ndarray, float, np.ndarray, bool]] = []
    done, agent_time = False, 0.0
    info: dict[str, Any] = {}
    while not done:
        t0 = time.perf_counter()
        a = agent.act(obs, episode)
        agent_time += time.perf_counter() - t0
        lo, hi = env.ratio_range(env.t)
        nxt, _, done, _, info = env.step([lo + a * (hi - lo)])
        applied = (info["applied"] - lo) / (hi - lo) if hi > lo else 0.5
        transitions.append((obs, float(np.clip(applied, 0, 1)), nxt, done))
        obs = nxt
    return {"transitions": transitions, "counts": info["counts"], "achieved": info["achieved"],
            "agent_time": agent_time}


def _scored(res: RewardResult, diagnosed: bool) -> dict[str, Any]:
    """A reward result as the episode info the log and the environment expect."""
    return {"reward": res.reward, "entropy": res.entropy, "accuracy": res.accuracy, "finite": res.finite,
            "times": res.times, "diagnosed": diagnosed}


def run_search(model: nn.Module, structure: Structure, calib: torch.Tensor,
               val: tuple[torch.Tensor, torch.Tensor] | None, config: SearchConfig,
               out_dir: str | Path, resume: bool = False, quiet: bool = False,
               meta: dict[str, Any] | None = None, workers: int = 1,
               ray_address: str | None = None, recovery_images: torch.Tensor | None = None) -> SearchResult:
    """Search a policy for ``model`` and write the run folder. ``model`` is restored after.

    ``recovery_images`` (unlabelled, normalised) feed the re-ranking's recovery; default: ``calib``.

    ``workers`` > 1 scores each batch of ``config.episode_batch`` episodes on that many Ray
    actors (:mod:`entroprune.search.scoring`), on a local Ray or the cluster at ``ray_address``.
    A fresh search (not ``resume``) removes an earlier search's state, policy and summary from the
    folder first; a second process on the same folder is refused while this one runs.
    """
    config = config.resolved()  # the re-ranking's defaults as the prune's (callers with a prune config settle them)
    config.validate()
    if structure.importance != config.importance:  # policy.json records the ranking `prune` will cut by
        raise ConfigError(f"the structure ranks channels by {structure.importance} but the search's `importance` "
                          f"is {config.importance}; build the structure with importance=config.importance")
    with folder_lock(out_dir, "a search"):
        if not resume:
            for name in (STATE_FILE, POLICY_FILE, "search.json", ROUNDING_FILE):
                (Path(out_dir) / name).unlink(missing_ok=True)
        config = resolve_rounding(model, structure, config, Path(out_dir), resume)
        return _run_search(model, structure, calib, val, config, out_dir, resume, quiet, meta, workers,
                           ray_address, recovery_images)


def _run_search(model: nn.Module, structure: Structure, calib: torch.Tensor,
                val: tuple[torch.Tensor, torch.Tensor] | None, config: SearchConfig, out_dir: str | Path,
                resume: bool, quiet: bool, meta: dict[str, Any] | None, workers: int, ray_address: str | None,
                recovery_images: torch.Tensor | None) -> SearchResult:
    """:func:`run_search`'s body, run under the folder's lock."""
    fits = config.latency_target is not None and not (config.latency_model or resume)
    with progress_bar(disable=quiet or not fits) as bar:  # a latency fit times for a minute or more, silently
        bar.add_task("latency model: timing layers, then whole nets in fresh processes", total=None, info="")
        search = Search(model, structure, calib, val, config, out_dir, meta, workers)
    if resume:
        search.load_state()
    search.learn(quiet, ray_address)
    return search.finish(recovery_images, quiet)


LATENCY_FILE = "latency_model.json"
ROUNDING_FILE = "rounding.json"


def resolve_rounding(model: nn.Module, structure: Structure, config: SearchConfig, out_dir: Path,
                     resume: bool) -> SearchConfig:
    """``config`` with ``round_to: auto`` replaced by the measured channel step: the one this run folder
    measured before when resuming, else measured now (a few seconds per step) and saved as ``rounding.json``."""
    if config.round_to != "auto":
        return config
    path = out_dir / ROUNDING_FILE
    if resume and path.exists():
        try:
            step = int(json.loads(path.read_text())["round_to"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is unreadable ({type(exc).__name__}); start a fresh `out_dir` "
                              "(or `force=True`)") from None
        return replace(config, round_to=step)
    from ..latency import choose_rounding, wall_pair_timer
    from ..utils import machine_description

    policies = uniform_policies(structure, config.macs_target, config.min_keep)
    device = next(model.parameters(), torch.empty(0)).device
    try:  # timed on the CPU, where the pruned net is deployed; the search goes on where it was
        res = choose_rounding(model, structure, policies, wall_pair_timer(config.latency_batch, config.latency_backend))
    finally:
        model.to(device)
    res.update(macs_target=config.macs_target, min_keep=config.min_keep, backend=config.latency_backend,
               batch=config.latency_batch, threads=torch.get_num_threads(), machine=machine_description())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, res)
    return replace(config, round_to=int(res["round_to"]))


def latency_model(model: nn.Module, structure: Structure, config: SearchConfig, out_dir: Path) -> LatencyModel | None:
    """The search's latency model when it has a latency target: the file ``config.latency_model`` names, the
    one an earlier run of this search fitted (``out_dir``), or one fitted now on this machine and saved."""
    if config.latency_target is None:
        return None
    from ..latency import fit_latency_model, fresh_timer, wall_pair_timer, wall_timer
    from ..utils import machine_description

    path = Path(config.latency_model) if config.latency_model else out_dir / LATENCY_FILE
    saved = None
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            lm = LatencyModel.from_dict(saved)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if config.latency_model:
                raise ConfigError(f"{path} is not a latency model ({type(exc).__name__}); fit one with "
                                  "`entroprune latency`") from None
            saved = None  # this folder's own earlier fit, unreadable: fit again
        if saved is not None and not config.latency_model and (lm.meta.get("backend"), lm.meta.get("batch")) != (
                config.latency_backend, config.latency_batch):
            saved = None  # this folder's earlier fit, for another runtime: fit again
    if saved is not None:
        if [s.name for s in lm.layers] != [n for n, m in model.named_modules() if isinstance(m, ROOTS)] or \
                list(lm.full_counts) != list(structure.full_counts()):
            raise ConfigError(f"{path} was fitted for another model; fit one for this checkpoint")
        return lm
    if config.latency_model:
        raise ConfigError(f"latency model {path} does not exist; fit one with `entroprune latency` or leave "
                          "`latency_model` unset to fit one in the run folder")
    lo = structure.keep_counts(config.min_keep, config.step)
    lm, _ = fit_latency_model(model, structure, lo, wall_timer(config.latency_batch, config.latency_backend),
                              round_to=config.step, seed=config.seed,
                              pair=wall_pair_timer(config.latency_batch, config.latency_backend),
                              fresh=fresh_timer(config.latency_batch, config.latency_backend),
                              meta={"backend": config.latency_backend, "batch": config.latency_batch,
                                    "threads": torch.get_num_threads(), "machine": machine_description()})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, lm.to_dict())
    return lm


class Search:
    """One search in one folder: the environment, the agent, the log and the resumable state.

    :meth:`learn` runs the episodes (the AMC loop in batches, or a Stable-Baselines3 agent),
    :meth:`record` logs each finished one, :meth:`save_state` makes the run resumable, and
    :meth:`finish` re-ranks, writes ``policy.json`` and ``search.json`` and returns the result.
    """

    def __init__(self, model: nn.Module, structure: Structure, calib: torch.Tensor,
                 val: tuple[torch.Tensor, torch.Tensor] | None, config: SearchConfig, out_dir: str | Path,
                 meta: dict[str, Any] | None, workers: int):
        self.model, self.structure, self.calib, self.val, self.config = model, structure, calib, val, config
        self.out_dir, self.meta, self.workers = Path(out_dir), meta or {}, workers
        self.state_path, self.log_path = self.out_dir / STATE_FILE, self.out_dir / LOG_FILE
        self.sb3 = config.agent in SB3_AGENTS
        if self.sb3 and (workers > 1 or config.episode_batch > 1):
            raise ConfigError("`workers` and `episode_batch` above 1 need the ddpg, random or uniform agent; "
                              "Stable-Baselines3 agents step one environment at a time")
        if workers > config.episode_batch:
            warnings.warn(f"{workers} workers but episode_batch={config.episode_batch}: only {config.episode_batch} "
                          "can be busy at a time; set episode_batch >= workers", stacklevel=3)
        self.episodes = 1 if config.agent in FIXED_AGENTS else config.episodes
        latency = latency_model(model, structure, config, self.out_dir)
        self.budget = Budget(structure, config.macs_target, latency, config.latency_target if latency else None,
                             config.params_target)
        self.env = search_env(structure, config, self.budget, latency)
        blind = structure.flat_groups
        if blind and REWARDS[config.reward.kind].needs == {"entropy"} and learns(config.agent) and config.band is None:
            # a 1x1 map has constant spatial entropy: no variant tells these groups' keep ratios apart
            warnings.warn(f"groups {', '.join(blind)} output 1x1 maps, which the entropy reward cannot see: the "
                          "search sets their keep ratios blind (on VGG-16 at 28x28 crushing them cost about 20 "
                          "points, docs/measurements/blind_layers.md); use larger inputs or `reward.kind=combined`",
                          stacklevel=3)
        self.agent: Agent | None = None if self.sb3 else make_agent(config.agent, len(OBS_FEATURES), config)
        if self.agent is not None:
            self.agent.setup(model, structure, config, self.budget if self.budget.beyond_macs else None)
        self.episode = self.saved_at = 0
        self.log_lines: list[str] = []
        self.diag: list[list[float]] = []
        self.best: dict[str, Any] | None = None
        self.worst: float | None = None
        self.sb3_state: dict | None = None
        self.scorer: Scorer | None = None

    @property
    def _agent(self) -> Agent:
        assert self.agent is not None, "only Stable-Baselines3 agents run without one"
        return self.agent

    @property
    def _scorer(self) -> Scorer:
        assert self.scorer is not None, "learn() makes the scorer"
        return self.scorer

    # ---------------------------------------------------------------- state
    def load_state(self) -> None:
        """Continue from the saved state, refusing one written for other settings or inputs."""
        if not self.state_path.exists():
            raise ConfigError(f"nothing to resume in {self.out_dir} (no {STATE_FILE}); run without `resume=True`")
        try:
            state = torch.load(self.state_path, weights_only=True)
            saved_meta = json.loads(state.get("meta", "{}"))
            saved_cfg = {"episode_batch": 1, "latency_target": None, "latency_model": None, "params_target": None,
                         "latency_backend": LatencyConfig.backend, "latency_batch": LatencyConfig.batch,
                         "free_channels": SearchConfig.free_channels,
                         "importance": saved_meta.get("importance", UNNAMED_IMPORTANCE),
                         **json.loads(state["config"])}  # keys added since, at their defaults
            if "flops_target" in saved_cfg:  # a state saved before the rename
                saved_cfg["macs_target"] = saved_cfg.pop("flops_target")
        except Exception as exc:  # torch.load raises many types on a truncated or foreign file
            raise ConfigError(f"{self.state_path} is unreadable ({type(exc).__name__}); the save was interrupted or "
                              "the file was edited: start a fresh `out_dir` (or `force=True`)") from None
        now = json.loads(json.dumps(self.config.to_dict()))
        for key, then in (("refit_norms", False), ("refit_head", True)):  # the reward's refit options, added
            now_value = now.get("reward", {}).get(key)  # since: an older state refitted as `then` (and None) does
            saved_cfg.get("reward", {}).setdefault(key, now_value if now_value in (None, then) else then)
        if saved_cfg != now:  # each with both values: a default changed since is then plain to see and to pass
            def shown(v: Any) -> str:
                text = json.dumps(v, sort_keys=True)
                return text if len(text) <= 60 else text[:57] + "..."

            keys = "; ".join(f"`{k}` {shown(saved_cfg.get(k))} there, {shown(now.get(k))} now"
                             for k in sorted(now.keys() | saved_cfg.keys()) if saved_cfg.get(k) != now.get(k))
            raise ConfigError(f"{self.state_path} was written with other settings ({keys}); resume with the same "
                              "options or start a fresh `out_dir`")
        meta = json.loads(json.dumps(self.meta))
        differ = sorted(k for k in saved_meta if saved_meta[k] != meta.get(k))
        if differ:  # another checkpoint, dataset or channel ranking: two runs would mix in one log
            raise ConfigError(f"{self.state_path} was written for another {', '.join(differ)} "
                              f"({', '.join(str(saved_meta[k]) for k in differ)}); resume with the same inputs "
                              "or start a fresh `out_dir`")
        if self.sb3:
            self.sb3_state = state["sb3"]
        else:
            self._agent.load_state_dict(state["agent"])
        self.episode, self.best, self.worst, self.diag = state["episode"], state["best"], state["worst"], state["diag"]
        self.saved_at = self.episode
        lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
        if len(lines) < self.episode:
            raise ConfigError(f"{self.log_path} has {len(lines)} episodes but the state expects {self.episode}; "
                              "the run folder was edited, start a fresh `out_dir`")
        self.log_lines = lines[:self.episode]

    def save_state(self, sb3_snapshot: dict | None = None) -> None:
        state = {"episode": self.episode, "best": self.best, "worst": self.worst, "diag": self.diag,
                 "config": json.dumps(self.config.to_dict()), "meta": json.dumps(self.meta),
                 **({"sb3": sb3_snapshot} if self.sb3 else {"agent": self._agent.state_dict()})}
        atomic_write(self.state_path, lambda p: torch.save(state, p))
        self.saved_at = self.episode

    # ---------------------------------------------------------------- episodes
    def diagnosed(self, episode: int) -> bool:
        c = self.config
        return c.diagnose_every > 0 and self.val is not None and episode % c.diagnose_every == 0

    def record(self, info: dict, agent_time: float = 0.0) -> float:
        """Log one finished episode; returns the reward the agent learns from (the worst finite one
        so far in place of a non-finite reward)."""
        counts, reward = info["counts"], info["reward"]
        finite = info["finite"] and math.isfinite(reward)
        if finite:
            self.worst = reward if self.worst is None else min(self.worst, reward)
        learn_reward = reward if finite else (self.worst if self.worst is not None else -1.0)
        entry = {"episode": self.episode, "reward": reward if finite else None, "finite": finite,
                 "achieved": round(info["achieved"], 6), "entropy": info["entropy"], "accuracy": info["accuracy"],
                 "policy": policy_to_ratios(self.structure, counts),
                 "times": {**{k: round(v, 5) for k, v in info["times"].items()}, "agent": round(agent_time, 5)}}
        self.log_lines.append(json.dumps(entry))
        with open(self.log_path, "a") as fh:
            fh.write(self.log_lines[-1] + "\n")
        if info["diagnosed"] and finite:
            self.diag.append([reward, info["accuracy"]])
        if finite and (self.best is None or reward > self.best["reward"]):
            self.best = {"reward": reward, "counts": [int(c) for c in counts], "achieved": info["achieved"],
                         "episode": self.episode}
        return learn_reward

    def learn(self, quiet: bool, ray_address: str | None = None) -> None:
        """Run the remaining episodes; a first Ctrl-C stops after the episode with the state saved."""
        self.scorer = make_scorer(self.model, self.structure, self.config.reward, self.calib, self.val,
                                  self.workers, ray_address, self.calib.device)
        self.t_start = time.perf_counter()
        interrupted = False
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.log_path, lambda p: p.write_text("".join(line + "\n" for line in self.log_lines)))
            with progress_bar(disable=quiet) as bar, _Interrupt() as stop:
                task = bar.add_task(f"search {self.config.agent}", total=self.episodes, completed=self.episode,
                                    info="")

                def progress() -> None:
                    bar.update(task, completed=self.episode,
                               info=f"best {self.best['reward']:.4f}" if self.best else "")

                run = self._learn_sb3 if self.sb3 else self._learn_batches
                interrupted = run(stop, progress)
        finally:
            self._scorer.close()
        if interrupted:
            raise SearchInterrupted(f"search stopped after {self.episode} episodes with its state saved at episode "
                                    f"{self.saved_at}; continue with the same command plus `resume=True` "
                                    f"(out: {self.out_dir})")

    def _learn_batches(self, stop: _Interrupt, progress: Callable[[], None]) -> bool:
        """The AMC loop, in batches: every episode of a batch from the same agent state, scored
        together, then learnt from in order (batch 1 = the sequential loop). True if interrupted."""
        c = self.config
        while self.episode < self.episodes:
            batch = [rollout(self.env, self._agent, e)
                     for e in range(self.episode, min(self.episode + c.episode_batch, self.episodes))]
            flags = [self.diagnosed(self.episode + k) for k in range(len(batch))]
            results = self._scorer.score([r["counts"] for r in batch], flags)
            for r, res, flag in zip(batch, results, flags, strict=True):
                info = {"counts": r["counts"], "achieved": r["achieved"], **_scored(res, flag)}
                learn_reward = self.record(info, r["agent_time"])
                self._agent.observe(r["transitions"], learn_reward, self.episode)
                self.episode += 1
                progress()
            crossed = self.episode // c.checkpoint_every > (self.episode - len(batch)) // c.checkpoint_every
            if crossed or self.episode == self.episodes:
                self.save_state()
            if stop.requested:  # in the last episode too: the user asked to stop, and the re-ranking is not free
                self.save_state()
                return True
        return False

    def _learn_sb3(self, stop: _Interrupt, progress: Callable[[], None]) -> bool:
        """A Stable-Baselines3 agent steps the environment itself; episodes are scored and recorded
        from the environment's callbacks. True if interrupted."""
        from .agents.sb3 import run_sb3

        c, ppo = self.config, self.config.agent == "sb3:ppo"

        def score(counts: np.ndarray) -> tuple[float, dict[str, Any]]:
            flag = self.diagnosed(self.episode)
            info = _scored(self._scorer.score([counts], [flag])[0], flag)
            return info["reward"], info

        def on_episode_end(info: dict[str, Any]) -> None:
            self.record(info)
            self.episode += 1
            progress()

        def on_boundary(take_snapshot: Callable[[], dict[str, Any]], final: bool) -> None:
            # TD3/SAC reach a boundary after every episode, PPO after each rollout
            if final or stop.requested or self.episode // c.checkpoint_every > self.saved_at // c.checkpoint_every:
                self.save_state(take_snapshot())

        self.env.scorer, self.env.on_episode_end = score, on_episode_end
        # a Ctrl-C lets the episode finish and be saved (PPO: stops at once and goes back to its
        # last saved rollout on resume)
        run_sb3(c.agent.split(":", 1)[1], self.env, self.episodes, c.seed, c.warmup,
                on_step=lambda: self.episode < self.episodes and not (
                    stop.requested and (self.saved_at == self.episode or ppo)),
                resume=self.sb3_state, on_boundary=on_boundary)
        return stop.requested

    # ---------------------------------------------------------------- result
    def _latency_summary(self, counts: np.ndarray) -> dict[str, Any]:
        lat = self.budget.latency_fraction(counts)
        if lat is None or self.budget.latency is None:
            return {}
        return {"latency_target": self.config.latency_target, "latency_fraction": float(lat[0]),
                "latency_model": self.budget.latency.meta.get("report", {})}

    def _params_summary(self, counts: np.ndarray) -> dict[str, Any]:
        if self.config.params_target is None:
            return {}
        return {"params_target": self.config.params_target,
                "params_fraction": float(self.budget.params_fraction(counts)[0])}

    def _free_channels(self, counts: np.ndarray, quiet: bool
                       ) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
        """The chosen policy widened where the runtime runs the wider net no slower, the MACs (and parameter)
        target kept; the confirming timing's ratio and how many fresh processes took it, for search.json."""
        from ..latency import FRESH_PROCESSES, fresh_pair_times, wall_pair_timer
        from .free_channels import FREE_CHANNEL_REPEATS, free_channels

        held = Budget(self.structure, self.config.macs_target, params_target=self.config.params_target)
        batch, backend = self.config.latency_batch, self.config.latency_backend
        processes = 0

        def confirm(chosen: nn.Module, widened: nn.Module, shape: tuple[int, ...]) -> float | None:
            """Median over fresh processes, the verdict a deployment would see (None, so timed here, when the
            nets cannot travel to another process)."""
            nonlocal processes
            runs = fresh_pair_times([chosen, widened], shape, batch, backend, FREE_CHANNEL_REPEATS, FRESH_PROCESSES)
            if runs is None:
                return None
            processes = len(runs)
            return float(np.median([t_wider / t_chosen for t_chosen, t_wider in runs]))

        with progress_bar(disable=quiet) as bar:
            task = bar.add_task("free channels (timed)", total=None, info="")

            def on_trial(t: dict[str, Any]) -> None:
                bar.update(task, advance=1, info=f"{t['group']} {t['from']}->{t['to']}: {t['time_ratio']:.3f}x"
                                                 f"{' no slower' if t['kept'] else ''}")
            counts, trials, ratio = free_channels(self.model, self.structure, counts, self.env.one_step_more,
                                                  lambda c: bool(held.fits(c)[0]),
                                                  wall_pair_timer(batch, backend, FREE_CHANNEL_REPEATS),
                                                  on_trial=on_trial, confirm=confirm)
            # the steps a trial read no slower stand only if the confirming timing agrees: say which it was
            info = "" if ratio is None else \
                f"widened net {ratio:.3f}x on confirmation: steps {'kept' if ratio <= 1.0 else 'dropped'}"
            bar.update(task, total=len(trials), completed=len(trials), info=info)
        return counts, trials, {"free_channels_confirmation": ratio, "free_channels_confirming_processes": processes}

    def finish(self, recovery_images: torch.Tensor | None, quiet: bool) -> SearchResult:
        """Re-rank (when configured), write policy.json and search.json, return the result."""
        config, structure, best = self.config, self.structure, self.best
        if best is None:
            raise ConfigError("every episode gave a non-finite reward; the model or data contain NaN/Inf values")
        counts = np.array(best["counts"])
        entries = [json.loads(line) for line in self.log_lines]
        chosen, candidates, rerank_time = "search", None, None
        if config.reranks:
            t0 = time.perf_counter()
            candidates, pick = rerank(self.model, structure, config, self.calib, self.val, recovery_images, entries,
                                      quiet, self.budget if self.budget.beyond_macs else None)
            rerank_time = time.perf_counter() - t0
            counts, chosen = np.asarray(candidates[pick]["counts"]), candidates[pick]["source"]
            best = {**best, "achieved": candidates[pick]["achieved"], "reward": candidates[pick]["reward"],
                    "search_reward": best["reward"]}
        topped_up = False
        if not self.env.within_tolerance(counts):  # room the episode's wall left: give it back
            grown = self.env.grow(counts)
            if not np.array_equal(grown, counts):
                counts, topped_up = grown, True
                best = {**best, "achieved": structure.macs(counts) / structure.total_macs}
        # the latency the chosen policy is predicted at: free channels were timed no slower than it, so it stays
        # the result's best estimate (the table prices their steps dearer: that is why they were missed)
        latency_summary, freed = self._latency_summary(counts), None
        within = bool(self.env.within_tolerance(counts))  # the pick's, like its latency: free channels may pass the table
        if config.free_channels and self.budget.latency is not None:
            counts, freed, confirmation = self._free_channels(counts, quiet)
            latency_summary.update(confirmation)
            if any(t["kept"] for t in freed):
                best = {**best, "achieved": structure.macs(counts) / structure.total_macs}
                latency_summary["table_latency_with_free_channels"] = float(self.budget.latency.fraction(counts[None])[0])
        rewards = [e["reward"] for e in entries if e["finite"]]
        spearman = _spearman([d[0] for d in self.diag], [d[1] for d in self.diag])
        time_keys = sorted({k for e in entries for k in e["times"]})
        summary = {
            "macs_target": config.macs_target, "achieved": best["achieved"], "reward": best["reward"],
            **latency_summary, **self._params_summary(counts),
            "best_search_reward": best.get("search_reward", best["reward"]), "best_episode": best["episode"],
            "episodes": len(entries), "seed": config.seed, "agent": config.agent,
            "reward_kind": config.reward.kind, "variant": config.reward.variant, "layers": config.reward.layers,
            "within_tolerance": within, "topped_up": topped_up,
            "free_channels": freed,
            "spearman_reward_accuracy": spearman, "diagnosed_episodes": len(self.diag),
            "reference_accuracy": self._scorer.reference_accuracy,
            "mean_time_split_s": {k: float(np.mean([e["times"].get(k, 0.0) for e in entries])) for k in time_keys},
            "search_time_s_this_session": time.perf_counter() - self.t_start,
            "non_finite_episodes": sum(not e["finite"] for e in entries),
            "best_reward_first_half": max(rewards[: max(1, len(rewards) // 2)], default=None),
            "config": config.to_dict(), "workers": self.workers, "chosen": chosen, "rerank_time_s": rerank_time,
            "rerank": None if candidates is None else [
                {k: v for k, v in c.items() if k != "counts"} | {"policy": policy_to_ratios(structure, c["counts"])}
                for c in candidates],
            **self.meta,
        }
        policy = policy_to_ratios(structure, counts)
        count_map = counts_to_dict(structure, counts)
        write_json(self.out_dir / POLICY_FILE, {
            "policy": policy, "counts": count_map,
            "macs_target": config.macs_target, "achieved": best["achieved"], "reward": best["reward"],
            "seed": config.seed, "agent": config.agent, "reward_kind": config.reward.kind,
            "variant": config.reward.variant, "round_to": config.step, "chosen": chosen,
            "ignored_layers": config.ignored_layers, "importance": config.importance,
            # how the re-ranking read its candidates: `prune` warns when it cuts the policy another way
            "rerank_refit": bool(config.rerank_refit) if config.reranks else None,
            **dict(zip(("rerank_refit_norms", "rerank_refit_head"), config.reward.refit_options()
                       if config.reranks and config.rerank_refit else (None, None), strict=True)), **self.meta})
        write_json(self.out_dir / "search.json", summary)
        return SearchResult(policy=policy, counts=count_map, ignored_layers=list(config.ignored_layers),
                            importance=config.importance,
                            reward=best["reward"], achieved=best["achieved"], episodes=len(entries),
                            spearman=spearman, summary=summary)


def load_result(out_dir: str | Path) -> SearchResult | None:
    """A finished search's result read back from its folder (None before :meth:`Search.finish` wrote it), so a
    resumed run continues from it instead of searching again; a damaged file is one line."""
    out_dir = Path(out_dir)
    policy, summary = read_json(out_dir / POLICY_FILE), read_json(out_dir / "search.json")
    if policy is None or summary is None:  # search.json is written last
        return None
    try:
        return SearchResult(policy=policy["policy"], counts=policy["counts"], reward=policy["reward"],
                            achieved=policy["achieved"], episodes=summary["episodes"],
                            spearman=summary["spearman_reward_accuracy"], summary=summary,
                            ignored_layers=policy["ignored_layers"], importance=policy["importance"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{out_dir} does not hold a finished search (no {exc} in its {POLICY_FILE} or search.json); "
                          "the files were edited, start a new run") from None


__all__ = ["Search", "SearchInterrupted", "run_search", "rollout", "resolve_rounding", "latency_model", "load_result"]
