"""DIR/run.json, the record of a training run: the command line, the config, the versions of Python and of the
libraries, the git commit of the code where there is one, the devices, the precision, the seed, and the wall time
of each epoch. Written when training starts, after each epoch and when it ends; a resumed run keeps the record of
the run before it under `previous`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data.records import write_json
from .trainer import Hook, Trainer

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict[str, str | None]:
    """Python's and the libraries' versions (CUDA's and cuDNN's where torch has them)."""
    try:
        ours = metadata.version("mit_semseg")
    except metadata.PackageNotFoundError:
        ours = None
    return {
        "python": platform.python_version(),
        "mit_semseg": ours,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def git_commit(folder: Path = PACKAGE_ROOT) -> str | None:
    """The commit the code is at, with `+changes` when it differs from it; None outside a git checkout."""
    if not (folder / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if changed else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecordHook(Hook):
    """Keeps `<prefix>run.json` in DIR (the main process's hook)."""

    def __init__(self, cfg, devices: list[str], processes: int, precision: str, prefix: str = "") -> None:
        self.path = os.path.join(cfg.DIR, f"{prefix}run.json")
        self.record = {
            "command": [sys.executable, *sys.argv],
            "config": cfg.dump(),
            "versions": versions(),
            "git_commit": git_commit(),
            "devices": devices,
            "processes": processes,
            "precision": precision,
            "seed": cfg.TRAIN.seed,
            "started": _now(),
            "ended": None,
            "end": "running",
            "epochs": [],
        }
        self.tick = 0.0

    def _write(self) -> None:
        write_json(self.path, self.record, indent=1)

    def before_train(self, trainer: Trainer) -> None:
        if trainer.position.epoch or trainer.position.iteration:  # resumed: the record of the run before it
            if os.path.isfile(self.path):
                with open(self.path) as f:
                    self.record["previous"] = json.load(f)
        self.record["start"] = {"epoch": trainer.position.epoch, "iteration": trainer.position.iteration}
        self.tick = time.perf_counter()
        self._write()

    def after_epoch(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        self.record["epochs"].append({"epoch": trainer.position.epoch, "seconds": round(now - self.tick, 3)})
        self.tick = now
        self._write()

    def after_train(self, trainer: Trainer) -> None:
        position = trainer.position
        self.record["ended"] = _now()
        self.record["end"] = "finished" if position.finished else "interrupted" if position.interrupted else "stopped"
        self.record["position"] = {"epoch": position.epoch, "iteration": position.iteration}
        self._write()
