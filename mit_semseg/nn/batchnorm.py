"""The project's batch norm: `nn.BatchNorm2d` with the original's checkpoint buffers."""
from __future__ import annotations

import torch
from torch import nn

ORIGINAL_BN_MOMENTUM = 0.001


class SynchronizedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose state dict matches the original CSAIL synchronized batch norm.

    On one device it computes exactly what `nn.BatchNorm2d` computes. Besides the usual
    state it carries the original's `_tmp_running_mean`, `_tmp_running_var` and
    `_running_iter` buffers (running average times `_running_iter`), so checkpoints load
    both ways; they are refreshed from the running statistics whenever the state is saved.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = ORIGINAL_BN_MOMENTUM,
                 affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        self.register_buffer("_tmp_running_mean", torch.zeros(num_features))
        self.register_buffer("_tmp_running_var", torch.ones(num_features))
        self.register_buffer("_running_iter", torch.ones(1))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        with torch.no_grad():
            self._tmp_running_mean.copy_(self.running_mean * self._running_iter)
            self._tmp_running_var.copy_(self.running_var * self._running_iter)
        super()._save_to_state_dict(destination, prefix, keep_vars)


COMPAT_BUFFERS = ("_tmp_running_mean", "_tmp_running_var", "_running_iter")
