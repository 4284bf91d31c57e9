"""Single-process multi-device training: each device runs a replica on its own batch dict."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn.parallel import replicate

from .nn import link_replicas


def to_device(batch: dict, device: torch.device, non_blocking: bool = False) -> dict:
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def _shared_replica(module: nn.Module) -> nn.Module:
    """A copy of the module tree sharing every parameter and buffer (replicas on one device)."""
    replica = copy.copy(module)
    replica._modules = {
        name: _shared_replica(child) if child is not None else None for name, child in module._modules.items()
    }
    return replica


class DictDataParallel(nn.Module):
    """Runs `module` on each device with that device's own batch dict, whole, in parallel threads.

    Unlike `nn.DataParallel` nothing is split along the batch dimension, so every device can get
    a batch of its own size. The replicas' SynchronizedBatchNorm2d layers normalise by the
    statistics of all the replicas' batches. `forward` returns the replicas' outputs, each on
    the first device. Devices may all be one device, the CPU or a GPU (the replicas then share the
    parameters), which is how the engine is tested without several GPUs.
    """

    def __init__(self, module: nn.Module, devices: Sequence[torch.device]) -> None:
        super().__init__()
        self.module, self.devices = module, [torch.device(d) for d in devices]

    def forward(self, batches: list[dict]) -> list:
        n = len(batches)
        if not 0 < n <= len(self.devices):
            raise ValueError(f"got {n} batches for {len(self.devices)} devices")
        if n == 1:
            return [self.module(to_device(batches[0], self.devices[0]))]
        devices = self.devices[:n]
        if len(set(devices)) == 1:  # replicas on one device (the CPU, or one GPU) share the parameters
            replicas = [_shared_replica(self.module) for _ in devices]
        else:
            replicas = replicate(self.module, devices, not torch.is_grad_enabled())
        group = link_replicas(replicas)
        outputs: list = [None] * n
        errors: list = [None] * n
        grad_enabled = torch.is_grad_enabled()

        def run(i: int) -> None:
            device = devices[i]
            try:
                with (
                    torch.set_grad_enabled(grad_enabled),
                    torch.cuda.device(device) if device.type == "cuda" else nullcontext(),
                ):
                    outputs[i] = replicas[i](to_device(batches[i], device))
            except BaseException as err:  # handed to the caller below
                errors[i] = err
                group.abort()

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = [e for e in errors if e is not None]
        if failed:
            real = [e for e in failed if type(e).__name__ != "SyncAborted"]
            raise (real or failed)[0]
        return [_to(output, self.devices[0]) for output in outputs]


def _to(value, device: torch.device):
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value
