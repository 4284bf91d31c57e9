"""`auto` precision picks bf16 only where the device runs it natively; asking for bf16 where it is emulated warns."""

import logging

import pytest
import torch

from mit_semseg import precision


@pytest.fixture
def fake_cpu(monkeypatch):
    def use(features):
        monkeypatch.setattr(
            precision, "cpu_description", lambda: {"cpu": "Test CPU 9000", "features": features, "kernels": "AVX2"}
        )

    return use


@pytest.mark.parametrize(
    "features, expected",
    [
        (["avx2"], None),
        (["avx2", "avx512f"], None),
        (["avx2", "avx512f", "avx512_bf16"], torch.bfloat16),
        (["avx2", "amx_bf16"], torch.bfloat16),
    ],
)
def test_auto_picks_bf16_only_on_cpus_with_native_bf16(fake_cpu, features, expected):
    fake_cpu(features)
    assert precision.inference_dtype("auto", "cpu") is expected
    assert precision.training_amp("auto", "cpu") == ("bf16" if expected else "none")
    assert precision.inference_dtype("fp32", "cpu") is None


def test_bf16_where_emulated_warns_naming_the_cpu(fake_cpu, caplog):
    fake_cpu(["avx2"])
    with caplog.at_level(logging.WARNING, logger="mit_semseg"):
        assert precision.inference_dtype("bf16", "cpu", "Segmenter") is torch.bfloat16
        assert precision.training_amp("bf16", "cpu") == "bf16"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("Test CPU 9000" in w and "emulated" in w for w in warnings)
    assert warnings[0].startswith("Segmenter:") and warnings[1].startswith("TRAIN.amp:")


def test_bf16_where_native_does_not_warn(fake_cpu, caplog):
    fake_cpu(["avx2", "avx512_bf16"])
    with caplog.at_level(logging.WARNING, logger="mit_semseg"):
        precision.inference_dtype("bf16", "cpu")
    assert not caplog.records


def test_unknown_precision_is_named():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp64'"):
        precision.inference_dtype("fp64", "cpu")


def test_this_machine_is_described():
    line = precision.describe_cpu()
    assert ("native bf16" in line) == precision.cpu_has_native_bf16()
    assert torch.backends.cpu.get_cpu_capability() in line


@pytest.mark.parametrize(
    "pretended, expected",
    [
        ("avx2", None),
        ("avx2,avx512f", None),
        ("", None),
        ("avx2,avx512f,avx512_bf16", torch.bfloat16),
        ("avx2, amx_bf16", torch.bfloat16),
    ],
)
def test_pretended_cpu_features_decide_auto(monkeypatch, pretended, expected):
    """$MIT_SEMSEG_CPU_FEATURES replaces what the CPU reports, so both outcomes of auto run on any machine."""
    monkeypatch.setenv("MIT_SEMSEG_CPU_FEATURES", pretended)
    assert precision.inference_dtype("auto", "cpu") is expected
    assert precision.training_amp("auto", "cpu") == ("bf16" if expected else "none")
    line = precision.describe_cpu()
    assert "$MIT_SEMSEG_CPU_FEATURES" in line and ("native bf16" in line) == (expected is not None)
    monkeypatch.delenv("MIT_SEMSEG_CPU_FEATURES")
    assert "$MIT_SEMSEG_CPU_FEATURES" not in precision.describe_cpu()
