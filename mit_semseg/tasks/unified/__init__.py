"""Unified Perceptual Parsing: the scene, objects, their parts and materials (and textures), from multi-source
records; the model with its losses (`model`), evaluation per head (`evaluation`), prediction, outputs and the
ONNX file (`prediction`)."""

from __future__ import annotations

from ...data.label_tables import read_label_tables
from ...data.records import DataError
from ...errors import ConfigError
from ...models.upp import UPPDecoder
from ..base import Task
from .evaluation import UnifiedEvaluation
from .model import UnifiedData, UnifiedModel
from .prediction import UnifiedExport, UnifiedPrediction


class UnifiedParsingTask(Task):
    name = "unified_parsing"
    decoder_base = UPPDecoder

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.tables = read_label_tables(cfg.DATASET.label_tables)
        self.model = UnifiedModel(cfg, self.tables)
        self.data = UnifiedData(cfg, self.tables)
        self.evaluation = UnifiedEvaluation(cfg, self.model, self.data)
        self.prediction = UnifiedPrediction(cfg, self.tables)
        self.export = UnifiedExport(self.tables)

    @classmethod
    def check_config(cls, cfg) -> None:
        try:
            read_label_tables(cfg.DATASET.label_tables)
        except DataError as err:
            raise ConfigError(f"DATASET.label_tables: {err}") from err
        if cfg.DATASET.pipeline != "aspect" or cfg.MODEL.aux_head:
            raise ConfigError(
                f"a UPP decoder ({cfg.MODEL.arch_decoder}) trains on the original's aspect-ratio batches without an "
                "auxiliary head: use DATASET.pipeline aspect and MODEL.aux_head ''"
            )
        t = cfg.TRAIN
        if t.class_weights or t.ohem_min_kept or t.extra_loss:
            raise ConfigError(
                f"TRAIN.class_weights, TRAIN.ohem_min_kept and TRAIN.extra_loss are segmentation losses; a UPP decoder "
                f"({cfg.MODEL.arch_decoder}) trains its heads with the original's: leave them unset"
            )
        if cfg.TEST.mode != "whole" or cfg.TEST.pipeline != "original":
            raise ConfigError(
                f"TEST.mode {cfg.TEST.mode}, TEST.pipeline {cfg.TEST.pipeline}: a UPP decoder "
                f"({cfg.MODEL.arch_decoder}) predicts whole images as the original; use TEST.mode whole and "
                "TEST.pipeline original"
            )
