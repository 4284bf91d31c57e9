import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# A copy of shared/reference/state_dict_layout.json: the original's keys, shapes and feature maps.
LAYOUT = Path(__file__).resolve().parent / "data" / "state_dict_layout.json"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's cache, and no download leaves this machine."""
    from httpserver import closed_port_url
    monkeypatch.setenv("MIT_SEMSEG_HOME", str(tmp_path / "cache"))
    nowhere = closed_port_url("/")
    monkeypatch.setenv("MIT_SEMSEG_PRETRAINED_URL", nowhere)
    monkeypatch.setenv("MIT_SEMSEG_MODEL_URL", nowhere)
