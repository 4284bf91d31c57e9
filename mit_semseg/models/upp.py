"""The Unified Perceptual Parsing decoder: UPerNet with scene, object, part and material heads.

Pyramid pooling uses Precise RoI pooling of the whole last map; a top-down FPN gives P2..P5; the
scene head reads the pooled context, the material head P2, and the object and part heads the
fusion of P2..P5. The part head has one group of channels per object with parts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.label_tables import HEADS, LabelTables, read_label_tables
from ..nn import AdaptiveAvgPool2d, PrRoIPool2D, SynchronizedBatchNorm2d
from .decoders import PPM_SCALES, add_pyramid_and_fpn, class_softmax, pyramid_context, resize, top_down
from .layers import NormLayer, conv3x3_bn_relu


def _head(fpn_dim: int, classes: int, norm_layer: NormLayer) -> nn.Sequential:
    return nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim, norm_layer=norm_layer), nn.Conv2d(fpn_dim, classes, 1))


class UPPDecoder(nn.Module):
    """Returns a dict with a tensor per task that ran (`part`: a list, one tensor per part group).

    In training, log-probabilities at the decoder's resolution (scene: N x S); with `segSize` (or
    `use_softmax`), probabilities resized to `segSize`, each part group softmaxed on its own.
    `tasks` picks the heads to run (default: all); the layers only they need are skipped.
    """

    deep_sup = False
    needs_all_widths = True
    takes_dropout = False
    takes_align_corners = False
    class_layers = ("scene_head.2.", "object_head.1.", "part_head.1.", "material_head.1.")

    def __init__(
        self,
        tables: LabelTables,
        fc_dim: int = 2048,
        use_softmax: bool = False,
        pool_scales: Sequence[int] = PPM_SCALES,
        fpn_inplanes: Sequence[int] = (256, 512, 1024, 2048),
        fpn_dim: int = 256,
        norm_layer: NormLayer = SynchronizedBatchNorm2d,
    ) -> None:
        super().__init__()
        if fpn_inplanes[-1] != fc_dim:
            raise ValueError(f"UPP: fc_dim {fc_dim} differs from the last FPN input width {fpn_inplanes[-1]}")
        self.use_softmax = use_softmax
        self.part_group_sizes = tables.part_group_sizes
        classes = tables.num_classes
        self.ppm_pooling = nn.ModuleList(PrRoIPool2D(scale, scale, 1.0) for scale in pool_scales)
        add_pyramid_and_fpn(self, fc_dim, fpn_inplanes, fpn_dim, len(pool_scales), norm_layer)
        self.conv_fusion = conv3x3_bn_relu(len(fpn_inplanes) * fpn_dim, fpn_dim, norm_layer=norm_layer)
        self.scene_head = nn.Sequential(
            conv3x3_bn_relu(fpn_dim, fpn_dim, norm_layer=norm_layer),
            AdaptiveAvgPool2d(1),
            nn.Conv2d(fpn_dim, classes["scene"], 1),
        )
        self.object_head = _head(fpn_dim, classes["object"], norm_layer)
        self.part_head = _head(fpn_dim, classes["part"], norm_layer)
        self.material_head = _head(fpn_dim, classes["material"], norm_layer)

    @classmethod
    def from_widths(
        cls,
        in_channels: Sequence[int],
        num_class: int | None = None,
        label_tables: LabelTables | str | None = None,
        **options,
    ) -> UPPDecoder:
        """The decoder for an encoder whose maps have `in_channels` channels; its classes come from the label
        tables (a folder, or None for the Broden+ tables shipped), not from `num_class`."""
        tables = label_tables if isinstance(label_tables, LabelTables) else read_label_tables(label_tables)
        return cls(tables, fc_dim=in_channels[-1], fpn_inplanes=tuple(in_channels), **options)

    def _context(self, conv5: torch.Tensor) -> torch.Tensor:
        """The pyramid-pooling context: each scale pooled over the whole map (Precise RoI pooling), then as UPerNet."""
        n, _, h, w = conv5.shape
        index = torch.arange(n, dtype=torch.float32, device=conv5.device)  # rois [b, 0, 0, w, h], from the shape alone
        rois = torch.stack([index, 0 * index, 0 * index, 0 * index + w, 0 * index + h], 1)
        return pyramid_context(self, conv5, [pool(conv5, rois).to(conv5.dtype) for pool in self.ppm_pooling])

    def logits(self, conv_out: list[torch.Tensor], tasks: Iterable[str] = HEADS) -> dict[str, torch.Tensor]:
        """Raw logits of the heads in `tasks` (part: all groups' channels together), at the heads' resolution."""
        tasks = set(tasks)
        f = self._context(conv_out[-1])
        out = {}
        if "scene" in tasks:
            out["scene"] = self.scene_head(f).flatten(1)
        if not tasks & {"object", "part", "material"}:
            return out
        pyramid = top_down(self, f, conv_out)
        if "material" in tasks:
            out["material"] = self.material_head(pyramid[0])
        if tasks & {"object", "part"}:
            top = pyramid[0].shape[-2:]
            fusion = self.conv_fusion(torch.cat([pyramid[0]] + [resize(p, top) for p in pyramid[1:]], 1))
            if "object" in tasks:
                out["object"] = self.object_head(fusion)
            if "part" in tasks:
                out["part"] = self.part_head(fusion)
        return out

    def forward(self, conv_out: list[torch.Tensor], segSize=None, tasks: Iterable[str] = HEADS) -> dict:
        logits = self.logits(conv_out, tasks)
        inference = self.use_softmax or segSize is not None
        normalise = class_softmax if inference else F.log_softmax
        out = {}
        for task, x in logits.items():
            if segSize is not None and task != "scene":
                x = resize(x, segSize)
            if task == "part":
                out[task] = [normalise(g, dim=1) for g in torch.split(x, self.part_group_sizes, dim=1)]
            else:
                out[task] = normalise(x, dim=1)
        return out
