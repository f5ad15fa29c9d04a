"""A search's settings (its reward's among them) and its result: what the CLI, YAML configs and the Python API
fill in, declared once. Free of torch, like :mod:`entroprune.settings`, so the command line starts without it."""

from __future__ import annotations

import math
from dataclasses import InitVar, asdict, dataclass, field, replace
from typing import Any

from ..errors import ConfigError, deprecated
from ..settings import (
    DEFAULT_IMPORTANCE,
    DEFAULT_LEVELS,
    DEFAULT_REFIT,
    DEFAULT_REFIT_HEAD,
    DEFAULT_REFIT_NORMS,
    IMPORTANCES,
    LatencyConfig,
    check_types,
)


@dataclass
class RewardConfig:
    """How a policy is scored.

    :param kind: ``entropy``, ``accuracy``, ``combined`` or ``kl``.
    :param variant: entropy variant (see :mod:`entroprune.entropy`).
    :param layers: which conv outputs feed the entropy: ``all``, ``last``, ``last:K`` or names.
    :param normalize: divide each layer's entropy by the unpruned network's value at that
        layer, so that layers of different sizes weigh alike.
    :param levels: quantisation levels of the co-occurrence variant.
    :param bn_recalibration: re-estimate BN statistics on the calibration images first.
    :param accuracy_weight: weight of accuracy in the ``combined`` reward.
    :param physical: score on a physically pruned copy (one copy and one torch-pruning pass per
        episode) instead of zero-masks on the full net: the same values to float rounding, and
        forward passes that cost the pruned MACs, so faster wherever the forward passes dominate
        (the accuracy reward, bigger nets; ``benchmarks/search_speed.py``).
    :param maximize: reward *high* entropy instead (not the paper's method; our reward study
        found entropy positively correlated with accuracy before fine-tuning, see
        docs/method.md), for research.
    :param recovery_steps: distillation steps from the unpruned net before each policy is scored
        (0 = score the freshly pruned net, as AMC and the paper do); needs ``physical``.
    :param refit: score each policy on its net with the kept weights refitted by least squares, as the final
        prune makes it (:mod:`entroprune.refit`; before any recovery steps); needs ``physical``.
    :param refit_norms: with ``refit``, scale the refitted filters back to the plain cut's norms, as
        ``PruneConfig.refit_norms`` does. None (the default): as the run's prune does (the prune's default for
        a search alone), so a refitted candidate is the net the prune will make.
    :param refit_head: with ``refit``, refit the layers the model returns too, as ``PruneConfig.refit_head``;
        None as ``refit_norms``.

    The default, ``cooccurrence`` (neighbour-pair entropy per kept channel) of the last conv
    layer, had the best mean rank correlation with accuracy after fine-tuning over the reward
    studies on VGG, ResNet-20 and MobileNetV2, positive in every one (docs/results.md,
    docs/method.md); ``cooccurrence-avg`` over all layers, the earlier default, was near zero.
    """

    kind: str = "entropy"
    variant: str = "cooccurrence"
    layers: str = "last"
    normalize: bool = True
    levels: int = DEFAULT_LEVELS
    bn_recalibration: bool = True
    accuracy_weight: float = 1.0
    maximize: bool = False
    physical: bool = True
    recovery_steps: int = 0
    refit: bool = False
    refit_norms: bool | None = None
    refit_head: bool | None = None

    def refit_options(self) -> tuple[bool, bool]:
        """``refit_norms`` and ``refit_head`` with None read as the prune's defaults."""
        return (DEFAULT_REFIT_NORMS if self.refit_norms is None else self.refit_norms,
                DEFAULT_REFIT_HEAD if self.refit_head is None else self.refit_head)

    def validate(self) -> None:
        from ..entropy import check_variant
        from .reward_kinds import REWARDS

        check_types(self)
        REWARDS.require(self.kind)
        try:
            check_variant(self.variant)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.levels < 2:
            raise ConfigError(f"co-occurrence levels must be >= 2, got {self.levels}")
        if isinstance(self.accuracy_weight, bool) or not isinstance(self.accuracy_weight, (int, float)) \
                or not math.isfinite(self.accuracy_weight):
            raise ConfigError(f"`accuracy_weight` must be a finite number, got {self.accuracy_weight!r}")
        if not isinstance(self.recovery_steps, int) or self.recovery_steps < 0:
            raise ConfigError(f"recovery steps must be an integer >= 0, got {self.recovery_steps!r}")
        if self.recovery_steps and not self.physical:
            raise ConfigError("recovery trains a pruned copy; it needs physical scoring (physical: true)")
        if self.refit and not self.physical:
            raise ConfigError("the refit changes a pruned copy's weights; it needs physical scoring (physical: true)")


#: The re-ranking's recovery steps on plain cuts (``recovery_steps`` None without the refit): 40 label-free
#: distillation steps lift the main job's VGG from 31% to 85% before it is scored (docs/method.md).
PLAIN_RECOVERY_STEPS = 40


@dataclass
class SearchConfig:
    """A search's settings (all exposed on the CLI and in YAML configs).

    :param macs_target: fraction of the original MACs to keep (0.2 = 5x fewer).
    :param agent: ``ddpg``, ``uniform``, ``global`` (torch-pruning's global magnitude ranking),
        ``random`` or ``sb3:td3|sac|ppo``.
    :param episodes: policies to try (uniform always uses one).
    :param min_keep: smallest keep ratio of any group.
    :param round_to: round channel counts to multiples of this (8: CPU kernels, oneDNN's and onnxruntime's
        blocked layouts, run faster on them, 1.7x on onnxruntime at the same MACs in
        docs/measurements/latency_rounding.md; AMC rounds the same way); a group no larger than the step is
        not rounded; ``"auto"``: the step whose uniform policy at ``macs_target`` gives the best measured speed-up per MACs reduction on
        ``latency_backend`` at ``latency_batch`` on this machine (:func:`entroprune.latency.choose_rounding`),
        measured once per run folder into ``rounding.json`` and reused by ``resume``.
    :param seed: seeds the agent and everything random in the search.
    :param calib_size: calibration images for BN recalibration and the entropy reward.
    :param val_size: validation images for the accuracy reward and diagnostics.
    :param diagnose_every: also measure accuracy every K episodes (0 = never).
    :param checkpoint_every: save the resumable state every K episodes.
    :param warmup: DDPG / off-policy SB3 warm-up episodes of random actions.
    :param episode_batch: episodes generated from one state of the agent and scored together
        (in parallel with ``--workers``) before the agent learns from them, in order. The
        result depends on this batch size, not on the number of workers: 1 is the sequential
        AMC loop; larger batches give the same warm-up and fewer agent states afterwards.
    :param reward: how policies are scored during the search.
    :param ddpg: extra DDPG hyperparameters (see :class:`~entroprune.search.agents.ddpg.DDPGAgent`).
    :param band: each group's keep ratio stays within ``(1 - band, 1 + band)`` times the uniform
        policy's ratio (and [min_keep, 1]), so no policy can crush a layer; groups whose maps are
        1x1 stay at the uniform ratio under an entropy reward, which cannot see them. None = the
        whole [min_keep, 1] range, as in AMC.
    :param rerank_top_k: after the search, re-score its ``k`` best distinct policies *and* the
        uniform and global policies with ``rerank_reward`` after ``recovery_steps`` of label-free
        recovery, and return the best of them (0 = return the search's best as it scored).
    :param rerank_reward: the re-ranking's reward kind (``kl``: agreement with the unpruned net).
    :param confirm_seeds: when a searched policy wins the re-ranking, score it and the uniform and
        global policies again under this many other recovery seeds (other batches of the same
        images); it stands only if it still wins on the mean, else the better of those two does.
        The best of ``k`` noisy scores is biased upward: a searched winner's score moves by up to
        0.04 between recovery seeds where the uniform policy's moves by 0.002
        (docs/measurements/rerank_noise.md). 0 = take the first reading.
    :param uniform_margin: the re-ranking leaves the uniform policy only for a candidate whose score
        beats uniform's by at least this fraction of uniform's ``|score|`` (on the mean over the
        confirmation's seeds where it ran). Uniform is the safe choice (docs/arena.md) and the score
        is noisy: uniform's own reading moves by up to 20% between recovery seeds on resnet20, and
        the arena's losses beyond 0.2 points came from searched policies 1% and 4% ahead of uniform
        on that mean (mobilenetv2 seeds 0 and 1: -0.34 and -1.13 points; margins 0-0.3 replayed on
        the arena's cells in docs/measurements/margin_replay.md).
        0 = the best score wins.
    :param recovery_steps: distillation steps before each re-scored candidate. None (the default): none on
        refitted candidates, which work already, and :data:`PLAIN_RECOVERY_STEPS` on plain cuts, which are
        nearly broken until then.
    :param rerank_refit: re-score each candidate on its net with the kept weights refitted, as the final
        prune makes it (``PruneConfig.refit``), before its recovery steps (0 steps: the refitted net itself,
        a closed-form reading that other seeds move only through the refit's sampled positions). None (the
        default): as the prune does, so the score reads the net the prune will make (``prune.refit`` in a
        run; the prune's default, on, for a search alone).
    :param recovery_images: unlabelled training images the recovery distils on.
    :param ignored_layers: module names whose output channels are never pruned (besides every layer
        that feeds a model output, which is always protected).
    :param importance: which channels a group keeps, by the ``l1`` or ``l2`` norm of its weights, or ``auto``:
        L2 where every group's channels come from one conv (a plain chain), else L1. Neither norm wins on
        every net: with the plain cut L2 gained 0.10-0.25 points on three VGG pairs and lost 0.31 on ResNet-20
        and 0.16 on MobileNetV2 (docs/measurements/channel_ranking.md); with the refit it gained 0.00-0.12 on
        the VGGs (docs/arena.md, ``uniform-l2-refit``), and the default search with ``auto`` ended 0.28-0.31
        above uniform on four of the arena's pairs, and ``auto`` is the default since (docs/method.md, "Which
        channels").
    :param params_target: also keep at most this fraction of the unpruned net's parameters (None = no bound):
        for a flash, memory or download budget, which a MACs target bounds only loosely (a net's parameters
        sit mostly in its late, wide layers, its MACs in its early, large maps). Every target holds.
    :param latency_target: also keep at most this fraction of the unpruned net's latency, as a latency
        model fitted on this machine predicts it (None = MACs only); both targets hold.
    :param latency_model: a ``latency_model.json`` written by ``entroprune latency`` (None = fit one in
        the run folder, reused by ``resume``).
    :param latency_backend: ``torch``, ``torchscript`` or ``onnxruntime``: the runtime a fitted latency model times.
    :param latency_batch: inputs per forward a fitted latency model times.
    :param free_channels: under a latency target, widen the chosen policy by every channel step whose
        whole pruned net, timed on ``latency_backend`` in alternation with the chosen one on the machine
        the search runs on, is not slower (kernels run some wider layers as fast as narrower ones, which a
        latency table's interpolation cannot see; :mod:`entroprune.search.free_channels`), then drop them
        all if a confirming timing reads the widened net slower. The MACs (and parameter) target still holds.
        No effect without a latency target.
    :param flops_target: the old name of ``macs_target`` (deprecated: it always meant MACs).
    """

    macs_target: float = 0.2
    agent: str = "ddpg"
    episodes: int = 300
    min_keep: float = 0.2
    round_to: int | str = 8
    seed: int = 0
    calib_size: int = 256
    val_size: int = 5000
    diagnose_every: int = 0
    checkpoint_every: int = 10
    warmup: int = 100
    episode_batch: int = 1
    reward: RewardConfig = field(default_factory=RewardConfig)
    ddpg: dict[str, Any] = field(default_factory=dict)
    band: float | None = 0.5
    rerank_top_k: int = 8
    rerank_reward: str = "kl"
    confirm_seeds: int = 2
    uniform_margin: float = 0.1
    recovery_steps: int | None = None
    recovery_images: int = 2048
    rerank_refit: bool | None = None
    ignored_layers: list[str] = field(default_factory=list)
    importance: str = DEFAULT_IMPORTANCE
    params_target: float | None = None
    latency_target: float | None = None
    latency_model: str | None = None
    latency_backend: str = LatencyConfig.backend
    latency_batch: int = LatencyConfig.batch
    free_channels: bool = True
    flops_target: InitVar[float | None] = None

    def __post_init__(self, flops_target: float | None) -> None:
        if flops_target is not None:
            deprecated("flops_target", "macs_target")
            self.macs_target = flops_target

    def validate(self) -> None:
        check_types(self)
        if not (isinstance(self.macs_target, (int, float)) and 0 < self.macs_target <= 1):
            raise ConfigError(f"`macs_target` must lie in (0, 1] (fraction of MACs kept), got {self.macs_target!r}")
        from .agents import check_agent
        from .reward_kinds import REWARDS

        check_agent(self.agent)
        if self.round_to != "auto" and (isinstance(self.round_to, bool) or not isinstance(self.round_to, int)
                                        or not 1 <= self.round_to <= 4096):
            raise ConfigError(f"`round_to` must be an integer from 1 to 4096 or 'auto' (measured), got {self.round_to!r}")
        if self.episodes < 1:
            raise ConfigError(f"`episodes` must be >= 1, got {self.episodes}")
        if self.calib_size < 1 or self.val_size < 0:
            raise ConfigError("`calib_size` must be >= 1 and `val_size` >= 0")
        if self.episode_batch < 1:
            raise ConfigError(f"`episode_batch` must be >= 1, got {self.episode_batch}")
        if self.warmup < 0 or self.checkpoint_every < 1 or self.diagnose_every < 0:
            raise ConfigError("`warmup` and `diagnose_every` must be >= 0, `checkpoint_every` >= 1")
        if self.band is not None and not (isinstance(self.band, (int, float)) and 0 <= self.band <= 1):
            raise ConfigError(f"band must lie in [0, 1] (or be null for none), got {self.band!r}")
        if min(self.rerank_top_k, self.recovery_steps or 0, self.recovery_images, self.confirm_seeds) < 0:
            raise ConfigError("rerank_top_k, confirm_seeds, recovery_steps and recovery_images must be >= 0")
        if self.recovery_images == 0 and self.recovery_steps != 0 and self.reranks:  # read as "none given": calib
            raise ConfigError(f"`recovery_images` 0 would make the recovery distil on the calibration images the "
                              f"re-ranking scores on; give at least 1 (default {SearchConfig.recovery_images}), or "
                              "`recovery_steps` 0 to score without recovery")
        if not (isinstance(self.uniform_margin, (int, float)) and 0 <= self.uniform_margin < 10):
            raise ConfigError(f"uniform_margin must lie in [0, 10) (a fraction of uniform's score), "
                              f"got {self.uniform_margin!r}")
        if not (isinstance(self.ignored_layers, list) and all(isinstance(n, str) for n in self.ignored_layers)):
            raise ConfigError(f"ignored layers must be a list of module names, got {self.ignored_layers!r}")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"`importance` must be one of {', '.join(IMPORTANCES)} (the channel ranking), "
                              f"got {self.importance!r}")
        for name, what in (("latency_target", "latency"), ("params_target", "parameters")):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value <= 1):
                raise ConfigError(f"`{name}` must lie in (0, 1] (fraction of the {what} kept), got {value!r}")
        if self.macs_target == 1 and all(t is None or t == 1 for t in (self.latency_target, self.params_target)):
            # every policy keeps everything: a whole search (and its re-ranking) would return the unpruned net
            raise ConfigError("`macs_target` 1 keeps every MAC and no `latency_target` or `params_target` below 1 "
                              "bounds the time or the size, so there is nothing to prune; give a `macs_target` "
                              "below 1 (0.2 keeps 20%), or a `latency_target` (0.5 keeps half the measured latency)")
        LatencyConfig(backend=self.latency_backend, batch=self.latency_batch).validate()
        REWARDS.require(self.rerank_reward, label="re-ranking reward")
        self.reward.validate()

    @property
    def step(self) -> int:
        """The channel step; ``round_to: auto`` is measured into one before a search starts (:func:`resolve_rounding`)."""
        if self.round_to == "auto":
            raise ConfigError("`round_to: auto` is resolved by the search (resolve_rounding) before it is used")
        return int(self.round_to)

    @property
    def reranks(self) -> bool:
        from .agents import FIXED_AGENTS

        return self.rerank_top_k > 0 and self.agent not in FIXED_AGENTS

    def resolved(self, refit: bool | None = None, refit_norms: bool | None = None,
                 refit_head: bool | None = None) -> SearchConfig:
        """This config with the re-ranking's defaults settled: ``rerank_refit`` None as the prune refits
        (``refit``; None: the prune's default), then ``recovery_steps`` None by whether the candidates are
        refitted, and the reward's ``refit_norms`` and ``refit_head`` None as the prune's options of those names
        where given (else None stands for the prune's defaults).
        Searches run (and record) resolved configs, so a log says what was done."""
        scored_refit = self.rerank_refit if self.rerank_refit is not None else \
            DEFAULT_REFIT if refit is None else refit
        steps = self.recovery_steps if self.recovery_steps is not None else \
            0 if scored_refit else PLAIN_RECOVERY_STEPS
        reward = self.reward
        if isinstance(reward, RewardConfig):  # (else the validation names the wrong type, in one line)
            reward = replace(reward, refit_norms=reward.refit_norms if reward.refit_norms is not None else refit_norms,
                             refit_head=reward.refit_head if reward.refit_head is not None else refit_head)
        return replace(self, rerank_refit=scored_refit, recovery_steps=steps, reward=reward)

    def rerank_reward_config(self) -> RewardConfig:
        settled = self.resolved()
        return replace(self.reward, kind=self.rerank_reward, recovery_steps=settled.recovery_steps or 0, physical=True,
                       refit=bool(settled.rerank_refit))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    policy: dict[str, float]
    counts: dict[str, int]
    reward: float
    achieved: float
    episodes: int
    spearman: float | None
    summary: dict[str, Any]
    ignored_layers: list[str] = field(default_factory=list)
    importance: str = DEFAULT_IMPORTANCE


__all__ = ["RewardConfig", "SearchConfig", "SearchResult"]
