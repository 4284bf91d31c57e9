"""mmsegmentation's models here: the ResNetV1c encoders (UPerNet's, and PSPNet's D8) in its checkpoints' layout, and
its ImageNet weights from OpenMMLab's site, checked against the digest in their names."""

import dataclasses
import hashlib
import io
import os
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, checkpoint_weights, use_reduced_encoders
from httpserver import serve

from mit_semseg import Segmenter, convert, mmseg, predict, zoo
from mit_semseg.checkpoints import released_urls, save_parts, source_files
from mit_semseg.config import load_config
from mit_semseg.data.classes import BUILTIN_CLASS_TABLES, class_names, config_colors, palette
from mit_semseg.evaluation import evaluate, report
from mit_semseg.hub import DownloadError, name_hash
from mit_semseg.models import ENCODERS, ModelBuilder
from mit_semseg.models.builder import DECODERS, DecoderSpec
from mit_semseg.models.checkpoint import CheckpointError
from mit_semseg.models.decoders import UPerNet
from mit_semseg.nn.batchnorm import COMPAT_BUFFERS
from mit_semseg.synthetic.scenes import NUM_CLASS, generate
from mit_semseg.tasks import task_for
from mit_semseg.training.loop import Runtime, train

STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
WIDTHS = (64, 128, 256, 512)


def _bn(layout: dict, prefix: str, n: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        layout[f"{prefix}.{name}"] = (n,)
    layout[f"{prefix}.num_batches_tracked"] = ()


def mmseg_resnet_v1c_layout(depth: int = 50, blocks=None, widths=WIDTHS) -> dict[str, tuple[int, ...]]:
    """mmsegmentation's ResNetV1c state dict, written from its facts (not from our encoder): the stem
    `stem.{0,3,6}` convs 3->32->32->64 with batch norms `stem.{1,4,7}`, then Bottleneck stages (of `widths`,
    expansion 4), `downsample.0`/`.1` on each stage's first block."""
    layout: dict[str, tuple[int, ...]] = {}
    for index, (cin, cout) in zip((0, 3, 6), ((3, 32), (32, 32), (32, 64))):
        layout[f"stem.{index}.weight"] = (cout, cin, 3, 3)
        _bn(layout, f"stem.{index + 1}", cout)
    inplanes = 64
    for stage, (count, planes) in enumerate(zip(blocks or STAGES[depth], widths)):
        for b in range(count):
            p = f"layer{stage + 1}.{b}"
            layout[f"{p}.conv1.weight"] = (planes, inplanes if b == 0 else planes * 4, 1, 1)
            layout[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            layout[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            for k, n in ((1, planes), (2, planes), (3, planes * 4)):
                _bn(layout, f"{p}.bn{k}", n)
            if b == 0:
                layout[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                _bn(layout, f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
    return layout


def mmseg_uperhead_layout(in_channels, num_classes: int, channels: int = 512, psp: int = 512) -> dict:
    """mmsegmentation's UPerHead state dict, from its facts: `psp_modules.{0..3}.1` (pool, then a 1x1 ConvModule to
    `psp` channels: `conv` without bias, `bn`), `bottleneck` (3x3), `lateral_convs.{i}` (1x1) and `fpn_convs.{i}`
    (3x3) for all but the last map, `fpn_bottleneck` (3x3), `conv_seg` (1x1, with bias). Its configs have
    psp = channels = 512; the tests use fewer channels elsewhere."""
    layout: dict = {}

    def conv_module(prefix, cin, cout, k):
        layout[f"{prefix}.conv.weight"] = (cout, cin, k, k)
        _bn(layout, f"{prefix}.bn", cout)

    for i in range(4):
        conv_module(f"psp_modules.{i}.1", in_channels[-1], psp, 1)
    conv_module("bottleneck", in_channels[-1] + 4 * psp, channels, 3)
    for i, width in enumerate(in_channels[:-1]):
        conv_module(f"lateral_convs.{i}", width, channels, 1)
        conv_module(f"fpn_convs.{i}", channels, channels, 3)
    conv_module("fpn_bottleneck", len(in_channels) * channels, channels, 3)
    layout["conv_seg.weight"], layout["conv_seg.bias"] = (num_classes, channels, 1, 1), (num_classes,)
    return layout


def mmseg_fcn_aux_layout(in_channels: int, num_classes: int, channels: int = 256) -> dict:
    """mmsegmentation's FCNHead (one conv, no concatenated input): `convs.0` (3x3 ConvModule), `conv_seg`."""
    layout = {"convs.0.conv.weight": (channels, in_channels, 3, 3)}
    _bn(layout, "convs.0.bn", channels)
    layout["conv_seg.weight"], layout["conv_seg.bias"] = (num_classes, channels, 1, 1), (num_classes,)
    return layout


@pytest.mark.parametrize("depth", [50, 101])
def test_the_encoders_have_mmsegmentations_layout(depth):
    for name in (f"resnet{depth}v1c", f"resnet{depth}v1cdilated"):
        state = ModelBuilder.build_encoder(name, pretrained=False).state_dict()
        # beside mmsegmentation's tensors, the original's bookkeeping buffers of our synchronized batch norm
        ours = {k: tuple(v.shape) for k, v in state.items() if not k.endswith(COMPAT_BUFFERS)}
        assert ours == mmseg_resnet_v1c_layout(depth), name


def test_the_stem_is_three_convs_with_batch_norm_and_relu_then_max_pooling():
    torch.manual_seed(0)
    encoder = ModelBuilder.build_encoder("resnet50v1c", pretrained=False).eval()
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 37, 45)
    state = encoder.state_dict()
    y = x
    for conv, norm, stride in ((0, 1, 2), (3, 4, 1), (6, 7, 1)):
        y = F.conv2d(y, state[f"stem.{conv}.weight"], stride=stride, padding=1)
        mean, var = state[f"stem.{norm}.running_mean"], state[f"stem.{norm}.running_var"]
        weight, bias = state[f"stem.{norm}.weight"], state[f"stem.{norm}.bias"]
        y = F.relu(
            (y - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) * weight[:, None, None]
            + bias[:, None, None]
        )
    with torch.no_grad():
        torch.testing.assert_close(encoder.forward_stem(x), y)
        maps = encoder(x, return_feature_maps=True)
    assert [tuple(m.shape[-2:]) for m in maps] == [(10, 12), (5, 6), (3, 3), (2, 2)]  # strides 4, 8, 16, 32


def test_d8_is_pspnets_dilation():
    """mmsegmentation's D8: strides 1, 2, 1, 1 and dilations 1, 1, 2, 4 with `contract_dilation` (a dilated stage's
    first block at half its dilation); output stride 8."""
    encoder = ModelBuilder.build_encoder("resnet50v1cdilated", pretrained=False)
    expected = {1: (1, 1, 1), 2: (2, 1, 1), 3: (1, 1, 2), 4: (1, 2, 4)}  # stage: stride, first and other dilations
    for stage, (stride, first, other) in expected.items():
        blocks = getattr(encoder, f"layer{stage}")
        assert blocks[0].conv2.stride == (stride, stride) and blocks[0].downsample[0].stride == (stride, stride)
        assert blocks[0].conv2.dilation == blocks[0].conv2.padding == (first, first)
        assert all(b.conv2.dilation == b.conv2.padding == (other, other) for b in blocks[1:])
    maps = encoder(torch.randn(1, 3, 64, 80), return_feature_maps=True)
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 20), (8, 10), (8, 10), (8, 10)]


def _imagenet_file(depth: int, with_fc: bool = True) -> bytes:
    """A file of mmsegmentation's ImageNet weights as OpenMMLab's files hold them: `state_dict` beside `meta`, the
    classifier `fc` included."""
    torch.manual_seed(depth)
    state = {k: torch.randn(shape) if shape else torch.tensor(0) for k, shape in mmseg_resnet_v1c_layout(depth).items()}
    if with_fc:
        state.update({"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)})
    buffer = io.BytesIO()
    torch.save({"meta": {"epoch": 100}, "state_dict": state}, buffer)
    return buffer.getvalue()


def test_imagenet_weights_come_from_openmmlab_checked_against_the_digest_in_their_name(monkeypatch, tmp_path):
    body = _imagenet_file(50)
    digest = hashlib.sha256(body).hexdigest()
    spec = ENCODERS["resnet50v1c"]
    assert name_hash(spec.imagenet_file) == "2cccc1ad" and spec.imagenet_folder == "pretrain/third_party"
    monkeypatch.setitem(
        ENCODERS, "resnet50v1c", type(spec)(**{**spec.__dict__, "imagenet_file": f"r50-{digest[:8]}.pth"})
    )
    with serve({f"/mirror/pretrain/third_party/r50-{digest[:8]}.pth": body}) as (url, server):
        monkeypatch.setenv("MIT_SEMSEG_OPENMMLAB_URL", url + "/mirror/")
        encoder = ModelBuilder.build_encoder("resnet50v1c")
    saved = torch.load(io.BytesIO(body), weights_only=True)["state_dict"]
    assert torch.equal(encoder.state_dict()["stem.0.weight"], saved["stem.0.weight"])
    assert torch.equal(encoder.state_dict()["layer4.2.bn3.running_var"], saved["layer4.2.bn3.running_var"])
    assert server.requests == [(f"/mirror/pretrain/third_party/r50-{digest[:8]}.pth", None)]


def test_a_file_whose_digest_does_not_match_its_name_is_refused_and_not_kept(monkeypatch, tmp_path):
    body = _imagenet_file(50, with_fc=False)
    actual = hashlib.sha256(body).hexdigest()
    with serve({"/pretrain/third_party/resnet50_v1c-2cccc1ad.pth": body}) as (url, _):
        monkeypatch.setenv("MIT_SEMSEG_OPENMMLAB_URL", url)
        with pytest.raises(
            DownloadError, match=f"resnet50_v1c-2cccc1ad.pth is corrupt: SHA-256 {actual}, expected 2cccc1ad"
        ):
            ModelBuilder.build_encoder("resnet50v1c")
    assert not list((tmp_path / "cache" / "pretrained").iterdir())


def _conv_bn_relu(x, state, prefix, padding=0):
    """A conv (no bias) and an eval-mode batch norm from `state`'s `prefix.0` and `prefix.1`, then ReLU."""
    y = F.conv2d(x, state[f"{prefix}.0.weight"], padding=padding)
    mean, var = state[f"{prefix}.1.running_mean"], state[f"{prefix}.1.running_var"]
    weight, bias = state[f"{prefix}.1.weight"], state[f"{prefix}.1.bias"]
    return F.relu(
        (y - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) * weight[:, None, None] + bias[:, None, None]
    )


def _conditioned_batch_norms(module, seed=0):
    """Batch-norm statistics and shifts away from their defaults, so that the ReLUs cut and the layers show."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    return module


def uperhead_as_mmseg_computes_it(state, conv_out, align_corners, scales=(1, 2, 3, 6)):
    """mmsegmentation's UPerHead.forward written from its description, over our layer names: the pyramid pooling
    (pool, ConvModule, resize) on the last map into `bottleneck`, laterals added top-down (each the resized sum
    above it), the FPN convs, every level resized to the first, `fpn_bottleneck`, `conv_seg`."""
    up = lambda x, size: F.interpolate(x, size, mode="bilinear", align_corners=align_corners)
    conv5 = conv_out[-1]
    size = conv5.shape[-2:]
    psp = [
        up(_conv_bn_relu(F.adaptive_avg_pool2d(conv5, s), state, f"ppm_conv.{k}"), size) for k, s in enumerate(scales)
    ]
    laterals = [_conv_bn_relu(x, state, f"fpn_in.{i}") for i, x in enumerate(conv_out[:-1])]
    laterals.append(_conv_bn_relu(torch.cat([conv5, *psp], 1), state, "ppm_last_conv", padding=1))
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + up(laterals[i], laterals[i - 1].shape[-2:])
    outs = [_conv_bn_relu(x, state, f"fpn_out.{i}.0", padding=1) for i, x in enumerate(laterals[:-1])]
    outs.append(laterals[-1])
    outs = [outs[0]] + [up(x, outs[0].shape[-2:]) for x in outs[1:]]
    fused = _conv_bn_relu(torch.cat(outs, 1), state, "conv_last.0", padding=1)
    return F.conv2d(fused, state["conv_last.1.weight"], state["conv_last.1.bias"])


@pytest.mark.parametrize("align_corners", [False, True])
def test_uperhead_is_mmsegmentations_head_and_upernet_the_originals_order(align_corners):
    """mmsegmentation's UPerHead: each pooled map through its 1x1 conv-BN-ReLU, then upsampled; the original's
    UPerNet upsamples first. One decoder with the order as an option: the same layers, other outputs. Every
    bilinear resize with MODEL.align_corners (the 769x769 Cityscapes models') or without."""
    assert DECODERS["uperhead"].options == {"fpn_dim": 512, "conv_before_resize": True}
    assert DECODERS["upernet"].cls is DECODERS["uperhead"].cls
    widths = (16, 24, 32, 40)
    head = UPerNet.from_widths(widths, num_class=5, fpn_dim=16, conv_before_resize=True, align_corners=align_corners)
    head = _conditioned_batch_norms(head.double().eval())
    original = UPerNet.from_widths(widths, num_class=5, fpn_dim=16, align_corners=align_corners).double().eval()
    original.load_state_dict(head.state_dict())
    assert head.state_dict().keys() == original.state_dict().keys()
    conv_out = [torch.randn(1, w, 73 // 2**k + 1, 89 // 2**k + 1, dtype=torch.float64) for k, w in enumerate(widths)]
    with torch.no_grad():
        logits, other = head.main_logits(conv_out), original.main_logits(conv_out)
    expected = uperhead_as_mmseg_computes_it(head.state_dict(), conv_out, align_corners)
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
    assert (other - expected).abs().max() > 1e-3  # the original's order: another context, other logits


REDUCED_BLOCKS, REDUCED_WIDTHS = (1, 1, 2, 2), (8, 16, 24, 40)  # helpers.REDUCED_ENCODERS' resnet50v1c
MAPS = tuple(4 * w for w in REDUCED_WIDTHS)


@pytest.fixture
def reduced(monkeypatch, tmp_path):
    """The config of a reduced resnet50v1c + uperhead (channels 16, the pyramid's 512) and 5 classes."""
    use_reduced_encoders(monkeypatch)
    monkeypatch.setitem(DECODERS, "uperhead", DecoderSpec(UPerNet, {"fpn_dim": 16, "conv_before_resize": True}))
    opts = ["MODEL.arch_encoder", "resnet50v1c", "MODEL.arch_decoder", "uperhead", "MODEL.pretrained", "False"]
    opts += ["MODEL.fc_dim", str(MAPS[-1])]
    return load_config(None, [*opts, "DATASET.num_class", "5", "DIR", str(tmp_path / "run")])


def mmseg_file(path, drop=(), extra=None, classes: int = 5) -> dict:
    """An mmsegmentation UPerNet file (ResNetV1c, UPerHead, FCN auxiliary head on the third map) in its real layout:
    `meta` and `state_dict`, random tensors of the facts' names and shapes; returns its state dict."""
    layout = {f"backbone.{k}": v for k, v in mmseg_resnet_v1c_layout(50, REDUCED_BLOCKS, REDUCED_WIDTHS).items()}
    layout |= {f"decode_head.{k}": v for k, v in mmseg_uperhead_layout(MAPS, classes, channels=16).items()}
    layout |= {f"auxiliary_head.{k}": v for k, v in mmseg_fcn_aux_layout(MAPS[2], classes).items()}
    torch.manual_seed(1)
    state = {k: torch.randn(shape) if shape else torch.tensor(9) for k, shape in layout.items() if k not in drop}
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}
    state |= extra or {}
    meta = {"mmseg_version": "0.11.0", "CLASSES": list("abcdefgh"[:classes]), "config": "model = dict(...)"}
    torch.save({"meta": meta, "state_dict": state}, path)
    return state


# mmsegmentation's layer -> ours, from the facts of both (a ConvModule's conv and bn; our sequences' 0 and 1)
THEIRS_TO_OURS = {
    "decode_head.psp_modules.3.1.conv.weight": ("decoder", "ppm_conv.3.0.weight"),
    "decode_head.psp_modules.0.1.bn.running_var": ("decoder", "ppm_conv.0.1.running_var"),
    "decode_head.bottleneck.conv.weight": ("decoder", "ppm_last_conv.0.weight"),
    "decode_head.lateral_convs.2.bn.bias": ("decoder", "fpn_in.2.1.bias"),
    "decode_head.fpn_convs.1.conv.weight": ("decoder", "fpn_out.1.0.0.weight"),
    "decode_head.fpn_convs.0.bn.running_mean": ("decoder", "fpn_out.0.0.1.running_mean"),
    "decode_head.fpn_bottleneck.bn.weight": ("decoder", "conv_last.0.1.weight"),
    "decode_head.conv_seg.weight": ("decoder", "conv_last.1.weight"),
    "decode_head.conv_seg.bias": ("decoder", "conv_last.1.bias"),
    "backbone.stem.6.weight": ("encoder", "stem.6.weight"),
    "backbone.layer4.1.bn3.running_var": ("encoder", "layer4.1.bn3.running_var"),
}


def test_an_mmseg_file_is_a_checkpoint_for_every_command(reduced, tmp_path):
    file = tmp_path / "upernet_r50_512x1024_40k_cityscapes_20200605_094827-aa54cb54.pth"
    theirs = mmseg_file(file)
    task = task_for(reduced)
    model = task.model.load(str(file), optimize=False)  # test.py --checkpoint, VAL.checkpoint, Segmenter(checkpoint=)
    ours = {"encoder": model.encoder.state_dict(), "decoder": model.decoder.state_dict()}
    for key, (part, name) in THEIRS_TO_OURS.items():
        assert torch.equal(ours[part][name], theirs[key]), key
    counted = {p: sum(not k.endswith(COMPAT_BUFFERS) for k in s) for p, s in ours.items()}
    assert counted == {
        "encoder": sum(k.startswith("backbone.") for k in theirs),
        "decoder": sum(k.startswith("decode_head.") for k in theirs),
    }
    converted = next((tmp_path / "cache" / "converted").iterdir())
    assert converted.name.startswith(file.stem) and (converted / "converted.json").is_file()
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    pred = Segmenter(reduced, checkpoint=str(file), precision="fp32").predict(image)
    assert pred.shape == (40, 56) and pred.dtype == np.int64
    files = source_files(str(file))  # train.py --init-from FILE
    assert torch.equal(
        torch.load(files["decoder"], weights_only=True)["conv_last.1.bias"], theirs["decode_head.conv_seg.bias"]
    )


def test_evaluation_reads_it_as_val_checkpoint(reduced, tmp_path):
    scenes = tmp_path / "scenes"
    generate(str(scenes), num_train=1, num_val=2, seed=3, min_side=48, max_side=64)
    file = tmp_path / "pspnet.pth"
    mmseg_file(file, classes=NUM_CLASS)
    opts = ["DATASET.root_dataset", str(scenes), "DATASET.list_val", str(scenes / "validation.odgt")]
    opts += ["DATASET.num_class", str(NUM_CLASS), "DATASET.class_info", str(scenes / "class_info.csv")]
    reduced.merge_from_list([*opts, "VAL.checkpoint", str(file), "VAL.precision", "fp32"])
    summary = evaluate(reduced, ["cpu"])
    assert summary["images"] == 2 and 0 <= summary["mean_iou"] <= 1
    path = report(summary, reduced.DIR, task_for(reduced))
    assert path == str(tmp_path / "run" / "eval_pspnet.json")


def test_it_is_read_strictly_and_safely(reduced, tmp_path):
    task = task_for(reduced)
    mmseg_file(tmp_path / "extra.pth", extra={"decode_head.conv_seg2.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"extra.pth \(UPerHead\): 1 tensors of no known layer: conv_seg2.weight"):
        task.model.load(str(tmp_path / "extra.pth"))
    mmseg_file(tmp_path / "other.pth", extra={"neck.fc.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="tensors of no known part: neck"):
        task.model.load(str(tmp_path / "other.pth"))
    mmseg_file(tmp_path / "missing.pth", drop=("backbone.layer2.0.conv2.weight",))
    with pytest.raises(CheckpointError, match="layer2.0.conv2.weight"):
        task.model.load(str(tmp_path / "missing.pth"))
    mmseg_file(tmp_path / "no_var.pth", drop=("backbone.layer1.0.bn2.running_var",))
    with pytest.raises(CheckpointError, match="layer1.0.bn2.running_var"):
        task.model.load(str(tmp_path / "no_var.pth"))
    mmseg_file(tmp_path / "shape.pth", extra={"decode_head.conv_seg.weight": torch.zeros(7, 16, 1, 1)})
    with pytest.raises(CheckpointError, match="conv_last.1.weight"):
        task.model.load(str(tmp_path / "shape.pth"))
    mmseg_file(tmp_path / "good.pth")
    reduced.MODEL.arch_decoder = "upernet"  # the original's pyramid order: the same layers, other outputs
    with pytest.raises(
        CheckpointError, match="a 'uperhead' decoder here; the config's MODEL.arch_decoder is 'upernet'"
    ):
        task_for(reduced).model.load(str(tmp_path / "good.pth"))
    (tmp_path / "pickled.pth").write_bytes(pickle.dumps({"state_dict": Exploit(str(tmp_path / "exploited"))}))
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        task.model.load(str(tmp_path / "pickled.pth"))
    assert not (tmp_path / "exploited").exists()


class Exploit:
    """What a pickle may run when loaded without `weights_only`: here, create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_written_back_it_is_the_same_file(reduced, tmp_path):
    theirs = mmseg_file(tmp_path / "model.pth")
    parts = mmseg.read(tmp_path / "model.pth")
    assert parts.decoder == "uperhead" and parts.meta["CLASSES"] == ["a", "b", "c", "d", "e"]
    mmseg.write(tmp_path / "back.pth", parts)
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert back["meta"] == parts.meta and back["state_dict"].keys() == theirs.keys()
    assert all(torch.equal(back["state_dict"][k], v) for k, v in theirs.items())


def test_a_pspnet_file_is_our_ppm_decoder(reduced, tmp_path):
    """PSPHead (pool, 1x1 ConvModule to 512, upsample; 3x3 `bottleneck` to 512; dropout; `conv_seg`) is the
    original's PSP decoder, our `ppm`, layer for layer."""
    layout = {f"backbone.{k}": v for k, v in mmseg_resnet_v1c_layout(50, REDUCED_BLOCKS, REDUCED_WIDTHS).items()}
    head = {k: v for k, v in mmseg_uperhead_layout(MAPS, 5).items() if k.startswith(("psp_modules", "conv_seg"))}
    head["bottleneck.conv.weight"] = (512, MAPS[-1] + 4 * 512, 3, 3)
    _bn(head, "bottleneck.bn", 512)
    layout |= {f"decode_head.{k}": v for k, v in head.items()}
    torch.manual_seed(2)
    state = {k: torch.rand(shape) + 0.5 if shape else torch.tensor(3) for k, shape in layout.items()}
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "pspnet_r50-d8.pth")
    reduced.merge_from_list(["MODEL.arch_encoder", "resnet50v1cdilated", "MODEL.arch_decoder", "ppm"])
    model = task_for(reduced).model.load(str(tmp_path / "pspnet_r50-d8.pth"), optimize=False)
    decoder = model.decoder.state_dict()
    pairs = {"psp_modules.2.1.conv.weight": "ppm.2.1.weight", "psp_modules.0.1.bn.running_var": "ppm.0.2.running_var"}
    pairs |= {"bottleneck.conv.weight": "conv_last.0.weight", "bottleneck.bn.bias": "conv_last.1.bias"}
    pairs |= {"conv_seg.weight": "conv_last.4.weight"}
    for theirs, ours in pairs.items():
        assert torch.equal(decoder[ours], state[f"decode_head.{theirs}"]), theirs
    assert mmseg.read(tmp_path / "pspnet_r50-d8.pth").aux_state == {}  # no auxiliary head in this file


MMSEG_MEAN, MMSEG_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # its configs' data_preprocessor, RGB


def _windows_and_counts(height, width, crop, stride):
    """mmsegmentation's slide grid, listed by hand for the sizes used below (see slide_inference)."""
    assert (height, width, crop, stride) == (64, 111, 48, 32)
    return [(y, x) for y in ((0, 48), (16, 64)) for x in ((0, 48), (32, 80), (63, 111))]


@pytest.mark.parametrize(
    "mode, align_corners, flip", [("whole", False, False), ("slide", True, False), ("whole", True, True)]
)
def test_mmseg_test_pipeline_equals_an_independent_computation(reduced, tmp_path, mode, align_corners, flip):
    """TEST.pipeline mmseg: resize in ratio to fit (long 160, short 64) rounding half up (mmcv's rescale_size), OpenCV's
    bilinear, RGB normalised; logits resized to the resized image (whole, or each window, summed over the windows
    and divided by their count), then to the image; softmax (averaged with the mirrored image's)."""
    opts = ["TEST.pipeline", "mmseg", "TEST.mode", mode, "TEST.crop_size", "48", "TEST.stride", "32"]
    opts += ["DATASET.imgSizes", "(64,)", "DATASET.imgMaxSize", "160", "TEST.flip", str(flip)]
    reduced.merge_from_list([*opts, "MODEL.align_corners", str(align_corners), "TEST.checkpoint", "epoch_1.pth"])
    model = task_for(reduced).model.build(inference=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # batch statistics measured on images, as trained ones
    with torch.no_grad():
        model.train()
        model.decoder(model.encoder(torch.randn(2, 3, 64, 96), return_feature_maps=True), segSize=(64, 96))
    model.eval()
    os.makedirs(reduced.DIR)
    save_parts(reduced.DIR, "epoch_1.pth", {"encoder": model.encoder, "decoder": model.decoder})
    image = np.random.default_rng(5).integers(0, 256, (75, 130, 3), dtype=np.uint8)
    labels, probabilities = Segmenter(reduced, precision="fp32").predict(image, probabilities=True)

    resized = cv2.resize(image, (111, 64), interpolation=cv2.INTER_LINEAR)  # 75 x 130 times min(160/130, 64/75)
    x = torch.from_numpy((resized - np.array(MMSEG_MEAN)) / np.array(MMSEG_STD)).float().permute(2, 0, 1)[None]
    up = lambda t, size: F.interpolate(t, size, mode="bilinear", align_corners=align_corners)

    def logits_of(image):
        with torch.no_grad():
            return up(model.decoder.main_logits(model.encoder(image, return_feature_maps=True)), image.shape[-2:])

    def probabilities_of(image):
        if mode == "whole":
            at_input = logits_of(image)
        else:
            total, count = torch.zeros(1, 5, 64, 111), torch.zeros(1, 1, 64, 111)
            for (y1, y2), (x1, x2) in _windows_and_counts(64, 111, 48, 32):
                total[:, :, y1:y2, x1:x2] += logits_of(image[:, :, y1:y2, x1:x2])
                count[:, :, y1:y2, x1:x2] += 1
            at_input = total / count
        return torch.softmax(up(at_input, (75, 130)), 1)[0]

    expected = probabilities_of(x)
    if flip:
        expected = (expected + probabilities_of(x.flip(-1)).flip(-1)) / 2
    assert probabilities.shape == (5, 75, 130)
    assert np.abs(probabilities - expected.numpy()).max() < 1e-4
    assert (labels == expected.argmax(0).numpy()).mean() > 0.999


OPENMMLAB_MODELS = {name: m for name, m in zoo.MODELS.items() if m.file}


def test_the_zoo_has_mmsegmentations_upernets_and_pspnets_under_their_presets_names(monkeypatch):
    """The 16 UPerNets of its table and 4 PSPNets, each its preset's model, at its published URL, whose file name ends
    with the start of its SHA-256."""
    assert len(OPENMMLAB_MODELS) == 20
    assert sum("-upernet-" in n for n in OPENMMLAB_MODELS) == 16 and sum("-pspnet-" in n for n in OPENMMLAB_MODELS) == 4
    for name, model in OPENMMLAB_MODELS.items():
        cfg = load_config(zoo.config_path(name))
        assert cfg.TEST.pipeline == "mmseg" and model.config == f"{name}.yaml"
        assert len(name_hash(model.file)) == 8 and 0 < model.miou < model.miou_ms_flip < 100
    monkeypatch.delenv("MIT_SEMSEG_OPENMMLAB_URL")
    assert released_urls("cityscapes-resnet50-upernet-512x1024-40k")["file"] == (
        "https://download.openmmlab.com/mmsegmentation/v0.5/upernet/upernet_r50_512x1024_40k_cityscapes/"
        "upernet_r50_512x1024_40k_cityscapes_20200605_094827-aa54cb54.pth"
    )
    assert released_urls("ade20k-resnet101-pspnet-512x512-80k")["file"] == (
        "https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r101-d8_512x512_80k_ade20k/"
        "pspnet_r101-d8_512x512_80k_ade20k_20200614_031423-b6e782f0.pth"
    )


def test_a_zoo_model_is_downloaded_checked_and_run_by_name(reduced, monkeypatch, tmp_path):
    """Segmenter.from_pretrained, test.py --model and --init-from take the name; the file comes from
    $MIT_SEMSEG_OPENMMLAB_URL once, and one whose SHA-256 does not start as its name says is refused, not kept."""
    name = "cityscapes-resnet50-upernet-512x1024-40k"
    mmseg_file(tmp_path / "model.pth", classes=19)
    body = (tmp_path / "model.pth").read_bytes()
    fc_dim = ["MODEL.fc_dim", str(MAPS[-1])]
    real = OPENMMLAB_MODELS[name].file
    cache = tmp_path / "cache" / "ckpt" / name
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"upernet_r50_512x1024_40k_cityscapes_20200605_094827-aa54cb54.pth failed"):
        Segmenter.from_pretrained(name, opts=fc_dim)
    assert time.monotonic() - started < 10
    with serve({f"/mirror/{real}": body}) as (url, _):
        monkeypatch.setenv("MIT_SEMSEG_OPENMMLAB_URL", url + "/mirror")
        actual = hashlib.sha256(body).hexdigest()
        with pytest.raises(DownloadError, match=f"{os.path.basename(real)} is corrupt: SHA-256 {actual}, expected"):
            Segmenter.from_pretrained(name, opts=fc_dim)
    assert not cache.exists() or not list(cache.iterdir())
    ours = real.replace("aa54cb54", actual[:8])
    monkeypatch.setitem(zoo.MODELS, name, dataclasses.replace(OPENMMLAB_MODELS[name], file=ours))
    image = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image[:, :, ::-1])
    with serve({f"/mirror/{ours}": body}) as (url, server):
        monkeypatch.setenv("MIT_SEMSEG_OPENMMLAB_URL", url + "/mirror")
        segmenter = Segmenter.from_pretrained(name, opts=fc_dim)
        out = tmp_path / "out"
        assert (
            predict.main(
                ["--model", name, "--imgs", str(tmp_path / "a.png"), "--gpu", "cpu", *fc_dim, "TEST.result", str(out)]
            )
            == 0
        )
        files = source_files(name)  # train.py --init-from NAME
        assert len(server.requests) == 1  # then from the cache
    assert segmenter.cfg.TEST.pipeline == "mmseg" and len(segmenter.class_names) == 19
    label = cv2.imread(str(out / "a_label.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(segmenter.predict(image), label.astype(np.int64) - 1)
    assert set(files) == {"encoder", "decoder"} and all(os.path.isfile(f) for f in files.values())


def test_the_shipped_class_tables_are_what_the_preparations_write(tmp_path):
    """DATASET.class_info cityscapes and voc: the tables the Cityscapes preparation (from cityscapesscripts) and the
    VOC one write, so that a released model names its classes without the dataset."""
    from mit_semseg.prepare.cityscapes import label_table
    from mit_semseg.prepare.common import write_class_table
    from mit_semseg.prepare.voc import CLASSES

    _, _, names, colors = label_table()
    write_class_table(str(tmp_path / "cityscapes.csv"), names, colors)
    write_class_table(str(tmp_path / "voc.csv"), CLASSES, palette(len(CLASSES)))
    for name in ("cityscapes", "voc"):
        assert (tmp_path / f"{name}.csv").read_text() == BUILTIN_CLASS_TABLES[name].read_text()
    cfg = load_config(REPO / "config" / "cityscapes-resnet50-upernet-512x1024-40k.yaml")
    assert class_names(cfg)[:3] == ["road", "sidewalk", "building"] and config_colors(cfg)[0].tolist() == [128, 64, 128]
    assert class_names(load_config(REPO / "config" / "voc-resnet50-upernet-512x512-20k.yaml"))[15] == "person"


def test_convert_to_mmseg_writes_its_layout_with_the_auxiliary_head(reduced, tmp_path, capsys):
    """python -m mit_semseg.convert --to mmseg: a model trained here, its auxiliary head from the resume state, as
    mmsegmentation's file: exactly the names and shapes of its layout (so that it loads strictly there, auxiliary
    head included); read back, the same weights."""
    scenes = tmp_path / "scenes"
    generate(str(scenes), num_train=2, num_val=1, seed=4, min_side=64, max_side=80)
    opts = ["DATASET.root_dataset", str(scenes), "DATASET.list_train", str(scenes / "training.odgt")]
    opts += ["DATASET.num_class", str(NUM_CLASS), "DATASET.class_info", str(scenes / "class_info.csv")]
    opts += ["MODEL.aux_head", "fcn", "TRAIN.num_epoch", "1", "TRAIN.epoch_iters", "1", "TRAIN.workers", "0"]
    opts += ["DATASET.imgSizes", "(64,)", "DATASET.imgMaxSize", "96", "DATASET.segm_downsampling_rate", "4"]
    opts += ["TEST.checkpoint", "epoch_1.pth"]
    reduced.merge_from_list([*opts, "DATASET.padding_constant", "32", "TRAIN.batch_size_per_gpu", "2"])
    train(reduced, Runtime([torch.device("cpu")]))
    (tmp_path / "cfg.yaml").write_text(reduced.dump())
    assert convert.main(["--cfg", str(tmp_path / "cfg.yaml"), "--to", "mmseg", str(tmp_path / "theirs.pth")]) == 0, (
        capsys.readouterr().err
    )
    assert "with auxiliary head" in capsys.readouterr().out
    saved = torch.load(tmp_path / "theirs.pth", weights_only=True)
    layout = {f"backbone.{k}": v for k, v in mmseg_resnet_v1c_layout(50, REDUCED_BLOCKS, REDUCED_WIDTHS).items()}
    layout |= {f"decode_head.{k}": v for k, v in mmseg_uperhead_layout(MAPS, NUM_CLASS, channels=16).items()}
    layout |= {f"auxiliary_head.{k}": v for k, v in mmseg_fcn_aux_layout(MAPS[2], NUM_CLASS).items()}
    assert {k: tuple(v.shape) for k, v in saved["state_dict"].items()} == layout
    assert saved["meta"]["CLASSES"] == saved["meta"]["dataset_meta"]["classes"] == class_names(reduced)
    ours = checkpoint_weights(reduced.DIR, 1)
    back = task_for(reduced).model.load(str(tmp_path / "theirs.pth"), optimize=False)
    for part in ("encoder", "decoder"):
        loaded = getattr(back, part).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in ours[part].items() if not k.endswith(COMPAT_BUFFERS)), part
    aux = torch.load(next(Path(reduced.DIR).glob("train_state_*.pth")), weights_only=True)["training_parts"]["aux_head"]
    assert torch.equal(saved["state_dict"]["auxiliary_head.conv_seg.weight"], aux["conv_last.weight"])
    # a model of none of its architectures is refused, named
    (tmp_path / "other.yaml").write_text(reduced.dump().replace("arch_decoder: uperhead", "arch_decoder: upernet"))
    assert convert.main(["--cfg", str(tmp_path / "other.yaml"), "--to", "mmseg", str(tmp_path / "x.pth")]) != 0
    assert "resnet50v1c + upernet is none of mmsegmentation's models here" in capsys.readouterr().err
