"""mmsegmentation's models here: the ResNetV1c encoders (UPerNet's, and PSPNet's D8) in its checkpoints' layout, and
its ImageNet weights from OpenMMLab's site, checked against the digest in their names."""

import hashlib
import io

import pytest
import torch
import torch.nn.functional as F
from httpserver import serve

from mit_semseg.hub import DownloadError, name_hash
from mit_semseg.models import ENCODERS, ModelBuilder
from mit_semseg.models.builder import DECODERS
from mit_semseg.models.decoders import UPerNet
from mit_semseg.nn.batchnorm import COMPAT_BUFFERS

STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def mmseg_resnet_v1c_layout(depth: int) -> dict[str, tuple[int, ...]]:
    """mmsegmentation's ResNetV1c state dict, written from its facts (not from our encoder): the stem
    `stem.{0,3,6}` convs 3->32->32->64 with batch norms `stem.{1,4,7}`, then Bottleneck stages of widths 64, 128,
    256, 512 (expansion 4), `downsample.0`/`.1` on each stage's first block."""
    layout: dict[str, tuple[int, ...]] = {}

    def bn(prefix, n):
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{name}"] = (n,)
        layout[f"{prefix}.num_batches_tracked"] = ()

    for index, (cin, cout) in zip((0, 3, 6), ((3, 32), (32, 32), (32, 64))):
        layout[f"stem.{index}.weight"] = (cout, cin, 3, 3)
        bn(f"stem.{index + 1}", cout)
    inplanes = 64
    for stage, blocks in enumerate(STAGES[depth]):
        planes = 64 * 2**stage
        for b in range(blocks):
            p = f"layer{stage + 1}.{b}"
            layout[f"{p}.conv1.weight"] = (planes, inplanes if b == 0 else planes * 4, 1, 1)
            layout[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            layout[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            for k, n in ((1, planes), (2, planes), (3, planes * 4)):
                bn(f"{p}.bn{k}", n)
            if b == 0:
                layout[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
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


def test_uperheads_pyramid_pools_convs_then_upsamples_and_is_otherwise_upernet():
    """mmsegmentation's UPerHead: each pooled map through its 1x1 conv-BN-ReLU, then upsampled (bilinear, corners not
    aligned); the original's UPerNet upsamples first. One decoder with the order as an option: the same layers."""
    assert DECODERS["uperhead"].options == {"fpn_dim": 512, "conv_before_resize": True}
    assert DECODERS["upernet"].cls is DECODERS["uperhead"].cls
    torch.manual_seed(0)
    widths = (16, 24, 32, 40)
    head = UPerNet.from_widths(widths, num_class=5, fpn_dim=16, conv_before_resize=True).double().eval()
    original = UPerNet.from_widths(widths, num_class=5, fpn_dim=16).double().eval()
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)  # so that the ReLUs cut
    original.load_state_dict(head.state_dict())
    assert head.state_dict().keys() == original.state_dict().keys()
    state = head.state_dict()
    conv5 = torch.randn(1, 40, 9, 11, dtype=torch.float64)
    branches = [
        F.interpolate(
            _conv_bn_relu(F.adaptive_avg_pool2d(conv5, scale), state, f"ppm_conv.{k}"), (9, 11), mode="bilinear"
        )
        for k, scale in enumerate((1, 2, 3, 6))
    ]
    expected = _conv_bn_relu(torch.cat([conv5, *branches], 1), state, "ppm_last_conv", padding=1)
    conv_out = [torch.randn(1, w, 72 // 2**k, 88 // 2**k, dtype=torch.float64) for k, w in enumerate(widths[:-1])]
    conv_out.append(conv5)
    context = {}
    head.ppm_last_conv.register_forward_hook(lambda m, i, out: context.setdefault("head", out))
    original.ppm_last_conv.register_forward_hook(lambda m, i, out: context.setdefault("original", out))
    with torch.no_grad():
        logits = head(conv_out, segSize=(72, 88))
        other = original(conv_out, segSize=(72, 88))
    torch.testing.assert_close(context["head"], expected, rtol=1e-10, atol=1e-10)
    assert (context["original"] - expected).abs().max() > 1e-3  # the other order: another context
    assert (logits - other).abs().max() > 1e-6
