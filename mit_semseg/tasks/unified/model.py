"""The model of Unified Perceptual Parsing (encoder, UPP decoder, the texture head where there is one) with its
multi-task losses, and its multi-source training records."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from ... import checkpoints
from ...data.label_tables import HEADS, LabelTables
from ...data.multitask import build_multitask_train_loader, read_multitask_records, source_tasks
from ...data.sampling import LoaderRequest
from ...models.texture import build_texture_head
from ...models.unified import UnifiedParsingModule
from ..base import TaskModel

_WARNED: set[str] = set()  # texture head files found missing, said once
log = logging.getLogger("mit_semseg")


class UnifiedModel(TaskModel):
    """A `UnifiedParsingModule` with TRAIN.loss_weight_* over the heads; a texture head when a checkpoint has one."""

    find_unused_parameters = True  # the heads a step does not train get no gradient

    def __init__(self, cfg, tables: LabelTables) -> None:
        super().__init__(cfg)
        self.tables = tables

    def build(self, weights: Mapping[str, str] | None = None, inference: bool = False) -> UnifiedParsingModule:
        """The encoder and decoder (see `TaskModel.build`), with a texture head when `weights` has a `texture` file."""
        model = super().build(weights, inference)
        if weights and weights.get(checkpoints.TEXTURE):
            m = self.cfg.MODEL
            model.texture = build_texture_head(
                m.arch_encoder, len(self.tables.textures), weights[checkpoints.TEXTURE], m.bn_momentum
            )
        return model

    def module(self, encoder, decoder, inference: bool = False) -> UnifiedParsingModule:
        weights = {head: self.cfg.TRAIN[f"loss_weight_{head}"] for head in HEADS}
        return UnifiedParsingModule(encoder, decoder, self.tables, weights)

    def files(self, checkpoint: str) -> dict[str, str]:
        """The encoder and decoder and, when the tables have `texture.csv` and it exists, the texture head of DIR's
        `checkpoint`; without it, a warning (once) that no texture is predicted."""
        if not self.tables.textures:
            return super().files(checkpoint)
        files = checkpoints.model_files(self.cfg.DIR, checkpoint, optional=(checkpoints.TEXTURE,))
        texture = checkpoints.part_path(self.cfg.DIR, checkpoints.TEXTURE, checkpoint)
        if checkpoints.TEXTURE not in files and texture not in _WARNED:
            _WARNED.add(texture)
            log.warning(
                "no texture head (%s not found): predicting scene, objects, parts and materials; "
                "train.py --stage texture trains one",
                texture,
            )
        return files


class UnifiedData:
    """Multi-source record lists (each source labels some heads); batches of one source each, as the original."""

    def __init__(self, cfg, tables: LabelTables) -> None:
        self.cfg, self.tables = cfg, tables

    def read(self, path: str) -> list[dict]:
        d = self.cfg.DATASET
        return read_multitask_records(path, d.root_dataset, self.tables, d.check_files)

    def describe(self, records: Sequence[dict]) -> str:
        return "sources: " + "; ".join(
            f"{name} ({sum(str(r['source']) == name for r in records)} images: {', '.join(tasks)})"
            for name, tasks in source_tasks(records).items()
        )

    def loader(self, records: Sequence[dict], request: LoaderRequest):
        return build_multitask_train_loader(records, self.tables, self.cfg, request)
