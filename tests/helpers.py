"""Helpers the tests share (not tests themselves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mit_semseg.pictures import LEGEND_LIMIT, LEGEND_ROW, shares

REPO = Path(__file__).resolve().parents[1]
# A copy of shared/reference/state_dict_layout.json: the original's keys, shapes and feature maps.
LAYOUT = Path(__file__).resolve().parent / "data" / "state_dict_layout.json"


def checkpoint_weights(directory, epoch: int) -> dict:
    """{"encoder": state dict, "decoder": state dict} of DIR/{encoder,decoder}_epoch_<epoch>.pth."""
    return {
        part: torch.load(Path(directory) / f"{part}_epoch_{epoch}.pth", weights_only=True)
        for part in ("encoder", "decoder")
    }


def assert_same_weights(a: dict, b: dict) -> None:
    """Two `checkpoint_weights` results hold the same keys and exactly the same tensors."""
    for part in a:
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"


def assert_legend(panel: np.ndarray, labels: np.ndarray, colors: np.ndarray) -> None:
    """`panel` (RGB, below a coloured map) is the legend of the 0-based `labels`: one swatch per class present,
    largest first, in the class's colour, and nothing below the last (no class: all white)."""
    entries = shares(labels, len(colors))[:LEGEND_LIMIT]
    assert panel.shape[0] >= LEGEND_ROW * max(1, len(entries))
    for row, (c, _) in enumerate(entries):
        y = 2 + row * LEGEND_ROW + LEGEND_ROW // 2
        np.testing.assert_array_equal(panel[y, 4 : LEGEND_ROW - 4], np.broadcast_to(colors[c], (LEGEND_ROW - 8, 3)))
    assert (panel[2 + len(entries) * LEGEND_ROW :] == 255).all()


def write_small_tables(folder: Path) -> Path:
    """Label tables of a small multi-task set: 3 objects (table and chair with parts), 2 scenes, 2 materials."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "object.csv").write_text("label,name\n0,-\n1,table\n2,wall\n3,chair\n")
    (folder / "part.csv").write_text("label,name\n0,-\n1,leg\n2,top\n3,seat\n")
    (folder / "scene.csv").write_text("label,name\n0,kitchen\n1,street\n")
    (folder / "material.csv").write_text("label,name\n0,-\n1,wood\n2,brick\n")
    (folder / "object_part_hierarchy.csv").write_text(
        "object_label,object_name,part_labels,part_names\n1,table,0;1;2,-;leg;top\n3,chair,0;1;3,-;leg;seat\n"
    )
    return folder
