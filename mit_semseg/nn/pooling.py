"""Adaptive average pooling that also exports to ONNX for any input size.

torch's `adaptive_avg_pool2d` exports with the bins of the size it was traced at. While exporting,
the same averages are computed as two products with pooling matrices built from the input's shape:
bin i of n samples into s covers samples floor(i n / s) .. ceil((i + 1) n / s) - 1.
"""

from __future__ import annotations

import torch
from torch import nn


def _pooling_matrix(size: int, samples, like: torch.Tensor) -> torch.Tensor:
    """(size, samples): row i averages the samples of bin i."""
    i = torch.arange(size, device=like.device)
    start = (i * samples) // size
    stop = ((i + 1) * samples + size - 1) // size
    k = torch.arange(samples, device=like.device)
    inside = (k[None, :] >= start[:, None]) & (k[None, :] < stop[:, None])
    return inside.to(like.dtype) / (stop - start)[:, None].to(like.dtype)


def adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """`F.adaptive_avg_pool2d` of an (N, C, H, W) map as matrix products: the same averages, any input size."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    rows = _pooling_matrix(oh, x.shape[-2], x)
    cols = _pooling_matrix(ow, x.shape[-1], x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d`; while exporting (`torch.compiler.is_exporting()`), `adaptive_avg_pool2d` instead, so
    the exported graph pools maps of any size. PyTorch's own outputs are those of `nn.AdaptiveAvgPool2d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return adaptive_avg_pool2d(x, self.output_size)
        return super().forward(x)
