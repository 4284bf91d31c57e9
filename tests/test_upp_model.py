"""The UPP decoder: the original's checkpoint layout, its heads' outputs in training and inference, label tables."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_small_tables

from mit_semseg.data.label_tables import read_label_tables
from mit_semseg.data.records import DataError
from mit_semseg.models import ModelBuilder

UPP_LAYOUT = json.loads((Path(__file__).resolve().parent / "data" / "upp_state_dict_layout.json").read_text())
ORIGINAL_NAMES = {"upp": "upernet", "upp_lite": "upernet_lite"}  # the original's names of the two decoders


def _layout(module):
    return {k: [list(v.shape), str(v.dtype)] for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch", ["upp", "upp_lite"])
def test_decoder_state_dict_equals_the_original_layout_key_for_key(arch):
    net = ModelBuilder.build_decoder(arch=arch, fc_dim=2048, use_softmax=True)
    reference = UPP_LAYOUT["decoders"][ORIGINAL_NAMES[arch]]
    assert list(_layout(net).items()) == list(reference.items())
    tables = read_label_tables()
    assert tables.num_classes == {k: UPP_LAYOUT["nr_classes"][k] for k in ("object", "part", "scene", "material")}


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_encoders_equal_the_original_layout(arch):
    net = ModelBuilder.build_encoder(arch, pretrained=False)
    assert _layout(net) == UPP_LAYOUT["encoders"][arch]


def test_over_resnet18_with_own_tables_in_training_and_inference(tmp_path):
    torch.manual_seed(0)
    encoder = ModelBuilder.build_encoder("resnet18", pretrained=False)
    decoder = ModelBuilder.build_decoder("upp_lite", fc_dim=512, label_tables=str(write_small_tables(tmp_path)))
    maps = encoder(torch.randn(2, 3, 64, 96), return_feature_maps=True)
    out = decoder(maps)
    assert out["scene"].shape == (2, 2) and out["object"].shape == (2, 4, 16, 24)
    assert out["material"].shape == (2, 3, 16, 24)
    assert [p.shape for p in out["part"]] == [(2, 3, 16, 24), (2, 3, 16, 24)]
    torch.testing.assert_close(out["scene"].exp().sum(1), torch.ones(2))
    decoder.eval()
    with torch.no_grad():
        probs = decoder(encoder.eval()(torch.randn(1, 3, 64, 96), return_feature_maps=True), segSize=(50, 70))
    assert probs["scene"].shape == (1, 2) and probs["object"].shape == (1, 4, 50, 70)
    for group in probs["part"]:
        assert group.shape == (1, 3, 50, 70)
        torch.testing.assert_close(group.sum(1), torch.ones(1, 50, 70))
    only = decoder(maps, tasks=("material",))
    assert set(only) == {"material"}


def test_skipped_heads_get_no_gradient(tmp_path):
    encoder = ModelBuilder.build_encoder("resnet18", pretrained=False)
    decoder = ModelBuilder.build_decoder("upp_lite", fc_dim=512, label_tables=str(write_small_tables(tmp_path)))
    decoder(encoder(torch.randn(2, 3, 64, 64), return_feature_maps=True), tasks=("material",))[
        "material"
    ].sum().backward()
    assert decoder.material_head[1].weight.grad is not None and decoder.fpn_in[0][0].weight.grad is not None
    assert decoder.object_head[1].weight.grad is None and decoder.conv_fusion[0].weight.grad is None
    assert decoder.scene_head[2].weight.grad is None


@pytest.mark.parametrize(
    "file, text, message",
    [
        ("object.csv", "label,name\n0,-\n2,wall\n", "labels must run 0..1 in order"),
        ("part.csv", "id,name\n0,-\n", "expected the columns label,name"),
        (
            "object_part_hierarchy.csv",
            "object_label,object_name,part_labels,part_names\n9,x,0;1,-;leg\n",
            "line 2: object label 9 is not in object.csv",
        ),
        (
            "object_part_hierarchy.csv",
            "object_label,object_name,part_labels,part_names\n1,table,1;2,leg;top\n",
            "part labels must start with 0",
        ),
    ],
)
def test_bad_tables_are_named(tmp_path, file, text, message):
    folder = write_small_tables(tmp_path)
    (folder / file).write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_label_tables(folder)
    assert file in str(err.value)


def test_upp_configs_are_validated(tmp_path):
    from helpers import REPO

    from mit_semseg.config import ConfigError, load_config

    preset = REPO / "config" / "broden-resnet50-upp.yaml"
    cfg = load_config(preset)
    assert cfg.MODEL.arch_decoder == "upp" and cfg.MODEL.input_normalisation == "caffe" and cfg.TRAIN.num_epoch == 40
    assert (cfg.TRAIN.loss_weight_part, cfg.TRAIN.loss_weight_scene) == (0.5, 0.25)
    with pytest.raises(ConfigError, match="DATASET.label_tables: label table not found: .*object.csv"):
        load_config(preset, ["DATASET.label_tables", str(tmp_path)])
    with pytest.raises(ConfigError, match="TEST.mode slide, TEST.pipeline original: a UPP decoder"):
        load_config(preset, ["TEST.mode", "slide"])
    with pytest.raises(ConfigError, match="MODEL.input_normalisation: unknown 'bgr'; valid: imagenet, caffe"):
        load_config(preset, ["MODEL.input_normalisation", "bgr"])


def _hat_weights(a: float, b: float, n: int) -> np.ndarray:
    """The integral over [a, b] of each sample's hat function max(0, 1 - |x - k|), k = 0..n-1 (closed form)."""

    def antiderivative(t):
        return 0.0 if t <= -1 else (t + 1) ** 2 / 2 if t <= 0 else 1 - (1 - t) ** 2 / 2 if t <= 1 else 1.0

    return np.array([antiderivative(b - k) - antiderivative(a - k) for k in range(n)])


def _bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """C x h0 x w0 resized to C x h x w, bilinear with align_corners False, by hand."""

    def taps(out, size):
        src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), size - 1)
        return i0, np.minimum(i0 + 1, size - 1), src - i0

    y0, y1, wy = taps(h, x.shape[1])
    x0, x1, wx = taps(w, x.shape[2])
    rows = x[:, y0] * (1 - wy)[None, :, None] + x[:, y1] * wy[None, :, None]
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx


def _bn_relu(x: np.ndarray, bn) -> np.ndarray:
    scale = bn.weight.detach().numpy() / np.sqrt(bn.running_var.numpy() + bn.eps)
    return np.maximum(
        0, (x - bn.running_mean.numpy()[:, None, None]) * scale[:, None, None] + bn.bias.detach().numpy()[:, None, None]
    )


@pytest.mark.numeric
def test_pyramid_pooling_upsamples_then_convolves_as_the_original(tmp_path):
    """The whole pyramid branch, computed independently in float64: Precise RoI pooling of the whole map as
    integrals of hat functions, bilinear upsampling by hand, THEN the 1x1 conv-BN-ReLU, then the 3x3 fusion."""
    torch.manual_seed(0)
    decoder = ModelBuilder.build_decoder("upp_lite", fc_dim=512, label_tables=str(write_small_tables(tmp_path)))
    decoder = decoder.double().eval()
    with torch.no_grad():
        for bn in decoder.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.normal_(0, 0.5)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.normal_(1, 0.3)
                bn.bias.normal_(0, 0.5)
    conv5 = torch.randn(1, 512, 5, 7, dtype=torch.float64)
    x, (h, w) = conv5[0].numpy(), conv5.shape[-2:]
    branches = [x]
    for scale, conv in zip((1, 2, 3, 6), decoder.ppm_conv):
        pooled = np.zeros((512, scale, scale))
        for i in range(scale):
            wy = _hat_weights(i * h / scale, (i + 1) * h / scale, h)
            for j in range(scale):
                wx = _hat_weights(j * w / scale, (j + 1) * w / scale, w)
                pooled[:, i, j] = np.einsum("chw,h,w->c", x, wy, wx) / (h / scale * w / scale)
        up = _bilinear(pooled, h, w)
        branches.append(_bn_relu(np.einsum("oc,chw->ohw", conv[0].weight.detach().numpy()[:, :, 0, 0], up), conv[1]))
    fused = torch.nn.functional.conv2d(
        torch.from_numpy(np.concatenate(branches))[None], decoder.ppm_last_conv[0].weight.detach(), padding=1
    )[0].numpy()
    want = _bn_relu(fused, decoder.ppm_last_conv[1])
    with torch.no_grad():
        got = decoder._context(conv5)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    # the other order (the PSPNet-style `ppm`: conv, then upsample) is measurably another function
    with torch.no_grad():
        rois = torch.tensor([[0, 0, 0, w, h]], dtype=torch.float64)
        swapped = [conv5] + [
            torch.nn.functional.interpolate(conv(pool(conv5, rois)), (h, w), mode="bilinear")
            for pool, conv in zip(decoder.ppm_pooling, decoder.ppm_conv)
        ]
        other = decoder.ppm_last_conv(torch.cat(swapped, 1))[0].numpy()
    assert np.abs(other - want).max() > 1e-3
