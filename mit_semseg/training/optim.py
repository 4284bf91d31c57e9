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


def build_optimizer(
    model: nn.Module, lr_encoder: float, lr_decoder: float, momentum: float, weight_decay: float
) -> torch.optim.SGD:
    """SGD over the model's encoder at `lr_encoder`, and its decoder (and auxiliary head) at `lr_decoder`."""
    heads = [m for name, m in model.named_children() if name != "encoder"]
    groups = param_groups(model.encoder, lr_encoder) + [g for m in heads for g in param_groups(m, lr_decoder)]
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=lr_encoder, momentum=momentum, weight_decay=weight_decay)


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float, floor: float = 0.0) -> float:
    """(base - floor) * (1 - iteration / max_iter) ** power + floor: the original's poly schedule (floor 0), or
    mmsegmentation's with its eta_min."""
    return (base_lr - floor) * (1.0 - iteration / max_iter) ** power + floor


def set_lr(optimizer: torch.optim.Optimizer, iteration: int, max_iter: int, power: float, floor: float = 0.0) -> None:
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["base_lr"], iteration, max_iter, power, floor)
