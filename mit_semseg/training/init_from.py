"""MODEL.init_from (`train.py --init-from`): start training from another model's weights, for other classes.

The source is a released model's name (`ade20k-resnet50-upernet`), a checkpoint folder (its latest
epoch) or one of its epochs (`ckpt/run/epoch_20`), or an encoder and a decoder file
(`enc.pth,dec.pth`). Every tensor whose name and shape fit is loaded; the decoder's layers whose
shapes depend on the classes (its `class_layers`: the classifiers, deep supervision's included; for
Unified Perceptual Parsing the heads whose tables differ in size) that do not fit stay freshly
initialised; anything else that does not fit is an error naming the keys. Unlike `--resume`, no
optimizer or position is restored; unlike MODEL.weights_*, the loading is not strict.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from torch import nn

from .. import zoo
from ..models.checkpoint import load_matching
from ..nn.batchnorm import COMPAT_BUFFERS

FORMS = "a released model's name, a checkpoint folder, FOLDER/epoch_N, or ENCODER.pth,DECODER.pth"


def checkpoint_files(source: str, key: str = "MODEL.init_from") -> dict[str, str]:
    """{"encoder": path, "decoder": path} of an init_from source (see the module's docstring); errors name `key`."""
    if source in zoo.MODELS:
        directory, epoch = zoo.fetch(source), zoo.lookup(source).epoch
        return {part: os.path.join(directory, f"{part}_epoch_{epoch}.pth") for part in ("encoder", "decoder")}
    if "," in source:
        encoder, decoder = (p.strip() for p in source.split(",", 1))
        return {"encoder": encoder, "decoder": decoder}
    path = Path(source)
    match = re.fullmatch(r"epoch_(\d+)(\.pth)?", path.name)
    if match and path.parent.is_dir():
        folder, epochs = path.parent, [int(match.group(1))]
    elif path.is_dir():
        folder = path
        epochs = sorted(
            (
                int(m.group(1))
                for p in path.glob("decoder_epoch_*.pth")
                if (m := re.fullmatch(r"decoder_epoch_(\d+)\.pth", p.name))
            ),
            reverse=True,
        )
    else:
        raise FileNotFoundError(f"{key} '{source}': no such released model, folder or files; give {FORMS}")
    for epoch in epochs:
        files = {part: str(folder / f"{part}_epoch_{epoch}.pth") for part in ("encoder", "decoder")}
        if all(os.path.isfile(f) for f in files.values()):
            return files
    raise FileNotFoundError(f"{key} '{source}': no encoder_epoch_N.pth and decoder_epoch_N.pth pair in {folder}")


def init_from(model: nn.Module, source: str) -> str:
    """Load `source` into `model`'s encoder and decoder as far as they fit; returns what was loaded and kept fresh."""
    files = checkpoint_files(source)
    report = []
    for part in ("encoder", "decoder"):
        module = getattr(model, part)
        loaded, fresh = load_matching(module, files[part], getattr(module, "class_layers", ()), COMPAT_BUFFERS)
        line = f"{part}: {len(loaded)} tensors loaded from {files[part]}"
        if fresh:
            line += f"; initialised fresh (shapes depend on the classes): {', '.join(fresh)}"
        report.append(line)
    return f"MODEL.init_from {source}:\n  " + "\n  ".join(report)
