import os

import pytest
import torch

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
