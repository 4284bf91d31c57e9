"""UnifiedParsingModule: encoder + UPP decoder + the multi-task losses of Unified Perceptual Parsing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.label_tables import LabelTables

DEFAULT_LOSS_WEIGHTS = {"object": 1.0, "part": 0.5, "scene": 0.25, "material": 1.0}


def masked_nll(log_probs: torch.Tensor, target: torch.Tensor, ignore: int) -> torch.Tensor:
    """Mean negative log-likelihood over the targets that are not `ignore` (0 when there are none)."""
    count = (target != ignore).sum().clamp_min(1)
    return F.nll_loss(log_probs.float(), target, ignore_index=ignore, reduction="sum") / count


def accuracy(log_probs: torch.Tensor, target: torch.Tensor, ignore: int) -> torch.Tensor:
    """Share of the targets that are not `ignore` whose arg-max class is right."""
    valid = target != ignore
    return ((log_probs.argmax(1) == target) & valid).sum() / valid.sum().clamp_min(1)


def part_loss(
    groups: list[torch.Tensor],
    seg_part: torch.Tensor,
    seg_object: torch.Tensor,
    valid_part: torch.Tensor,
    object_labels: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The part loss and accuracy: per group, the mean NLL over the pixels of its object in images where the
    group is valid, summed over groups; accuracy over all those pixels."""
    loss = seg_part.new_zeros((), dtype=torch.float32)
    correct = total = seg_part.new_zeros(())
    for g, (log_probs, obj) in enumerate(zip(groups, object_labels)):
        mask = (seg_object == obj) & valid_part[:, g, None, None]
        target = torch.where(mask, seg_part, torch.zeros_like(seg_part))
        nll = -log_probs.float().gather(1, target[:, None])[:, 0]
        loss = loss + (nll * mask).sum() / mask.sum().clamp_min(1)
        correct = correct + ((log_probs.argmax(1) == target) & mask).sum()
        total = total + mask.sum()
    return loss, correct / total.clamp_min(1)


class UnifiedParsingModule(nn.Module):
    """`forward(feed_dict)` gives named values: `loss` (the heads' weighted sum), each head's loss and accuracy
    (`object_loss`, `object_acc`, ...); with `segSize` the decoder's probabilities (a dict, see `UPPDecoder`).

    The feed dict holds `img_data`, `tasks` (the heads to train) and each task's labels: `seg_object`,
    `seg_material` (0 unlabelled), `seg_part` with `valid_part`, `scene` (-1 none). `texture`, when given, is a
    texture head (`TextureHead`), which `logits` runs too; it is trained by `TextureStageModule` only.
    """

    def __init__(
        self,
        net_enc: nn.Module,
        net_dec: nn.Module,
        tables: LabelTables,
        loss_weights: dict[str, float] | None = None,
        texture: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.texture = net_enc, net_dec, texture
        self.part_objects = [g.object_label for g in tables.groups]
        self.loss_weights = dict(DEFAULT_LOSS_WEIGHTS, **(loss_weights or {}))

    def logits(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every head's raw logits at its own resolution: the decoder's, and `texture` (N x T x h x w, on C2) with a
        texture head."""
        out = self.decoder.logits(features)
        if self.texture is not None:
            out["texture"] = self.texture(features[0])
        return out

    def forward(self, feed_dict: dict, segSize=None):
        features = self.encoder(feed_dict["img_data"], return_feature_maps=True)
        if segSize is not None:
            return self.decoder(features, segSize=segSize)
        return self.loss(self.decoder(features, tasks=feed_dict["tasks"]), feed_dict)

    def loss(self, pred: dict, feed_dict: dict) -> dict[str, torch.Tensor]:
        """The weighted `loss` of the decoder's training output `pred`, and every head's loss and accuracy."""
        losses, stats = {}, {}
        for task in ("object", "material"):
            if task in pred:
                losses[task] = masked_nll(pred[task], feed_dict[f"seg_{task}"], 0)
                stats[f"{task}_acc"] = accuracy(pred[task], feed_dict[f"seg_{task}"], 0)
        if "scene" in pred:
            losses["scene"] = masked_nll(pred["scene"], feed_dict["scene"], -1)
            stats["scene_acc"] = accuracy(pred["scene"], feed_dict["scene"], -1)
        if "part" in pred:
            losses["part"], stats["part_acc"] = part_loss(
                pred["part"], feed_dict["seg_part"], feed_dict["seg_object"], feed_dict["valid_part"], self.part_objects
            )
        stats.update({f"{task}_loss": value.detach() for task, value in losses.items()})
        total = sum(self.loss_weights[task] * value for task, value in losses.items())
        return {"loss": total, **stats}


class TextureStageModule(UnifiedParsingModule):
    """The texture stage (`train.py --stage texture`): the encoder and decoder stay as they are (no gradients, batch
    norms in eval mode whatever `train()` says); the texture head learns from images of one texture each.

    `forward(feed_dict)` reads `img_data` and `texture` (N texture labels, the target at every pixel) and gives
    `loss`, `texture_loss` (the same value, detached) and `texture_acc`: the pixels' mean NLL and accuracy at C2's
    resolution.
    """

    def __init__(self, net_enc: nn.Module, net_dec: nn.Module, tables: LabelTables, texture: nn.Module) -> None:
        super().__init__(net_enc, net_dec, tables, texture=texture)
        for frozen in (net_enc, net_dec):
            frozen.requires_grad_(False)

    def train(self, mode: bool = True) -> TextureStageModule:
        super().train(mode)
        self.encoder.eval()
        self.decoder.eval()
        return self

    def forward(self, feed_dict: dict, segSize=None):
        if segSize is not None:
            return super().forward(feed_dict, segSize)
        with torch.no_grad():
            c2 = self.encoder(feed_dict["img_data"], return_feature_maps=True)[0]
        log_probs = F.log_softmax(self.texture(c2).float(), dim=1)
        target = feed_dict["texture"][:, None, None].expand(-1, *log_probs.shape[-2:])
        loss = masked_nll(log_probs, target, -1)
        return {"loss": loss, "texture_loss": loss.detach(), "texture_acc": accuracy(log_probs, target, -1)}
