"""SegmentationModule: encoder + decoder + loss, as the original's training and inference wrapper."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationModule(nn.Module):
    """`forward(feed_dict)` gives (loss, pixel accuracy); with `segSize` it gives probabilities (N, C, H, W)."""

    def __init__(
        self, net_enc: nn.Module, net_dec: nn.Module, crit: nn.Module, deep_sup_scale: float | None = None
    ) -> None:
        super().__init__()
        self.encoder = net_enc
        self.decoder = net_dec
        self.crit = crit
        self.deep_sup_scale = deep_sup_scale

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
            loss = loss + self.crit(deepsup, label) * self.deep_sup_scale
        return loss, self.pixel_acc(pred, label)

    @staticmethod
    def pixel_acc(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Share of labelled pixels (label >= 0) whose arg-max class is right."""
        valid = (label >= 0).long()
        correct = torch.sum(valid * (pred.argmax(dim=1) == label).long())
        return correct.float() / (torch.sum(valid).float() + 1e-10)
