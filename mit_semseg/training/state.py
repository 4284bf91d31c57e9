"""What a resume state holds besides weights: the random states and the training-only parts (files: `checkpoints`)."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """The random states of python, numpy and torch, in types `weights_only` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_parts(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The model's parts with weights that serve training only (an auxiliary head): in the resume state, not in the
    epoch checkpoints."""
    return {
        name: part
        for name, part in model.named_children()
        if name not in ("encoder", "decoder") and any(True for _ in part.parameters())
    }
