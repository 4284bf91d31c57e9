"""The project's batch norm: `nn.BatchNorm2d` with the original's checkpoint buffers and cross-replica sync."""

from __future__ import annotations

import threading

import torch
from torch import nn

ORIGINAL_BN_MOMENTUM = 0.001
COMPAT_BUFFERS = ("_tmp_running_mean", "_tmp_running_var", "_running_iter")


class SyncAborted(RuntimeError):
    """Another replica failed, so this one stops waiting for it."""


class ReplicaExchange:
    """One rendezvous point: each of `n` replicas hands in a value and gets back all of them, in order."""

    def __init__(self, n: int, group: SyncGroup) -> None:
        self.n, self.group = n, group
        self.items: dict[int, object] = {}
        self.result: list = []
        self.generation = 0

    def exchange(self, index: int, item: object) -> list:
        cond = self.group.condition
        with cond:
            generation = self.generation
            self.items[index] = item
            if len(self.items) == self.n:
                self.result, self.items = [self.items[i] for i in range(self.n)], {}
                self.generation += 1
                cond.notify_all()
            while self.generation == generation:
                if self.group.aborted:
                    raise SyncAborted("a replica failed during the synchronized forward pass")
                cond.wait(timeout=0.5)
            return self.result


class SyncGroup:
    """The exchanges of one multi-replica forward pass; `abort()` releases every waiting replica."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.aborted = False

    def abort(self) -> None:
        with self.condition:
            self.aborted = True
            self.condition.notify_all()


class CompatBuffers:
    """Mixin: the original's `_tmp_running_mean`, `_tmp_running_var` and `_running_iter` buffers.

    They hold the running averages times `_running_iter` and are refreshed whenever the state is
    saved, so checkpoints load into the original code and back.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = ORIGINAL_BN_MOMENTUM,
        affine: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, **kwargs)
        self.register_buffer("_tmp_running_mean", torch.zeros(num_features))
        self.register_buffer("_tmp_running_var", torch.ones(num_features))
        self.register_buffer("_running_iter", torch.ones(1))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        with torch.no_grad():
            self._tmp_running_mean.copy_(self.running_mean * self._running_iter)
            self._tmp_running_var.copy_(self.running_var * self._running_iter)
        super()._save_to_state_dict(destination, prefix, keep_vars)


class SynchronizedBatchNorm2d(CompatBuffers, nn.BatchNorm2d):
    """Batch norm that, across the replicas of one DataParallel step, normalises by the global statistics.

    On one device it computes exactly what `nn.BatchNorm2d` computes. When linked to replicas
    (`link_replicas`), each replica reduces the sum and sum of squares of its batch over all
    replicas, normalises by the global mean and variance (gradients flow through them to every
    replica), and the first replica updates the running statistics with the unbiased variance.
    """

    _sync: tuple[ReplicaExchange, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._sync is None or not self.training:
            return super().forward(x)
        exchange, index = self._sync
        channels = x.shape[1]
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        local = (xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), x.numel() // channels)
        everything = exchange.exchange(index, local)
        count = sum(n for _, _, n in everything)
        total = sum(s.to(x.device) for s, _, _ in everything)
        total_sq = sum(q.to(x.device) for _, q, _ in everything)
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0)
        if index == 0:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * (count / max(count - 1, 1))
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
                self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var + self.eps) * self.weight
        shift = self.bias - mean * scale
        return (xf * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


class DistributedBatchNorm2d(CompatBuffers, nn.SyncBatchNorm):
    """`torch.nn.SyncBatchNorm` (cross-process, under DistributedDataParallel on CUDA) with the same state."""


def link_replicas(replicas: list[nn.Module]) -> SyncGroup:
    """Make the SynchronizedBatchNorm2d layers of `replicas` (copies of one model) sync with each other."""
    group = SyncGroup()
    layers = [[m for m in r.modules() if isinstance(m, SynchronizedBatchNorm2d)] for r in replicas]
    for same_layer in zip(*layers):
        exchange = ReplicaExchange(len(replicas), group)
        for index, bn in enumerate(same_layer):
            bn._sync = (exchange, index)
    return group


def to_distributed(module: nn.Module) -> nn.Module:
    """Replace every SynchronizedBatchNorm2d by a DistributedBatchNorm2d sharing its tensors."""
    for name, child in module.named_children():
        if isinstance(child, SynchronizedBatchNorm2d):
            replacement = DistributedBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
            replacement.weight, replacement.bias = child.weight, child.bias
            for key, buffer in child._buffers.items():
                replacement._buffers[key] = buffer
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            to_distributed(child)
    return module
