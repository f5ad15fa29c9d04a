"""entroprune: structured filter pruning of CNNs by an RL agent rewarded for low spatial
entropy of activations (Musat & Andonie, arXiv 2312.04918), on torch-pruning's graph.

The top level holds the stage functions, their configs and results, and the errors; the parts they
are built from live in their modules (``entroprune.structure``, ``entroprune.prune``,
``entroprune.search``, ``entroprune.entropy``, ``entroprune.data``, ``entroprune.models``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name is imported on first use (__getattr__)
    from .api import (
        evaluate_checkpoint,
        export_checkpoint,
        finetune_checkpoint,
        finetune_module,
        inspect_checkpoint,
        load_model,
        prune_checkpoint,
        prune_module,
        search_checkpoint,
        search_module,
        train_baseline,
        wrap_weights,
    )
    from .checkpoint import ModelSpec, save_checkpoint
    from .config import FinetuneConfig, PruneConfig, RunConfig, load_config
    from .errors import (
        CheckpointError,
        ConfigError,
        DataError,
        EntropruneError,
        RunError,
        RunInterrupted,
        SearchInterrupted,
        SweepInterrupted,
    )
    from .models import register_model
    from .pipeline import resume_run, run_pipeline
    from .plugins import load_plugins
    from .search.config import RewardConfig, SearchConfig, SearchResult
    from .structure import count_macs_params
    from .sweep import SweepConfig, resume_sweep, run_sweep

__version__ = "0.1.0"

__all__ = [
    # stage functions: checkpoints in, run folders out
    "train_baseline", "search_checkpoint", "prune_checkpoint", "finetune_checkpoint", "evaluate_checkpoint",
    "export_checkpoint", "inspect_checkpoint", "run_pipeline", "resume_run", "load_model",
    # the main job at several MACs targets, compared
    "run_sweep", "resume_sweep", "SweepConfig",
    # a model trained elsewhere, as a checkpoint the stages read
    "save_checkpoint", "ModelSpec", "wrap_weights",
    # a model of your own by name (in a plugin the commands import: `entroprune --plugin FILE.py`)
    "register_model", "load_plugins",
    # the same stages on any nn.Module
    "search_module", "prune_module", "finetune_module", "count_macs_params",
    # configs and results
    "SearchConfig", "RewardConfig", "RunConfig", "FinetuneConfig", "PruneConfig", "SearchResult", "load_config",
    # errors
    "EntropruneError", "ConfigError", "DataError", "CheckpointError", "RunError", "SearchInterrupted",
    "RunInterrupted", "SweepInterrupted",
]

# Where each public name lives. Importing `entroprune` (and its command line) does not import torch; the
# first use of a name imports its module, so `entroprune --help` answers without torch's seconds of start-up.
_HOMES = {
    **dict.fromkeys(["evaluate_checkpoint", "export_checkpoint", "finetune_checkpoint", "finetune_module",
                     "inspect_checkpoint", "load_model", "prune_checkpoint", "prune_module", "search_checkpoint",
                     "search_module", "train_baseline", "wrap_weights"], "api"),
    **dict.fromkeys(["ModelSpec", "save_checkpoint"], "checkpoint"),
    **dict.fromkeys(["FinetuneConfig", "PruneConfig", "RunConfig", "load_config"], "config"),
    **dict.fromkeys(["CheckpointError", "ConfigError", "DataError", "EntropruneError", "RunError", "RunInterrupted",
                     "SearchInterrupted", "SweepInterrupted"], "errors"),
    "register_model": "models",
    **dict.fromkeys(["resume_run", "run_pipeline"], "pipeline"),
    "load_plugins": "plugins",
    **dict.fromkeys(["RewardConfig", "SearchConfig", "SearchResult"], "search.config"),
    "count_macs_params": "structure",
    **dict.fromkeys(["SweepConfig", "resume_sweep", "run_sweep"], "sweep"),
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES, __all__)
