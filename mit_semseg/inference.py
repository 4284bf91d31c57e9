"""Inference machinery every task uses: the fast inference path, multi-scale and sliding-window logits, fusion.

The probabilities of every scale (and the mirrored image with flip) are averaged at the full
label size, then the arg-max taken, as the original does. The original resizes each scale's
150-class logits to full size, takes the softmax and adds them up in full-size tensors; here
the same arithmetic runs over a few rows at a time, so the working set stays in cache.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .data.transforms import round_up
from .models.decoders import resize
from .nn.winograd import use_winograd

CHUNK_BYTES = 1 << 21


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every eval-mode batch norm that directly follows a conv into that conv (in place).

    The pairs are a block's `convN`/`bnN` attributes and adjacent entries of an `nn.Sequential`;
    the batch norm becomes an identity. Outputs stay equal up to float rounding.
    """
    for m in module.modules():
        for k in (1, 2, 3):
            conv, bn = getattr(m, f"conv{k}", None), getattr(m, f"bn{k}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(m, f"conv{k}", fuse_conv_bn_eval(conv, bn))
                setattr(m, f"bn{k}", nn.Identity())
        if isinstance(m, nn.Sequential):
            for i in range(len(m) - 1):
                if isinstance(m[i], nn.Conv2d) and isinstance(m[i + 1], nn.BatchNorm2d):
                    m[i], m[i + 1] = fuse_conv_bn_eval(m[i], m[i + 1]), nn.Identity()
    return module


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """The fast inference path of an encoder-decoder model: eval mode, batch norms folded into convs, and memory
    formats. On CUDA all channels-last. On the CPU the encoder runs in its `inference_memory_format` (channels-last
    unless it says otherwise: Swin, whose layers are on tokens, is faster contiguous), its images converted to it,
    and hands its maps on contiguous: every decoder here is faster so on the CPU (measured on CPU A: C1, PPM,
    UPerNet, its head over ConvNeXt, 15-60% faster in fp32 and 5-60% in bf16 than channels-last); the decoders'
    wide 3x3 convolutions run by Winograd's F(2x2, 3x3) in fp32 (`nn.winograd`)."""
    model.eval()
    fold_batch_norms(model)
    if next(model.parameters()).device.type != "cpu":
        return model.to(memory_format=torch.channels_last)
    encoder_format = getattr(model.encoder, "inference_memory_format", torch.channels_last)
    model.encoder.to(memory_format=encoder_format)
    model.encoder.register_forward_pre_hook(
        lambda _, args: (args[0].contiguous(memory_format=encoder_format), *args[1:])
    )
    model.encoder.register_forward_hook(lambda _, args, maps: [m.contiguous() for m in maps])
    return use_winograd(model)


def _source_rows(
    out_size: int, in_size: int, device, extent: float | None = None, align_corners: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear sampling along one axis, as `F.interpolate`'s: indices i0, i1 and the weight of i1, for `in_size`
    cells spanning `extent` output pixels (default `out_size`; `align_corners`: the end cells' centres on the end
    pixels' centres, spanning exactly `out_size`)."""
    index = torch.arange(out_size, dtype=torch.float64, device=device)
    if align_corners:
        src = index * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        src = ((index + 0.5) * (in_size / (extent or out_size)) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    return i0, i1, (src - i0).clamp(0, 1).float()


def each_scale(model: nn.Module, img_data: list[torch.Tensor], flip: bool, heads) -> list[dict[str, torch.Tensor]]:
    """`heads(feature maps)`, a dict of N x ... tensors, per image for each scale, and for each mirrored scale
    with `flip` (its maps, C x h x w, mirrored back)."""
    return [{k: v[0] for k, v in x.items()} for x in each_scale_batch(model, img_data, flip, heads)]


def each_scale_batch(
    model: nn.Module, img_data: list[torch.Tensor], flip: bool, heads
) -> list[dict[str, torch.Tensor]]:
    """`each_scale` for a batch: each scale's tensor holds N images (N x 3 x h x w), run together; each answer's
    tensors are N x ..., the mirrored scale's maps mirrored back."""
    device = next(model.parameters()).device
    out = []
    for images in img_data:
        images = images.to(device)
        n = images.shape[0]
        batch = torch.cat([images, images.flip(-1)]) if flip else images
        outputs = {k: v.float() for k, v in heads(model.encoder(batch, return_feature_maps=True)).items()}
        out.append({k: v[:n] for k, v in outputs.items()})
        if flip:
            out.append({k: v[n:].flip(-1) if v.dim() == 4 else v[n:] for k, v in outputs.items()})
    return out


@torch.inference_mode()
def scale_logits(model: nn.Module, img_data: list[torch.Tensor], flip: bool = False) -> list[torch.Tensor]:
    """The decoder's logits (N x C x h x w) for each scale of N images, and for each mirrored scale with `flip`."""
    return [
        x["logits"]
        for x in each_scale_batch(
            model, img_data, flip, lambda features: {"logits": model.decoder.main_logits(features)}
        )
    ]


@torch.inference_mode()
def fuse(
    logits: list[torch.Tensor],
    size: tuple[int, int],
    probabilities: bool = False,
    extents: list[tuple[float, float]] | None = None,
    align_corners: bool = False,
):
    """Arg-max (H x W, int64) of the mean softmax of the logits resized bilinearly to `size` (with `align_corners`).

    With `probabilities`, also returns that mean (C x H x W). `extents`: for each logits map, the
    (height, width) in output pixels it spans from the top left corner when that is more than `size`
    (the sliding windows' cells overhang the image; not with `align_corners`). Works a few rows at a time.
    """
    height, width = size
    num_class = logits[0].shape[0]
    device = logits[0].device
    extents = extents or [(height, width)] * len(logits)
    # Along x first, at the logits' own height (bilinear resizing is separable), as H x W x C.
    rows = [
        resize(x[None], (x.shape[1], round(ew)), align_corners)[0, :, :, :width].permute(1, 2, 0).contiguous()
        for x, (_, ew) in zip(logits, extents)
    ]
    taps = [_source_rows(height, x.shape[1], device, eh, align_corners) for x, (eh, _) in zip(logits, extents)]
    pred = torch.empty((height, width), dtype=torch.int64, device=device)
    mean = torch.empty((num_class, height, width), device=device) if probabilities else None
    step = max(1, CHUNK_BYTES // (width * num_class * 4))
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        total = None
        for x, (i0, i1, w1) in zip(rows, taps):
            w = w1[r0:r1, None, None]
            chunk = x.index_select(0, i0[r0:r1]).mul_(1 - w).add_(x.index_select(0, i1[r0:r1]).mul_(w))
            chunk = torch.softmax(chunk, dim=2)
            total = chunk if total is None else total.add_(chunk)
        pred[r0:r1] = total.argmax(2)
        if probabilities:
            mean[:, r0:r1] = total.permute(2, 0, 1) / len(logits)
    return (pred, mean) if probabilities else pred


@torch.inference_mode()
def slide_logits(
    model: nn.Module, image: torch.Tensor, crop: int, stride: int, padding: int, flip: bool = False
) -> tuple[list[torch.Tensor], int]:
    """Logits of a normalised 1 x 3 x H x W image from overlapping crop x crop windows, and their stride s.

    Window logits are averaged where windows overlap, at the decoder's resolution (one cell per
    s x s pixels); each map has one cell per started s x s block: C x ceil(H / s) x ceil(W / s).
    With `flip`, a second map from the mirrored windows (mirrored back).
    """
    device = next(model.parameters()).device
    _, _, height, width = image.shape
    padded_h, padded_w = round_up(max(height, crop), padding), round_up(max(width, crop), padding)
    source = torch.zeros(1, 3, padded_h, padded_w, device=device)
    source[:, :, :height, :width] = image.to(device)
    starts = lambda size: sorted({*range(0, size - crop + 1, stride), size - crop})
    canvas = count = None
    for y in starts(padded_h):
        for x in starts(padded_w):
            window = source[:, :, y : y + crop, x : x + crop]
            batch = torch.cat([window, window.flip(-1)]) if flip else window
            logits = model.decoder.main_logits(model.encoder(batch, return_feature_maps=True)).float()
            if flip:
                logits[1] = logits[1].flip(-1)
            s = crop // logits.shape[-1]
            if canvas is None:
                canvas = torch.zeros(len(logits), logits.shape[1], -(-padded_h // s), -(-padded_w // s), device=device)
                count = torch.zeros(1, 1, *canvas.shape[2:], device=device)
            canvas[:, :, y // s : y // s + logits.shape[2], x // s : x // s + logits.shape[3]] += logits
            count[:, :, y // s : y // s + logits.shape[2], x // s : x // s + logits.shape[3]] += 1
    maps = (canvas / count)[:, :, : -(-height // s), : -(-width // s)]
    return list(maps), s


def _logits_at_input_size(model: nn.Module, batch: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """The decoder's logits of a normalised N x 3 x h x w batch, resized bilinearly to h x w (mmsegmentation's
    `encode_decode`)."""
    features = model.encoder(batch, return_feature_maps=True)
    return resize(model.decoder.main_logits(features).float(), batch.shape[-2:], align_corners)


def _mmseg_slide(model: nn.Module, batch: torch.Tensor, crop: int, stride: int, align_corners: bool) -> torch.Tensor:
    """mmsegmentation's `slide_inference`: crop x crop windows every `stride` pixels, the last of a row or column
    against the far edge (a side shorter than `crop`: one window of that side), each window's logits resized to
    it, summed and divided by how many windows cover each pixel. N x C x h x w."""
    _, _, height, width = batch.shape
    grid = lambda size: range(max(size - crop + stride - 1, 0) // stride + 1)
    total = count = None
    for row in grid(height):
        for column in grid(width):
            y2, x2 = min(row * stride + crop, height), min(column * stride + crop, width)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            logits = _logits_at_input_size(model, batch[:, :, y1:y2, x1:x2], align_corners)
            if total is None:
                total = logits.new_zeros(*logits.shape[:2], height, width)
                count = logits.new_zeros(1, 1, height, width)
            total[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


@torch.inference_mode()
def mmseg_logits(model: nn.Module, img_data: list[torch.Tensor], test, align_corners: bool) -> list[torch.Tensor]:
    """TEST.pipeline mmseg: each scale's logits (C x h x w) at that scale's own size, from the whole image or from
    sliding windows (TEST.mode), and with TEST.flip the mirrored image's, mirrored back. `fuse` with `align_corners`
    then resizes them to the image and averages their softmax, as mmsegmentation's test-time augmentation."""
    device = next(model.parameters()).device
    out = []
    for image in img_data:
        image = image.to(device)
        batch = torch.cat([image, image.flip(-1)]) if test.flip else image
        if test.mode == "slide":
            logits = _mmseg_slide(model, batch, test.crop_size, test.stride, align_corners)
        else:
            logits = _logits_at_input_size(model, batch, align_corners)
        out.append(logits[0])
        if test.flip:
            out.append(logits[1].flip(-1))
    return out


def predict_logits(
    model: nn.Module, img_data: list[torch.Tensor], size: tuple[int, int], cfg
) -> tuple[list[torch.Tensor], list[tuple[float, float]]]:
    """The logits maps of an image given at every test scale (`prediction_images`), and the extent of each in pixels of
    the full-size (`size`) prediction, for `fuse`: as TEST.pipeline, TEST.mode (whole, or slide windows; in the
    original's pipeline on the image padded to a multiple of DATASET.padding_constant) and TEST.flip say."""
    test, padding = cfg.TEST, cfg.DATASET.padding_constant
    if test.pipeline == "mmseg":
        logits = mmseg_logits(model, img_data, test, cfg.MODEL.align_corners)
        return logits, [size] * len(logits)
    if test.mode != "slide":
        logits = [x[0] for x in scale_logits(model, img_data, test.flip)]
        return logits, [size] * len(logits)
    logits, extents = [], []
    for image in img_data:
        maps, s = slide_logits(model, image, test.crop_size, test.stride, padding, test.flip)
        h, w = image.shape[-2:]
        extent = (maps[0].shape[1] * s * size[0] / h, maps[0].shape[2] * s * size[1] / w)
        logits += maps
        extents += [extent] * len(maps)
    return logits, extents
