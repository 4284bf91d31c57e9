"""Hugging Face's UperNet folders, read into our config and parts.

A folder as transformers' `save_pretrained` writes it (`openmmlab/upernet-convnext-small` on the Hub): `config.json`
(`model_type` upernet; `backbone_config` with its `model_type`, `depths` and `hidden_sizes`; the head's
`hidden_size`, `pool_scales`; `use_auxiliary_head`; `id2label`) and the weights in `model.safetensors` (read without
pickle) or `pytorch_model.bin`. Its UperNetHead is mmsegmentation's UPerHead, our `uperhead`, with other names
(`batch_norm` for `bn`, `classifier` for `conv_seg`); its ConvNeXt backbone is ours with other names.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .mmseg import FCN_AUX, HEADS, _rename, _under, _with_compat_buffers
from .models.builder import ENCODERS
from .models.checkpoint import CheckpointError
from .models.convnext import SIZES as CONVNEXT_SIZES
from .models.decoders import PPM_SCALES

CONFIG, SAFETENSORS, PICKLED = "config.json", "model.safetensors", "pytorch_model.bin"
UPERHEAD_CHANNELS = 512  # our uperhead's width (its `hidden_size`)


def _hf_names(layers):
    """mmsegmentation's layer names as transformers names them."""
    return tuple(
        (re.sub(r"\.bn$", ".batch_norm", theirs).replace("conv_seg", "classifier"), ours) for theirs, ours in layers
    )


DECODE_HEAD = _hf_names(HEADS["UPerHead"].layers)
AUX_HEAD = _hf_names(FCN_AUX.layers)
# ConvNextBackbone's tensors as ours: (its name, ours); stage{k} counts from 1, our out_norms from 0
CONVNEXT = (
    (r"embeddings\.patch_embeddings\.(.+)", r"downsample.0.0.\1"),
    (r"embeddings\.layernorm\.(.+)", r"downsample.0.1.\1"),
    (r"encoder\.stages\.(\d+)\.downsampling_layer\.([01])\.(.+)", r"downsample.\1.\2.\3"),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm\.(.+)", r"stages.\1.\2.norm.\3"),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter", r"stages.\1.\2.gamma"),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(dwconv|pwconv1|pwconv2)\.(.+)", r"stages.\1.\2.\3.\4"),
    (r"hidden_states_norms\.stage(\d+)\.(.+)", lambda m: f"out_norms.{int(m[1]) - 1}.{m[2]}"),
)


def _convnext_state(state: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    rules = [(re.compile(pattern), target) for pattern, target in CONVNEXT]
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, target in rules:
            match = pattern.fullmatch(key)
            if match:
                out[match.expand(target) if isinstance(target, str) else target(match)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{where}: {len(unknown)} backbone tensors of no known layer: {', '.join(unknown[:8])}")
    return out


def _convnext_name(backbone: Mapping) -> str:
    sizes = (tuple(backbone.get("depths", ())), tuple(backbone.get("hidden_sizes", ())))
    for size, known in CONVNEXT_SIZES.items():
        if sizes == known:
            return f"convnext_{size}"
    raise CheckpointError(
        f"a ConvNeXt of depths {sizes[0]} and widths {sizes[1]}: none of ours ({', '.join(CONVNEXT_SIZES)})"
    )


@dataclass(frozen=True)
class Backbone:
    """A backbone type of transformers: our encoder's name for its config, and its tensors renamed as ours."""

    encoder: Callable[[Mapping], str]
    state: Callable[[Mapping[str, torch.Tensor], str], dict[str, torch.Tensor]]


# backbone_config.model_type
BACKBONES = {"convnext": Backbone(_convnext_name, _convnext_state)}


@dataclass
class HFModel:
    encoder: str  # our registry name
    class_names: list[str]
    encoder_state: dict[str, torch.Tensor]
    decoder_state: dict[str, torch.Tensor]
    aux_state: dict[str, torch.Tensor]  # the auxiliary head's, for training; {} without one


def read_config(folder: str | os.PathLike) -> dict:
    path = os.path.join(folder, CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable Hugging Face config ({err})") from err


def _check_head(config: Mapping, path: str) -> None:
    if config.get("model_type") != "upernet":
        raise CheckpointError(f"{path}: model_type '{config.get('model_type')}'; only upernet is supported")
    if list(config.get("pool_scales", PPM_SCALES)) != list(PPM_SCALES):
        raise CheckpointError(f"{path}: pool_scales {config['pool_scales']}; ours are {list(PPM_SCALES)}")
    if config.get("hidden_size", UPERHEAD_CHANNELS) != UPERHEAD_CHANNELS:
        raise CheckpointError(f"{path}: hidden_size {config['hidden_size']}; our uperhead has {UPERHEAD_CHANNELS}")
    aux = (config.get("auxiliary_num_convs", 1), config.get("auxiliary_concat_input", False))
    if config.get("use_auxiliary_head", True) and aux != (1, False):
        raise CheckpointError(f"{path}: an auxiliary head of {aux[0]} convs (concat {aux[1]}); ours has one conv")


def _weights(folder: str) -> dict[str, torch.Tensor]:
    safe, pickled = os.path.join(folder, SAFETENSORS), os.path.join(folder, PICKLED)
    if os.path.isfile(safe):
        from safetensors.torch import load_file  # the `hf` extra

        return load_file(safe)
    if os.path.isfile(pickled):
        return torch.load(pickled, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder}: no {SAFETENSORS} or {PICKLED}")


def is_hf_source(source: str) -> bool:
    """Whether a model's name is a Hugging Face one: a folder with `config.json`, or a Hub id (`owner/name`) that is
    no local path."""
    if os.path.isdir(source):
        return os.path.isfile(os.path.join(source, CONFIG))
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None and not os.path.exists(source)


def read_folder(folder: str | os.PathLike) -> HFModel:
    """The model of a Hugging Face UperNet folder as our encoder name, class names and parts (strictly: a tensor of
    no known layer is an error naming it)."""
    folder = os.fspath(folder)
    config = read_config(folder)
    path = os.path.join(folder, CONFIG)
    _check_head(config, path)
    backbone = config.get("backbone_config") or {}
    kind = backbone.get("model_type")
    if kind not in BACKBONES:
        raise CheckpointError(f"{path}: backbone '{kind}' is not supported (supported: {', '.join(BACKBONES)})")
    labels = config.get("id2label") or {}
    names = [labels[k] for k in sorted(labels, key=int)]
    state = _weights(folder)
    where = f"{folder} ({kind})"
    encoder = BACKBONES[kind].state(_under(state, "backbone"), where)
    decoder = _with_compat_buffers(_rename(_under(state, "decode_head"), DECODE_HEAD, where))
    aux = _with_compat_buffers(_rename(_under(state, "auxiliary_head"), AUX_HEAD, where))
    known = ("backbone.", "decode_head.", "auxiliary_head.")
    stray = [k for k in state if not k.startswith(known)]
    if stray:
        raise CheckpointError(f"{where}: {len(stray)} tensors of no known part: {', '.join(stray[:8])}")
    return HFModel(BACKBONES[kind].encoder(backbone), names, encoder, decoder, aux)


def config_options(model: HFModel, class_info: str) -> list[str]:
    """Our config of the model (over the defaults): its encoder, `uperhead`, its classes (`class_info`, a class table
    of its names), and mmsegmentation's ADE20K test pipeline its UperNets were trained with (the short side 512,
    the long at most 2048, whole images, mean IoU over the classes present)."""

    return [
        *("MODEL.arch_encoder", model.encoder, "MODEL.fc_dim", str(ENCODERS[model.encoder].fc_dim)),
        *(
            "MODEL.arch_decoder",
            "uperhead",
            "MODEL.pretrained",
            "False",
            "MODEL.aux_head",
            "fcn" if model.aux_state else "",
        ),
        *("DATASET.num_class", str(len(model.class_names)), "DATASET.class_info", class_info),
        *("DATASET.imgSizes", "(512,)", "DATASET.imgMaxSize", "2048", "DATASET.pipeline", "crop"),
        *("TEST.pipeline", "mmseg", "TEST.mode", "whole", "VAL.mean_iou_over", "present"),
    ]
