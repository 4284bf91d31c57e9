"""Every encoder and decoder has the original's state-dict layout and feature-map shapes."""

import json

import pytest
import torch
from helpers import LAYOUT

from mit_semseg.models import ModelBuilder

REFERENCE = json.loads(LAYOUT.read_text())


def _layout(module):
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module.state_dict().items()]


@pytest.mark.parametrize("arch", sorted(REFERENCE["encoders"]))
def test_encoder_layout_and_feature_maps(arch):
    ref = REFERENCE["encoders"][arch]
    net = ModelBuilder.build_encoder(arch, fc_dim=ref["fc_dim"], pretrained=False).eval()
    assert _layout(net) == ref["state_dict"]
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 64, 96), return_feature_maps=True)
    assert [list(m.shape) for m in maps] == ref["feature_maps_for_64x96_input"]


@pytest.mark.parametrize("name", sorted(REFERENCE["decoders"]))
def test_decoder_layout(name):
    arch, params = name.split("@")
    kwargs = {k: int(v) for k, v in (p.split("=") for p in params.split(","))}
    net = ModelBuilder.build_decoder(arch, **kwargs)
    assert _layout(net) == REFERENCE["decoders"][name]["state_dict"]


def test_resnext101dilated_shares_resnext101_layout():
    plain = ModelBuilder.build_encoder("resnext101", pretrained=False)
    dilated = ModelBuilder.build_encoder("resnext101dilated", pretrained=False)
    assert _layout(plain) == _layout(dilated) == REFERENCE["encoders"]["resnext101"]["state_dict"]
    with torch.no_grad():
        maps = dilated.eval()(torch.randn(1, 3, 64, 96), return_feature_maps=True)
    assert [list(m.shape) for m in maps] == [[1, 256, 16, 24], [1, 512, 8, 12], [1, 1024, 8, 12], [1, 2048, 8, 12]]
