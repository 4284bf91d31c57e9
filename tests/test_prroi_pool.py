"""Precise RoI pooling against two independent references: the original kernel's per-cell arithmetic, and
brute-force numerical integration of the bilinear surface; gradients by gradcheck."""

import math

import numpy as np
import pytest
import torch

from mit_semseg.nn import PrRoIPool2D, prroi_pool2d

pytestmark = pytest.mark.numeric


def _value(f, y, x):
    """A sample of the map, 0 outside it."""
    return f[y, x] if 0 <= y < f.shape[0] and 0 <= x < f.shape[1] else 0.0


def _cell_integral(f, i, j, ya, yb, xa, xb):
    """Integral of the bilinear patch between samples (i, j) and (i + 1, j + 1) over [ya, yb] x [xa, xb] (local
    coordinates in [0, 1]): the closed form the original kernel evaluates per cell."""
    iu0, iu1 = (xb - xa) - (xb**2 - xa**2) / 2, (xb**2 - xa**2) / 2
    iv0, iv1 = (yb - ya) - (yb**2 - ya**2) / 2, (yb**2 - ya**2) / 2
    return (
        _value(f, i, j) * iv0 * iu0
        + _value(f, i, j + 1) * iv0 * iu1
        + _value(f, i + 1, j) * iv1 * iu0
        + _value(f, i + 1, j + 1) * iv1 * iu1
    )


def reference_kernel(features, rois, ph, pw, scale):
    """Loops over rois, channels, bins and the unit cells each bin overlaps, in float64."""
    feats = features.detach().double().numpy()
    out = np.zeros((len(rois), feats.shape[1], ph, pw))
    for k, (b, x0, y0, x1, y1) in enumerate(rois.double().tolist()):
        x0, y0, x1, y1 = x0 * scale, y0 * scale, x1 * scale, y1 * scale
        bw, bh = max(x1 - x0, 0) / pw, max(y1 - y0, 0) / ph
        if bw * bh == 0:
            continue
        for c in range(feats.shape[1]):
            f = feats[int(b), c]
            for p in range(ph):
                for q in range(pw):
                    ys, ye = y0 + p * bh, y0 + (p + 1) * bh
                    xs, xe = x0 + q * bw, x0 + (q + 1) * bw
                    total = 0.0
                    for i in range(math.floor(ys), math.ceil(ye)):
                        for j in range(math.floor(xs), math.ceil(xe)):
                            total += _cell_integral(
                                f, i, j, max(ys, i) - i, min(ye, i + 1) - i, max(xs, j) - j, min(xe, j + 1) - j
                            )
                    out[k, c, p, q] = total / (bw * bh)
    return torch.from_numpy(out)


def brute_force(f, y0, x0, y1, x1, n=400):
    """Midpoint-rule mean of the bilinear surface (zero outside the map) over [y0, y1] x [x0, x1]."""
    ys = y0 + (np.arange(n) + 0.5) * (y1 - y0) / n
    xs = x0 + (np.arange(n) + 0.5) * (x1 - x0) / n
    hat = lambda t: np.maximum(0, 1 - np.abs(t))
    wy = hat(ys[:, None] - np.arange(f.shape[0]))  # (n, H)
    wx = hat(xs[:, None] - np.arange(f.shape[1]))  # (n, W)
    return (wy @ f @ wx.T).mean()


ROIS = torch.tensor(
    [
        [0, 0.0, 0.0, 7.0, 5.0],  # the whole map, as the pyramid pooling uses it
        [1, 1.3, 0.7, 4.9, 3.2],  # inside, fractional
        [0, -2.5, -1.0, 3.0, 2.0],  # past the top-left edge
        [1, 5.5, 3.5, 9.0, 7.5],  # past the bottom-right edge, beyond the surface
        [0, 2.0, 2.0, 2.0, 4.0],  # empty: zero width
        [1, 3.0, 1.0, 2.0, 4.0],  # x1 < x0
        [0, 2.25, 1.5, 2.75, 1.75],
    ]
)  # smaller than one cell


@pytest.mark.parametrize("ph, pw, scale", [(1, 1, 1.0), (2, 3, 1.0), (3, 2, 0.5), (6, 6, 1.0)])
def test_equals_the_original_kernels_arithmetic_in_float64(ph, pw, scale):
    torch.manual_seed(ph * 10 + pw)
    features = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    rois = ROIS.clone()
    rois[:, 1:] /= scale
    ours = prroi_pool2d(features, rois.double(), ph, pw, scale)
    assert ours.shape == (len(rois), 3, ph, pw) and ours.dtype == torch.float64
    torch.testing.assert_close(ours, reference_kernel(features, rois, ph, pw, scale), atol=1e-12, rtol=1e-9)
    assert torch.all(ours[4:6] == 0)


def test_equals_numerical_integration():
    torch.manual_seed(0)
    features = torch.randn(2, 1, 5, 7, dtype=torch.float64)
    ours = prroi_pool2d(features, ROIS.double(), 1, 1)
    for k, (b, x0, y0, x1, y1) in enumerate(ROIS.tolist()):
        if x1 > x0 and y1 > y0:
            expected = brute_force(features[int(b), 0].numpy(), y0, x0, y1, x1)
            assert abs(ours[k, 0, 0, 0].item() - expected) < 1e-4, k


def test_a_constant_map_pools_to_the_constant_inside_and_fades_outside():
    features = torch.full((1, 1, 6, 6), 2.0)
    inside = prroi_pool2d(features, torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]]), 3, 3)
    torch.testing.assert_close(inside, torch.full((1, 1, 3, 3), 2.0))
    # one step beyond the last sample the surface falls linearly to 0: mean over [5, 6] of 2 * (6 - x) is 1
    edge = prroi_pool2d(features, torch.tensor([[0, 5.0, 0.0, 6.0, 5.0]]), 1, 1)
    torch.testing.assert_close(edge, torch.full((1, 1, 1, 1), 1.0))
    assert prroi_pool2d(features, torch.tensor([[0, 7.0, 7.0, 9.0, 9.0]]), 2, 2).abs().max() == 0


def test_gradcheck_with_respect_to_the_features():
    torch.manual_seed(1)
    features = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    rois = ROIS[[0, 1, 2, 3, 6]].double()
    assert torch.autograd.gradcheck(lambda f: prroi_pool2d(f, rois, 2, 3, 1.0), (features,))
    assert torch.autograd.gradgradcheck(lambda f: prroi_pool2d(f, rois, 2, 2, 1.0), (features,))


def test_float32_module_and_autocast():
    torch.manual_seed(2)
    features = torch.randn(2, 4, 5, 7)
    pool = PrRoIPool2D(2, 3, 1.0)
    assert "pooled_height=2, pooled_width=3" in repr(pool)
    out = pool(features, ROIS)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), prroi_pool2d(features.double(), ROIS.double(), 2, 3), atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = pool(features.bfloat16(), ROIS)
    assert torch.isfinite(low.float()).all()
    torch.testing.assert_close(low.float(), out, atol=0.1, rtol=0.05)


def test_bad_arguments_are_named():
    features = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"rois must be \(K, 5\)"):
        prroi_pool2d(features, torch.zeros(2, 4), 1, 1)
    with pytest.raises(ValueError, match="batch index out of range 0..0"):
        prroi_pool2d(features, torch.tensor([[1.0, 0, 0, 2, 2]]), 1, 1)
    with pytest.raises(ValueError, match=r"features must be \(N, C, H, W\)"):
        prroi_pool2d(features[0], torch.tensor([[0.0, 0, 0, 2, 2]]), 1, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    features = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(
        prroi_pool2d(features.cuda(), ROIS.double().cuda(), 3, 3).cpu(), prroi_pool2d(features, ROIS.double(), 3, 3)
    )
