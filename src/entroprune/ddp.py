"""Data-parallel fine-tuning over torch.distributed (gloo on CPU, nccl on GPU).

``entroprune finetune ... --nproc N`` launches N local processes through torchrun's engine
(:func:`torch.distributed.launcher.api.elastic_launch`); each runs :mod:`entroprune.ddp_worker`, joins the
process group and calls :func:`entroprune.api.finetune_checkpoint`, which sees the group
and trains a DistributedDataParallel copy on its shard of every batch. Rank 0 writes the
same ``model.pt`` and ``metrics.json`` as a single-process run.

On a cluster, start the same command under torchrun on every node instead, e.g.
``torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m entroprune.cli
finetune pruned/model.pt --out ft``: a command that finds itself in a process group uses it.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .errors import ConfigError, RunError

#: Marks a worker's one-line error so the launcher can repeat it.
ERROR_MARK = "entroprune worker error:"


@dataclass
class DistContext:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def in_process_group() -> bool:
    """True inside a torchrun-launched process of a group of two or more."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device | str) -> DistContext:
    """Join the group torchrun describes in the environment (once per process)."""
    device = torch.device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return DistContext(rank, world, device)


def leave() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch_finetune(kwargs: dict[str, Any], nproc: int, threads: int | None = None) -> dict[str, Any]:
    """Run ``finetune_checkpoint(**kwargs)`` in ``nproc`` local processes; rank 0's metrics."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 2:
        raise ConfigError(f"launch_finetune needs nproc >= 2, got {nproc}")
    threads = threads or max(1, torch.get_num_threads() // nproc)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the workers
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"entroprune-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures are reported below
    try:
        elastic_launch(config, sys.executable)("-m", "entroprune.ddp_worker", json.dumps(kwargs))
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        raise RunError(f"distributed fine-tuning failed (worker exit codes {codes}); "
                          "the worker's message is above") from None
    return json.loads((Path(kwargs["out_dir"]) / "metrics.json").read_text())
