"""`train.py`: the command line of training, on the CPU, one or many GPUs, or one process per GPU (torchrun)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

import torch
import torch.distributed as dist

from ..config import ConfigError, load_config
from ..data.records import DataError
from ..models import CheckpointError
from ..parallel import parse_gpus
from .loop import Runtime, TrainingError, train

log = logging.getLogger("mit_semseg")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a segmentation network.",
        epilog="Example: python train.py --cfg config/ade20k-resnet50dilated-ppm_deepsup.yaml --gpus 0-7 "
               "TRAIN.num_epoch 30")
    parser.add_argument("--cfg", required=True, metavar="FILE", help="config file")
    parser.add_argument("--gpus", default="0", help="GPUs to use: 0-7, 0,2,4,6, 0 or cpu (default: 0). "
                        "Under torchrun each process uses the GPU of its LOCAL_RANK")
    parser.add_argument("--resume", action="store_true", help="continue from the latest resume state in DIR")
    parser.add_argument("--stop-after-epoch", type=int, metavar="N",
                        help="stop once epoch N is done, resumable with --resume (for time-limited jobs)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def runtime_for(gpus: list[int]) -> Runtime:
    """Devices for this process; under torchrun (WORLD_SIZE > 1) also joins the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and bool(gpus)
    if gpus and not torch.cuda.is_available():
        print("CUDA is not available: training on the CPU", file=sys.stderr)
    if world_size > 1:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
        return Runtime([device], rank, world_size)
    if not cuda:
        return Runtime([torch.device("cpu")])
    available = torch.cuda.device_count()
    missing = [g for g in gpus if g >= available]
    if missing:
        raise ValueError(f"--gpus asks for GPU {missing[0]}, but only {available} are visible (0-{available - 1})")
    return Runtime([torch.device("cuda", g) for g in gpus])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.cfg, args.opts)
        runtime = runtime_for(parse_gpus(args.gpus))
    except (ConfigError, ValueError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    try:
        position = train(cfg, runtime, resume=args.resume, stop_after_epoch=args.stop_after_epoch)
        if runtime.main:
            done = "finished" if position.epoch >= cfg.TRAIN.num_epoch else f"stopped after epoch {position.epoch}"
            print(f"training {done}; checkpoints in {cfg.DIR}")
        return 0
    except KeyboardInterrupt:
        return 130
    except (ConfigError, DataError, CheckpointError, TrainingError, FileNotFoundError) as err:
        log.error("train.py: error: %s", err)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
