"""test.py, the Segmenter API, slide mode, the model zoo and demo_test.sh."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import TRAINED_CONFIG, assert_legend
from httpserver import closed_port_url, serve

from mit_semseg import Segmenter, zoo
from mit_semseg.checkpoints import released_checkpoint, released_urls
from mit_semseg.config import load_config
from mit_semseg.data.classes import class_colors
from mit_semseg.inference import slide_logits
from mit_semseg.synthetic.scenes import CLASSES, NUM_CLASS

REPO = Path(__file__).resolve().parents[1]
CONFIG = TRAINED_CONFIG  # the `trained` fixture's (conftest.py)


def _test_py(*args, timeout=300):
    return subprocess.run(
        [sys.executable, str(REPO / "test.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_folder_with_a_corrupt_file(trained, tmp_path):
    root, opts = trained
    photos = tmp_path / "photos"
    shutil.copytree(root / "photos", photos)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not an image")
    out = tmp_path / "out"
    result = _test_py("--imgs", str(photos), "--cfg", str(CONFIG), "--gpu", "cpu", *opts, "TEST.result", str(out))
    assert result.returncode == 1
    assert f"skipped {photos / 'broken.jpg'}" in result.stderr
    assert "1 of 4 images could not be read" in result.stderr and str(photos / "broken.jpg") in result.stderr
    segmenter = Segmenter.from_config(CONFIG, opts=opts)
    for name in ("a", "b", "more/c"):
        image = cv2.cvtColor(cv2.imread(str(photos / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        picture = cv2.cvtColor(cv2.imread(str(out / f"{name}.png")), cv2.COLOR_BGR2RGB)
        label = cv2.imread(str(out / f"{name}_label.png"), cv2.IMREAD_UNCHANGED)
        h, w = image.shape[:2]
        assert picture.shape[1] == 2 * w and picture.shape[0] > h  # image | prediction, its legend below
        assert label.shape == image.shape[:2] and label.dtype == np.uint8
        assert 1 <= label.min() and label.max() <= NUM_CLASS
        pred = label.astype(np.int64) - 1
        assert np.array_equal(segmenter.predict(str(photos / f"{name}.jpg")), pred)
        np.testing.assert_array_equal(picture[:h, :w], image)
        np.testing.assert_array_equal(picture[:h, w:], segmenter.colorize(pred))
        assert_legend(picture[h:, w:], pred, class_colors(NUM_CLASS))
        assert f"{photos / name}.jpg:" in result.stdout
    shares = [float(line.split(": ")[1].rstrip("%")) for line in result.stdout.splitlines() if line.startswith("  ")]
    assert shares and all(s > 0.1 for s in shares)
    printed = {line.split(":")[0].strip() for line in result.stdout.splitlines() if line.startswith("  ")}
    assert printed and printed <= set(CLASSES)


@pytest.mark.parametrize("features, chosen", [("avx2", "fp32"), ("avx2,avx512f,avx512_bf16", "bf16")])
def test_auto_precision_follows_the_cpu(trained, tmp_path, monkeypatch, features, chosen):
    """TEST.precision auto, on a CPU pretending to have (or lack) native bfloat16: test.py and Segmenter agree."""
    root, opts = trained
    monkeypatch.setenv("MIT_SEMSEG_CPU_FEATURES", features)
    auto = opts + ["TEST.precision", "auto"]
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "test.py"),
            "--imgs",
            str(root / "photos" / "a.jpg"),
            "--cfg",
            str(CONFIG),
            "--gpu",
            "cpu",
            *auto,
            "TEST.result",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert f"segmenting 1 images on cpu, precision {chosen} (TEST.precision auto on " in result.stderr
    assert "pretending" in result.stderr
    segmenter = Segmenter.from_config(CONFIG, opts=auto)
    assert segmenter.precision == chosen
    label = cv2.imread(str(tmp_path / "a_label.png"), cv2.IMREAD_UNCHANGED).astype(np.int64) - 1
    assert (segmenter.predict(str(root / "photos" / "a.jpg")) == label).mean() > 0.99


def test_single_image_and_glob(trained, tmp_path):
    root, opts = trained
    result = _test_py(
        "--imgs",
        str(root / "photos" / "a.jpg"),
        "--cfg",
        str(CONFIG),
        "--gpu",
        "cpu",
        *opts,
        "TEST.result",
        str(tmp_path / "one"),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["a.png", "a_label.png"]
    result = _test_py(
        "--imgs",
        str(root / "photos" / "**" / "*.jpg"),
        "--cfg",
        str(CONFIG),
        "--gpu",
        "cpu",
        *opts,
        "TEST.result",
        str(tmp_path / "glob"),
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "glob").rglob("*_label.png"))) == 3
    missing = _test_py("--imgs", str(tmp_path / "nothing*.jpg"), "--cfg", str(CONFIG), *opts)
    assert missing.returncode == 1 and "no images found" in missing.stderr


def test_segmenter_api(trained):
    root, opts = trained
    segmenter = Segmenter.from_config(CONFIG, checkpoint_dir=root / "ckpt", opts=opts)
    assert segmenter.class_names[0] == "sky" and len(segmenter.class_names) == NUM_CLASS
    path = root / "photos" / "a.jpg"
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    labels = segmenter.predict(image)
    assert labels.shape == image.shape[:2] and labels.dtype == np.int64
    assert np.array_equal(labels, segmenter.predict(str(path)))
    again, probs = segmenter.predict(image, probabilities=True)
    assert probs.shape == (NUM_CLASS, *image.shape[:2])
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(again, labels) and np.array_equal(probs.argmax(0), labels)
    batch = segmenter.predict_batch([image, image[:50, :70]])
    assert np.array_equal(batch[0], labels) and batch[1].shape == (50, 70)
    assert segmenter.colorize(labels).shape == image.shape
    bf16 = Segmenter.from_config(CONFIG, opts=opts, precision="bf16").predict(image)
    assert bf16.shape == labels.shape and (bf16 == labels).mean() > 0.9
    with pytest.raises(ValueError, match="H x W x 3 RGB uint8"):
        segmenter.predict(image.astype(np.float32))


def test_slide_mode(trained):
    root, opts = trained
    segmenter = Segmenter.from_config(
        CONFIG, opts=opts + ["TEST.mode", "slide", "TEST.crop_size", "64", "TEST.stride", "32"]
    )
    image = cv2.resize(cv2.imread(str(root / "photos" / "a.jpg")), (250, 150))[..., ::-1].copy()
    labels = segmenter.predict(image)
    assert labels.shape == (150, 250) and labels.min() >= 0 and labels.max() < NUM_CLASS
    # one window covering the (padded) image gives that window's logits, at the decoder's stride
    model = segmenter.model
    tensor = torch.randn(1, 3, 40, 56)
    (logits, mirrored), stride = slide_logits(model, tensor, 64, 64, 8, flip=True)
    padded = torch.zeros(1, 3, 64, 64)
    padded[:, :, :40, :56] = tensor
    with torch.no_grad():
        direct = model.decoder.main_logits(model.encoder(padded, return_feature_maps=True))[0]
        flipped = model.decoder.main_logits(model.encoder(padded.flip(-1), return_feature_maps=True))[0].flip(-1)
    assert stride == 8 and logits.shape == mirrored.shape == (NUM_CLASS, 5, 7)
    torch.testing.assert_close(logits, direct[:, :5, :7])
    torch.testing.assert_close(mirrored, flipped[:, :5, :7])


@pytest.mark.end_to_end  # test.py and Segmenter at TEST.precision auto, which follows the CPU (see Makefile)
def test_released_models_and_download(trained, tmp_path, monkeypatch):
    assert {name for name, model in zoo.MODELS.items() if not model.file} == {  # the original's (test_mmseg: others)
        "ade20k-mobilenetv2dilated-c1_deepsup",
        "ade20k-resnet18dilated-ppm_deepsup",
        "ade20k-resnet50dilated-ppm_deepsup",
        "ade20k-resnet101dilated-ppm_deepsup",
        "ade20k-resnet50-upernet",
        "ade20k-resnet101-upernet",
        "ade20k-hrnetv2-c1",
        "upp-resnet50-upernet",
    }
    monkeypatch.delenv("MIT_SEMSEG_MODEL_URL")
    assert (
        released_urls("ade20k-hrnetv2-c1")["encoder"]
        == "http://sceneparsing.csail.mit.edu/model/pytorch/ade20k-hrnetv2-c1/encoder_epoch_30.pth"
    )
    assert (
        released_urls("upp-resnet50-upernet")["decoder"]
        == "http://sceneparsing.csail.mit.edu/model/unified_perceptual_parsing/upp-resnet50-upernet/decoder_epoch_40.pth"
    )
    for name in (name for name, model in zoo.MODELS.items() if not model.file):
        cfg = load_config(zoo.config_path(name))
        assert cfg.TEST.checkpoint == released_checkpoint(name)
    # the mobilenet model, served by a local server: our trained weights stand in for the released ones
    root, _ = trained
    files = {
        f"/ade20k-mobilenetv2dilated-c1_deepsup/{part}_epoch_20.pth": (
            root / "ckpt" / f"{part}_epoch_1.pth"
        ).read_bytes()
        for part in ("encoder", "decoder")
    }
    files["/ade20k-mobilenetv2dilated-c1_deepsup/decoder_epoch_20.pth"] = _decoder_with_150_classes()
    with serve(files) as (url, server):
        monkeypatch.setenv("MIT_SEMSEG_MODEL_URL", url + "/")
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "test.py"),
                "--model",
                "ade20k-mobilenetv2dilated-c1_deepsup",
                "--imgs",
                str(root / "photos" / "a.jpg"),
                "--gpu",
                "cpu",
                "TEST.result",
                str(tmp_path / "out"),
                "DATASET.imgSizes",
                "(64,)",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ.copy(),
        )
        assert result.returncode == 0, result.stderr
        segmenter = Segmenter.from_pretrained(
            "ade20k-mobilenetv2dilated-c1_deepsup", opts=["DATASET.imgSizes", "(64,)"]
        )
        assert len(server.requests) == 2  # the second use found both files in the cache
    label = cv2.imread(str(tmp_path / "out" / "a_label.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(segmenter.predict(str(root / "photos" / "a.jpg")), label.astype(np.int64) - 1)
    assert segmenter.class_names[0] == "wall" and len(segmenter.class_names) == 150


def _decoder_with_150_classes():
    import io

    from mit_semseg.models import ModelBuilder

    buffer = io.BytesIO()
    torch.save(ModelBuilder.build_decoder("c1_deepsup", fc_dim=320, num_class=150).state_dict(), buffer)
    return buffer.getvalue()


def test_offline_model_download_fails_with_a_message(trained):
    root, _ = trained
    result = _test_py(
        "--model", "ade20k-resnet18dilated-ppm_deepsup", "--imgs", str(root / "photos" / "a.jpg"), "--gpu", "cpu"
    )
    assert result.returncode == 1
    assert "download of" in result.stderr and "put it at" in result.stderr


def test_demo_test_sh_offline_ends_within_a_minute():
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / "demo_test.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, ADE20K_IMAGE_URL=closed_port_url("/ADE_val_00001519.jpg"), PYTHON=sys.executable),
    )
    assert result.returncode != 0 and time.monotonic() - started < 60
    assert "could not download the test image" in result.stderr


@pytest.mark.parametrize(
    "encoder, decoder",
    [
        ("resnet18dilated", "ppm_deepsup"),
        ("mobilenetv2dilated", "c1_deepsup"),
        ("hrnetv2", "c1"),
        ("resnet18", "upernet"),
        ("swin_tiny", "uperhead"),
    ],
)
@pytest.mark.numeric
def test_optimised_inference_equals_the_plain_path(encoder, decoder, monkeypatch):
    """prepare_for_inference: batch norms folded, the encoder channels-last (Swin contiguous) handing the decoder
    contiguous maps, the decoder's wide 3x3 convolutions by Winograd (here on maps of any size); the same
    probabilities."""
    from mit_semseg.inference import prepare_for_inference
    from mit_semseg.models import ENCODERS, ModelBuilder, SegmentationModule
    from mit_semseg.nn import winograd

    monkeypatch.setattr(winograd, "MIN_PIXELS", 1)

    torch.manual_seed(0)
    fc = ENCODERS[encoder].fc_dim
    plain = SegmentationModule(
        ModelBuilder.build_encoder(encoder, pretrained=False),
        ModelBuilder.build_decoder(decoder, fc, 20, use_softmax=True),
        torch.nn.NLLLoss(),
    )
    with torch.no_grad():  # non-trivial statistics, as trained weights have
        for m in plain.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    plain.eval()
    import copy

    fast = prepare_for_inference(copy.deepcopy(plain))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    first = next(m for m in fast.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.weight.is_contiguous(memory_format=torch.channels_last) == (encoder != "swin_tiny")
    # the fusing conv of PPM (512 + 4 x 512 inputs) and UPerNet's (4 x 512)
    assert any(isinstance(m, winograd.WinogradConv2d) for m in fast.modules()) == (not decoder.startswith("c1"))
    maps = []
    fast.decoder.register_forward_pre_hook(lambda _, args: maps.extend(args[0]))
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = plain({"img_data": image}, segSize=(96, 128))
        got = fast({"img_data": image}, segSize=(96, 128))
    assert (got - expected).abs().max() < 1e-4
    assert maps and all(m.is_contiguous() for m in maps)


def test_a_video_is_segmented_frame_by_frame(trained, tmp_path):
    """test.py --imgs clip.mp4 --label-frames: the overlaid video and each frame's label map, which is
    Segmenter.predict_video's for that frame; a file that is no video is named."""
    root, opts = trained
    photo = cv2.resize(cv2.imread(str(root / "photos" / "a.jpg")), (96, 80))
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 80))
    for k in range(6):
        writer.write(np.roll(photo, 8 * k, axis=1))  # the scene pans
    writer.release()
    command = [sys.executable, str(REPO / "test.py"), "--cfg", str(TRAINED_CONFIG), "--gpu", "cpu", "--label-frames"]
    result = subprocess.run(
        [*command, "--imgs", str(tmp_path / "clip.mp4"), *opts, "TEST.result", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "clip.mp4: 6 frames in" in result.stderr and "frames/s" in result.stderr
    written = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert (written.get(cv2.CAP_PROP_FRAME_COUNT), written.get(cv2.CAP_PROP_FRAME_WIDTH)) == (6, 96)
    segmenter = Segmenter(load_config(TRAINED_CONFIG, opts), "cpu")
    frames = list(segmenter.predict_video(tmp_path / "clip.mp4"))
    assert len(frames) == 6 and frames[0][0].shape == (80, 96, 3)
    for k, (_, labels) in enumerate(frames):
        saved = cv2.imread(str(tmp_path / "out" / "clip_frames" / f"{k:06d}_classes.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(saved, labels + 1)
    (tmp_path / "notes.mp4").write_text("not a video")
    bad = subprocess.run(
        [*command, "--imgs", str(tmp_path / "notes.mp4"), *opts], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert bad.returncode == 1 and "notes.mp4" in bad.stderr, bad.stderr
