"""Shared by the bench scripts: a description of the machine, models with random weights, results as JSON."""

from __future__ import annotations

import json
import os
import platform

import torch

from mit_semseg.config import load_config
from mit_semseg.models import ENCODERS
from mit_semseg.precision import cpu_description, cpu_has_native_bf16, describe_cpu
from mit_semseg.tasks import Task, task_for


def model_for(pair: str, num_class: int = 150, inference: bool = False) -> torch.nn.Module:
    """The task's module of `ENCODER+DECODER` with random weights, from the project's model factory."""
    return task_for_pair(pair, num_class).model.build(inference=inference)


def task_for_pair(pair: str, num_class: int = 150) -> Task:
    """The task of a config with the encoder and decoder of `ENCODER+DECODER`, and random weights."""
    encoder, decoder = pair.split("+")
    cfg = load_config(
        None,
        [
            "MODEL.arch_encoder",
            encoder,
            "MODEL.arch_decoder",
            decoder,
            "MODEL.fc_dim",
            str(ENCODERS[encoder].fc_dim),
            "MODEL.pretrained",
            "False",
            "DATASET.num_class",
            str(num_class),
        ],
    )
    return task_for(cfg)


def machine() -> dict:
    cpu = cpu_description()
    info = {
        "cpu": cpu["cpu"],
        "cpu_features": cpu["features"],
        "native_bf16": cpu_has_native_bf16(),
        "torch_cpu_kernels": cpu["kernels"],
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_machine(info: dict) -> None:
    print(
        f"machine: {describe_cpu()}, {info['threads']} torch threads of {info['cores']} cores, "
        f"torch {info['torch']}, python {info['python']}, GPU: {info['gpu'] or 'none'}"
    )


def write_results(name: str, results: dict) -> str:
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path
