"""Precise RoI pooling (Jiang et al., ECCV 2018) in plain PyTorch, on any device.

The feature map is read as the bilinear surface through its samples at integer coordinates,
zero outside the map. Each output is the exact integral of that surface over its bin, divided by
the bin's area. The surface is a sum of separable hat functions, one per sample, so the integral
over a bin is `sum_ij F[i, j] * Wy[i] * Wx[j]`, where `Wy` and `Wx` integrate a hat function over
the bin's extent along each axis: two small matrix products per roi, no loop over pixels.
"""

from __future__ import annotations

import torch
from torch import nn


def _hat_integral(t: torch.Tensor) -> torch.Tensor:
    """The integral of the hat function max(0, 1 - |s|) from -infinity to t."""
    t = t.clamp(-1.0, 1.0)
    return torch.where(t <= 0, 0.5 * (t + 1) ** 2, 1 - 0.5 * (1 - t) ** 2)


def _axis_weights(start: torch.Tensor, length: torch.Tensor, bins: int, samples: int) -> torch.Tensor:
    """(K, bins, samples): the integral, over each of `bins` equal parts of [start, start + length), of
    the hat function centred on each sample position 0..samples-1."""
    steps = torch.arange(bins + 1, dtype=start.dtype, device=start.device)
    edges = start[:, None] + length[:, None] / bins * steps  # (K, bins + 1)
    positions = torch.arange(samples, dtype=start.dtype, device=start.device)
    cumulative = _hat_integral(edges[:, :, None] - positions)  # (K, bins + 1, samples)
    return cumulative[:, 1:] - cumulative[:, :-1]


def prroi_pool2d(
    features: torch.Tensor, rois: torch.Tensor, pooled_height: int, pooled_width: int, spatial_scale: float = 1.0
) -> torch.Tensor:
    """Precise RoI pooling of `features` (N, C, H, W) over `rois` (K, 5) rows `[batch_index, x0, y0, x1, y1]`.

    Returns (K, C, pooled_height, pooled_width). Coordinates are multiplied by `spatial_scale`
    (x is the column, y the row); a roi with x1 < x0 or y1 < y0 is empty and pools to 0. Gradients
    flow to the features, not to the roi coordinates (as the original kernel).
    """
    if features.dim() != 4:
        raise ValueError(f"prroi_pool2d: features must be (N, C, H, W), got shape {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"prroi_pool2d: rois must be (K, 5) rows [batch_index, x0, y0, x1, y1], got shape {tuple(rois.shape)}"
        )
    if pooled_height <= 0 or pooled_width <= 0:
        raise ValueError(f"prroi_pool2d: pooled size must be positive, got {pooled_height} x {pooled_width}")
    dtype = torch.promote_types(features.dtype, torch.float32)
    rois = rois.detach().to(device=features.device, dtype=dtype)
    index = rois[:, 0].long()
    if not torch.compiler.is_exporting() and index.numel() and (index.min() < 0 or index.max() >= features.shape[0]):
        raise ValueError(f"prroi_pool2d: roi batch index out of range 0..{features.shape[0] - 1}")
    x0, y0, x1, y1 = (rois[:, k] * spatial_scale for k in range(1, 5))
    width, height = (x1 - x0).clamp_min(0), (y1 - y0).clamp_min(0)
    wy = _axis_weights(y0, height, pooled_height, features.shape[2])  # (K, ph, H)
    wx = _axis_weights(x0, width, pooled_width, features.shape[3])  # (K, pw, W)
    area = width / pooled_width * height / pooled_height
    scale = torch.where(area > 0, area.reciprocal(), torch.zeros_like(area))  # an empty bin pools to 0
    selected = features[index].to(dtype)
    pooled = torch.matmul(torch.matmul(wy[:, None], selected), wx[:, None].transpose(-1, -2))  # (K, C, ph, pw)
    return pooled * scale[:, None, None, None].to(pooled.dtype)


class PrRoIPool2D(nn.Module):
    """`prroi_pool2d` as a module: `PrRoIPool2D(pooled_height, pooled_width, spatial_scale)(features, rois)`."""

    def __init__(self, pooled_height: int, pooled_width: int, spatial_scale: float = 1.0) -> None:
        super().__init__()
        self.pooled_height, self.pooled_width, self.spatial_scale = int(pooled_height), int(pooled_width), spatial_scale

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return prroi_pool2d(features, rois, self.pooled_height, self.pooled_width, self.spatial_scale)

    def extra_repr(self) -> str:
        return (
            f"pooled_height={self.pooled_height}, pooled_width={self.pooled_width}, spatial_scale={self.spatial_scale}"
        )
