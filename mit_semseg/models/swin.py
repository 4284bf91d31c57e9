"""Swin Transformer (Liu et al., 2021) as an encoder: four stages at strides 4, 8, 16 and 32 of window attention,
every other block's windows shifted by half a window, each map through its own layer norm (as the UperNet
checkpoints have them), stochastic depth for training. Any input size: the image is padded to a multiple of the
patch, each block's map to a multiple of the window (the padding attended to, as the segmentation reference does),
an odd map before a merge by one row or column."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import round_up
from .convnext import drop_path

MASKED = -100.0  # added to the attention between tokens of different regions of a shifted window


def relative_position_index(window: int) -> torch.Tensor:
    """For each pair of a window's tokens (w*w x w*w), the row of the bias table of their offset (dy, dx):
    (dy + w - 1) * (2w - 1) + (dx + w - 1)."""
    y, x = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    y, x = y.flatten(), x.flatten()
    return (y[:, None] - y[None, :] + window - 1) * (2 * window - 1) + (x[:, None] - x[None, :] + window - 1)


def _windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """N x H x W x C (H, W multiples of `window`) as (N * windows) x window^2 x C, windows in row-major order."""
    n, h, w, c = x.shape
    x = x.view(n, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def _unwindow(x: torch.Tensor, window: int, n: int, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    return x.view(n, h // window, w // window, window, window, c).transpose(2, 3).reshape(n, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int, device=None) -> torch.Tensor:
    """(windows x window^2 x window^2) 0 between tokens of one region of the rolled map, MASKED between regions
    (the map's three bands each way: up to -window, -window to -shift, the last shift)."""

    def band(size: int) -> torch.Tensor:  # 0, 1, 2 for each row (column)
        index = torch.arange(size, device=device)
        return (index >= size - window).long() + (index >= size - shift).long()

    regions = (3 * band(h)[:, None] + band(w)[None, :]).float()
    labels = _windows(regions[None, :, :, None], window)[..., 0]
    return (labels[:, None, :] != labels[:, :, None]).float() * MASKED


class WindowAttention(nn.Module):
    """Multi-head self-attention within a window, with a learnt bias per head and relative offset."""

    def __init__(self, width: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.proj = nn.Linear(width, width)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("index", relative_position_index(window).flatten(), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            f(x).view(b, t, self.heads, c // self.heads).transpose(1, 2) for f in (self.query, self.key, self.value)
        )
        scores = q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5
        scores = scores + self.bias_table[self.index].view(t, t, -1).permute(2, 0, 1)
        if mask is not None:  # per window, repeated over the batch
            scores = (scores.view(-1, mask.shape[0], self.heads, t, t) + mask[None, :, None]).view(b, self.heads, t, t)
        return self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, c))


class SwinBlock(nn.Module):
    """Layer norm, (shifted) window attention, residual; layer norm, 4x MLP with GELU, residual."""

    def __init__(self, width: int, heads: int, window: int, shift: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.window, self.shift, self.drop_rate = window, shift, drop_rate
        self.norm1 = nn.LayerNorm(width)
        self.attn = WindowAttention(width, heads, window)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(width, 4 * width)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x H x W x C."""
        n, h, w = x.shape[:3]
        win = self.window
        y = F.pad(self.norm1(x), (0, 0, 0, round_up(w, win) - w, 0, round_up(h, win) - h))
        hp, wp = y.shape[1:3]
        mask = None
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
            mask = shifted_window_mask(hp, wp, win, self.shift, x.device).to(y.dtype)
        y = _unwindow(self.attn(_windows(y, win), mask), win, n, hp, wp)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + drop_path(y[:, :h, :w], self.drop_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_rate, self.training)


class PatchMerging(nn.Module):
    """Each 2x2 patch's four tokens concatenated (top-left, bottom-left, top-right, bottom-right), normed and
    projected to twice the width; an odd map padded by a row or column first."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * width)
        self.reduction = nn.Linear(4 * width, 2 * width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, round_up(w, 2) - w, 0, round_up(h, 2) - h))
        # N x H/2 x 2 (dy) x W/2 x 2 (dx) x C, the patch's tokens ordered by dx then dy
        x = x.view(n, x.shape[1] // 2, 2, x.shape[2] // 2, 2, c).permute(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.reshape(n, x.shape[1], x.shape[2], 4 * c)))


class SwinEncoder(nn.Module):
    """`patch_embed` (a 4x4 conv, stride 4) and `patch_norm`, `stages.i.blocks`, `stages.i.merge` after stage
    i < 3, `out_norms.i` stage i's map's norm. Stochastic depth grows linearly from 0 to `drop_path_rate` over the
    blocks. `norm_layer` is accepted as every encoder's and unused (no batch norm)."""

    inference_memory_format = torch.contiguous_format  # its layers are on tokens: faster so on the CPU

    def __init__(
        self,
        width: int,
        depths: Sequence[int],
        heads: Sequence[int],
        window: int = 7,
        drop_path_rate: float = 0.0,
        norm_layer=None,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, width, 4, stride=4)
        self.patch_norm = nn.LayerNorm(width)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages, self.out_norms = nn.ModuleList(), nn.ModuleList()
        for i, (depth, head) in enumerate(zip(depths, heads)):
            stage_width, first = width * 2**i, sum(depths[:i])
            stage = nn.Module()
            stage.blocks = nn.Sequential(
                *(SwinBlock(stage_width, head, window, (j % 2) * (window // 2), rates[first + j]) for j in range(depth))
            )
            if i < len(depths) - 1:
                stage.merge = PatchMerging(stage_width)
            self.stages.append(stage)
            self.out_norms.append(nn.LayerNorm(stage_width))
        self.apply(_init)

    def forward(self, x: torch.Tensor, return_feature_maps: bool = False) -> list[torch.Tensor]:
        x = F.pad(x, (0, round_up(x.shape[3], 4) - x.shape[3], 0, round_up(x.shape[2], 4) - x.shape[2]))
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        maps = []
        for stage, norm in zip(self.stages, self.out_norms):
            x = stage.blocks(x)
            maps.append(norm(x).permute(0, 3, 1, 2).contiguous())
            if hasattr(stage, "merge"):
                x = stage.merge(x)
        return maps if return_feature_maps else maps[-1:]


def _init(m: nn.Module) -> None:
    """Truncated-normal weights (std 0.02) and zero biases for linears, as Swin is trained from; the bias tables
    likewise."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, WindowAttention):
        nn.init.trunc_normal_(m.bias_table, std=0.02)


# (width, depths, heads, window) of each size: the paper's (its Table 1); base and large with windows of 12, as the
# UperNet checkpoints of ADE20K were trained from 384-pixel ImageNet-22k models
SIZES = {
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}


def swin(size: str, drop_path_rate: float = 0.0, norm_layer=None) -> SwinEncoder:
    width, depths, heads, window = SIZES[size]
    return SwinEncoder(width, depths, heads, window, drop_path_rate)


def feature_channels(size: str) -> tuple[int, ...]:
    width = SIZES[size][0]
    return tuple(width * 2**i for i in range(4))
