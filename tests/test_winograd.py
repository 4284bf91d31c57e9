"""Winograd's F(2x2, 3x3) against the convolution in float64, and where the inference path uses it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mit_semseg.nn import winograd
from mit_semseg.nn.winograd import WinogradConv2d, transformed_filters, use_winograd, winograd_conv3x3


@pytest.mark.numeric
@pytest.mark.parametrize("shape", [(1, 64, 32, 32), (2, 48, 17, 23), (1, 8, 1, 1), (1, 8, 2, 5), (3, 16, 9, 4)])
def test_equals_the_convolution_in_float64(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    weight = torch.randn(40, shape[1], 3, 3, generator=g) / (9 * shape[1]) ** 0.5
    bias = torch.randn(40, generator=g)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    ours = winograd_conv3x3(x, transformed_filters(weight), bias)
    direct = F.conv2d(x, weight, bias, padding=1)
    assert ours.shape == exact.shape and ours.dtype == torch.float32
    error, direct_error = (ours.double() - exact).abs().max(), (direct.double() - exact).abs().max()
    assert error < 1e-5 and error < 4 * direct_error + 1e-6  # float32 rounding, of the direct convolution's size
    unbiased = winograd_conv3x3(x, transformed_filters(weight), None)
    assert torch.allclose(unbiased, ours - bias.view(1, -1, 1, 1), atol=1e-5)


def test_the_filter_transform_is_g_g_gt():
    weight = torch.arange(9.0).view(1, 1, 3, 3)
    g = torch.tensor(winograd.FILTER_TRANSFORM)
    assert torch.equal(transformed_filters(weight).view(4, 4), g @ weight[0, 0] @ g.T)


def test_falls_back_to_the_convolution_where_it_does_not_apply(monkeypatch):
    conv = nn.Conv2d(8, 8, 3, padding=1)
    layer = WinogradConv2d(conv)
    calls = []
    monkeypatch.setattr(winograd, "winograd_conv3x3", lambda *a: calls.append(a) or conv(a[0]))
    monkeypatch.setattr(winograd, "MIN_PIXELS", 16)
    with torch.no_grad():
        layer(torch.randn(1, 8, 4, 4))
        assert len(calls) == 1
        layer(torch.randn(1, 8, 3, 5))  # a smaller map
        layer(torch.randn(1, 8, 8, 8).contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", torch.bfloat16):
            layer(torch.randn(1, 8, 8, 8))
    assert len(calls) == 1
    with pytest.raises(ValueError, match="not a 3x3 convolution of stride 1 and padding 1"):
        WinogradConv2d(nn.Conv2d(8, 8, 3, padding=2, dilation=2))


def test_only_wide_3x3_convolutions_are_replaced():
    model = nn.Sequential(
        nn.Conv2d(1024, 256, 3, padding=1),  # a decoder's fusing conv: replaced
        nn.Conv2d(512, 512, 3, padding=1),  # narrower inputs
        nn.Conv2d(1024, 256, 3, padding=1, stride=2),
        nn.Conv2d(1024, 256, 3, padding=2, dilation=2),
        nn.Conv2d(1024, 256, 1),
        nn.Sequential(nn.Conv2d(2048, 512, 3, padding=1, bias=False)),  # nested: replaced
    )
    use_winograd(model)
    assert [type(m).__name__ for m in model[:5]] == ["WinogradConv2d", "Conv2d", "Conv2d", "Conv2d", "Conv2d"]
    assert isinstance(model[5][0], WinogradConv2d) and model[5][0].conv.bias is None
