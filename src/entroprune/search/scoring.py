"""Scoring batches of policies: in this process, or in parallel on Ray actors.

A search generates episodes in batches (``SearchConfig.episode_batch``); every policy of a
batch is scored by a :class:`Scorer`. :class:`LocalScorer` scores them one after another with
a :class:`~entroprune.search.rewards.RewardEvaluator`; :class:`RayScorer` hands them to Ray actors,
each holding its own copy of the model, the structure and the calibration / validation images
(sent once through Ray's object store), so that only keep-count vectors travel per episode.
Results come back in submission order, so a search's outcome depends on the batch size, never
on the number of workers or on which worker finished first.

Ray is an optional dependency (``pip install entroprune[ray]``); one worker needs no Ray.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import ConfigError, RunError
from ..structure import Structure
from .rewards import RewardConfig, RewardEvaluator, RewardResult


class Scorer:
    """Scores keep-count vectors; ``with_accuracy`` flags ask for a diagnostic accuracy too."""

    reference_accuracy: float | None = None

    def score(self, counts: Sequence[np.ndarray], with_accuracy: Sequence[bool]) -> list[RewardResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Give back the model (local) or the workers (Ray)."""


class LocalScorer(Scorer):
    """Scores in this process on the live model (masked in place, restored by ``close``)."""

    def __init__(self, model: nn.Module, structure: Structure, config: RewardConfig, calib: torch.Tensor,
                 val: tuple[torch.Tensor, torch.Tensor] | None):
        self.evaluator = RewardEvaluator(model, structure, config, calib, val)
        self.reference_accuracy = self.evaluator.reference_accuracy

    def score(self, counts, with_accuracy):
        return [self.evaluator.evaluate(c, with_accuracy=w) for c, w in zip(counts, with_accuracy, strict=True)]

    def close(self) -> None:
        self.evaluator.close()


class _RewardWorker:
    """The body of one Ray actor: a private RewardEvaluator over its own copy of the model."""

    def __init__(self, model: nn.Module, structure: Structure, config: RewardConfig, calib: torch.Tensor,
                 val: tuple[torch.Tensor, torch.Tensor] | None, threads: int, device: str):
        if threads > 0:
            torch.set_num_threads(threads)
        dev = torch.device(device)
        model = model.to(dev)
        val = None if val is None else (val[0].to(dev), val[1].to(dev))
        self.evaluator = RewardEvaluator(model, structure, config, calib.to(dev), val)

    def reference_accuracy(self) -> float | None:
        return self.evaluator.reference_accuracy

    def score(self, counts: list[int], with_accuracy: bool) -> RewardResult:
        return self.evaluator.evaluate(np.asarray(counts), with_accuracy=with_accuracy)


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("`workers` > 1 needs Ray: pip install 'entroprune[ray]' (or run with `workers=1`)") from None
    return ray


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"`ray_address` {address!r} is not auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                          "ray start --head, or fix `ray_address`") from None


class RayScorer(Scorer):
    """Scores on ``workers`` Ray actors, on a local Ray started here or an existing cluster.

    :param address: None starts a local Ray with ``workers`` CPUs (stopped by ``close``);
        ``auto`` or ``HOST:PORT`` joins a running cluster (left running).
    :param threads: torch threads per actor (0 = the CPUs Ray gives it, at least 1).
    """

    def __init__(self, model: nn.Module, structure: Structure, config: RewardConfig, calib: torch.Tensor,
                 val: tuple[torch.Tensor, torch.Tensor] | None, workers: int, address: str | None = None,
                 device: torch.device | str = "cpu", threads: int = 0):
        if workers < 2:
            raise ConfigError(f"RayScorer needs at least 2 workers, got {workers}; use LocalScorer for one")
        ray = import_ray()
        self.ray, self.started = ray, False
        device = torch.device(device)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address is None:
                # Ray nices its workers to 15 by default; here they do all the work while the
                # driver waits, and at 15 any other busy process starves them (measured: a
                # 2 s import took 50 s beside a training job). The user's value wins.
                os.environ.setdefault("RAY_worker_niceness", "0")
                kwargs.update(num_cpus=workers, num_gpus=torch.cuda.device_count() if device.type == "cuda" else 0,
                              object_store_memory=256 * 1024**2)
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise ConfigError(f"could not start or reach {where} ({str(exc).splitlines()[0]}); "
                                  "check `ray_address` or run with `workers=1`") from None
            self.started = True
        gpus = 0.0
        if device.type == "cuda":
            gpus = min(1.0, max(ray.cluster_resources().get("GPU", 0.0), 1.0) / workers)
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_RewardWorker)
        # One put per object: every actor reads the same copy from the object store.
        refs = [ray.put(obj) for obj in (copy.deepcopy(model).cpu(), structure, config, calib.cpu(),
                                         None if val is None else (val[0].cpu(), val[1].cpu()))]
        dev = "cuda" if device.type == "cuda" else "cpu"
        self.actors = [actor.remote(*refs, threads or 1, dev) for _ in range(workers)]
        try:
            refs_acc = [a.reference_accuracy.remote() for a in self.actors]
            self.reference_accuracy = self.ray.get(refs_acc)[0]
        except Exception as exc:  # an actor failed to build its evaluator
            self.close()
            raise RunError(f"a Ray worker could not set up the reward ({_first_line(exc)}); "
                              "is entroprune installed on every node?") from None

    def score(self, counts, with_accuracy):
        futures = [self.actors[i % len(self.actors)].score.remote([int(c) for c in cs], bool(w))
                   for i, (cs, w) in enumerate(zip(counts, with_accuracy, strict=True))]
        try:
            return self.ray.get(futures)
        except self.ray.exceptions.RayError as exc:
            raise RunError(f"a Ray worker failed ({_first_line(exc)}); the search state of the last "
                              "checkpoint is saved: rerun the same command with `resume=True`") from None

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()
            self.started = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def make_scorer(model: nn.Module, structure: Structure, config: RewardConfig, calib: torch.Tensor,
                val: tuple[torch.Tensor, torch.Tensor] | None, workers: int = 1, address: str | None = None,
                device: torch.device | str = "cpu") -> Scorer:
    """A LocalScorer for one worker, else a RayScorer."""
    if workers < 1:
        raise ConfigError(f"`workers` must be >= 1, got {workers}")
    if workers == 1:
        return LocalScorer(model, structure, config, calib, val)
    return RayScorer(model, structure, config, calib, val, workers, address, device)


__all__ = ["Scorer", "LocalScorer", "RayScorer", "make_scorer", "check_ray_address"]
