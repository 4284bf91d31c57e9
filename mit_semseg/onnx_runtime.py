"""ONNX export, and inference through ONNX Runtime with the project's own pre- and post-processing (the library;
`python -m mit_semseg.export` is its command line).

The file's input `image` is a normalised image batch (N x 3 x H x W, float32, MODEL.input_normalisation),
with dynamic batch, height and width; its outputs are the class probabilities at the input size
(`probabilities`; for Unified Perceptual Parsing `scene`, `object`, `material`, `part_0`.. one per
part group, and `texture` when the model has a texture head). The config is stored in the file, so
`Segmenter.from_onnx` and `test.py --onnx` predict with the same multi-scale pre- and post-processing
as the PyTorch model. `onnx`, `onnxruntime` and
`onnxscript` are an optional extra: `pip install 'mit_semseg[export]'`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from .data.records import DataError

CONFIG_KEY = "mit_semseg.config"  # the metadata entry holding the config the file was exported with
INPUT = "image"
EXAMPLE_SIZE = (64, 96)  # traced at this size; every other size works


class ExportedOutputs(Protocol):
    """What export asks of a task (its `export` role): the file's outputs for a model, and their names."""

    def output_names(self, model: nn.Module) -> list[str]: ...

    def outputs(self, model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


def _optional_extra() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModuleNotFoundError(f"ONNX needs {', '.join(missing)}: pip install 'mit_semseg[export]'")


class _Exported(nn.Module):
    """The model as the ONNX file computes it: a normalised image batch in, the task's outputs out."""

    def __init__(self, outputs: ExportedOutputs, model: nn.Module) -> None:
        super().__init__()
        self.role, self.model = outputs, model

    def forward(self, image: torch.Tensor):
        return self.role.outputs(self.model, image)


def export_onnx(outputs: ExportedOutputs, model: nn.Module, path: str | os.PathLike, config: str) -> Path:
    """Write `model` (built with `inference=True`) as an ONNX file with dynamic batch, height and width, computing
    `outputs` (a task's `export` role); `config`, the config's text, is stored in the file."""
    _optional_extra()
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = {INPUT: {0: "batch", 2: "height", 3: "width"}}
    example = torch.randn(2, 3, *EXAMPLE_SIZE)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations, not the user's to fix
        program = torch.onnx.export(
            _Exported(outputs, model.float()).eval(),
            (example,),
            dynamo=True,
            dynamic_shapes=dims,
            input_names=[INPUT],
            output_names=outputs.output_names(model),
            verbose=False,
        )
    program.save(str(path))
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, config
    onnx.save(proto, str(path))
    return path


class OnnxSession:
    """An ONNX Runtime session of an exported file: `run(image)` gives each output's log-probabilities.

    Log-probabilities behave as logits in the project's post-processing (a softmax gives the
    probabilities back), so the tasks predict from them as from a PyTorch model (see `OnnxModel`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        _optional_extra()
        import onnxruntime

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        try:
            self.session = onnxruntime.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own errors: a file that is not ONNX, a broken one
            raise DataError(f"cannot read the ONNX file {self.path}: {err}") from None
        self.names = [o.name for o in self.session.get_outputs()]
        self.config = self.session.get_modelmeta().custom_metadata_map.get(CONFIG_KEY)
        if self.config is None:
            raise DataError(f"{self.path} was not exported by mit_semseg (no {CONFIG_KEY} metadata)")

    def run(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.session.run(None, {INPUT: image.float().contiguous().cpu().numpy()})
        return {
            name: torch.from_numpy(np.log(np.maximum(p, np.finfo(np.float32).tiny)))
            for name, p in zip(self.names, outputs)
        }


class OnnxModel(nn.Module):
    """What the tasks' `predict` reads of a model, answered by an ONNX file: the "encoder" passes the image on,
    `decoder` (the task's) gives the session's log-probabilities as its logits; `attributes` are set as given."""

    def __init__(self, decoder: object, **attributes) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # where it runs: the CPU
        self.encoder = _PassImage()
        self.decoder = decoder
        for name, value in attributes.items():
            setattr(self, name, value)


class _PassImage(nn.Module):
    def forward(self, image: torch.Tensor, return_feature_maps: bool = True) -> torch.Tensor:
        return image
