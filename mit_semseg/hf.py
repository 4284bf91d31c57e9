"""Hugging Face's UperNet folders, read into our config and parts.

A folder as transformers' `save_pretrained` writes it (`openmmlab/upernet-convnext-small` on the Hub): `config.json`
(`model_type` upernet; `backbone_config` with its `model_type`, `depths` and `hidden_sizes`; the head's
`hidden_size`, `pool_scales`; `use_auxiliary_head`; `id2label`) and the weights in `model.safetensors` (read without
pickle) or `pytorch_model.bin`. Its UperNetHead is mmsegmentation's UPerHead, our `uperhead`, with other names
(`batch_norm` for `bn`, `classifier` for `conv_seg`); its ConvNeXt and Swin backbones are ours with other names
(Swin's in transformers 4's, the Hub's files, or 5's). `write_folder` writes ours back; `imagenet_state` reads an
image classification folder of a backbone as our encoder's ImageNet weights.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .data.transforms import NORMALISATIONS
from .mmseg import FCN_AUX, HEADS, as_theirs, part_under, rename_layers, with_compat_buffers
from .models.checkpoint import CheckpointError
from .models.convnext import SIZES as CONVNEXT_SIZES
from .models.decoders import PPM_SCALES
from .models.swin import SIZES as SWIN_SIZES
from .models.swin import feature_channels as swin_widths
from .nn.batchnorm import COMPAT_BUFFERS

CONFIG, SAFETENSORS, PICKLED = "config.json", "model.safetensors", "pytorch_model.bin"
PREPROCESSOR = "preprocessor_config.json"
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


# and back
CONVNEXT_BACK = (
    (r"downsample\.0\.0\.(.+)", r"embeddings.patch_embeddings.\1"),
    (r"downsample\.0\.1\.(.+)", r"embeddings.layernorm.\1"),
    (r"downsample\.(\d+)\.([01])\.(.+)", r"encoder.stages.\1.downsampling_layer.\2.\3"),
    (r"stages\.(\d+)\.(\d+)\.norm\.(.+)", r"encoder.stages.\1.layers.\2.layernorm.\3"),
    (r"stages\.(\d+)\.(\d+)\.gamma", r"encoder.stages.\1.layers.\2.layer_scale_parameter"),
    (r"stages\.(\d+)\.(\d+)\.(dwconv|pwconv1|pwconv2)\.(.+)", r"encoder.stages.\1.layers.\2.\3.\4"),
    (r"out_norms\.(\d+)\.(.+)", lambda m: f"hidden_states_norms.stage{int(m[1]) + 1}.{m[2]}"),
)


# SwinBackbone's tensors as ours: transformers 4's names (the Hub's files) and 5's; the relative position index is
# not a weight (ours is computed)
_BLOCK = r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_QKV = {"query": "query", "key": "key", "value": "value", "q_proj": "query", "k_proj": "key", "v_proj": "value"}
SWIN = (
    (r"embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.\1"),
    (r"embeddings\.norm\.(.+)", r"patch_norm.\1"),
    (_BLOCK + r"layernorm_before\.(.+)", r"stages.\1.blocks.\2.norm1.\3"),
    (_BLOCK + r"layernorm_after\.(.+)", r"stages.\1.blocks.\2.norm2.\3"),
    (
        _BLOCK + r"attention\.(?:self\.)?(query|key|value|q_proj|k_proj|v_proj)\.(.+)",
        lambda m: f"stages.{m[1]}.blocks.{m[2]}.attn.{_QKV[m[3]]}.{m[4]}",
    ),
    (
        _BLOCK + r"attention\.(?:self|relative_position_bias)\.relative_position_bias_table",
        r"stages.\1.blocks.\2.attn.bias_table",
    ),
    (_BLOCK + r"attention\.(?:self|relative_position_bias)\.relative_position_index", None),
    (_BLOCK + r"attention\.(?:output\.dense|o_proj)\.(.+)", r"stages.\1.blocks.\2.attn.proj.\3"),
    (_BLOCK + r"(?:intermediate\.dense|mlp\.fc1)\.(.+)", r"stages.\1.blocks.\2.mlp.fc1.\3"),
    (_BLOCK + r"(?:output\.dense|mlp\.fc2)\.(.+)", r"stages.\1.blocks.\2.mlp.fc2.\3"),
    (r"encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(.+)", r"stages.\1.merge.\2.\3"),
    (r"hidden_states_norms\.stage(\d+)\.(.+)", lambda m: f"out_norms.{int(m[1]) - 1}.{m[2]}"),
    (r"swin\.layernorm\.(weight|bias)", None),  # transformers 5's backbone holds SwinModel's final norm, unused
)
# and back, in transformers 4's names
SWIN_BACK = (
    (r"patch_embed\.(.+)", r"embeddings.patch_embeddings.projection.\1"),
    (r"patch_norm\.(.+)", r"embeddings.norm.\1"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.norm1\.(.+)", r"encoder.layers.\1.blocks.\2.layernorm_before.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.norm2\.(.+)", r"encoder.layers.\1.blocks.\2.layernorm_after.\3"),
    (
        r"stages\.(\d+)\.blocks\.(\d+)\.attn\.(query|key|value)\.(.+)",
        r"encoder.layers.\1.blocks.\2.attention.self.\3.\4",
    ),
    (
        r"stages\.(\d+)\.blocks\.(\d+)\.attn\.bias_table",
        r"encoder.layers.\1.blocks.\2.attention.self.relative_position_bias_table",
    ),
    (r"stages\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(.+)", r"encoder.layers.\1.blocks.\2.attention.output.dense.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.(.+)", r"encoder.layers.\1.blocks.\2.intermediate.dense.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.(.+)", r"encoder.layers.\1.blocks.\2.output.dense.\3"),
    (r"stages\.(\d+)\.merge\.(reduction|norm)\.(.+)", r"encoder.layers.\1.downsample.\2.\3"),
    (r"out_norms\.(\d+)\.(.+)", lambda m: f"hidden_states_norms.stage{int(m[1]) + 1}.{m[2]}"),
)


def _renamed(state: Mapping[str, torch.Tensor], rules, where: str) -> dict[str, torch.Tensor]:
    """`state` with each key renamed by the first rule (pattern, replacement; None leaves the key out) that matches
    all of it; a key no rule matches is an error naming it."""
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, target in compiled:
            match = pattern.fullmatch(key)
            if match:
                if target is not None:  # None: not a weight, left out
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


def _swin_name(backbone: Mapping) -> str:
    found = (backbone.get("embed_dim"), tuple(backbone.get("depths", ())), tuple(backbone.get("num_heads", ())))
    window = backbone.get("window_size", 7)
    fixed = {k: backbone.get(k, v) for k, v in SWIN_FIXED.items()}
    if fixed != SWIN_FIXED:
        raise CheckpointError(f"a Swin of {fixed}; ours have {SWIN_FIXED}")
    for size, (width, depths, heads, ours) in SWIN_SIZES.items():
        if found == (width, depths, heads):
            if window != ours:
                raise CheckpointError(f"a Swin {size} of window {window}; ours has {ours}")
            return f"swin_{size}"
    raise CheckpointError(f"a Swin of width, depths, heads {found}: none of ours ({', '.join(SWIN_SIZES)})")


SWIN_FIXED = {"mlp_ratio": 4.0, "qkv_bias": True, "use_absolute_embeddings": False, "patch_size": 4}


def _swin_config(encoder: str) -> dict:
    width, depths, heads, window = SWIN_SIZES[encoder.removeprefix("swin_")]
    return {
        "model_type": "swin",
        "embed_dim": width,
        "depths": list(depths),
        "num_heads": list(heads),
        "window_size": window,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "drop_path_rate": 0.0,
        "num_channels": 3,
        **SWIN_FIXED,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    }


def _convnext_config(encoder: str) -> dict:
    depths, widths = CONVNEXT_SIZES[encoder.removeprefix("convnext_")]
    return {
        "model_type": "convnext",
        "depths": list(depths),
        "hidden_sizes": list(widths),
        "hidden_act": "gelu",
        "layer_scale_init_value": 1e-6,
        "drop_path_rate": 0.0,
        "num_channels": 3,
        "num_stages": 4,
        "patch_size": 4,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    }


@dataclass(frozen=True)
class Backbone:
    """A backbone type of transformers: our encoder's name for its config and its config for our encoder, and the
    renaming of its tensors as ours and back."""

    encoder: Callable[[Mapping], str]
    config: Callable[[str], dict]
    to_ours: tuple
    to_theirs: tuple
    widths: Callable[[str], tuple[int, ...]]  # our encoder's map widths
    prefix: str  # our encoders' names of this type start so
    crop: Callable[[str], int]  # the side of the crops our encoder's UperNet trained on in mmsegmentation's configs
    slide: bool  # whether those configs test in windows (else on whole images)


def _mmseg_test(side: int, slide: bool) -> tuple[str, ...]:
    """mmsegmentation's ADE20K test of an UperNet trained on side x side crops, as our config's options: the short
    side at `side`, the long at most 4 times it; windows of the crop every two thirds of it, or whole images."""
    scale = ("DATASET.imgSizes", f"({side},)", "DATASET.imgMaxSize", str(4 * side))
    if not slide:
        return (*scale, "TEST.mode", "whole")
    return (*scale, "TEST.mode", "slide", "TEST.crop_size", str(side), "TEST.stride", str(side * 2 // 3))


# backbone_config.model_type
BACKBONES = {
    "convnext": Backbone(
        _convnext_name,
        _convnext_config,
        CONVNEXT,
        CONVNEXT_BACK,
        lambda name: CONVNEXT_SIZES[name.removeprefix("convnext_")][1],
        "convnext_",
        lambda name: 640 if name.endswith("large") else 512,  # large and xlarge trained on 640 crops
        True,
    ),
    "swin": Backbone(
        _swin_name,
        _swin_config,
        SWIN,
        SWIN_BACK,
        lambda name: swin_widths(name.removeprefix("swin_")),
        "swin_",
        lambda name: 512,
        False,
    ),
}


@dataclass
class HFModel:
    encoder: str  # our registry name
    class_names: list[str]
    encoder_state: dict[str, torch.Tensor]
    decoder_state: dict[str, torch.Tensor]
    aux_state: dict[str, torch.Tensor]  # the auxiliary head's, for training; {} without one
    normalisation: str = "imagenet"  # MODEL.input_normalisation of its images


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
    encoder = _renamed(part_under(state, "backbone"), BACKBONES[kind].to_ours, where)
    decoder = with_compat_buffers(rename_layers(part_under(state, "decode_head"), DECODE_HEAD, where))
    aux = with_compat_buffers(rename_layers(part_under(state, "auxiliary_head"), AUX_HEAD, where))
    known = ("backbone.", "decode_head.", "auxiliary_head.")
    stray = [k for k in state if not k.startswith(known)]
    if stray:
        raise CheckpointError(f"{where}: {len(stray)} tensors of no known part: {', '.join(stray[:8])}")
    return HFModel(BACKBONES[kind].encoder(backbone), names, encoder, decoder, aux, _normalisation(folder))


def _close(found: tuple[float, ...], ours: tuple[float, ...]) -> bool:
    return len(found) == len(ours) and all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(found, ours))


def _normalisation(folder: str) -> str:
    """Our input normalisation of the images as the folder's `preprocessor_config.json` prepares them (RGB, rescaled
    by `rescale_factor`, less `image_mean`, over `image_std`); "imagenet" without one. One of no normalisation of
    ours is an error naming its values. (Its resizing is not read: the Hub's UperNets hold SegformerImageProcessor's
    default square 512 x 512, not the test their figures come from, which `config_options` sets.)"""
    path = os.path.join(folder, PREPROCESSOR)
    if not os.path.isfile(path):
        return "imagenet"
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        rescale = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0
        mean, std = (0.0,) * 3, (1.0,) * 3
        if config.get("do_normalize", True):
            mean, std = tuple(map(float, config["image_mean"])), tuple(map(float, config["image_std"]))
        scale = tuple(rescale / s for s in std)
        offset = tuple(-m / s for m, s in zip(mean, std, strict=True))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a readable image processor config ({type(err).__name__}: {err})") from err
    for name, ours in NORMALISATIONS.items():
        if ours.order == (0, 1, 2) and _close(scale, ours.scale) and _close(offset, ours.offset):
            return name
    raise CheckpointError(
        f"{path}: images rescaled by {rescale}, less mean {list(mean)}, over std {list(std)}: none of our input "
        f"normalisations ({', '.join(NORMALISATIONS)})"
    )


def backbone_of(encoder: str) -> Backbone:
    """The backbone type of transformers of our `encoder`; an error naming it when there is none."""
    for backbone in BACKBONES.values():
        if encoder.startswith(backbone.prefix):
            return backbone
    raise CheckpointError(f"{encoder}: no Hugging Face backbone of ours for it ({', '.join(BACKBONES)})")


def config_options(model: HFModel, class_info: str) -> list[str]:
    """Our config of the model (over the defaults): its encoder, `uperhead`, its classes (`class_info`, a class table
    of its names), its input normalisation, and the test of mmsegmentation's ADE20K configs its UperNets were trained
    with (the short side 512, the long at most 2048; ConvNeXt in 512 windows every 341, large and xlarge at 640 in
    windows of 640 every 426; Swin whole images; mean IoU over the classes present)."""
    backbone = backbone_of(model.encoder)
    return [
        *("MODEL.arch_encoder", model.encoder, "MODEL.fc_dim", str(backbone.widths(model.encoder)[-1])),
        *(
            "MODEL.arch_decoder",
            "uperhead",
            "MODEL.pretrained",
            "False",
            "MODEL.aux_head",
            "fcn" if model.aux_state else "",
        ),
        *("DATASET.num_class", str(len(model.class_names)), "DATASET.class_info", class_info),
        *("DATASET.pipeline", "crop", "MODEL.input_normalisation", model.normalisation),
        *("TEST.pipeline", "mmseg", *_mmseg_test(backbone.crop(model.encoder), backbone.slide)),
        *("VAL.mean_iou_over", "present"),
    ]


def write_folder(folder: str | os.PathLike, model: HFModel) -> None:
    """`model` as a folder transformers' `UperNetForSemanticSegmentation.from_pretrained` loads: config.json and
    model.safetensors (the auxiliary head when `model.aux_state` has it)."""
    from safetensors.torch import save_file  # the `hf` extra

    backbone = backbone_of(model.encoder)
    encoder = {k: v for k, v in model.encoder_state.items() if not k.endswith(COMPAT_BUFFERS)}
    state = {f"backbone.{k}": v for k, v in _renamed(encoder, backbone.to_theirs, model.encoder).items()}
    state |= as_theirs(model.decoder_state, "decode_head", DECODE_HEAD)
    if model.aux_state:
        state |= as_theirs(model.aux_state, "auxiliary_head", AUX_HEAD)
    widths = backbone.widths(model.encoder)
    config = {
        "architectures": ["UperNetForSemanticSegmentation"],
        "model_type": "upernet",
        "backbone_config": backbone.config(model.encoder),
        "hidden_size": UPERHEAD_CHANNELS,
        "pool_scales": list(PPM_SCALES),
        "use_auxiliary_head": bool(model.aux_state),
        "auxiliary_in_channels": widths[2],
        "auxiliary_channels": 256,
        "auxiliary_num_convs": 1,
        "auxiliary_concat_input": False,
        "loss_ignore_index": 255,
        "id2label": {str(k): name for k, name in enumerate(model.class_names)},
        "label2id": {name: k for k, name in enumerate(model.class_names)},
    }
    processor = _processor_config(model.normalisation, backbone.crop(model.encoder))
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, SAFETENSORS))
    for name, content in ((CONFIG, config), (PREPROCESSOR, processor)):
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)


def _processor_config(normalisation: str, side: int) -> dict:
    """SegformerImageProcessor's config (as the Hub's UperNets hold) of our input normalisation, resizing to the
    side of the model's training crops; an error for one it cannot express (BGR input)."""
    ours = NORMALISATIONS[normalisation]
    if ours.order != (0, 1, 2):
        raise CheckpointError(f"input normalisation '{normalisation}' takes BGR images; an image processor gives RGB")
    std = [round(1 / (255 * s), 12) for s in ours.scale]
    return {
        "image_processor_type": "SegformerImageProcessor",
        "do_resize": True,
        "size": {"height": side, "width": side},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [round(-o * s, 12) for o, s in zip(ours.offset, std)],
        "image_std": std,
        "do_reduce_labels": False,
    }


def imagenet_state(folder: str | os.PathLike, encoder: str) -> dict[str, torch.Tensor]:
    """Our `encoder`'s state from a Hugging Face image classification folder of its backbone (`ConvNextFor...`,
    `SwinFor...`: the backbone under `convnext.` or `swin.`, its final norm and classifier left out); the maps'
    norms, which a classifier has not, at their start (weight 1, bias 0)."""
    folder = os.fspath(folder)
    config = read_config(folder)
    kind = config.get("model_type")
    if kind not in BACKBONES or not encoder.startswith(BACKBONES[kind].prefix):
        raise CheckpointError(f"{folder}: a '{kind}' model, not ImageNet weights of {encoder}")
    backbone = BACKBONES[kind]
    found = backbone.encoder(config)
    if found != encoder:
        raise CheckpointError(f"{folder}: ImageNet weights of {found}, not of {encoder}")
    state = {k: v for k, v in part_under(_weights(folder), kind).items() if not k.startswith("layernorm.")}
    ours = _renamed(state, backbone.to_ours, f"{folder} ({kind})")
    for i, width in enumerate(backbone.widths(encoder)):
        ours[f"out_norms.{i}.weight"], ours[f"out_norms.{i}.bias"] = torch.ones(width), torch.zeros(width)
    return ours
