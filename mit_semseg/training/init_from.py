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

from torch import nn

from ..checkpoints import source_files
from ..models.checkpoint import load_matching
from ..nn.batchnorm import COMPAT_BUFFERS


def init_from(model: nn.Module, source: str) -> str:
    """Load `source` into `model`'s encoder and decoder as far as they fit; returns what was loaded and kept fresh."""
    files = source_files(source)
    report = []
    for part in ("encoder", "decoder"):
        module = getattr(model, part)
        loaded, fresh = load_matching(module, files[part], getattr(module, "class_layers", ()), COMPAT_BUFFERS)
        line = f"{part}: {len(loaded)} tensors loaded from {files[part]}"
        if fresh:
            line += f"; initialised fresh (shapes depend on the classes): {', '.join(fresh)}"
        report.append(line)
    return f"MODEL.init_from {source}:\n  " + "\n  ".join(report)
