import fcntl
import json
import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in two pytest-xdist workers: one thread each, and each program a test starts (its
    # environment inherits this), so that together they fill two cores without contending for them.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
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
    monkeypatch.setenv("MIT_SEMSEG_OPENMMLAB_URL", nowhere)
    monkeypatch.setenv("MIT_SEMSEG_BRODEN_MIRROR", nowhere)
    monkeypatch.setenv("MIT_SEMSEG_OPENSURFACES_MIRROR", nowhere)
    # huggingface_hub (`hub.hf_snapshot` reads these when called): an empty cache, a Hub where nothing answers
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", nowhere.rstrip("/"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """`helpers.train_small_model`'s model, trained once for the whole run: the first worker to ask trains it (under a
    lock), the others read it. Returns (root, options of `helpers.TRAINED_CONFIG`); tests must not change its files."""
    from helpers import train_small_model

    run = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run = run.parent  # the run's folder, above each worker's
    root = run / "trained"
    with open(run / "trained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = root / "options.json"
        if not made.exists():
            root.mkdir(exist_ok=True)
            made.write_text(json.dumps(train_small_model(root)))
    return root, json.loads(made.read_text())


# The files that take longest, first: `make test` hands tests (a file marked xdist_group whole) to its two xdist
# workers in collection order, so that both finish near the same time when the long ones do not come last.
SLOWEST_FILES = (
    "test_export.py",
    "test_recipes.py",
    "test_upp_end_to_end.py",
    "test_training.py",
    "test_broden.py",
    "test_evaluation.py",
    "test_models.py",
    "test_inference.py",
    "test_serve.py",
    "test_finetune.py",
    "test_tasks.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept
