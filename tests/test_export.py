"""ONNX export of every encoder and decoder, checked against ONNX Runtime at two sizes from one file; test.py --onnx."""

import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch
from helpers import REPO, TRAINED_CONFIG, use_reduced_encoders, write_small_tables
from torch import nn

from mit_semseg import Segmenter
from mit_semseg.config import load_config
from mit_semseg.data.records import DataError
from mit_semseg.models import ENCODERS
from mit_semseg.models.builder import DECODERS, DecoderSpec
from mit_semseg.models.decoders import UPerNet
from mit_semseg.models.texture import build_texture_head
from mit_semseg.nn import adaptive_avg_pool2d
from mit_semseg.onnx_runtime import OnnxSession, export_onnx
from mit_semseg.tasks import task_for

# Every block family of the encoders (ResNet's basic block and its bottleneck plain and dilated, ResNeXt's grouped one,
# mmsegmentation's stem, MobileNetV2, HRNet, ConvNeXt, Swin) in its reduced variant (the export is of the blocks, not
# of their widths or numbers: resnet101's reduced variant is resnet50's of other widths), and every decoder class, with
# both of UPerNet's pyramid orders (upsample first in UPP's, conv first in uperhead; upernet_lite and upp_lite are
# upernet and upp at another FPN width). The reduced Swin's window is 3: its maps at 64 x 96 (16 x 24, ...) and
# 80 x 112 (20 x 28, ...) are padded to the window, odd ones before a merge.
PAIRS = [
    "mobilenetv2dilated+c1_deepsup",
    "resnet18+upp_lite",
    "resnet50v1c+uperhead",
    "resnet50dilated+ppm_deepsup",
    "resnext101dilated+c1",
    "hrnetv2+c1",
    "convnext_tiny+uperhead",
    "swin_tiny+uperhead",
]
SIZES = [(1, 64, 96), (2, 80, 112)]  # the size it is traced at, and another batch and size


def _conditioned(task, seed=0):
    """The task's inference model with random weights conditioned like trained ones (small residual branches,
    batch-norm statistics measured on images), so that activations keep their scale through a deep network."""
    torch.manual_seed(seed)
    model = task.model.build(inference=True)
    with torch.no_grad():  # residual branches start small, as trained ResNets have them
        for block in model.encoder.modules():
            last = getattr(block, "bn3", None) or getattr(block, "bn2", None)
            if hasattr(block, "downsample") and isinstance(last, nn.BatchNorm2d):
                last.weight.mul_(0.1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # the cumulative average of the batches below
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model.decoder(model.encoder(torch.randn(2, 3, 64, 96), return_feature_maps=True), segSize=(64, 96))
    return model.eval()


def _config(pair, tmp_path):
    encoder, decoder = pair.split("+")
    opts = [
        "MODEL.arch_encoder",
        encoder,
        "MODEL.arch_decoder",
        decoder,
        "MODEL.fc_dim",
        str(ENCODERS[encoder].fc_dim),
        "MODEL.pretrained",
        "False",
        "DATASET.num_class",
        "7",
    ]
    if decoder == "upp_lite":  # with a texture head (its output is the file's last)
        tables = write_small_tables(tmp_path / "tables")
        (tables / "texture.csv").write_text("label,name\n0,banded\n1,dotted\n2,grid\n")
        opts += ["DATASET.label_tables", str(tables)]
    return load_config(None, opts)


@pytest.mark.numeric
def test_matrix_pooling_equals_adaptive_average_pooling():
    """The pooling the exported graph computes (any input size) equals torch's adaptive average pooling."""
    torch.manual_seed(0)
    for h, w in ((13, 17), (6, 6), (1, 9), (25, 7)):
        x = torch.randn(2, 5, h, w, dtype=torch.float64)
        for s in (1, 2, 3, 6):
            torch.testing.assert_close(
                adaptive_avg_pool2d(x, s), nn.functional.adaptive_avg_pool2d(x, s), atol=1e-12, rtol=1e-12
            )


@pytest.mark.parametrize("pair", PAIRS)
def test_onnx_runtime_equals_pytorch_at_two_sizes(pair, tmp_path, monkeypatch):
    use_reduced_encoders(monkeypatch)
    monkeypatch.setitem(DECODERS, "uperhead", DecoderSpec(UPerNet, {"fpn_dim": 64, "conv_before_resize": True}))
    task = task_for(_config(pair, tmp_path))
    model = _conditioned(task)
    if pair.endswith("upp_lite"):
        model.texture = build_texture_head("resnet18", 3).eval()
    path = export_onnx(task.export, model, tmp_path / "model.onnx", task.cfg.dump())
    session = OnnxSession(path)
    assert session.names == task.export.output_names(model)
    assert (session.names[-1] == "texture") == pair.endswith("upp_lite")
    for n, h, w in SIZES:
        image = torch.randn(n, 3, h, w)
        with torch.no_grad():
            expected = [t.numpy() for t in task.export.outputs(model, image)]
        got = session.session.run(None, {"image": image.numpy()})
        assert [g.shape for g in got] == [e.shape for e in expected]
        assert got[0].dtype == np.float32
        for e, g in zip(expected, got):
            assert np.abs(e - g).max() < 1e-4
            if e.ndim == 4:  # pixel heads: the same class almost everywhere
                assert (e.argmax(1) == g.argmax(1)).mean() >= 0.999


def test_the_exported_file_carries_its_config_and_dynamic_axes(tmp_path, monkeypatch):
    use_reduced_encoders(monkeypatch)
    cfg = _config("resnet18dilated+c1", tmp_path)
    task = task_for(cfg)
    path = export_onnx(task.export, _conditioned(task), tmp_path / "m.onnx", cfg.dump())
    proto = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    stored = {p.key: p.value for p in proto.metadata_props}["mit_semseg.config"]
    assert "arch_encoder: resnet18dilated" in stored
    (tmp_path / "other.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(DataError, match="cannot read the ONNX file"):
        OnnxSession(tmp_path / "other.onnx")


def test_test_py_through_onnx_runtime_agrees_with_pytorch(trained, tmp_path):
    """A trained checkpoint exported with the real command, segmented by test.py --onnx as by the PyTorch model."""
    from mit_semseg.synthetic.scenes import NUM_CLASS

    root, opts = trained
    config = TRAINED_CONFIG
    out = tmp_path / "model.onnx"
    export = subprocess.run(
        [sys.executable, "-m", "mit_semseg.export", "--cfg", str(config), "--out", str(out), *opts],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert export.returncode == 0, export.stderr[-2000:]
    images = root / "data" / "images" / "validation"
    result = subprocess.run(
        [sys.executable, "test.py", "--imgs", str(images), "--onnx", str(out), "TEST.result", str(tmp_path / "onnx")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    torch_model = Segmenter.from_config(
        config, opts=opts
    )  # the PyTorch side in this process: test.py is test_inference's
    same = []
    for image in sorted(images.iterdir()):
        ours = cv2.imread(str(tmp_path / "onnx" / f"{image.stem}_label.png"), -1)
        theirs = torch_model.predict(str(image)) + 1
        assert ours.shape == theirs.shape and 1 <= ours.min() and ours.max() <= NUM_CLASS
        same.append((ours == theirs).mean())
    assert len(same) == 3 and np.mean(same) > 0.995
    segmenter = Segmenter.from_onnx(out)
    assert segmenter.precision == "fp32" and segmenter.class_names[0] == "sky"
