"""Write a checkpoint of ours in another project's format (`mmseg` and `hf` are the libraries):

    python -m mit_semseg.convert --cfg config/cityscapes-resnet50-upernet-512x1024-40k.yaml \
        --checkpoint epoch_10.pth --to mmseg upernet_r50.pth
    python -m mit_semseg.convert --cfg CFG --checkpoint CKPT --to hf OUT_DIR

`--to mmseg`: mmsegmentation's single file (`meta` with the class names and colours, `state_dict` under `backbone.`,
`decode_head.` and `auxiliary_head.`) of a ResNetV1c model with its UPerHead (`uperhead`) or PSPHead (`ppm`). The
auxiliary head, which our epoch checkpoints leave out, comes from DIR's resume state when that state holds these
weights (training ended there), or from `--aux-from STATE`; without one the file has no `auxiliary_head.`, and
mmsegmentation loads it into a config without one (or with strict=False).

`--to hf`: a folder transformers' `UperNetForSemanticSegmentation.from_pretrained` loads (config.json,
model.safetensors) of a ConvNeXt model with its UPerHead (`uperhead`), the auxiliary head as above.
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import checkpoints, cli, hf, mmseg
from .config import load_config
from .data.classes import config_colors
from .errors import ConfigError
from .tasks import task_for

PROG = "python -m mit_semseg.convert"


def _aux_state(cfg, encoder_state: dict, aux_from: str | None) -> dict:
    """The auxiliary head's weights: from `aux_from` (a resume state), else from DIR's latest resume state when it is
    the checkpoint's moment (the same encoder weights); {} when there is none or the model has no auxiliary head."""
    if not cfg.MODEL.aux_head:
        return {}
    path = aux_from or checkpoints.latest_state(cfg.DIR)
    if path is None:
        return {}
    state = checkpoints.load_state(path)
    same = state["encoder"].keys() == encoder_state.keys() and all(
        torch.equal(state["encoder"][k], v) for k, v in encoder_state.items()
    )
    if not same and not aux_from:
        return {}
    return state.get("training_parts", {}).get("aux_head", {})


def _checkpoint(cfg, checkpoint: str) -> tuple[list[str], dict, dict]:
    """The class names, and the encoder's and decoder's weights of the config's `checkpoint`."""
    task = task_for(cfg)
    files = task.model.files(checkpoint)
    encoder, decoder = (torch.load(files[p], map_location="cpu", weights_only=True) for p in ("encoder", "decoder"))
    return task.prediction.class_names(), encoder, decoder


def to_mmseg(cfg, checkpoint: str, out: str, aux_from: str | None = None) -> mmseg.Parts:
    """Write the model `checkpoint` of the config `cfg` as mmsegmentation's file `out`; returns what was written."""
    m = cfg.MODEL
    if m.arch_encoder not in mmseg.ENCODERS or m.arch_decoder not in {h.decoder for h in mmseg.HEADS.values()}:
        raise ConfigError(
            f"--to mmseg: {m.arch_encoder} + {m.arch_decoder} is none of mmsegmentation's models here "
            f"(encoders {', '.join(mmseg.ENCODERS)}; decoders uperhead, ppm)"
        )
    names, encoder, decoder = _checkpoint(cfg, checkpoint)
    colors = config_colors(cfg)[: len(names)].tolist()
    meta = {"CLASSES": names, "PALETTE": colors, "dataset_meta": {"classes": names, "palette": colors}}
    parts = mmseg.Parts(m.arch_decoder, encoder, decoder, _aux_state(cfg, encoder, aux_from), meta)
    mmseg.write(out, parts)
    return parts


def to_hf(cfg, checkpoint: str, out: str, aux_from: str | None = None) -> hf.HFModel:
    """Write the model `checkpoint` of the config `cfg` as a Hugging Face UperNet folder `out`; returns what was
    written."""
    m = cfg.MODEL
    backbones = [b.prefix for b in hf.BACKBONES.values()]
    if m.arch_decoder != "uperhead" or not m.arch_encoder.startswith(tuple(backbones)):
        raise ConfigError(
            f"--to hf: {m.arch_encoder} + {m.arch_decoder} is none of Hugging Face's UperNets here "
            f"(encoders {', '.join(p + '*' for p in backbones)}; decoder uperhead)"
        )
    names, encoder, decoder = _checkpoint(cfg, checkpoint)
    aux = _aux_state(cfg, encoder, aux_from)
    model = hf.HFModel(m.arch_encoder, names, encoder, decoder, aux, m.input_normalisation)
    hf.write_folder(out, model)
    return model


# --to: the writer of each format, and what its output is called
FORMATS = {"mmseg": (to_mmseg, "mmsegmentation's file"), "hf": (to_hf, "a Hugging Face UperNet folder")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Write a checkpoint of ours in another project's format.")
    parser.add_argument("--cfg", required=True, metavar="FILE", help="the model's config (a preset)")
    parser.add_argument("--checkpoint", help="the checkpoint in DIR (default TEST.checkpoint), or another's file")
    parser.add_argument(
        "--to",
        required=True,
        choices=list(FORMATS),
        help="mmseg (mmsegmentation's .pth) or hf (a folder for transformers)",
    )
    parser.add_argument("--aux-from", metavar="STATE", help="a resume state holding the auxiliary head's weights")
    parser.add_argument("out", help="the file (mmseg) or folder (hf) to write")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.cfg, args.opts)
    except (ConfigError, ValueError) as err:
        return cli.usage(PROG, err)
    write, what = FORMATS[args.to]
    try:
        parts = write(cfg, args.checkpoint or cfg.TEST.checkpoint, args.out, args.aux_from)
    except ConfigError as err:
        return cli.usage(PROG, err)
    except (ModuleNotFoundError, *cli.RUN_ERRORS) as err:
        return cli.fail(PROG, err)
    aux = "with" if parts.aux_state else "without"
    print(f"wrote {args.out}: {what}, {cfg.MODEL.arch_encoder} + {cfg.MODEL.arch_decoder}, {aux} auxiliary head")
    if cfg.MODEL.aux_head and not parts.aux_state:
        print("  (no resume state of this checkpoint's moment in DIR holds it: give --aux-from STATE)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
