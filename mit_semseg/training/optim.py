"""SGD with the original's parameter groups and the poly learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(module: nn.Module, lr: float) -> list[dict]:
    """Conv and linear weights with weight decay; biases and batch-norm parameters without."""
    decay, no_decay = [], []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            weighted = isinstance(m, (nn.Conv2d, nn.Linear)) and name == "weight"
            (decay if weighted else no_decay).append(p)
    return [
        {"params": decay, "lr": lr, "base_lr": lr},
        {"params": no_decay, "lr": lr, "base_lr": lr, "weight_decay": 0.0},
    ]


def build_optimizer(encoder: nn.Module, decoder: nn.Module, cfg) -> torch.optim.SGD:
    t = cfg.TRAIN
    groups = [g for g in param_groups(encoder, t.lr_encoder) + param_groups(decoder, t.lr_decoder) if g["params"]]
    return torch.optim.SGD(groups, lr=t.lr_encoder, momentum=t.beta1, weight_decay=t.weight_decay)


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float) -> float:
    """base * (1 - iteration / max_iter) ** power."""
    return base_lr * (1.0 - iteration / max_iter) ** power


def set_lr(optimizer: torch.optim.Optimizer, iteration: int, max_iter: int, power: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["base_lr"], iteration, max_iter, power)
