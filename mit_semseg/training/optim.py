"""The optimizer (the original's SGD, or AdamW as mmsegmentation trains ConvNeXt and Swin) with its parameter groups,
and the learning-rate schedule: an optional linear warm-up, then poly."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ONE_DIMENSIONAL = "ndim1"  # a TRAIN.no_decay word: every 1-D parameter (norms, biases, layer scales)


@dataclass(frozen=True)
class OptimizerSettings:
    """TRAIN's optimizer keys: `optim` (sgd, adamw), SGD's `momentum`, AdamW's `betas`, `weight_decay`; `no_decay`,
    words of the parameter names that take no weight decay (`ndim1`: every 1-D one; none: the original's rule, only
    conv and linear weights decay); `lr_decay_rate` and `lr_decay_layers`, mmsegmentation's stage-wise learning-rate
    decay of the encoder's stages (0: none)."""

    optim: str = "sgd"
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    no_decay: tuple[str, ...] = ()
    lr_decay_rate: float = 0.0
    lr_decay_layers: int = 0

    @classmethod
    def from_config(cls, t) -> OptimizerSettings:
        return cls(
            t.optim.lower(),
            t.beta1,
            tuple(t.betas),
            t.weight_decay,
            tuple(t.no_decay),
            t.lr_decay_rate,
            t.lr_decay_layers,
        )


def _decays(module: nn.Module, name: str, param: nn.Parameter, no_decay: tuple[str, ...]) -> bool:
    if not no_decay:  # the original's rule
        return isinstance(module, (nn.Conv2d, nn.Linear)) and name.endswith("weight")
    if ONE_DIMENSIONAL in no_decay and param.ndim == 1:
        return False
    return not any(word in name for word in no_decay if word != ONE_DIMENSIONAL)


def stage_id(name: str, num_layers: int) -> int:
    """mmsegmentation's stage of an encoder parameter for its stage-wise decay (`get_stage_id_for_convnext`): the
    stem and downsampling layers 0, stage i's blocks i + 1, anything else (the maps' norms) num_layers + 1."""
    if name.startswith("downsample."):
        return 0
    match = re.match(r"stages\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def param_groups(module: nn.Module, lr: float, settings: OptimizerSettings = OptimizerSettings(), decayed=False):
    """The module's trainable parameters in groups of one weight decay (`settings.no_decay`) and, with `decayed` and
    `settings.lr_decay_rate`, one learning-rate scale: decay_rate ** (num_layers + 1 - stage_id), num_layers being
    `lr_decay_layers` + 2 as mmsegmentation counts them. Each group's `base_lr` is `lr` times its scale."""
    groups: dict[tuple[bool, float], list] = {}
    for owner_name, owner in module.named_modules():
        for param_name, p in owner.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            name = f"{owner_name}.{param_name}" if owner_name else param_name
            scale = 1.0
            if decayed and settings.lr_decay_rate:
                layers = settings.lr_decay_layers + 2
                scale = settings.lr_decay_rate ** (layers - 1 - stage_id(name, settings.lr_decay_layers))
            groups.setdefault((_decays(owner, name, p, settings.no_decay), scale), []).append(p)
    return [
        {"params": params, "lr": lr * scale, "base_lr": lr * scale, **({} if decay else {"weight_decay": 0.0})}
        for (decay, scale), params in sorted(groups.items(), key=lambda item: (-item[0][1], not item[0][0]))
    ]


def build_optimizer(
    model: nn.Module, lr_encoder: float, lr_decoder: float, settings: OptimizerSettings = OptimizerSettings()
) -> torch.optim.Optimizer:
    """The optimizer over the model's encoder at `lr_encoder` (its stages' learning rates decayed as `settings`
    says), and its decoder (and auxiliary head) at `lr_decoder`."""
    heads = [m for name, m in model.named_children() if name != "encoder"]
    groups = param_groups(model.encoder, lr_encoder, settings, decayed=True)
    groups += [g for m in heads for g in param_groups(m, lr_decoder, settings)]
    groups = [g for g in groups if g["params"]]
    if settings.optim == "adamw":
        return torch.optim.AdamW(groups, lr=lr_encoder, betas=settings.betas, weight_decay=settings.weight_decay)
    return torch.optim.SGD(groups, lr=lr_encoder, momentum=settings.momentum, weight_decay=settings.weight_decay)


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float, floor: float = 0.0) -> float:
    """(base - floor) * (1 - iteration / max_iter) ** power + floor: the original's poly schedule (floor 0), or
    mmsegmentation's with its eta_min."""
    return (base_lr - floor) * (1.0 - iteration / max_iter) ** power + floor


def scheduled_lr(
    base_lr: float,
    iteration: int,
    max_iter: int,
    power: float,
    floor: float = 0.0,
    warmup: int = 0,
    warmup_ratio: float = 1e-6,
) -> float:
    """With `warmup` iterations, mmsegmentation's LinearLR first (base times warmup_ratio rising linearly to base),
    then its PolyLR over the iterations after it; without, `poly_lr` over them all."""
    if iteration < warmup:
        return base_lr * (warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup)
    return poly_lr(base_lr, iteration - warmup, max_iter - warmup, power, floor)


def set_lr(optimizer: torch.optim.Optimizer, lr_of: Callable[[float], float]) -> None:
    """Each parameter group's rate: `lr_of` its base rate (e.g. `scheduled_lr` at this iteration)."""
    for group in optimizer.param_groups:
        group["lr"] = lr_of(group["base_lr"])
