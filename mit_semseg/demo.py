"""`make demo`: generate the synthetic scenes, train a small model from scratch on the CPU,
evaluate it and segment a few images, all with the project's own commands, into one folder."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from . import evaluation, predict
from .data import synthetic
from .training import cli as train_cli

REPO = Path(__file__).resolve().parents[1]
CONFIG = "config/synthetic-mobilenetv2dilated-c1_deepsup.yaml"
OUT = "demo_output"


def _run(title: str, command: list[str], main) -> None:
    print(f"\n=== {title}\n$ python {shlex.join(command)}", flush=True)
    code = main(command[1:])
    if code:
        sys.exit(f"make demo: '{command[0]}' failed (exit code {code})")


def main() -> None:
    os.chdir(REPO)
    data = "data/synthetic"
    if not os.path.isfile(os.path.join(data, "validation.odgt")):
        _run("1/4 generate the synthetic scenes", ["-m mit_semseg.data.synthetic", "--out", data],
             lambda argv: synthetic.main(argv) or 0)
    common = ["DIR", OUT]
    _run("2/4 train mobilenetv2dilated + c1_deepsup from scratch on the CPU (a few minutes)",
         ["train.py", "--cfg", CONFIG, "--gpus", "cpu", *common], train_cli.main)
    _run("3/4 evaluate on the validation scenes", ["eval_multipro.py", "--cfg", CONFIG, "--gpus", "cpu", *common],
         evaluation.main)
    pictures = f"{OUT}/pictures"
    images = f"{data}/images/validation/synthetic_validation_0000*.jpg"
    _run("4/4 segment a few validation images",
         ["test.py", "--imgs", images, "--cfg", CONFIG, "--gpu", "cpu", *common, "TEST.result", pictures], predict.main)
    print(f"\nmake demo: done. Everything is in {os.path.abspath(OUT)}/:\n"
          f"  training.png        loss and pixel accuracy against epochs\n"
          f"  eval_epoch_3.json   metrics (mean IoU, accuracy, per class)\n"
          f"  pictures/           image | prediction, and the label files\n"
          f"  train.log, checkpoints encoder_epoch_*.pth and decoder_epoch_*.pth")


if __name__ == "__main__":
    main()
