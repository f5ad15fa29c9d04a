"""Prunable structure of a network: coupled channel groups, MACs and parameter counts."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp


@torch.no_grad()
def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """MACs of one forward pass at the example's size (batch 1) and the parameter count."""
    was_training = model.training
    device = next(model.parameters()).device
    macs, params = tp.utils.count_ops_and_params(model, example_input[:1].to(device))
    model.train(was_training)
    return int(macs), int(params)
