"""The texture head of Unified Perceptual Parsing (the paper's fifth head; the released code has none).

A few 3x3 conv-BN-ReLU layers and a 1x1 classifier on C2, the encoder's first map (stride 4), so
its receptive field stays small; its input is detached, so training it never changes the encoder
or the other heads. Its weights live in their own file (`texture_<checkpoint>`), beside the
encoder's and the decoder's, whose state dicts stay the original's.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from .builder import ENCODERS, ModelBuilder, decoder_norm
from .checkpoint import load_weights
from .layers import NormLayer, conv3x3_bn_relu

TEXTURE_WIDTH = 128  # channels of the head's conv layers
TEXTURE_LAYERS = 2  # conv-BN-ReLU layers before the classifier


class TextureHead(nn.Module):
    """C2 (N x C x h x w) in, texture logits (N x T x h x w) out."""

    def __init__(
        self, in_channels: int, num_textures: int, width: int = TEXTURE_WIDTH, norm_layer: NormLayer = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        widths = [in_channels] + [width] * TEXTURE_LAYERS
        self.layers = nn.Sequential(
            *(conv3x3_bn_relu(a, b, norm_layer=norm_layer) for a, b in pairwise(widths)),
            nn.Conv2d(width, num_textures, 1),
        )

    def forward(self, c2: torch.Tensor) -> torch.Tensor:
        return self.layers(c2.detach())


def build_texture_head(
    arch_encoder: str, num_textures: int, weights: str = "", bn_momentum: float = 0.1
) -> TextureHead:
    """The texture head for encoder `arch_encoder` (on its first map); `weights` loads a `texture_*.pth` file, else the
    decoders' initialisation."""
    head = TextureHead(ENCODERS[arch_encoder].feature_channels[0], num_textures, norm_layer=decoder_norm(bn_momentum))
    if weights:
        load_weights(head, weights)
    else:
        head.apply(ModelBuilder.weights_init)
    return head
