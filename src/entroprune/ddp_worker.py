"""One process of a data-parallel fine-tune: torchrun's launcher runs this module in each worker.

Kept apart from :mod:`entroprune.ddp` so that the stage functions (api) and the process-group
helpers (ddp) do not import each other.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from .api import finetune_checkpoint
from .ddp import ERROR_MARK
from .errors import EntropruneError, RunError


def main() -> None:
    """A worker: fine-tune in the process group torchrun set up; errors are one line, exit 2."""
    kwargs = json.loads(sys.argv[1])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    code = 0
    try:
        finetune_checkpoint(**kwargs)
    except EntropruneError as exc:
        print(f"{ERROR_MARK} {exc}", file=sys.stderr, flush=True)
        code = 1 if isinstance(exc, RunError) else 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    # Leave without running C++ static destructors: at interpreter exit, torch's gloo/c10d
    # threads were sometimes destroyed while joinable ("terminate called without an active
    # exception", SIGABRT) after all work was done and written, failing the launch.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
