"""Encoder/decoder pairs in training and inference mode, and the pieces they are made of."""

import pytest
import torch
import torch.nn.functional as F
from helpers import REDUCED_ENCODERS, use_reduced_encoders
from torch import nn

from mit_semseg.models import DECODERS, ENCODERS, ModelBuilder, SegmentationModule
from mit_semseg.nn import SynchronizedBatchNorm2d

DILATED = ["mobilenetv2dilated", "resnet18dilated", "resnet50dilated", "resnet101dilated", "resnext101dilated"]
DILATED += ["resnet50v1cdilated"]  # resnet101v1c's reduced variant is resnet50v1c's at other widths
PLAIN = ["resnet18", "resnet50", "resnet101", "resnext101", "resnet50v1c", "hrnetv2", "convnext_tiny", "swin_tiny"]
# the pairs run again with the other CPUs' kernels (`numeric`): one encoder of each block family and stem, every decoder
ON_EVERY_KERNEL = {"mobilenetv2dilated", "resnet18dilated", "resnext101dilated", "resnet50v1cdilated", "hrnetv2"}
NUM_CLASS = 7
IMAGE = (2, 3, 64, 96)


def _decoders_for(encoder):
    """The original supports deep supervision on the dilated encoders; UPerNet here runs on every multi-map one."""
    names = ["c1", "ppm"]
    if encoder in DILATED:
        names += ["c1_deepsup", "ppm_deepsup"]
    if encoder != "hrnetv2":
        names += ["upernet", "upernet_lite"] + (
            ["uperhead"] if encoder.startswith(("resnet50v1c", "convnext", "swin")) else []
        )
    return names


@pytest.mark.parametrize(
    "encoder", [pytest.param(e, marks=[pytest.mark.numeric] if e in ON_EVERY_KERNEL else []) for e in DILATED + PLAIN]
)
def test_pairs_train_and_inference(encoder, monkeypatch):
    use_reduced_encoders(monkeypatch)
    torch.manual_seed(0)
    spec = ENCODERS[encoder]
    enc = ModelBuilder.build_encoder(encoder, fc_dim=spec.fc_dim, pretrained=False)
    x = torch.randn(*IMAGE)
    for decoder in _decoders_for(encoder):
        dec = ModelBuilder.build_decoder(decoder, fc_dim=spec.fc_dim, num_class=NUM_CLASS)
        deep_sup = decoder.endswith("deepsup")
        seg = SegmentationModule(enc, dec, nn.NLLLoss(ignore_index=-1), deep_sup_scale=0.4 if deep_sup else None)
        seg.train()
        out = dec(enc(x, return_feature_maps=True))
        if deep_sup:
            assert isinstance(out, tuple) and len(out) == 2
            assert out[0].shape == out[1].shape
            main = out[0]
        else:
            main = out
        assert main.shape[:2] == (2, NUM_CLASS)
        torch.testing.assert_close(main.exp().sum(1), torch.ones(main.shape[0], *main.shape[2:]))
        label = torch.randint(-1, NUM_CLASS, (main.shape[0], *main.shape[2:]))
        out = seg({"img_data": x, "seg_label": label})
        loss, acc = out["loss"], out["acc"]
        assert torch.isfinite(loss) and 0 <= acc <= 1
        loss.backward()
        assert all(p.grad is not None for p in dec.parameters())
        seg.eval()
        with torch.no_grad():
            prob = seg({"img_data": x}, segSize=(50, 70))
        assert prob.shape == (2, NUM_CLASS, 50, 70)
        assert (prob >= 0).all()
        torch.testing.assert_close(prob.sum(1), torch.ones(2, 50, 70))
        enc.zero_grad()


def test_upernet_takes_fpn_widths_from_the_encoder():
    assert ModelBuilder.build_decoder("upernet", fc_dim=320).fpn_in[0][0].in_channels == 24
    assert len(ModelBuilder.build_decoder("upernet", fc_dim=320).fpn_in) == 4
    assert [m[0].in_channels for m in ModelBuilder.build_decoder("upernet", fc_dim=512).fpn_in] == [64, 128, 256]
    dec = ModelBuilder.build_decoder("upernet", fc_dim=512, fpn_inplanes=(32, 64, 512))
    assert [m[0].in_channels for m in dec.fpn_in] == [32, 64]
    with pytest.raises(ValueError, match="fpn_inplanes"):
        ModelBuilder.build_decoder("upernet", fc_dim=1000)


@pytest.mark.numeric
def test_deep_supervision_loss_is_main_plus_scaled_aux():
    torch.manual_seed(0)
    enc = ModelBuilder.build_encoder("resnet18dilated", pretrained=False).eval()
    dec = ModelBuilder.build_decoder("c1_deepsup", fc_dim=512, num_class=NUM_CLASS)
    x = torch.randn(*IMAGE)
    main, aux = dec(enc(x, return_feature_maps=True))
    label = torch.randint(-1, NUM_CLASS, (2, 8, 12))
    label[0, :2] = -1
    out = SegmentationModule(enc, dec, nn.NLLLoss(ignore_index=-1), deep_sup_scale=0.4)(
        {"img_data": x, "seg_label": label}
    )
    loss, acc = out["loss"], out["acc"]
    valid = label >= 0
    picked = lambda logp: -logp.permute(0, 2, 3, 1)[valid].gather(1, label[valid][:, None]).mean()
    torch.testing.assert_close(loss, picked(main) + 0.4 * picked(aux))
    expected_acc = (main.argmax(1)[valid] == label[valid]).float().mean()
    torch.testing.assert_close(acc, expected_acc)


def test_pixel_acc_by_hand():
    pred = torch.zeros(1, 3, 1, 4)
    pred[0, :, 0, 0] = torch.tensor([1.0, 0, 0])  # class 0
    pred[0, :, 0, 1] = torch.tensor([0, 1.0, 0])  # class 1
    pred[0, :, 0, 2] = torch.tensor([0, 0, 1.0])  # class 2
    pred[0, :, 0, 3] = torch.tensor([0, 0, 1.0])  # class 2
    label = torch.tensor([[[0, 2, 2, -1]]])  # right, wrong, right, ignored
    assert SegmentationModule.pixel_acc(pred, label).item() == pytest.approx(2 / 3)


def test_dilation_rule_in_layer3_and_layer4():
    enc = ModelBuilder.build_encoder("resnet50dilated", pretrained=False)
    first, second = enc.layer3[0], enc.layer3[1]
    assert (first.conv2.stride, first.conv2.dilation, first.conv2.padding) == ((1, 1), (1, 1), (1, 1))
    assert (second.conv2.dilation, second.conv2.padding) == ((2, 2), (2, 2))
    assert first.downsample[0].stride == (1, 1) and first.downsample[0].dilation == (1, 1)
    assert (enc.layer4[0].conv2.dilation, enc.layer4[2].conv2.dilation) == ((2, 2), (4, 4))
    assert enc.layer2[0].conv2.stride == (2, 2)
    mobile = ModelBuilder.build_encoder("mobilenetv2dilated", pretrained=False)
    assert mobile.features[7].conv[3].dilation == (1, 1) and mobile.features[7].conv[3].stride == (1, 1)
    assert mobile.features[8].conv[3].dilation == (2, 2)
    assert mobile.features[14].conv[3].dilation == (2, 2) and mobile.features[15].conv[3].dilation == (4, 4)


def test_bn_momentum_reaches_every_layer_but_hrnet_keeps_its_own():
    enc = ModelBuilder.build_encoder("resnet18", pretrained=False, bn_momentum=0.1)
    dec = ModelBuilder.build_decoder("ppm", fc_dim=512)
    assert {m.momentum for m in enc.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}
    assert {m.momentum for m in dec.modules() if isinstance(m, nn.BatchNorm2d)} == {0.001}
    hr = ModelBuilder.build_encoder("hrnetv2", pretrained=False, bn_momentum=0.5)
    assert {m.momentum for m in hr.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}
    assert all(isinstance(m, SynchronizedBatchNorm2d) for m in enc.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.numeric
@pytest.mark.parametrize("training", [True, False])
def test_synchronized_bn_equals_batchnorm2d_on_one_device(training):
    torch.manual_seed(0)
    ours, ref = SynchronizedBatchNorm2d(5, momentum=0.1), nn.BatchNorm2d(5, momentum=0.1)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 1.5, 5))
            m.bias.copy_(torch.linspace(-1, 1, 5))
            m.running_mean.fill_(0.3)
            m.running_var.fill_(2.0)
    ours.train(training), ref.train(training)
    x = torch.randn(4, 5, 6, 7) * 3 + 1
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g), yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    if training:  # by hand: batch statistics, unbiased variance in the running average
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        expected = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-5)
        expected = expected * ours.weight[None, :, None, None] + ours.bias[None, :, None, None]
        torch.testing.assert_close(ya, expected.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.running_var, 0.9 * 2.0 + 0.1 * x.var((0, 2, 3), unbiased=True))


@pytest.mark.numeric
def test_synchronized_bn_saves_the_original_bookkeeping_buffers():
    bn = SynchronizedBatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 5.0, 6.0]))
        bn._running_iter.fill_(10.0)
    state = bn.state_dict()
    assert list(state) == [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
        "_tmp_running_mean",
        "_tmp_running_var",
        "_running_iter",
    ]
    torch.testing.assert_close(state["_tmp_running_mean"], torch.tensor([10.0, 20.0, 30.0]))
    torch.testing.assert_close(state["_tmp_running_var"], torch.tensor([40.0, 50.0, 60.0]))


@pytest.mark.numeric
def test_use_softmax_without_segsize_gives_probabilities_at_decoder_resolution():
    dec = ModelBuilder.build_decoder("c1", fc_dim=320, num_class=NUM_CLASS, use_softmax=True).eval()
    feats = [torch.randn(1, 320, 5, 6)]
    prob = dec(feats)
    assert prob.shape == (1, NUM_CLASS, 5, 6)
    torch.testing.assert_close(prob, F.softmax(dec.conv_last(dec.cbr(feats[0])), 1))


def test_registries_list_every_architecture():
    assert set(ENCODERS) == {
        "mobilenetv2dilated",
        "resnet18",
        "resnet18dilated",
        "resnet50",
        "resnet50dilated",
        "resnet101",
        "resnet101dilated",
        "resnext101",
        "resnext101dilated",
        "resnet50v1c",
        "resnet50v1cdilated",
        "resnet101v1c",
        "resnet101v1cdilated",
        "hrnetv2",
        *(f"convnext_{size}" for size in ("tiny", "small", "base", "large", "xlarge")),
        *(f"swin_{size}" for size in ("tiny", "small", "base", "large")),
    }
    assert set(DECODERS) == {
        "c1",
        "c1_deepsup",
        "ppm",
        "ppm_deepsup",
        "upernet",
        "upernet_lite",
        "uperhead",
        "upp",
        "upp_lite",
    }
    with pytest.raises(ValueError, match="unknown encoder architecture 'resnet51'.*resnet50dilated"):
        ModelBuilder.build_encoder("resnet51", pretrained=False)
    with pytest.raises(ValueError, match="unknown decoder architecture 'ppm_deep'.*ppm_deepsup"):
        ModelBuilder.build_decoder("ppm_deep")


def test_every_encoder_has_a_reduced_variant():
    """The tests' reduced encoders (helpers.REDUCED_ENCODERS): one per registered architecture, of the same block
    types, giving the maps their spec declares, each last width distinct."""
    assert set(REDUCED_ENCODERS) == set(ENCODERS)
    for name, spec in REDUCED_ENCODERS.items():
        with torch.device("meta"):  # the full one's layers and sizes, without memory
            full = ENCODERS[name].build()
        small = spec.build()
        assert {type(m) for m in small.modules()} == {type(m) for m in full.modules()}, name
        maps = small(torch.randn(1, 3, 64, 64), return_feature_maps=True)
        assert tuple(m.shape[1] for m in maps) == spec.feature_channels, name
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters()) / 10
    assert len({spec.fc_dim for spec in REDUCED_ENCODERS.values()}) == len(REDUCED_ENCODERS) - 6  # plain = dilated
