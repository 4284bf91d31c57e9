"""Training through the real command line: epochs, checkpoints, exact resume, Ctrl-C, NaN, torchrun."""

import copy
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import assert_same_weights, checkpoint_weights
from torch import nn

from mit_semseg.checkpoints import atomic_save
from mit_semseg.config import load_config
from mit_semseg.evaluation import evaluate
from mit_semseg.models import ModelBuilder
from mit_semseg.synthetic.scenes import NUM_CLASS, generate
from mit_semseg.tasks import task_for
from mit_semseg.training import loop
from mit_semseg.training.loop import Runtime, freeze_bn, train
from mit_semseg.training.optim import param_groups, poly_lr, set_lr
from mit_semseg.training.trainer import Hook, train_step
from mit_semseg.training.validation import ValidationError, figures, metric_name

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    generate(str(root), num_train=12, num_val=2, seed=7, min_side=64, max_side=112)
    return root


def _opts(scenes, directory, *extra):
    return [
        "DIR",
        str(directory),
        "DATASET.root_dataset",
        str(scenes),
        "DATASET.list_train",
        str(scenes / "training.odgt"),
        "DATASET.num_class",
        str(NUM_CLASS),
        "DATASET.imgSizes",
        "(64, 80)",
        "DATASET.imgMaxSize",
        "128",
        "MODEL.arch_encoder",
        "mobilenetv2dilated",
        "MODEL.arch_decoder",
        "c1_deepsup",
        "MODEL.fc_dim",
        "320",
        "MODEL.pretrained",
        "False",
        "MODEL.bn_momentum",
        "0.1",
        "TRAIN.num_epoch",
        "2",
        "TRAIN.epoch_iters",
        "4",
        "TRAIN.workers",
        "2",
        "TRAIN.disp_iter",
        "2",
        *extra,
    ]


def run_train(scenes, directory, *extra, flags=(), timeout=300, launcher=()):
    command = [
        *(launcher or [sys.executable]),
        str(REPO / "train.py"),
        "--cfg",
        str(REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml"),
        "--gpus",
        "cpu",
        *flags,
        *_opts(scenes, directory, *extra),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_poly_learning_rate_by_hand():
    assert poly_lr(0.02, 0, 100, 0.9) == 0.02
    assert poly_lr(0.02, 50, 100, 0.9) == pytest.approx(0.02 * math.exp(0.9 * math.log(0.5)))
    assert poly_lr(0.01, 99, 100, 0.9) == pytest.approx(0.01 * 0.01**0.9)
    encoder, decoder = nn.Conv2d(3, 4, 3), nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    groups = param_groups(encoder, 0.02) + param_groups(decoder, 0.01)
    optimizer = torch.optim.SGD(groups, lr=0.02, momentum=0.9, weight_decay=1e-4)
    set_lr(optimizer, lambda base: poly_lr(base, 25, 100, 0.9))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02 * 0.75**0.9] * 2 + [0.01 * 0.75**0.9] * 2)


def test_weight_decay_only_on_conv_and_linearcheckpoint_weights():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 0.1)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
        id(model[2].bias),
    }
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay


def test_atomic_save_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    path = tmp_path / "encoder_epoch_1.pth"
    atomic_save({"w": torch.ones(3)}, str(path))

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"w": torch.zeros(3)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder_epoch_1.pth"]


def test_one_epoch_through_the_command_line(scenes, tmp_path):
    result = run_train(scenes, tmp_path / "run", "TRAIN.num_epoch", "1")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {
        "encoder_epoch_1.pth",
        "decoder_epoch_1.pth",
        "config.yaml",
        "history.json",
        "train.log",
        "training.png",
        "train_state_epoch_1_iter_0.pth",
        "run.json",
    } <= names
    weights = checkpoint_weights(run, 1)
    assert not any(k.startswith("module.") for k in weights["encoder"])
    ModelBuilder.build_encoder("mobilenetv2dilated", weights=str(run / "encoder_epoch_1.pth"))
    ModelBuilder.build_decoder("c1_deepsup", fc_dim=320, num_class=NUM_CLASS, weights=str(run / "decoder_epoch_1.pth"))
    assert cv2.imread(str(run / "training.png")).shape[0] > 100
    log = (run / "train.log").read_text()
    assert "epoch 1: loss" in log
    # without a terminal, a plain line every TRAIN.disp_iter (2) iterations, in the log file too; no bar
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch 1/1: ")]
    assert [line.split(" it ")[0] for line in lines] == ["epoch 1/1: 2/4", "epoch 1/1: 4/4"]
    assert all(", loss " in line and ", acc " in line and ", lr " in line for line in lines)
    assert "\r" not in result.stderr and len(lines) == len(
        [line for line in log.splitlines() if " epoch 1/1: " in line]
    )
    # the run's record: what ran, with what, on what, how long each epoch took
    record = json.loads((run / "run.json").read_text())
    assert record["command"][0] == sys.executable and record["command"][1].endswith("train.py")
    assert "--gpus" in record["command"] and record["config"] == (run / "config.yaml").read_text()
    assert (
        record["versions"]["torch"] == torch.__version__ and record["versions"]["python"] == platform.python_version()
    )
    assert record["devices"] == ["cpu"] and record["precision"] == "fp32" and record["seed"] == 304
    assert (
        record["end"] == "finished"
        and [e["epoch"] for e in record["epochs"]] == [1]
        and record["epochs"][0]["seconds"] > 0
    )
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert (record["git_commit"] or "").startswith(commit) if (REPO / ".git").exists() else record["git_commit"] is None


def test_a_terminal_gets_a_progress_bar(scenes, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "--cfg",
        str(REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml"),
        "--gpus",
        "cpu",
        *_opts(scenes, tmp_path / "run", "TRAIN.num_epoch", "1"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower, cwd=REPO)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=300) == 0
    text = output.decode(errors="replace")
    assert "epoch 1/1: 100%" in text and "acc=" in text and "lr=" in text  # tqdm's bar and postfix
    assert "4/4 it (" not in text  # and not the plain lines


@pytest.mark.numeric
def test_two_epochs_equal_one_plus_a_resumed_one(scenes, tmp_path):
    """In this process (the command line's --stop-after-epoch and --resume are the next tests' and the crop recipe's):
    the resumed run's weights equal the straight run's, bit for bit."""
    cfg = lambda name: load_config(
        REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml", _opts(scenes, tmp_path / name)
    )
    cpu = Runtime([torch.device("cpu")])
    assert train(cfg("straight"), cpu).finished
    first = train(cfg("split"), cpu, stop_after_epoch=1)
    assert first.epoch == 1 and not first.finished and not (tmp_path / "split" / "encoder_epoch_2.pth").exists()
    assert json.loads((tmp_path / "split" / "run.json").read_text())["end"] == "stopped"
    assert train(cfg("split"), cpu, resume=True).finished
    assert_same_weights(checkpoint_weights(tmp_path / "straight", 2), checkpoint_weights(tmp_path / "split", 2))
    record = json.loads((tmp_path / "split" / "run.json").read_text())  # the resumed run's, the first run's inside
    assert record["start"] == {"epoch": 1, "iteration": 0} and [e["epoch"] for e in record["epochs"]] == [2]
    assert record["end"] == "finished" and record["previous"]["end"] == "stopped"
    assert [e["epoch"] for e in record["previous"]["epochs"]] == [1]


def test_start_epoch_continues_like_resume(scenes, tmp_path):
    first = run_train(scenes, tmp_path / "a", flags=["--stop-after-epoch", "1"])
    assert first.returncode == 0 and "stopped after epoch 1" in first.stdout, first.stderr
    config, cpu = REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml", Runtime([torch.device("cpu")])
    train(load_config(config, _opts(scenes, tmp_path / "a", "TRAIN.start_epoch", "1")), cpu)  # in this process
    train(load_config(config, _opts(scenes, tmp_path / "b")), cpu)
    assert_same_weights(checkpoint_weights(tmp_path / "b", 2), checkpoint_weights(tmp_path / "a", 2))


def test_ctrl_c_saves_a_resumable_state(scenes, tmp_path):
    run = tmp_path / "interrupted"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "--cfg",
        str(REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml"),
        "--gpus",
        "cpu",
        *_opts(scenes, run, "TRAIN.epoch_iters", "40", "TRAIN.num_epoch", "1"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    progress = re.compile(r"epoch 1/1: ([0-9]+)/40 ")  # the plain progress line, every TRAIN.disp_iter (2)
    while not (run / "train.log").exists() or not progress.search((run / "train.log").read_text()):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    states = list(run.glob("train_state_epoch_0_iter_*.pth"))
    assert len(states) == 1 and "continue with --resume" in err
    done = int(states[0].name.split("_iter_")[1].split(".")[0])
    assert 0 < done < 40
    resumed = run_train(scenes, run, "TRAIN.epoch_iters", "40", "TRAIN.num_epoch", "1", flags=["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"iteration {done}" in resumed.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(scenes, tmp_path):
    run = tmp_path / "nan"
    assert run_train(scenes, run, flags=["--stop-after-epoch", "1"]).returncode == 0
    good = checkpoint_weights(run, 1)
    result = run_train(scenes, run, "TRAIN.lr_encoder", "1e30", "TRAIN.lr_decoder", "1e30", flags=["--resume"])
    assert result.returncode == 1
    assert "the loss is" in result.stderr and "at epoch 2, iteration" in result.stderr
    assert "encoder_epoch_1.pth" in result.stderr
    assert not (run / "encoder_epoch_2.pth").exists()
    assert_same_weights(good, checkpoint_weights(run, 1))


def test_bad_label_through_train_py_names_the_file(scenes, tmp_path):
    bad_root = tmp_path / "bad"
    generate(str(bad_root), num_train=3, num_val=1, seed=1, min_side=64, max_side=96)
    label = next((bad_root / "annotations" / "training").iterdir())
    image = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(label), np.full(image.shape, 99, np.uint8))
    result = run_train(bad_root, tmp_path / "run", "TRAIN.batch_size_per_gpu", "3", "TRAIN.workers", "0")
    assert result.returncode == 1
    assert f"label {label} has value 99, above DATASET.num_class (8)" in result.stderr


def test_torchrun_two_processes_with_gloo(scenes, tmp_path):
    """Two ranks train alike and share the validation of each epoch (TRAIN.eval_period 1): its figures are
    evaluate()'s (eval_multipro.py's) for the epoch's checkpoint."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    validation = ["DATASET.list_val", str(scenes / "validation.odgt"), "TRAIN.eval_period", "1"]
    validation += ["VAL.checkpoint", "epoch_1.pth", "VAL.precision", "fp32"]
    result = run_train(
        scenes, tmp_path / "ddp", "TRAIN.num_epoch", "1", "TRAIN.workers", "1", *validation, launcher=launcher
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights identical on all 2 ranks" in result.stderr
    assert "batch-norm statistics are per process" in result.stderr
    assert "epoch 1 validation (2 images)" in result.stderr  # one on each rank
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    config = REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml"
    summary = evaluate(load_config(config, _opts(scenes, tmp_path / "ddp", *validation)), ["cpu"])
    assert [h["validation"] for h in history if "validation" in h] == [figures(summary)]


def test_validation_while_training_keeps_the_best_epoch_also_across_a_resume(scenes, tmp_path):
    """TRAIN.eval_period 1: each epoch's figures in the history are evaluate()'s (what eval_multipro.py runs) for
    that epoch's checkpoint; the best epoch's files become DIR/*_best.pth with best.json; a run stopped after epoch
    1 and resumed keeps the same record; TRAIN.keep_last 1 leaves the last epoch's files and the best."""
    validation = ["DATASET.list_val", str(scenes / "validation.odgt"), "TRAIN.num_epoch", "3", "TRAIN.workers", "0"]
    validation += ["TRAIN.eval_period", "1", "VAL.max_images", "1", "VAL.checkpoint", "epoch_3.pth"]
    config = REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml"
    cfg = lambda name, *extra: load_config(config, _opts(scenes, tmp_path / name, *validation, *extra))
    cpu = Runtime([torch.device("cpu")])
    train(cfg("straight"), cpu)
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    measured = {int(h["epoch"]): h["validation"] for h in history if "validation" in h}
    assert sorted(measured) == [1, 2, 3]
    for epoch, found in measured.items():
        summary = evaluate(cfg("straight", "VAL.checkpoint", f"epoch_{epoch}.pth"), ["cpu"])
        assert summary["images"] == 1 and found["mean_iou"] == summary["mean_iou"], (epoch, found, summary)
        assert found["pixel_accuracy"] == summary["pixel_accuracy"]
    ious = [measured[e]["mean_iou"] for e in (1, 2, 3)]
    best = json.loads((tmp_path / "straight" / "best.json").read_text())
    assert best == {
        "epoch": 1 + ious.index(max(ious)),
        "metric": "mean_iou",
        "value": max(ious),
        "checkpoint": "best.pth",
    }
    straight_best = checkpoint_weights(tmp_path / "straight", best["epoch"])
    files = {p: tmp_path / "straight" / f"{p}_best.pth" for p in straight_best}
    assert_same_weights(straight_best, {p: torch.load(f, weights_only=True) for p, f in files.items()})
    # stopped after epoch 1 and resumed, keeping the last epoch only: the same figures and the same best
    assert train(cfg("split", "TRAIN.keep_last", "1"), cpu, stop_after_epoch=1).epoch == 1
    assert train(cfg("split", "TRAIN.keep_last", "1"), cpu, resume=True).finished
    resumed = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [h["validation"] for h in resumed if "validation" in h] == [measured[e] for e in (1, 2, 3)]
    assert json.loads((tmp_path / "split" / "best.json").read_text()) == best
    kept = sorted(p.name for p in (tmp_path / "split").glob("*.pth") if not p.name.startswith("train_state"))
    assert kept == ["decoder_best.pth", "decoder_epoch_3.pth", "encoder_best.pth", "encoder_epoch_3.pth"]
    assert evaluate(cfg("split", "VAL.checkpoint", "best.pth"), ["cpu"])["mean_iou"] == best["value"]


def test_the_best_metric_is_a_figure_of_the_tasks_summary():
    segmentation = {"pixel_accuracy": 0.9, "mean_iou": 0.5, "images": 3, "seconds": 1.5, "classes": [{"iou": 0.1}]}
    assert figures(segmentation) == {"pixel_accuracy": 0.9, "mean_iou": 0.5}
    unified = {"object": {"mean_iou": 0.3, "pixel_accuracy": 0.7}, "scene": {"accuracy": 0.8, "images": 4}}
    unified["part"] = {"mean_iou": 0.2, "groups": []}
    found = figures(unified)
    assert found == {"object/mean_iou": 0.3, "object/pixel_accuracy": 0.7, "scene/accuracy": 0.8, "part/mean_iou": 0.2}
    assert metric_name("mean_iou", found) == "object/mean_iou"  # a name alone: the first head's
    assert metric_name("part/mean_iou", found) == "part/mean_iou"
    with pytest.raises(ValidationError, match="TRAIN.best_metric 'miou' is none of the evaluation's figures: object/"):
        metric_name("miou", found)


def test_two_accumulated_passes_of_batch_2_step_as_one_pass_of_batch_4():
    """TRAIN.accum_steps: the loss of each pass divided by their number, so that K passes of b images give the
    gradient of one pass of K x b (float64, frozen batch norms, every pixel labelled: the losses are means)."""
    cfg = load_config(
        REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml",
        ["MODEL.pretrained", "False", "DATASET.num_class", "5", "MODEL.fc_dim", "320"],
    )
    torch.manual_seed(0)
    model = task_for(cfg).model.build().double()
    freeze_bn(model)
    images, labels = torch.randn(4, 3, 64, 64, dtype=torch.float64), torch.randint(0, 5, (4, 8, 8))
    batch = lambda rows: {"img_data": images[rows], "seg_label": labels[rows]}
    twin = copy.deepcopy(model)
    steps = {}
    for name, module, groups in (
        ("accumulated", model, [[batch(slice(0, 2))], [batch(slice(2, 4))]]),
        ("whole", twin, [[batch(slice(0, 4))]]),
    ):
        optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        steps[name] = train_step(module, groups, torch.device("cpu"), torch.contiguous_format, optimizer, scaler)
    assert steps["accumulated"][0] == pytest.approx(steps["whole"][0], rel=1e-6)  # the reported loss is float32
    for (key, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=key)
    assert not torch.equal(model.decoder.conv_last.weight, task_for(cfg).model.build().decoder.conv_last.weight)


class _StopAt(Hook):
    """Asks the trainer to stop (as Ctrl-C does) after `iteration` iterations of epoch `epoch + 1`."""

    def __init__(self, epoch: int, iteration: int) -> None:
        self.at = (epoch, iteration)

    def after_iteration(self, trainer) -> None:
        if (trainer.position.epoch, trainer.position.iteration) == self.at:
            trainer.stop.requested = True


def test_accumulating_runs_resume_exactly_mid_epoch(scenes, tmp_path, monkeypatch):
    """TRAIN.accum_steps 2: a run stopped after 3 of its epoch's 4 steps and resumed ends with the straight run's
    weights, bit for bit (the loader resumes at the step's first batch)."""
    config = REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml"
    cfg = lambda name: load_config(
        config, _opts(scenes, tmp_path / name, "TRAIN.accum_steps", "2", "TRAIN.workers", "0", "TRAIN.num_epoch", "1")
    )
    cpu = Runtime([torch.device("cpu")])
    assert train(cfg("straight"), cpu).finished
    hooks = loop._hooks
    monkeypatch.setattr(loop, "_hooks", lambda *args: [*hooks(*args), _StopAt(0, 3)])
    assert train(cfg("split"), cpu).interrupted
    monkeypatch.setattr(loop, "_hooks", hooks)
    assert train(cfg("split"), cpu, resume=True).finished
    assert_same_weights(checkpoint_weights(tmp_path / "straight", 1), checkpoint_weights(tmp_path / "split", 1))
