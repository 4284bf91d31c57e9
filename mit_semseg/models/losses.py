"""The segmentation's pixel loss: the original's NLL over log-probabilities, with the options for imbalanced classes
(class weights, mmsegmentation's OHEM pixel sampling, a Lovász-softmax term)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -1  # the label of unlabelled pixels


def ohem_kept(log_probs: torch.Tensor, label: torch.Tensor, threshold: float, min_kept: int, weights=None):
    """mmsegmentation's OHEMPixelSampler: the labelled pixels (N x H x W, bool) a loss keeps.

    With a `threshold`: those whose true class has a probability below max(threshold, the probability of the
    least sure pixel after the `min_kept` x N least sure ones), so at least that many. Without (0): the
    `min_kept` x N pixels of highest loss (weighted by `weights`, the class weights).
    """
    with torch.no_grad():
        valid = label != IGNORE
        true = log_probs.gather(1, label.clamp(min=0).unsqueeze(1)).squeeze(1)[valid]
        budget = min_kept * label.shape[0]
        chosen = torch.zeros_like(true, dtype=torch.bool)
        if threshold > 0:
            probability = true.exp()
            if probability.numel():
                least_sure = probability.sort().values[min(budget, probability.numel() - 1)]
                chosen = probability < max(float(least_sure), threshold)
        else:
            loss = -true if weights is None else -true * weights[label[valid]]
            chosen[loss.sort(descending=True).indices[:budget]] = True
        kept = torch.zeros_like(valid)
        kept[valid] = chosen
        return kept


def _jaccard_steps(foreground: torch.Tensor) -> torch.Tensor:
    """For pixels sorted by error, largest first: the Jaccard loss of mispredicting the first k of them, minus
    that of the first k - 1 (the Lovász extension's weights)."""
    total = foreground.sum()
    intersection = total - foreground.cumsum(0)
    union = total + (1.0 - foreground).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax(log_probs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Berman et al.'s Lovász-softmax (CVPR 2018) over the batch's labelled pixels: for each class present in the
    labels, the Lovász extension of its Jaccard loss at the errors |[label = c] - p_c|; their mean."""
    valid = label != IGNORE
    probs = log_probs.exp().permute(0, 2, 3, 1)[valid]  # pixels x classes
    target = label[valid]
    if not target.numel():
        return probs.sum() * 0.0
    losses = []
    for c in target.unique():
        foreground = (target == c).to(probs.dtype)
        errors, order = (foreground - probs[:, c]).abs().sort(descending=True)
        losses.append(errors @ _jaccard_steps(foreground[order]))
    return torch.stack(losses).mean()


# TRAIN.extra_loss: region terms over (log-probabilities, label)
EXTRA_LOSSES = {"lovasz": lovasz_softmax}


class PixelLoss(nn.Module):
    """NLL of log-probabilities (N x C x H x W) against labels (N x H x W, -1 unlabelled).

    Without options it is the original's `nn.NLLLoss(ignore_index=-1)`. `class_weights` weigh each pixel by its
    true class (the weighted mean, as torch's). With `ohem_min_kept`, only `ohem_kept`'s pixels count, their sum
    divided by the label map's size, a labelled pixel counted at its class weight, as mmsegmentation's
    CrossEntropyLoss averages (with class weights, it fails on unlabelled pixels; they count 1 here). `extra` names
    an `EXTRA_LOSSES` term added times `extra_weight`.
    """

    def __init__(
        self,
        class_weights: torch.Tensor | None = None,
        ohem_threshold: float = 0.0,
        ohem_min_kept: int = 0,
        extra: str = "",
        extra_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.ohem_threshold, self.ohem_min_kept = ohem_threshold, ohem_min_kept
        self.extra, self.extra_weight = (EXTRA_LOSSES[extra] if extra else None), extra_weight

    def forward(self, log_probs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        log_probs = log_probs.float()
        weights = None if self.class_weights is None else self.class_weights.float()
        if self.ohem_min_kept:
            kept = ohem_kept(log_probs, label, self.ohem_threshold, self.ohem_min_kept, weights)
            per_pixel = F.nll_loss(log_probs, label, weight=weights, ignore_index=IGNORE, reduction="none")
            size = (
                label.numel()
                if weights is None
                else torch.where(label != IGNORE, weights[label.clamp(min=0)], 1.0).sum()
            )
            loss = (per_pixel * kept).sum() / size
        else:
            loss = F.nll_loss(log_probs, label, weight=weights, ignore_index=IGNORE)
        if self.extra is not None:
            loss = loss + self.extra_weight * self.extra(log_probs, label)
        return loss
