"""Swin: a block's (shifted) window attention against the same written plainly in float64, patch merging, the
layout of each size, any input size."""

import itertools

import numpy as np
import pytest
import torch

from mit_semseg.models.builder import ENCODERS, build_encoder
from mit_semseg.models.swin import SIZES, PatchMerging, SwinBlock


def _attention_by_hand(x, block):
    """The block's attention branch in numpy float64, token by token: pad the normed map to windows, roll by the
    shift, and for each token attend to the tokens of its window, adding the bias of their offset (dy, dx) and
    -100 where the two come from different bands of the rolled map; roll back, crop."""
    p = {k: v.detach().numpy().astype(np.float64) for k, v in block.state_dict().items()}
    win, shift, heads = block.window, block.shift, block.attn.heads
    n, h, w, c = x.shape
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * p["norm1.weight"] + p["norm1.bias"]
    hp, wp = -(-h // win) * win, -(-w // win) * win
    y = np.pad(y, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    y = np.roll(y, (-shift, -shift), (1, 2))

    def band(i, size):  # which of the three bands (up to -win, -win to -shift, the last shift) row/column i is in
        return 0 if not shift or i < size - win else (1 if i < size - shift else 2)

    q, k, v = (y @ p[f"attn.{name}.weight"].T + p[f"attn.{name}.bias"] for name in ("query", "key", "value"))
    d = c // heads
    out = np.zeros_like(y)
    for b, i, j in itertools.product(range(n), range(hp), range(wp)):
        wi, wj = i // win * win, j // win * win
        keys = [(a, e) for a in range(wi, wi + win) for e in range(wj, wj + win)]
        for head in range(heads):
            s = slice(head * d, (head + 1) * d)
            scores = []
            for a, e in keys:
                offset = (i - a + win - 1) * (2 * win - 1) + (j - e + win - 1)
                same = (band(i, hp), band(j, wp)) == (band(a, hp), band(e, wp))
                score = q[b, i, j, s] @ k[b, a, e, s] / np.sqrt(d) + p["attn.bias_table"][offset, head]
                scores.append(score + (0.0 if same else -100.0))
            weights = np.exp(np.array(scores) - max(scores))
            weights /= weights.sum()
            out[b, i, j, s] = sum(wt * v[b, a, e, s] for wt, (a, e) in zip(weights, keys))
    out = out @ p["attn.proj.weight"].T + p["attn.proj.bias"]
    return np.roll(out, (shift, shift), (1, 2))[:, :h, :w]


@pytest.mark.numeric
@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_equals_its_definition(shift):
    torch.manual_seed(0)
    block = SwinBlock(8, heads=2, window=4, shift=shift).double().eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0, 0.4)
    x = np.random.default_rng(0).normal(size=(2, 7, 10, 8))  # not multiples of the window: padded
    with torch.no_grad():
        got = block(torch.from_numpy(x)).numpy()
        attended = x + _attention_by_hand(x, block)
        mlp = block.mlp(block.norm2(torch.from_numpy(attended))).numpy()  # the MLP half: torch's own layers
    np.testing.assert_allclose(got, attended + mlp, rtol=1e-9, atol=1e-9)


def test_patch_merging_concatenates_each_2x2_patch():
    merge = PatchMerging(1).double()
    with torch.no_grad():
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
        merge.reduction.weight.copy_(torch.eye(2, 4, dtype=torch.float64))
    x = torch.arange(15, dtype=torch.float64).view(1, 3, 5, 1)  # odd: padded with zeros
    seen = []
    merge.norm.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    assert merge(x).shape == (1, 2, 3, 2)
    # the patch at (0, 0): top-left 0, bottom-left 5, top-right 1, bottom-right 6; at (1, 2) only 14 is real
    assert seen[0][0, 0, 0].tolist() == [0, 5, 1, 6] and seen[0][0, 1, 2].tolist() == [14, 0, 0, 0]


@pytest.mark.parametrize("size", list(SIZES))
def test_each_size_has_the_papers_layout(size):
    width, depths, heads, window = SIZES[size]
    with torch.device("cpu" if size == "tiny" else "meta"):
        encoder = build_encoder(f"swin_{size}", pretrained=False)
    state = encoder.state_dict()
    assert state["patch_embed.weight"].shape == (width, 3, 4, 4)
    for i, (depth, head) in enumerate(zip(depths, heads)):
        w = width * 2**i
        assert sum(f"stages.{i}.blocks.{j}.attn.bias_table" in state for j in range(depth + 1)) == depth
        assert state[f"stages.{i}.blocks.0.attn.bias_table"].shape == ((2 * window - 1) ** 2, head)
        assert state[f"stages.{i}.blocks.0.mlp.fc1.weight"].shape == (4 * w, w)
        assert (f"stages.{i}.merge.reduction.weight" in state) == (i < 3)
    assert ENCODERS[f"swin_{size}"].feature_channels == tuple(width * 2**i for i in range(4))
    if size == "tiny":
        # transformers 5.25's SwinBackbone of tiny has 27,522,234: these and SwinModel's final norm (2 x 768), unused
        assert sum(v.numel() for v in state.values()) == 27_522_234 - 2 * 768
        with torch.no_grad():
            maps = encoder.eval()(torch.randn(1, 3, 70, 93), return_feature_maps=True)
        assert [tuple(m.shape[-2:]) for m in maps] == [(18, 24), (9, 12), (5, 6), (3, 3)]
