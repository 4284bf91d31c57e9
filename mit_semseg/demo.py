"""`make demo` (and `python -m mit_semseg.demo --upp`): generate a synthetic set, train a small model from
scratch on the CPU, evaluate it and segment a few images, all with the project's own commands, into one folder."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from . import evaluation, predict
from .checkpoints import part_name
from .synthetic import scenes as synthetic
from .synthetic import upp as synthetic_upp
from .training import cli as train_cli

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Demo:
    data: str  # where the generator writes the set
    generator: object  # its module, with main(argv)
    record_list: str  # a file the generator writes last
    config: str
    model: str  # in words
    out: str
    checkpoint: str
    images: str  # a glob of images to segment
    outputs: str  # what `test.py` writes per image
    stages: tuple[str, ...] = ()  # `train.py --stage`s run after the training


DEMOS = {
    "segmentation": Demo(
        "data/synthetic",
        synthetic,
        "validation.odgt",
        "config/synthetic-mobilenetv2dilated-c1_deepsup.yaml",
        "mobilenetv2dilated + c1_deepsup",
        "demo_output",
        "epoch_3",
        "images/validation/synthetic_validation_0000*.jpg",
        "image | prediction, and the label files",
    ),
    "upp": Demo(
        "data/synthetic_upp",
        synthetic_upp,
        "texture_validation.jsonl",
        "config/synthetic-resnet18-upp_lite.yaml",
        "resnet18 + upp_lite (scene, objects, parts, materials)",
        "demo_output_upp",
        "epoch_4",
        "images/validation/syn_upp_0000*.jpg",
        "image with its scene | objects | parts | materials | textures, the label files and <name>.json",
        ("texture",),
    ),
}


def _run(title: str, command: list[str], main) -> None:
    print(f"\n=== {title}\n$ python {shlex.join(command)}", flush=True)
    code = main(command[1:])
    if code:
        sys.exit(f"demo: '{command[0]}' failed (exit code {code})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upp", action="store_true", help="the Unified Perceptual Parsing demo (multi-task)")
    demo = DEMOS["upp" if parser.parse_args(argv).upp else "segmentation"]
    os.chdir(REPO)
    if not os.path.isfile(os.path.join(demo.data, demo.record_list)):
        _run(
            "1/4 generate the synthetic set",
            [f"-m {demo.generator.__name__}", "--out", demo.data],
            lambda args: demo.generator.main(args) or 0,
        )
    common = ["DIR", demo.out]
    _run(
        f"2/4 train {demo.model} from scratch on the CPU (a few minutes)",
        ["train.py", "--cfg", demo.config, "--gpus", "cpu", *common],
        train_cli.main,
    )
    for stage in demo.stages:
        _run(
            f"2/4 then the {stage} stage: a {stage} head on the trained model, the rest frozen",
            ["train.py", "--cfg", demo.config, "--gpus", "cpu", "--stage", stage, *common],
            train_cli.main,
        )
    _run(
        "3/4 evaluate on the validation set",
        ["eval_multipro.py", "--cfg", demo.config, "--gpus", "cpu", *common],
        evaluation.main,
    )
    pictures = f"{demo.out}/pictures"
    _run(
        "4/4 segment a few validation images",
        [
            "test.py",
            "--imgs",
            f"{demo.data}/{demo.images}",
            "--cfg",
            demo.config,
            "--gpu",
            "cpu",
            *common,
            "TEST.result",
            pictures,
        ],
        predict.main,
    )
    print(_summary(demo))


def _summary(demo) -> str:
    return (
        f"\ndemo: done. Everything is in {os.path.abspath(demo.out)}/:\n"
        f"  training.png        loss and accuracies against epochs\n"
        f"  eval_{demo.checkpoint}.json   metrics\n"
        f"  pictures/           {demo.outputs}\n"
        f"  train.log, checkpoints {part_name('encoder', 'epoch_*.pth')} and {part_name('decoder', 'epoch_*.pth')}"
        + "".join(f"\n  {s}_*               the {s} stage's head, history, plot and config" for s in demo.stages)
    )


if __name__ == "__main__":
    main()
