"""`train.py`: the command line of training, on the CPU, one or many GPUs, or one process per GPU (torchrun)."""

from __future__ import annotations

import argparse
import logging
import os

import torch
import torch.distributed as dist

from .. import cli
from ..config import ConfigError, load_config
from ..tasks import STAGES
from .loop import Runtime, TrainingError, train

log = logging.getLogger("mit_semseg")
PROG = "train.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a segmentation network.",
        epilog="Example: python train.py --cfg config/ade20k-resnet50dilated-ppm_deepsup.yaml --gpus 0-7 "
        "TRAIN.num_epoch 30",
    )
    parser.add_argument("--cfg", required=True, metavar="FILE", help="config file")
    parser.add_argument(
        "--gpus",
        default="0",
        help="GPUs to use: 0-7, 0,2,4,6, 0 or cpu (default: 0). "
        "Under torchrun each process uses the GPU of its LOCAL_RANK",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the latest resume state in DIR")
    parser.add_argument(
        "--init-from",
        metavar="SOURCE",
        help="fine-tune: start from these weights as far as they fit, the classifiers fresh (MODEL.init_from): "
        "a released model's name, a checkpoint folder, FOLDER/epoch_N or ENCODER.pth,DECODER.pth",
    )
    parser.add_argument(
        "--stage",
        choices=list(STAGES),
        help="train a stage of the config's model instead (TRAIN.stage): texture, a texture head on a trained Unified "
        "Perceptual Parsing model (TRAIN.texture_from), everything else frozen",
    )
    parser.add_argument(
        "--stop-after-epoch",
        type=int,
        metavar="N",
        help="stop once epoch N is done, resumable with --resume (for time-limited jobs)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def runtime_for(devices: list[torch.device]) -> Runtime:
    """This process's devices; under torchrun (which sets LOCAL_RANK) the one of its LOCAL_RANK, in the process group
    (also for a single process, so that torchrun always runs the distributed code)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if "LOCAL_RANK" not in os.environ:
        return Runtime(devices)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = devices[0].type == "cuda"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Runtime([device], rank, world_size, launched=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        extra = (["MODEL.init_from", args.init_from] if args.init_from else []) + (
            ["TRAIN.stage", args.stage] if args.stage else []
        )
        cfg = load_config(args.cfg, args.opts + extra)
        runtime = runtime_for(cli.devices(args.gpus, PROG))
    except (ConfigError, ValueError) as err:
        return cli.usage(PROG, err)
    try:
        position = train(cfg, runtime, resume=args.resume, stop_after_epoch=args.stop_after_epoch)
        if position.interrupted:
            return cli.INTERRUPTED
        if dist.is_initialized():
            dist.barrier()  # every rank done before any tears its process group down (one rank aborted at exit once)
        if runtime.main:
            done = "finished" if position.finished else f"stopped after epoch {position.epoch}"
            print(f"training {done}; checkpoints in {cfg.DIR}")
        return 0
    except KeyboardInterrupt:
        return cli.INTERRUPTED
    except (TrainingError, *cli.RUN_ERRORS) as err:
        log.error("%s: error: %s", PROG, err)
        return cli.FAILED
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
