"""Metrics against brute force, the original's helpers, multi-scale fusion, and eval_multipro.py itself."""

import json
import multiprocessing
import os
import queue
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_legend

from mit_semseg.config import load_config
from mit_semseg.data.classes import class_colors, colorize
from mit_semseg.evaluation import _Pipes
from mit_semseg.inference import fuse, scale_logits
from mit_semseg.metrics import ConfusionMatrix
from mit_semseg.models import ModelBuilder
from mit_semseg.synthetic.scenes import NUM_CLASS, generate
from mit_semseg.tasks import task_for
from mit_semseg.testing.reference import original_intersection_and_union as histogram_intersection_and_union
from mit_semseg.utils import accuracy, intersectionAndUnion

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.numeric
@pytest.mark.parametrize("num_class", [1, 2, 5, 150])
def test_original_helpers_equal_the_histogram_approach(num_class):
    rng = np.random.default_rng(num_class)
    for _ in range(10):
        pred = rng.integers(-1, num_class + 2, (31, 45))
        label = rng.integers(-1, num_class + 2, (31, 45))
        ours, reference = (
            intersectionAndUnion(pred, label, num_class),
            histogram_intersection_and_union(pred, label, num_class),
        )
        for a, b in zip(ours, reference):
            assert np.array_equal(a, b) and a.dtype == b.dtype
    acc, valid = accuracy(np.array([[0, 1, 2]]), np.array([[0, 2, -1]]))
    assert acc == pytest.approx(0.5) and valid == 2


@pytest.mark.numeric
def test_confusion_matrix_against_a_per_pixel_count():
    rng = np.random.default_rng(0)
    num_class, matrix = 6, ConfusionMatrix(6)
    brute = np.zeros((6, 6), np.int64)
    for _ in range(5):
        label = rng.integers(-1, num_class, (23, 17))
        pred = rng.integers(0, num_class, (23, 17))
        matrix.update(pred, label)
        for t, p in zip(label.ravel(), pred.ravel()):
            if t >= 0:
                brute[t, p] += 1
    assert np.array_equal(matrix.matrix, brute)
    s = matrix.summary()
    inter, labelled, predicted = np.diag(brute), brute.sum(1), brute.sum(0)
    iou = [inter[c] / (labelled[c] + predicted[c] - inter[c]) for c in range(6)]
    assert s["pixel_accuracy"] == pytest.approx(inter.sum() / brute.sum())
    assert s["mean_iou"] == pytest.approx(np.mean(iou))
    assert s["frequency_weighted_iou"] == pytest.approx(sum(labelled[c] / brute.sum() * iou[c] for c in range(6)))
    assert [c["iou"] for c in s["classes"]] == pytest.approx(iou)
    assert [c["accuracy"] for c in s["classes"]] == pytest.approx(inter / labelled)


def test_absent_classes_count_as_zero_iou_in_the_mean():
    matrix = ConfusionMatrix(4)
    matrix.update(np.array([0, 1, 1]), np.array([0, 1, -1]))
    assert matrix.summary()["mean_iou"] == pytest.approx((1 + 1 + 0 + 0) / 4)


@pytest.mark.numeric
def test_fused_scales_equal_full_size_softmax_average():
    torch.manual_seed(0)
    logits = [torch.randn(9, 7, 11) * 4, torch.randn(9, 12, 15) * 4, torch.randn(9, 3, 5) * 4]
    pred, mean = fuse(logits, (61, 83), probabilities=True)
    reference = (
        sum(
            F.softmax(F.interpolate(x[None], size=(61, 83), mode="bilinear", align_corners=False), 1)[0] for x in logits
        )
        / 3
    )
    torch.testing.assert_close(mean, reference, atol=1e-5, rtol=1e-5)
    assert torch.equal(pred, reference.argmax(0))


@pytest.fixture(scope="module")
def evalset(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalset")
    generate(str(root), num_train=1, num_val=9, seed=2, min_side=64, max_side=120)
    ckpt = root / "ckpt"
    ckpt.mkdir()
    torch.manual_seed(0)
    enc = ModelBuilder.build_encoder("mobilenetv2dilated", pretrained=False)
    dec = ModelBuilder.build_decoder("c1_deepsup", fc_dim=320, num_class=NUM_CLASS)
    torch.save(enc.state_dict(), ckpt / "encoder_epoch_1.pth")
    torch.save(dec.state_dict(), ckpt / "decoder_epoch_1.pth")
    return root


def _opts(root, *extra):
    return [
        "DIR",
        str(root / "ckpt"),
        "DATASET.root_dataset",
        str(root),
        "DATASET.list_val",
        str(root / "validation.odgt"),
        "DATASET.num_class",
        str(NUM_CLASS),
        "DATASET.imgSizes",
        "(64, 96)",
        "DATASET.imgMaxSize",
        "160",
        "DATASET.class_info",
        str(root / "class_info.csv"),
        "MODEL.arch_encoder",
        "mobilenetv2dilated",
        "MODEL.arch_decoder",
        "c1_deepsup",
        "MODEL.fc_dim",
        "320",
        "VAL.checkpoint",
        "epoch_1.pth",
        *extra,
    ]


def _eval_command(root, *extra, procs=1):
    return [
        sys.executable,
        str(REPO / "eval_multipro.py"),
        "--cfg",
        str(REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml"),
        "--gpus",
        "cpu",
        "--procs",
        str(procs),
        *_opts(root, *extra),
    ]


def test_several_workers_give_exactly_the_single_worker_result(evalset):
    one = subprocess.run(_eval_command(evalset), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    single = json.loads((evalset / "ckpt" / "eval_epoch_1.json").read_text())
    three = subprocess.run(_eval_command(evalset, procs=3), capture_output=True, text=True, timeout=300)
    assert three.returncode == 0, three.stderr
    multi = json.loads((evalset / "ckpt" / "eval_epoch_1.json").read_text())
    for key in ("pixel_accuracy", "mean_iou", "frequency_weighted_iou", "classes", "labelled_pixels"):
        assert single[key] == multi[key]
    assert single["images"] == 9
    last = one.stdout.strip().splitlines()[-1]
    assert last == f"Mean IoU: {single['mean_iou']:.4f}, Accuracy: {100 * single['pixel_accuracy']:.2f}%"
    assert "Ten worst classes by IoU:" in one.stdout and "fence" in one.stdout


def test_the_evaluation_matches_a_direct_computation(evalset):
    cfg = load_config(REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml", _opts(evalset))
    from mit_semseg.data.dataset import ValDataset
    from mit_semseg.data.records import read_odgt

    model = task_for(cfg).model.load("epoch_1.pth")
    matrix = ConfusionMatrix(NUM_CLASS)
    for item in ValDataset(read_odgt(cfg.DATASET.list_val, cfg.DATASET.root_dataset), cfg):
        with torch.no_grad():
            probs = sum(model({"img_data": x}, segSize=item["seg_label"].shape) for x in item["img_data"])
        matrix.update(probs[0].argmax(0).numpy(), item["seg_label"].numpy())
    subprocess.run(_eval_command(evalset, procs=2), capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads((evalset / "ckpt" / "eval_epoch_1.json").read_text())
    assert summary["mean_iou"] == pytest.approx(matrix.summary()["mean_iou"], abs=1e-6)
    assert summary["pixel_accuracy"] == pytest.approx(matrix.summary()["pixel_accuracy"], abs=1e-6)


def test_flip_and_visualize(evalset):
    cfg = load_config(REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml", _opts(evalset))
    model = task_for(cfg).model.load("epoch_1.pth")
    image = torch.randn(1, 3, 64, 96)
    (plain,) = scale_logits(model, [image])
    both = scale_logits(model, [image], flip=True)
    (mirrored,) = scale_logits(model, [image.flip(-1)])
    assert len(both) == 2 and torch.allclose(both[0], plain, atol=1e-5)
    assert torch.allclose(both[1], mirrored.flip(-1), atol=1e-5)
    result = subprocess.run(
        _eval_command(evalset, "VAL.flip", "True", "VAL.visualize", "True"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((evalset / "ckpt" / "eval_epoch_1.json").read_text())["flip"] is True
    pictures = sorted((evalset / "ckpt" / "result").glob("*.png"))
    assert len(pictures) == 9
    first = cv2.cvtColor(cv2.imread(str(pictures[0])), cv2.COLOR_BGR2RGB)
    original = cv2.cvtColor(
        cv2.imread(str(evalset / "images" / "validation" / (pictures[0].stem + ".jpg"))), cv2.COLOR_BGR2RGB
    )
    h, w = original.shape[:2]
    assert first.shape[1] == 3 * w and first.shape[0] > h  # image | ground truth | prediction, legends below
    np.testing.assert_array_equal(first[:h, :w], original)
    label = cv2.imread(str(evalset / "annotations" / "validation" / (pictures[0].stem + ".png")), cv2.IMREAD_UNCHANGED)
    colors = class_colors(NUM_CLASS)
    np.testing.assert_array_equal(first[:h, w : 2 * w], colorize(label.astype(np.int64) - 1, colors))
    assert_legend(first[h:, w : 2 * w], label.astype(np.int64) - 1, colors)


@pytest.mark.parametrize("procs, position", [(2, 4), (2, 6), (1, 3)])
def test_corrupt_image_fails_fast_naming_it_once(evalset, tmp_path, procs, position):
    """The first image of a worker's shard, one in the middle while the next is prefetched, and a thread worker."""
    lines = (evalset / "validation.odgt").read_text().splitlines()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 definitely not a jpeg")
    record = json.loads(lines[position])
    record["fpath_img"] = str(corrupt)
    lines[position] = json.dumps(record)
    bad_list = tmp_path / "bad.odgt"
    bad_list.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = subprocess.run(
        _eval_command(evalset, "DATASET.list_val", str(bad_list), procs=procs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 60
    error = next(line for line in result.stderr.splitlines() if line.startswith("eval_multipro.py: error"))
    worker = 1 if procs == 2 else 0
    assert error == (
        f"eval_multipro.py: error: worker {worker} (cpu) failed: UnreadableImage: cannot read image "
        f"{corrupt}: unreadable or corrupt"
    )


def _children(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_worker_ends_the_run(evalset, tmp_path):
    many = tmp_path / "many.odgt"
    many.write_text((evalset / "validation.odgt").read_text() * 600)  # far more than any CPU does in a few seconds
    process = subprocess.Popen(
        _eval_command(evalset, "DATASET.list_val", str(many), procs=2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(_children(process.pid)) < 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    time.sleep(3)
    os.kill(_children(process.pid)[1], signal.SIGKILL)
    killed = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - killed < 30
    assert process.returncode == 1
    assert "died (killed by signal SIGKILL) while evaluating" in err
    assert not _children(process.pid)


def test_a_message_cut_off_by_a_dying_worker_neither_hangs_nor_stops_the_others():
    """What a worker killed in the middle of a message leaves: a length header and part of the bytes, then the
    pipe closes. The reader drops that pipe (the dead worker is then named by the liveness check) and the other
    workers' messages still arrive; a queue shared by all would wait for the missing bytes forever."""
    cut_receiver, cut_sender = multiprocessing.Pipe(duplex=False)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    os.write(cut_sender.fileno(), struct.pack("!i", 1000) + b"only a part")
    cut_sender.close()
    sender.send(("image", 1, 7, "counts"))
    pipes = _Pipes([cut_receiver, receiver])
    started = time.monotonic()
    assert pipes.get(timeout=5) == ("image", 1, 7, "counts")
    with pytest.raises(queue.Empty):
        pipes.get(timeout=0.2)
    assert time.monotonic() - started < 3 and pipes.open == [receiver]


def test_missing_checkpoint_is_named(evalset):
    result = subprocess.run(
        _eval_command(evalset, "VAL.checkpoint", "epoch_9.pth"), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "checkpoint not found" in result.stderr and "encoder_epoch_9.pth" in result.stderr


@pytest.mark.parametrize("procs", [1, 2])
def test_ctrl_c_ends_every_worker_cleanly(evalset, tmp_path, procs):
    many = tmp_path / "many.odgt"
    many.write_text((evalset / "validation.odgt").read_text() * 600)  # far more than any CPU does in 5 seconds
    # Ctrl-C as at a terminal, even when this suite runs as a background job (which starts with SIGINT ignored)
    process = subprocess.Popen(
        _eval_command(evalset, "DATASET.list_val", str(many), procs=procs),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(5)
    assert process.poll() is None, "the evaluation ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-500:]
    assert time.monotonic() - interrupted < 15
    assert "interrupted" in err and "terminate called" not in err
    assert not _children(process.pid)
