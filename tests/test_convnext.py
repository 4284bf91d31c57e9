"""ConvNeXt: its block against a computation of its own in float64, stochastic depth, the layout of each size."""

import math

import numpy as np
import pytest
import torch

from mit_semseg.config import load_config
from mit_semseg.errors import ConfigError
from mit_semseg.hub import DownloadError
from mit_semseg.models.builder import ENCODERS, build_encoder
from mit_semseg.models.convnext import SIZES, ConvNeXtBlock, ConvNeXtEncoder


def _block_by_hand(x, block):
    """The block written out in numpy float64: a 7x7 depthwise conv (padding 3) by its sums, layer norm over the
    channels, x W1 + b1, exact GELU (erf), x W2 + b2, times gamma, plus the input."""
    p = {k: v.detach().numpy().astype(np.float64) for k, v in block.state_dict().items()}
    h, w = x.shape[-2:]
    padded = np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3)))
    y = np.zeros_like(x)
    for i in range(7):
        for j in range(7):
            y += padded[:, :, i : i + h, j : j + w] * p["dwconv.weight"][None, :, 0, i, j, None, None]
    y += p["dwconv.bias"][None, :, None, None]
    y = y.transpose(0, 2, 3, 1)
    y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-6) * p["norm.weight"] + p["norm.bias"]
    y = y @ p["pwconv1.weight"].T + p["pwconv1.bias"]
    y = 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
    y = (y @ p["pwconv2.weight"].T + p["pwconv2.bias"]) * p["gamma"]
    return x + y.transpose(0, 3, 1, 2)


@pytest.mark.numeric
def test_the_block_equals_its_definition():
    torch.manual_seed(0)
    block = ConvNeXtBlock(8, layer_scale=0.5).double().eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0, 0.3)
    x = np.random.default_rng(0).normal(size=(2, 8, 9, 11))
    got = block(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, _block_by_hand(x, block), rtol=1e-10, atol=1e-10)


def test_stochastic_depth_drops_whole_branches_while_training():
    torch.manual_seed(0)
    block = ConvNeXtBlock(4, drop_rate=0.5, layer_scale=1.0).double()
    x = torch.randn(64, 4, 5, 5, dtype=torch.float64)
    branch = block.eval()(x) - x  # the branch, kept whole
    out = block.train()(x)
    dropped = torch.isclose(out, x).flatten(1).all(1)
    doubled = torch.isclose(out, x + 2 * branch).flatten(1).all(1)
    assert (dropped | doubled).all() and 10 < int(dropped.sum()) < 54  # each sample one or the other, about half
    encoder = ConvNeXtEncoder((1, 1, 2, 1), (8, 8, 8, 8), drop_path_rate=0.3)
    rates = [b.drop_rate for stage in encoder.stages for b in stage]
    assert rates == pytest.approx(np.linspace(0, 0.3, 5).tolist())  # growing linearly over the 5 blocks


@pytest.mark.parametrize("size", list(SIZES))
def test_each_size_has_the_papers_layout(size):
    """Depths and widths of the paper (Liu et al., 2022, Table 9), four maps at strides 4 to 32 of any input size,
    each through its own layer norm."""
    depths, widths = SIZES[size]
    with torch.device("cpu" if size == "tiny" else "meta"):  # shapes without memory, but for the one run below
        encoder = build_encoder(f"convnext_{size}", pretrained=False)
    state = encoder.state_dict()
    assert state["downsample.0.0.weight"].shape == (widths[0], 3, 4, 4)
    for i, (d, w) in enumerate(zip(depths, widths)):
        assert sum(f"stages.{i}.{j}.gamma" in state for j in range(d + 1)) == d
        assert state[f"stages.{i}.0.dwconv.weight"].shape == (w, 1, 7, 7)
        assert state[f"stages.{i}.0.pwconv1.weight"].shape == (4 * w, w)
        assert state[f"out_norms.{i}.weight"].shape == (w,)
        if i:
            assert state[f"downsample.{i}.1.weight"].shape == (w, widths[i - 1], 2, 2)
    assert ENCODERS[f"convnext_{size}"].feature_channels == widths
    if size == "tiny":
        assert sum(v.numel() for v in state.values()) == 27_821_472  # Hugging Face's ConvNextBackbone of tiny
        with torch.no_grad():
            maps = encoder.eval()(torch.randn(1, 3, 67, 93), return_feature_maps=True)
        assert [m.shape[-2:] for m in maps] == [(16, 23), (8, 11), (4, 5), (2, 2)]


def test_imagenet_weights_and_stochastic_depth_are_asked_for_plainly():
    with pytest.raises(DownloadError, match="convnext_tiny.s ImageNet weights are on the Hugging Face Hub .facebook"):
        build_encoder("convnext_tiny", pretrained=True)
    opts = ["MODEL.arch_encoder", "resnet50", "MODEL.fc_dim", "2048", "MODEL.drop_path_rate", "0.2"]
    with pytest.raises(ConfigError, match="MODEL.drop_path_rate 0.2: a rate in .* of an encoder that has it"):
        load_config(None, opts)
    cfg = load_config(
        None, ["MODEL.arch_encoder", "convnext_base", "MODEL.fc_dim", "1024", "MODEL.drop_path_rate", "0.4"]
    )
    assert cfg.MODEL.drop_path_rate == 0.4
