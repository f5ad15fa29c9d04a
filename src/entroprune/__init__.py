"""entroprune: structured filter pruning of CNNs by an RL agent rewarded for low spatial
entropy of activations (Musat & Andonie, arXiv 2312.04918), on torch-pruning's graph."""

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
)
from .checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from .config import RunConfig, load_config
from .data import load_dataset
from .entropy import VARIANTS, layer_entropy
from .errors import EntropruneError
from .models import build_model
from .pipeline import run_pipeline
from .prune import Masker, prune_model, recalibrate_bn
from .search import (
    PruningEnv,
    Recovery,
    RewardConfig,
    RewardEvaluator,
    SearchConfig,
    SearchResult,
    rerank,
    run_search,
)
from .structure import Structure, count_macs_params
from .train import TrainConfig, evaluate, train_model

__version__ = "0.1.0"

__all__ = [
    "EntropruneError", "Masker", "ModelSpec", "PruningEnv", "Recovery", "RewardConfig", "RewardEvaluator", "RunConfig",
    "SearchConfig", "SearchResult", "Structure", "TrainConfig", "VARIANTS", "build_model", "count_macs_params",
    "evaluate", "evaluate_checkpoint", "export_checkpoint", "finetune_checkpoint", "finetune_module",
    "inspect_checkpoint", "layer_entropy", "load_checkpoint", "load_config", "load_dataset", "load_model",
    "prune_checkpoint", "prune_model", "prune_module", "recalibrate_bn", "rerank", "run_pipeline", "run_search",
    "save_checkpoint", "search_checkpoint", "search_module", "train_baseline", "train_model",
]
