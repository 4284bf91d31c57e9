"""Shared by the bench scripts: a description of the machine, and writing results as JSON."""
from __future__ import annotations

import json
import os
import platform

import torch

from mit_semseg.precision import cpu_description, cpu_has_native_bf16, describe_cpu


def machine() -> dict:
    cpu = cpu_description()
    info = {"cpu": cpu["cpu"], "cpu_features": cpu["features"], "native_bf16": cpu_has_native_bf16(),
            "torch_cpu_kernels": cpu["kernels"], "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_machine(info: dict) -> None:
    print(f"machine: {describe_cpu()}, {info['threads']} torch threads of {info['cores']} cores, "
          f"torch {info['torch']}, python {info['python']}, GPU: {info['gpu'] or 'none'}")


def write_results(name: str, results: dict) -> str:
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path
