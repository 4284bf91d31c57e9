"""What the command-line scripts share: the devices of `--gpus`, and one convention for errors and exit codes.

Exit codes: 0 done; 1 the run failed (bad data, a missing checkpoint, a failed download or worker),
after saying why; 2 the command line or the config is wrong (as argparse does); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import hf, zoo
from .data.records import DataError
from .errors import ConfigError
from .hub import DownloadError
from .models import CheckpointError

USAGE, FAILED, INTERRUPTED = 2, 1, 130
# errors of a run that started: the message says what went wrong, and where
RUN_ERRORS = (DataError, CheckpointError, DownloadError, ConfigError, FileNotFoundError)


MODEL_HELP = (
    f"a released model, downloaded once into the cache ({', '.join(zoo.MODELS)}), or a Hugging Face UperNet: a Hub "
    "repository id (openmmlab/upernet-convnext-small) or a folder in its layout"
)


def model_name(value: str) -> str:
    """An argparse type: a released model's name or a Hugging Face UperNet's (`hf.is_hf_source`)."""
    if value in zoo.MODELS or hf.is_hf_source(value):
        return value
    raise argparse.ArgumentTypeError(
        f"'{value}' is neither a released model ({', '.join(zoo.MODELS)}) nor a Hugging Face UperNet (OWNER/NAME, "
        "or a folder with config.json)"
    )


def parse_gpus(spec: str) -> list[int]:
    """`0-7`, `0,2,4,6`, `0` or `cpu` (an empty list) as device indices."""
    spec = spec.strip().lower()
    if spec in ("cpu", ""):
        return []
    devices: list[int] = []
    try:
        for part in spec.split(","):
            if "-" in part:
                first, last = (int(v) for v in part.split("-"))
                if last < first:
                    raise ValueError
                devices += range(first, last + 1)
            else:
                devices.append(int(part))
    except ValueError:
        raise ValueError(f"--gpus '{spec}': expected a list like 0-7, 0,2,4,6, 0 or cpu") from None
    if len(set(devices)) != len(devices) or min(devices) < 0:
        raise ValueError(f"--gpus '{spec}': devices must be distinct and non-negative")
    return devices


def devices(spec: str, prog: str, option: str = "--gpus") -> list[torch.device]:
    """The devices `spec` names: the CPU for `cpu`, or when CUDA is not available (said on stderr); a GPU that is
    not visible is a ValueError."""
    gpus = parse_gpus(spec)
    if not gpus:
        return [torch.device("cpu")]
    if not torch.cuda.is_available():
        print(f"{prog}: CUDA is not available: running on the CPU", file=sys.stderr)
        return [torch.device("cpu")]
    visible = torch.cuda.device_count()
    if max(gpus) >= visible:
        raise ValueError(f"{option} asks for GPU {max(gpus)}, but only {visible} are visible (0-{visible - 1})")
    return [torch.device("cuda", g) for g in gpus]


def fail(prog: str, err: BaseException | str, code: int = FAILED) -> int:
    """Say `prog: error: ...` on stderr; returns the exit code."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return code


def usage(prog: str, err: BaseException | str) -> int:
    """A wrong command line or config: said on stderr, exit code 2."""
    return fail(prog, err, USAGE)


def interrupted(prog: str) -> int:
    print(f"{prog}: interrupted", file=sys.stderr)
    return INTERRUPTED
