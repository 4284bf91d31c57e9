"""Choosing the compute precision: bfloat16 only where the device runs it natively.

On CPUs without `avx512_bf16` or AMX (most AVX2 machines) bfloat16 is emulated and runs about
8x slower than float32, so `auto` picks it only on CPUs with native support and on GPUs that have
it (compute capability 8.0 and newer). $MIT_SEMSEG_CPU_FEATURES (comma-separated flags, such as
`avx2` or `avx2,avx512_bf16`) pretends the CPU has exactly those features: to see or test what
`auto` does on another CPU.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from contextlib import nullcontext

import torch

log = logging.getLogger("mit_semseg")

INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")
# /proc/cpuinfo flag: torch.cpu.get_capabilities() key
CPU_FEATURES = {"avx2": "avx2", "avx512f": "avx512_f", "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16"}
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16")  # the last: aarch64's flag
PRETEND_FEATURES = "MIT_SEMSEG_CPU_FEATURES"


def cpu_description() -> dict:
    """The CPU's name, the SIMD features that matter here (or those $MIT_SEMSEG_CPU_FEATURES pretends), and the
    kernels torch runs."""
    found = _detected_cpu()
    pretended = os.environ.get(PRETEND_FEATURES)
    if pretended is None:
        return found
    return {**found, "features": [f.strip() for f in pretended.split(",") if f.strip()], "pretended": True}


@functools.cache
def _detected_cpu() -> dict:
    try:
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        capabilities = {}
    name = capabilities.get("cpu_name") or platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        name = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), name)
        flags = set(next((l.split(":", 1)[1].split() for l in lines if l.startswith(("flags", "Features"))), []))
    except OSError:
        flags = set()
    features = [flag for flag, key in CPU_FEATURES.items() if capabilities.get(key) or flag in flags]
    if platform.machine() in ("aarch64", "arm64") and "bf16" in flags:
        features.append("bf16")
    return {"cpu": name, "features": features, "kernels": torch.backends.cpu.get_cpu_capability()}


def describe_cpu() -> str:
    """One line: the CPU, its relevant features and torch's kernels, for logs and bench headers."""
    d = cpu_description()
    native = "native bf16" if cpu_has_native_bf16() else "bf16 emulated"
    features = ", ".join(d["features"]) or "no AVX2"
    if d.get("pretended"):
        features = f"pretending {features or 'none'} (${PRETEND_FEATURES})"
    return f"{d['cpu']} ({features}; {native}; torch kernels {d['kernels']})"


def describe_device(device: torch.device | str) -> str:
    """The CPU line of `describe_cpu`, or the GPU's name."""
    device = torch.device(device)
    return describe_cpu() if device.type == "cpu" else f"{torch.cuda.get_device_name(device)} ({device})"


def cpu_has_native_bf16() -> bool:
    features = cpu_description()["features"]
    return any(f in features for f in NATIVE_BF16_FEATURES)


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes in bfloat16 in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()


def warn_if_emulated(device: torch.device | str, what: str) -> None:
    """A warning, naming the CPU, when bfloat16 is asked for where it is emulated."""
    if not native_bf16(device):
        where = describe_device(device)
        log.warning(
            "%s: bf16 was asked for, but %s has no native bfloat16 (avx512_bf16 or AMX): it is emulated "
            "there and runs several times slower than fp32; use auto or fp32",
            what,
            where,
        )


def inference_dtype(precision: str, device: torch.device | str, what: str = "inference") -> torch.dtype | None:
    """The autocast dtype for `precision` (auto, fp32 or bf16) on `device`; None means plain float32."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got '{precision}'")
    if precision == "bf16":
        warn_if_emulated(device, what)
        return torch.bfloat16
    if precision == "auto" and native_bf16(device):
        return torch.bfloat16
    return None


def training_amp(amp: str, device: torch.device | str) -> str:
    """TRAIN.amp resolved for `device`: `auto` becomes bf16 where it is native, else none."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    if amp == "bf16":
        warn_if_emulated(device, "TRAIN.amp")
    return amp


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """torch.autocast to `dtype` on `device`'s type, or nothing for None (plain float32)."""
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else nullcontext()
