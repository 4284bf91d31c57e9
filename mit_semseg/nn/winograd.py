"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016), for inference on the CPU in float32.

Each 2x2 tile of the output comes from the 4x4 tile of the input around it: with the input tile d, the filter g and
the transforms B, G and A of the paper, Y = A^T [(G g G^T) * (B^T d B)] A. Over all tiles and channels the
elementwise product becomes 16 matrix products (one per position in the 4x4 transformed tile), (out x in) by (in x
tiles): 16 multiplications per tile and channel pair instead of the direct convolution's 36, 2.25 times fewer. The
transforms only add and subtract (B, A) or are done once (G, on the weights). Its rounding error is of the direct
convolution's size (a test compares both with float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# the filter transform G (4 x 3) of F(2x2, 3x3)
FILTER_TRANSFORM = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
# where it pays on the CPU (measured on CPU A in float32): maps of at least this many pixels, layers of at least
# this many inputs and outputs (the decoders' fusing convolutions: 2048 to 512 at 128 x 128 16% faster, 4096 to 512
# at 64 x 64 16%); below them the direct convolution is as fast or faster
MIN_PIXELS = 32 * 32
MIN_IN_CHANNELS, MIN_OUT_CHANNELS = 1024, 256


def transformed_filters(weight: torch.Tensor) -> torch.Tensor:
    """G g G^T of each out x in 3 x 3 filter, as 16 x out x in (position in the 4x4 tile first)."""
    g = torch.tensor(FILTER_TRANSFORM, dtype=weight.dtype, device=weight.device)
    u = torch.einsum("ai,kcij,bj->abkc", g, weight, g)
    return u.reshape(16, *weight.shape[:2]).contiguous()


def _transform(pick, out: torch.Tensor) -> None:
    """B^T along one axis: from `pick(k)`, row k of every 4-row tile (k = 0..3), the tiles' four transformed rows
    into out[0..3] (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    d0, d1, d2, d3 = (pick(k) for k in range(4))
    torch.sub(d0, d2, out=out[0])
    torch.add(d1, d2, out=out[1])
    torch.sub(d2, d1, out=out[2])
    torch.sub(d1, d3, out=out[3])


def _split_by_parity(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The input padded by one pixel (and to 2 * tiles + 2 pixels) as N x C x 2 x 2 x (rows + 1) x (cols + 1): padded
    pixel (2r + p, 2c + q) at [p, q, r, c], so that every tile row or column k (pixel 2t + k) is a contiguous run
    (parity k % 2, from t + k // 2) rather than every other value."""
    n, channels, height, width = x.shape
    if (height % 2, width % 2) != (0, 0):  # even sides: the zeros past the map are padding
        x = F.pad(x, (0, 2 * cols - width, 0, 2 * rows - height))
    split = x.new_empty(n, channels, 2, 2, rows + 1, cols + 1)
    by_parity = x.view(n, channels, rows, 2, cols, 2)
    for p in (0, 1):  # image pixel 2a + p is padded pixel 2a + p + 1: parity 1 - p, index a + p
        for q in (0, 1):
            split[:, :, 1 - p, 1 - q, p : p + rows, q : q + cols] = by_parity[:, :, :, p, :, q]
    # the padding: the first row and column of parity 0, the last of parity 1
    split[:, :, 0, :, 0] = split[:, :, :, 0, :, 0] = split[:, :, 1, :, rows] = split[:, :, :, 1, :, cols] = 0
    return split


def winograd_conv3x3(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=1)` of an N x C x H x W map, `filters` = transformed_filters(weight)."""
    n, channels, height, width = x.shape
    rows, cols = (height + 1) // 2, (width + 1) // 2
    split = _split_by_parity(x, rows, cols)
    by_rows = x.new_empty(4, n, channels, 2, rows, cols + 1)  # the tiles' rows transformed; columns by parity
    _transform(lambda k: split[:, :, k % 2, :, k // 2 : k // 2 + rows], by_rows)
    tiles = x.new_empty(4, 4, n, channels, rows, cols)
    for a in range(4):
        _transform(lambda k: by_rows[a, :, :, k % 2, :, k // 2 : k // 2 + cols], tiles[a])
    products = torch.matmul(filters.unsqueeze(1), tiles.view(16, n, channels, rows * cols))  # 16 x N x out x tiles
    m = products.view(4, 4, n, -1, rows, cols)
    out = x.new_empty(n, m.shape[3], rows, 2, cols, 2)
    # A^T along rows then columns: y0 = m0 + m1 + m2, y1 = m1 - m2 - m3
    for i, t in enumerate((m[0] + m[1] + m[2], m[1] - m[2] - m[3])):
        torch.add(t[0] + t[1], t[2], out=out[:, :, :, i, :, 0])
        torch.sub(t[1] - t[2], t[3], out=out[:, :, :, i, :, 1])
    out = out.view(n, -1, 2 * rows, 2 * cols)[:, :, :height, :width]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class WinogradConv2d(nn.Module):
    """An inference-only stand-in for a 3x3 `nn.Conv2d` (stride 1, padding 1, no dilation or groups): Winograd's
    F(2x2, 3x3) for contiguous float32 maps on the CPU of at least `MIN_PIXELS`, the convolution itself otherwise
    (another dtype or memory format, autocast, another device, a small map)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not computes(conv):
            raise ValueError(f"not a 3x3 convolution of stride 1 and padding 1: {conv}")
        self.conv = conv
        self.register_buffer("filters", transformed_filters(conv.weight.detach().float()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        direct = (
            x.dtype != torch.float32
            or x.device.type != "cpu"
            or not x.is_contiguous()
            or torch.is_autocast_enabled("cpu")
            or x.shape[-2] * x.shape[-1] < MIN_PIXELS
        )
        return self.conv(x) if direct else winograd_conv3x3(x, self.filters, self.conv.bias)


def computes(conv: nn.Module) -> bool:
    """Whether `conv` is a 3x3 convolution `WinogradConv2d` computes."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def use_winograd(module: nn.Module) -> nn.Module:
    """Every 3x3 convolution in `module` it computes, at least `MIN_IN_CHANNELS` by `MIN_OUT_CHANNELS`, replaced by
    its `WinogradConv2d` (in place, for inference)."""
    for name, child in module.named_children():
        wide = computes(child) and child.in_channels >= MIN_IN_CHANNELS and child.out_channels >= MIN_OUT_CHANNELS
        if wide:
            setattr(module, name, WinogradConv2d(child))
        else:
            use_winograd(child)
    return module
