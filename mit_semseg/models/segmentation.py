"""SegmentationModule: encoder + decoder + loss, as the original's training and inference wrapper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationModule(nn.Module):
    """`forward(feed_dict)` gives the named `loss` and pixel accuracy `acc`; with `segSize` it gives probabilities
    (N, C, H, W).

    `aux_head` (training only) reads the encoder's second-to-last map; its logits, resized to the label's size,
    add their loss times `aux_weight`. `crit` is the main head's loss, `aux_crit` (`crit` by default) that of deep
    supervision and of the auxiliary head.
    """

    def __init__(
        self,
        net_enc: nn.Module,
        net_dec: nn.Module,
        crit: nn.Module,
        deep_sup_scale: float | None = None,
        aux_head: nn.Module | None = None,
        aux_weight: float = 0.4,
        aux_crit: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = net_enc
        self.decoder = net_dec
        self.crit = crit
        self.deep_sup_scale = deep_sup_scale
        self.aux_head = aux_head
        self.aux_weight = aux_weight
        self.aux_crit = crit if aux_crit is None else aux_crit

    def forward(self, feed_dict: dict[str, torch.Tensor], segSize=None):
        features = self.encoder(feed_dict["img_data"], return_feature_maps=True)
        if segSize is not None:
            return self.decoder(features, segSize=segSize)
        pred = self.decoder(features)
        deepsup = None
        if isinstance(pred, tuple):
            pred, deepsup = pred
        label = feed_dict["seg_label"]
        loss = self.crit(pred, label)
        if deepsup is not None and self.deep_sup_scale is not None:
            loss = loss + self.aux_crit(deepsup, label) * self.deep_sup_scale
        if self.aux_head is not None:
            aux = self.aux_head(features[-2])
            aux = F.interpolate(aux, size=label.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + self.aux_crit(F.log_softmax(aux, dim=1), label) * self.aux_weight
        return {"loss": loss, "acc": self.pixel_acc(pred, label)}

    @staticmethod
    def pixel_acc(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Share of labelled pixels (label >= 0) whose arg-max class is right."""
        valid = (label >= 0).long()
        correct = torch.sum(valid * (pred.argmax(dim=1) == label).long())
        return correct.float() / (torch.sum(valid).float() + 1e-10)
