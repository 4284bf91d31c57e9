"""Writing checkpoints atomically, and the resume state that makes a continued run exact."""

from __future__ import annotations

import glob
import os
import random
import re

import numpy as np
import torch

STATE_NAME = "train_state"  # resume states are <prefix>train_state_epoch_E_iter_I.pth


def atomic_save(obj: object, path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a truncated file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def state_path(directory: str, epoch: int, iteration: int, prefix: str = "") -> str:
    """Resume state after `iteration` steps of epoch `epoch` (1-based); a finished epoch has iteration 0 of the next.
    `prefix`: a training stage's (`Task.files_prefix`)."""
    return os.path.join(directory, f"{prefix}{STATE_NAME}_epoch_{epoch}_iter_{iteration}.pth")


def latest_state(directory: str, prefix: str = "") -> str | None:
    """The resume state (of the stage with `prefix`) furthest into training in `directory`, if any."""
    found = []
    pattern = re.compile(rf"{re.escape(prefix)}{STATE_NAME}_epoch_(\d+)_iter_(\d+)\.pth")
    for path in glob.glob(os.path.join(glob.escape(directory), f"{prefix}{STATE_NAME}_*.pth")):
        match = pattern.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return max(found)[2] if found else None


def load_state(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
