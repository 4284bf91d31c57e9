"""The texture stage of Unified Perceptual Parsing (`train.py --stage texture`, TRAIN.stage texture).

As the paper trains its texture head: after the rest of the network, from a trained checkpoint
(TRAIN.texture_from), on images of one texture each (DATASET.list_texture_train) resized to a short
side of TRAIN.texture_size, the image's texture the target at every pixel, the encoder and decoder
frozen. The stage has its own schedule (TRAIN.texture_num_epoch, texture_epoch_iters,
texture_batch_size_per_gpu, texture_lr) and its own files in DIR: `texture_<checkpoint>` (the head,
rewritten after each epoch), `texture_train_state_*`, `texture_history.json`, `texture_training.png`,
`texture_config.yaml`. When the checkpoint comes from outside DIR, its encoder and decoder files are
written to DIR too, so that DIR holds the whole model for evaluation and `test.py`.
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Mapping, Sequence
from functools import cached_property

from torch import nn

from .. import checkpoints
from ..data.label_tables import LabelTables, read_label_tables
from ..data.sampling import LoaderRequest
from ..data.textures import build_texture_loader, read_texture_records
from ..errors import ConfigError
from ..models.texture import build_texture_head
from ..models.unified import TextureStageModule
from ..models.upp import UPPDecoder
from .base import Stage, StageSpec
from .unified import UnifiedParsingTask
from .unified.model import UnifiedModel

POSITIVE = ("texture_size", "texture_num_epoch", "texture_epoch_iters", "texture_batch_size_per_gpu", "texture_lr")


def check_config(cfg) -> None:
    """What the stage needs beyond its task's checks: a texture table, texture records, a positive schedule."""
    tables = read_label_tables(cfg.DATASET.label_tables)
    if not tables.textures:
        raise ConfigError(f"TRAIN.stage texture: the label tables in {tables.folder} have no texture.csv")
    if not cfg.DATASET.list_texture_train:
        raise ConfigError("TRAIN.stage texture: set DATASET.list_texture_train (records with fpath_img and texture)")
    for key in POSITIVE:
        if cfg.TRAIN[key] <= 0:
            raise ConfigError(f"TRAIN.{key} must be positive, got {cfg.TRAIN[key]}")


class TextureStageModel(UnifiedModel):
    """A trained checkpoint's encoder and decoder, frozen, and a fresh texture head (`TextureStageModule`)."""

    find_unused_parameters = False  # the head is all that trains, and every step trains it

    @cached_property
    def source(self) -> tuple[dict[str, str], str]:
        """The encoder and decoder files the stage starts from (TRAIN.texture_from, else DIR's last epoch) and their
        checkpoint name (`epoch_N.pth`); DIR must not hold other files of that name."""
        files = checkpoints.source_files(self.cfg.TRAIN.texture_from or self.cfg.DIR, "TRAIN.texture_from")
        name = checkpoints.checkpoint_of(files["encoder"], "encoder")
        for part, path in files.items():
            mine = checkpoints.part_path(self.cfg.DIR, part, name)
            if os.path.isfile(mine) and not filecmp.cmp(mine, path, shallow=False):
                raise ConfigError(
                    f"TRAIN.texture_from {self.cfg.TRAIN.texture_from}: {mine} holds another model; "
                    "choose another DIR for this texture stage"
                )
        return files, name

    def build(self, weights: Mapping[str, str] | None = None, inference: bool = False) -> nn.Module:
        files, _ = self.source
        return super().build(weights or files, inference)

    def module(self, encoder: nn.Module, decoder: nn.Module, inference: bool = False) -> TextureStageModule:
        m = self.cfg.MODEL
        head = build_texture_head(m.arch_encoder, len(self.tables.textures), bn_momentum=m.bn_momentum)
        return TextureStageModule(encoder, decoder, self.tables, head)

    def epoch_parts(self, model: nn.Module, epoch: int) -> tuple[str, dict[str, nn.Module]]:
        """The texture head of the source's checkpoint after every epoch (the last one stays), and the checkpoint's
        encoder and decoder when DIR does not have them."""
        _, name = self.source
        parts = {checkpoints.TEXTURE: model.texture}
        for part in checkpoints.PARTS:
            if not os.path.isfile(checkpoints.part_path(self.cfg.DIR, part, name)):
                parts[part] = getattr(model, part)
        return name, parts


class TextureData:
    """Texture records (an image and its texture); square batches of TRAIN.texture_batch_size_per_gpu."""

    def __init__(self, cfg, tables: LabelTables, model: TextureStageModel) -> None:
        self.cfg, self.tables, self.model = cfg, tables, model

    def read(self, path: str) -> list[dict]:
        d = self.cfg.DATASET
        return read_texture_records(path, d.root_dataset, self.tables.textures, d.check_files)

    def describe(self, records: Sequence[dict]) -> str:
        files, name = self.model.source
        present = len({r["texture"] for r in records})
        return f"{present} of the {len(self.tables.textures)} textures; the model of {files['encoder']} ({name}) frozen"

    def loader(self, records: Sequence[dict], request: LoaderRequest):
        return build_texture_loader(records, self.cfg, request)


def texture_stage(task: UnifiedParsingTask) -> Stage:
    """The stage's roles over the task's tables, and its schedule: TRAIN.texture_* (from epoch 0, no init_from)."""
    cfg, t = task.cfg, task.cfg.TRAIN
    model = TextureStageModel(cfg, task.tables)
    return Stage(
        model,
        TextureData(cfg, task.tables, model),
        cfg.DATASET.list_texture_train,
        t.texture_num_epoch,
        t.texture_epoch_iters,
        t.texture_lr,
        t.texture_lr,
        min(t.lr_min, t.texture_lr),
        files_prefix="texture_",
    )


TEXTURE_STAGE = StageSpec(UPPDecoder, check_config, texture_stage)
