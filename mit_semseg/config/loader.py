"""Load a yacs config from a YAML file and command-line options, and validate it."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence

from yacs.config import CfgNode

from ..data.transforms import NORMALISATIONS, TEST_PIPELINES
from ..errors import ConfigError
from ..metrics import MEAN_IOU_OVER
from ..models.builder import DECODERS, ENCODERS
from ..models.losses import EXTRA_LOSSES
from ..precision import INFERENCE_PRECISIONS
from ..tasks import check_config
from .defaults import _C


def _flatten(node: CfgNode, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, CfgNode):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


VALID_KEYS = tuple(_flatten(_C))
# keys that moved: older configs and command lines keep working
RENAMED = {"VAL.flip": "TEST.flip"}


def _renamed(node: CfgNode | None, opts: list) -> None:
    """Move the values of renamed keys to their new names, in place."""
    for old, new in RENAMED.items():
        (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        if node is not None and old_name in node.get(old_section, {}):
            node.setdefault(new_section, CfgNode())[new_name] = node[old_section].pop(old_name)
        opts[0::2] = [new if key == old else key for key in opts[0::2]]


def _check_keys(keys: Iterable[str], source: str) -> None:
    for key in keys:
        if key not in VALID_KEYS:
            close = difflib.get_close_matches(key, VALID_KEYS, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(VALID_KEYS)}"
            raise ConfigError(f"{source}: unknown config key '{key}'{hint}")


def _read_yaml(path: str) -> CfgNode:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return _parse_yaml(f.read(), path)


def _parse_yaml(text: str, source: str) -> CfgNode:
    try:
        node = CfgNode.load_cfg(text)
    except Exception as err:
        raise ConfigError(f"{source}: not a valid YAML config ({err})") from err
    if not isinstance(node, CfgNode):
        raise ConfigError(f"{source}: expected a mapping of config sections")
    return node


def validate(cfg: CfgNode) -> None:
    """Check the values that must agree with each other, with the model registries and with the config's task."""
    for check in (_check_model, _check_dataset, _check_crop_pipeline, _check_training, _check_testing):
        check(cfg)
    check_config(cfg)


def _check_model(cfg: CfgNode) -> None:
    m = cfg.MODEL
    m.arch_encoder, m.arch_decoder = m.arch_encoder.lower(), m.arch_decoder.lower()
    encoder = ENCODERS.get(m.arch_encoder)
    if encoder is None:
        raise ConfigError(f"MODEL.arch_encoder: unknown architecture '{m.arch_encoder}'; valid: {', '.join(ENCODERS)}")
    if m.arch_decoder not in DECODERS:
        raise ConfigError(f"MODEL.arch_decoder: unknown architecture '{m.arch_decoder}'; valid: {', '.join(DECODERS)}")
    if m.fc_dim != encoder.fc_dim:
        raise ConfigError(
            f"MODEL.fc_dim is {m.fc_dim}, but encoder {m.arch_encoder} gives "
            f"{encoder.fc_dim} channels: set MODEL.fc_dim {encoder.fc_dim}"
        )
    if m.input_normalisation not in NORMALISATIONS:
        raise ConfigError(
            f"MODEL.input_normalisation: unknown '{m.input_normalisation}'; valid: {', '.join(NORMALISATIONS)}"
        )
    if not 0.0 < m.bn_momentum <= 1.0:
        raise ConfigError(f"MODEL.bn_momentum must be in (0, 1], got {m.bn_momentum}")
    if not 0.0 <= m.decoder_dropout < 1.0:
        raise ConfigError(f"MODEL.decoder_dropout must be in [0, 1), got {m.decoder_dropout}")
    if m.decoder_dropout and not DECODERS[m.arch_decoder].cls.takes_dropout:
        takes = ", ".join(name for name, spec in DECODERS.items() if spec.cls.takes_dropout)
        raise ConfigError(f"MODEL.decoder_dropout: decoder {m.arch_decoder} takes none (those that do: {takes})")
    if m.align_corners and not DECODERS[m.arch_decoder].cls.takes_align_corners:
        raise ConfigError(f"MODEL.align_corners: decoder {m.arch_decoder} resizes without it")
    if m.align_corners and cfg.TEST.pipeline != "mmseg":
        raise ConfigError("MODEL.align_corners needs TEST.pipeline mmseg (the original's resizes logits without it)")
    if not 0.0 <= m.drop_path_rate < 1.0 or (m.drop_path_rate and not encoder.drop_path):
        takes = ", ".join(name for name, spec in ENCODERS.items() if spec.drop_path)
        raise ConfigError(
            f"MODEL.drop_path_rate {m.drop_path_rate}: a rate in [0, 1) of an encoder that has it ({takes})"
        )
    if m.init_from and (m.weights_encoder or m.weights_decoder):
        raise ConfigError(
            "MODEL.init_from and MODEL.weights_encoder/weights_decoder are both set: init_from loads what "
            "fits for other classes, weights_* load strictly; choose one"
        )


def _check_dataset(cfg: CfgNode) -> None:
    data = cfg.DATASET
    sizes = data.imgSizes if isinstance(data.imgSizes, (tuple, list)) else (data.imgSizes,)
    if not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ConfigError(f"DATASET.imgSizes must be positive integers, got {data.imgSizes}")
    for key in ("num_class", "imgMaxSize", "padding_constant", "segm_downsampling_rate"):
        if data[key] <= 0:
            raise ConfigError(f"DATASET.{key} must be positive, got {data[key]}")
    if data.padding_constant % data.segm_downsampling_rate:
        raise ConfigError(
            f"DATASET.padding_constant ({data.padding_constant}) must be a multiple of "
            f"DATASET.segm_downsampling_rate ({data.segm_downsampling_rate})"
        )


def _check_positive(cfg: CfgNode, keys: Iterable[str]) -> None:
    for key in keys:
        section, name = key.split(".")
        if cfg[section][name] <= 0:
            raise ConfigError(f"{key} must be positive, got {cfg[section][name]}")


def _check_training(cfg: CfgNode) -> None:
    t = cfg.TRAIN
    if t.lr_min < 0 or t.lr_min > min(t.lr_encoder, t.lr_decoder):
        raise ConfigError(
            f"TRAIN.lr_min ({t.lr_min}) must be between 0 and the base learning rates ({t.lr_encoder}, {t.lr_decoder})"
        )
    if t.amp not in ("none", "bf16", "fp16", "auto"):
        raise ConfigError(f"TRAIN.amp must be none, bf16, fp16 or auto, got '{t.amp}'")
    if t.optim.lower() not in ("sgd", "adamw"):
        raise ConfigError(f"TRAIN.optim must be SGD or AdamW, got '{t.optim}'")
    if t.lr_decay_rate and (not 0.0 < t.lr_decay_rate <= 1.0 or t.lr_decay_layers < 1):
        raise ConfigError(
            f"TRAIN.lr_decay_rate {t.lr_decay_rate} needs a rate in (0, 1] and TRAIN.lr_decay_layers 1 or more, "
            f"got {t.lr_decay_layers}"
        )
    if t.warmup_iters < 0 or not 0.0 < t.warmup_ratio <= 1.0:
        raise ConfigError(
            f"TRAIN.warmup_iters must be 0 or more and TRAIN.warmup_ratio in (0, 1]: {t.warmup_iters}, {t.warmup_ratio}"
        )
    _check_positive(cfg, ("TRAIN.batch_size_per_gpu", "TRAIN.num_epoch", "TRAIN.epoch_iters", "TRAIN.accum_steps"))
    for key in ("TRAIN.eval_period", "TRAIN.keep_last", "VAL.max_images"):
        section, name = key.split(".")
        if not isinstance(cfg[section][name], int) or cfg[section][name] < 0:
            raise ConfigError(f"{key} must be a whole number, 0 or more, got {cfg[section][name]}")
    if not 0.0 <= t.ohem_threshold < 1.0 or not isinstance(t.ohem_min_kept, int) or t.ohem_min_kept < 0:
        raise ConfigError(
            f"TRAIN.ohem_threshold must be in [0, 1) and TRAIN.ohem_min_kept a whole number, 0 or more; got "
            f"{t.ohem_threshold} and {t.ohem_min_kept}"
        )
    if t.extra_loss and t.extra_loss not in EXTRA_LOSSES:
        raise ConfigError(f"TRAIN.extra_loss: unknown '{t.extra_loss}'; valid: '', {', '.join(EXTRA_LOSSES)}")
    if t.extra_loss_weight < 0:
        raise ConfigError(f"TRAIN.extra_loss_weight must be 0 or more, got {t.extra_loss_weight}")
    if t.eval_period and t.stage:
        raise ConfigError(f"TRAIN.eval_period: validating while training the {t.stage} stage is not supported")


def _check_testing(cfg: CfgNode) -> None:
    test, padding = cfg.TEST, cfg.DATASET.padding_constant
    if any(not isinstance(r, (int, float)) or r <= 0 for r in test.ratios):
        raise ConfigError(f"TEST.ratios must be positive numbers, got {test.ratios}")
    if test.mode not in ("whole", "slide"):
        raise ConfigError(f"TEST.mode must be whole or slide, got '{test.mode}'")
    if test.pipeline not in TEST_PIPELINES:
        raise ConfigError(f"TEST.pipeline must be one of {', '.join(TEST_PIPELINES)}, got '{test.pipeline}'")
    multiple = padding if test.pipeline == "original" else 1  # mmsegmentation's windows are any size
    for key in ("crop_size", "stride"):
        if test[key] <= 0 or test[key] % multiple:
            raise ConfigError(
                f"TEST.{key} ({test[key]}) must be a positive multiple of DATASET.padding_constant ({padding})"
            )
    if cfg.VAL.mean_iou_over not in MEAN_IOU_OVER:
        raise ConfigError(f"VAL.mean_iou_over must be one of {', '.join(MEAN_IOU_OVER)}, got '{cfg.VAL.mean_iou_over}'")
    if test.stride > test.crop_size:
        raise ConfigError(f"TEST.stride ({test.stride}) must not exceed TEST.crop_size ({test.crop_size})")
    for key in ("VAL.precision", "TEST.precision"):
        section, name = key.split(".")
        if cfg[section][name] not in INFERENCE_PRECISIONS:
            raise ConfigError(f"{key} must be one of {', '.join(INFERENCE_PRECISIONS)}, got '{cfg[section][name]}'")
    _check_positive(cfg, ("VAL.batch_size", "TEST.batch_size"))


def _check_crop_pipeline(cfg: CfgNode) -> None:
    data = cfg.DATASET
    if data.pipeline not in ("aspect", "crop"):
        raise ConfigError(f"DATASET.pipeline must be aspect or crop, got '{data.pipeline}'")
    for key in ("crop_scale", "crop_size", "crop_ratio_range"):
        value = data[key]
        if len(value) != 2 or any(not isinstance(v, (int, float)) or v <= 0 for v in value):
            raise ConfigError(f"DATASET.{key} must be two positive numbers, got {value}")
    if data.crop_ratio_range[0] > data.crop_ratio_range[1]:
        raise ConfigError(f"DATASET.crop_ratio_range {data.crop_ratio_range}: the low end comes first")
    if not 0.0 < data.cat_max_ratio <= 1.0:
        raise ConfigError(f"DATASET.cat_max_ratio must be in (0, 1], got {data.cat_max_ratio}")


def load_config(cfg_file: str | os.PathLike | None = None, opts: Sequence[str] = ()) -> CfgNode:
    """Defaults, then `cfg_file`, then `opts` (KEY VALUE pairs), validated; the defaults stay untouched."""
    path = os.fspath(cfg_file) if cfg_file else ""
    return _merged(_read_yaml(path) if path else None, path, opts)


def config_from_text(text: str, source: str, opts: Sequence[str] = ()) -> CfgNode:
    """`load_config` of a config's YAML text (from `source`, for messages), such as one stored in an exported file."""
    return _merged(_parse_yaml(text, source), source, opts)


def _merged(node: CfgNode | None, source: str, opts: Sequence[str]) -> CfgNode:
    cfg = _C.clone()
    opts = list(opts)
    _renamed(node, opts)
    if node is not None:
        _check_keys(_flatten(node), source)
        try:
            cfg.merge_from_other_cfg(node)
        except (ValueError, KeyError, AssertionError) as err:
            raise ConfigError(f"{source}: {err}") from err
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"command-line options must be KEY VALUE pairs; '{opts[-1]}' has no value")
        _check_keys(opts[0::2], "command line")
        try:
            cfg.merge_from_list(opts)
        except (ValueError, KeyError, AssertionError) as err:
            raise ConfigError(f"command line: {err}") from err
    validate(cfg)
    return cfg
