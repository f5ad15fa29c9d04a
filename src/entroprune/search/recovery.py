"""Label-free recovery: a few steps of distillation from the unpruned net before a policy is scored.

A freshly pruned net is close to broken (10-40% accuracy on the grid's nets), so any score read
off it says little about the net after fine-tuning; a few dozen distillation steps on unlabelled
images bring it most of the way back (31% -> 85% on the main job's VGG in 40 steps), and scores
read after that predicted the fine-tuned accuracy better for every reward tried (issue 16,
docs/method.md). The teacher's outputs are computed once per image pool, so each candidate pays
only its own forward and backward passes; every candidate sees the same batches in the same order.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..prune import recalibrate_bn
from ..train import main_output
from ..utils import modes_kept


class Recovery:
    """Distils pruned copies from one teacher on a fixed pool of unlabelled images.

    :param teacher: the unpruned network.
    :param images: normalised unlabelled images (training images: never the ones scored on).
    :param steps: SGD steps per candidate (0 = no recovery).
    :param batch_size: images per step.
    :param lr: SGD learning rate (momentum 0.9), the main job's fine-tune rate.
    :param seed: fixes the batches, identical for every candidate.
    """

    def __init__(self, teacher: nn.Module, images: torch.Tensor, steps: int = 40, batch_size: int = 128,
                 lr: float = 0.02, seed: int = 0):
        self.images, self.steps, self.batch_size, self.lr = images, steps, batch_size, lr
        with torch.no_grad(), modes_kept(teacher):
            teacher.eval()
            self.targets = torch.cat([F.log_softmax(main_output(teacher(images[s:s + 512])), 1)
                                      for s in range(0, len(images), 512)]) if len(images) else images
        gen = torch.Generator().manual_seed(seed)
        n = len(images)
        self.batches = [torch.randint(0, n, (min(batch_size, n),), generator=gen) for _ in range(steps)] if n else []

    def __call__(self, net: nn.Module) -> nn.Module:
        """Distil ``net`` in place for ``steps`` steps, then re-estimate its BN statistics."""
        if not self.batches:
            return net
        net.requires_grad_(True)  # a pruned copy of a model frozen for inference keeps its flags
        opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9)
        net.train()
        with torch.enable_grad():
            for idx in self.batches:
                loss = kl_to_teacher(main_output(net(self.images[idx])), self.targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        recalibrate_bn(net, self.images[: 1024])
        return net.eval()


def kl_to_teacher(logits: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) per image: zero exactly when the pruned net answers as the original."""
    return F.kl_div(F.log_softmax(logits, 1), teacher_log_probs, log_target=True, reduction="batchmean")


__all__ = ["Recovery", "kl_to_teacher", "main_output"]
