"""Export a model to ONNX (`onnx_runtime` is the library):

    python -m mit_semseg.export --model ade20k-resnet50-upernet --out upernet.onnx
    python -m mit_semseg.export --cfg config/my.yaml --checkpoint epoch_20.pth --out mine.onnx [KEY VALUE ...]

See `onnx_runtime` for the file's input and outputs.
"""

from __future__ import annotations

import argparse

from . import checkpoints, cli, zoo
from .config import load_config
from .errors import ConfigError
from .onnx_runtime import INPUT, export_onnx
from .tasks import task_for

PROG = "python -m mit_semseg.export"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Export a model to ONNX (dynamic batch, height, width).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=cli.model_name, metavar="NAME", help=cli.MODEL_HELP)
    source.add_argument("--cfg", metavar="FILE", help="config file; weights DIR/{encoder,decoder}_<--checkpoint>")
    parser.add_argument("--checkpoint", help="with --cfg: the checkpoint (default TEST.checkpoint)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    released = args.model in zoo.MODELS
    try:
        if args.model and not released:  # a Hugging Face UperNet, converted once
            _, checkpoint, options = checkpoints.hf_model(args.model)
            cfg = load_config(None, [*options, *args.opts])
        else:
            cfg = load_config(zoo.config_path(args.model) if args.model else args.cfg, args.opts)
            checkpoint = args.checkpoint or cfg.TEST.checkpoint
        task = task_for(cfg)
    except (ConfigError, ValueError) as err:
        return cli.usage(PROG, err)
    except (ModuleNotFoundError, *cli.RUN_ERRORS) as err:
        return cli.fail(PROG, err)
    try:
        if released:
            cfg.DIR, checkpoint = checkpoints.fetch_released(args.model), checkpoints.released_checkpoint(args.model)
        model = task.model.build(task.model.files(checkpoint), inference=True)
        path = export_onnx(task.export, model, args.out, cfg.dump())
    except (ModuleNotFoundError, *cli.RUN_ERRORS) as err:
        return cli.fail(PROG, err)
    names = task.export.output_names(model)
    print(
        f"wrote {path}: input {INPUT} (N x 3 x H x W, {cfg.MODEL.input_normalisation} normalisation), outputs "
        f"{', '.join(names[:4])}{', ...' if len(names) > 4 else ''}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
