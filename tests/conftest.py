import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# A copy of shared/reference/state_dict_layout.json: the original's keys, shapes and feature maps.
LAYOUT = Path(__file__).resolve().parent / "data" / "state_dict_layout.json"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_report_header(config):
    from mit_semseg.precision import describe_cpu
    requested = os.environ.get("ATEN_CPU_CAPABILITY", "(not set)")
    return f"CPU: {describe_cpu()}; ATEN_CPU_CAPABILITY={requested}"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's cache, and no download leaves this machine."""
    from httpserver import closed_port_url
    monkeypatch.setenv("MIT_SEMSEG_HOME", str(tmp_path / "cache"))
    nowhere = closed_port_url("/")
    monkeypatch.setenv("MIT_SEMSEG_PRETRAINED_URL", nowhere)
    monkeypatch.setenv("MIT_SEMSEG_MODEL_URL", nowhere)
    monkeypatch.setenv("MIT_SEMSEG_BRODEN_MIRROR", nowhere)
    monkeypatch.setenv("MIT_SEMSEG_OPENSURFACES_MIRROR", nowhere)


def write_small_tables(folder: Path) -> Path:
    """Label tables of a small multi-task set: 3 objects (table and chair with parts), 2 scenes, 2 materials."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "object.csv").write_text("label,name\n0,-\n1,table\n2,wall\n3,chair\n")
    (folder / "part.csv").write_text("label,name\n0,-\n1,leg\n2,top\n3,seat\n")
    (folder / "scene.csv").write_text("label,name\n0,kitchen\n1,street\n")
    (folder / "material.csv").write_text("label,name\n0,-\n1,wood\n2,brick\n")
    (folder / "object_part_hierarchy.csv").write_text(
        "object_label,object_name,part_labels,part_names\n1,table,0;1;2,-;leg;top\n3,chair,0;1;3,-;leg;seat\n")
    return folder
