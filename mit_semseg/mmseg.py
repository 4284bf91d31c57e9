"""mmsegmentation's checkpoint files, read into our parts and written back.

Its file is one `.pth` holding `{"meta": {...}, "state_dict": {...}}`, the tensors under `backbone.` (the encoder:
ResNetV1c, named as ours), `decode_head.` and `auxiliary_head.` (its heads, named as below). Its heads are ours
with other names: UPerHead is our `uperhead`, PSPHead our `ppm` (the original's PSP decoder: the same layers in the
same order), its one-conv FCNHead our auxiliary head (`MODEL.aux_head fcn`). Which head a file has is read from its
keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .models.checkpoint import CheckpointError
from .nn.batchnorm import COMPAT_BUFFERS

ENCODER, DECODER, AUX = "backbone", "decode_head", "auxiliary_head"  # the file's prefixes of our parts
# our encoders named as its backbones (ResNetV1c, and the D8 one PSPNet uses)
ENCODERS = ("resnet50v1c", "resnet101v1c", "resnet50v1cdilated", "resnet101v1cdilated")


@dataclass(frozen=True)
class Head:
    """A head of mmsegmentation as one of our decoders: its layers' names there and here (`{i}`: an index)."""

    decoder: str  # our registry name
    layers: tuple[tuple[str, str], ...]


# a conv-BN-ReLU of mmsegmentation (ConvModule) is `X.conv` and `X.bn`; ours a sequence `Y.0`, `Y.1`
HEADS = {
    "UPerHead": Head(
        "uperhead",
        (
            ("psp_modules.{i}.1.conv", "ppm_conv.{i}.0"),
            ("psp_modules.{i}.1.bn", "ppm_conv.{i}.1"),
            ("bottleneck.conv", "ppm_last_conv.0"),
            ("bottleneck.bn", "ppm_last_conv.1"),
            ("lateral_convs.{i}.conv", "fpn_in.{i}.0"),
            ("lateral_convs.{i}.bn", "fpn_in.{i}.1"),
            ("fpn_convs.{i}.conv", "fpn_out.{i}.0.0"),
            ("fpn_convs.{i}.bn", "fpn_out.{i}.0.1"),
            ("fpn_bottleneck.conv", "conv_last.0.0"),
            ("fpn_bottleneck.bn", "conv_last.0.1"),
            ("conv_seg", "conv_last.1"),
        ),
    ),
    "PSPHead": Head(
        "ppm",
        (
            ("psp_modules.{i}.1.conv", "ppm.{i}.1"),
            ("psp_modules.{i}.1.bn", "ppm.{i}.2"),
            ("bottleneck.conv", "conv_last.0"),
            ("bottleneck.bn", "conv_last.1"),
            ("conv_seg", "conv_last.4"),
        ),
    ),
}
FCN_AUX = Head("fcn", (("convs.0.conv", "cbr.0"), ("convs.0.bn", "cbr.1"), ("conv_seg", "conv_last")))


def _pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(name).replace(r"\{i\}", r"(?P<i>\d+)") + r"\.(?P<rest>.+)")


def rename_layers(state: Mapping[str, torch.Tensor], layers: Sequence[tuple[str, str]], where: str) -> dict:
    """`state` with each key's layer renamed from the first name of its pair to the second; a key of no listed
    layer is an error naming it (and `where`)."""
    rules = [(_pattern(source), target) for source, target in layers]
    renamed, unknown = {}, []
    for key, value in state.items():
        for pattern, target in rules:
            match = pattern.fullmatch(key)
            if match:
                layer = target.replace("{i}", match.group("i")) if "{i}" in target else target
                renamed[f"{layer}.{match.group('rest')}"] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{where}: {len(unknown)} tensors of no known layer: {', '.join(unknown[:8])}")
    return renamed


def part_under(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix + "."): v for k, v in state.items() if k.startswith(prefix + ".")}


def with_compat_buffers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the bookkeeping buffers our synchronized batch norm saves beside each batch norm's statistics
    (the running averages times `_running_iter`, which starts at 1), so that the parts load strictly."""
    out = dict(state)
    for key, value in state.items():
        norm = key.removesuffix(".running_mean")
        if key.endswith(".running_mean") and f"{norm}.running_var" in state:  # else the strict load names what lacks
            out[f"{norm}._tmp_running_mean"] = value.clone()
            out[f"{norm}._tmp_running_var"] = state[f"{norm}.running_var"].clone()
            out[f"{norm}._running_iter"] = torch.ones(1)
    return out


def is_mmseg(state: object) -> bool:
    """Whether a loaded file is mmsegmentation's: a `state_dict` of `backbone.` and `decode_head.` tensors."""
    inner = state.get("state_dict") if isinstance(state, Mapping) else None
    return isinstance(inner, Mapping) and any(str(k).startswith(f"{DECODER}.") for k in inner)


def head_of(decoder_keys: Sequence[str]) -> str:
    """The name of mmsegmentation's head whose every layer these keys hold (`UPerHead`, `PSPHead`; the one of most
    layers where several fit). Keys of no layer of it are for `rename_layers` to name."""
    fitting = [
        (len(head.layers), name)
        for name, head in HEADS.items()
        if all(any(_pattern(source).fullmatch(k) for k in decoder_keys) for source, _ in head.layers)
    ]
    if not fitting:
        listed = ", ".join(list(decoder_keys)[:6])
        raise CheckpointError(f"decode_head is none of the heads known here ({', '.join(HEADS)}): {listed} ...")
    return max(fitting)[1]


@dataclass(frozen=True)
class Parts:
    """An mmsegmentation file as our parts: the decoder's registry name and each part's state dict."""

    decoder: str
    encoder_state: dict
    decoder_state: dict
    aux_state: dict  # empty when the file has no auxiliary head
    meta: dict


def read(path: str | os.PathLike) -> Parts:
    """Read an mmsegmentation file (`weights_only`) into our parts; a tensor of no known layer is an error naming
    it."""
    path = os.fspath(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable PyTorch file ({err})") from err
    if not is_mmseg(saved):
        raise CheckpointError(f"{path}: not an mmsegmentation checkpoint (no state_dict of decode_head. tensors)")
    state = saved["state_dict"]
    others = sorted({k.split(".")[0] for k in state} - {ENCODER, DECODER, AUX})
    if others:
        raise CheckpointError(
            f"{path}: tensors of no known part: {', '.join(others)} (known: {ENCODER}, {DECODER}, {AUX})"
        )
    decoder = part_under(state, DECODER)
    try:
        name = head_of(list(decoder))
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    head = HEADS[name]
    return Parts(
        head.decoder,
        with_compat_buffers(part_under(state, ENCODER)),
        with_compat_buffers(rename_layers(decoder, head.layers, f"{path} ({name})")),
        with_compat_buffers(rename_layers(part_under(state, AUX), FCN_AUX.layers, f"{path} (FCNHead)")),
        dict(saved.get("meta") or {}),
    )


def as_theirs(state: Mapping[str, torch.Tensor], prefix: str, layers: Sequence[tuple[str, str]] = ()) -> dict:
    """One part of ours under mmsegmentation's `prefix`, its layers renamed back (`layers` as in `Head`), without
    the bookkeeping buffers of our synchronized batch norm (mmsegmentation's batch norm has none)."""
    state = {k: v for k, v in state.items() if not k.endswith(COMPAT_BUFFERS)}
    if layers:
        state = rename_layers(state, [(ours, theirs) for theirs, ours in layers], prefix)
    return {f"{prefix}.{k}": v for k, v in state.items()}


def write(path: str | os.PathLike, parts: Parts) -> None:
    """Write `parts` as mmsegmentation's file (`meta` and `state_dict`), in its names."""
    head = next(h for h in HEADS.values() if h.decoder == parts.decoder)
    state = as_theirs(parts.encoder_state, ENCODER) | as_theirs(parts.decoder_state, DECODER, head.layers)
    if parts.aux_state:
        state |= as_theirs(parts.aux_state, AUX, FCN_AUX.layers)
    torch.save({"meta": parts.meta, "state_dict": state}, os.fspath(path))
