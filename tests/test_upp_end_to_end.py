"""Unified Perceptual Parsing through the real scripts: train.py (one process, torchrun), eval_multipro.py, test.py,
the Segmenter API, and the multi-device engine against one model."""

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import assert_legend, assert_same_weights, checkpoint_weights
from serving import request, serving

from mit_semseg import Segmenter
from mit_semseg.config import load_config
from mit_semseg.data.classes import colorize, palette
from mit_semseg.data.label_tables import read_label_tables
from mit_semseg.data.multitask import MultiTaskCollate, MultiTaskTrainDataset, read_multitask_records
from mit_semseg.data.transforms import normalise_batch
from mit_semseg.evaluation import evaluate
from mit_semseg.parallel import DictDataParallel
from mit_semseg.synthetic.upp import MATERIALS, OBJECTS, PARTS, SCENES, TEXTURES, generate
from mit_semseg.tasks import build_model
from mit_semseg.training.loop import Runtime, train
from mit_semseg.training.validation import figures

# Every prediction here is at fp32 (TEST.precision, VAL.precision), whatever the CPU: none is rerun as the other kind
# of CPU (the end_to_end mark).
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "synthetic-resnet18-upp_lite.yaml"
# One worker runs this file (`make test` distributes tests one by one): its module fixtures train a model.
pytestmark = pytest.mark.xdist_group("test_upp_end_to_end")


@pytest.fixture(scope="module")
def upp_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("upp")
    generate(str(root), num_train=16, num_val=6, seed=3, min_side=64, max_side=96)
    return root


def _opts(root, directory, *extra):
    return [
        "DIR",
        str(directory),
        "DATASET.root_dataset",
        str(root),
        "DATASET.list_train",
        str(root / "training.jsonl"),
        "DATASET.list_val",
        str(root / "validation.jsonl"),
        "DATASET.label_tables",
        str(root / "tables"),
        "DATASET.imgSizes",
        "(64, 96)",
        "DATASET.imgMaxSize",
        "128",
        "TRAIN.num_epoch",
        "1",
        "TRAIN.epoch_iters",
        "4",
        "TRAIN.batch_size_per_gpu",
        "2",
        "TRAIN.workers",
        "1",
        "TRAIN.disp_iter",
        "2",
        "VAL.checkpoint",
        "epoch_1.pth",
        "TEST.checkpoint",
        "epoch_1.pth",
        "TEST.precision",
        "fp32",
        *extra,
    ]


def _run(script, root, directory, *extra, launcher=(), flags=("--gpus", "cpu")):
    command = [
        *(launcher or [sys.executable]),
        str(REPO / script),
        "--cfg",
        str(CONFIG),
        *flags,
        *_opts(root, directory, *extra),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def trained(upp_set, tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    result = _run("train.py", upp_set, directory, "TRAIN.eval_period", "1")  # validating every head as it trains
    assert result.returncode == 0, result.stderr[-3000:]
    return upp_set, directory, result.stderr


def test_training_logs_every_head_and_plots_it(trained):
    root, directory, log = trained
    assert "sources: scenes (" in log and "surfaces (" in log and "images: object, part, scene)" in log
    history = json.loads((directory / "history.json").read_text())
    heads = {k for entry in history for k in entry}
    assert {"loss", "object_loss", "object_acc", "part_loss", "part_acc", "scene_loss", "scene_acc"} <= heads
    plot = cv2.imread(str(directory / "training.png"))
    assert plot.shape[1] == 3 * 560 and plot.shape[0] >= 360
    state = {k: v.shape for k, v in torch.load(directory / "decoder_epoch_1.pth", weights_only=True).items()}
    assert state["object_head.1.weight"][0] == len(OBJECTS) and state["material_head.1.weight"][0] == len(MATERIALS)
    assert state["part_head.1.weight"][0] == sum(len(g.part_labels) for g in read_label_tables(root / "tables").groups)


def test_evaluation_writes_every_task_with_names(trained):
    root, directory, _ = trained
    result = _run("eval_multipro.py", root, directory, flags=("--gpus", "cpu", "--procs", "2"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((directory / "eval_epoch_1.json").read_text())
    for task in ("object", "part", "material"):
        assert 0 <= summary[task]["mean_iou"] <= 1 and 0 <= summary[task]["pixel_accuracy"] <= 1
    assert 0 <= summary["scene"]["accuracy"] <= 1 and summary["images"] == 6
    assert [c["name"] for c in summary["object"]["classes"]] == list(OBJECTS[1:])
    assert all(g["object"] in ("house", "car", "table", "tree") for g in summary["part"]["groups"])
    assert "task        mean IoU  accuracy" in result.stdout and "scene" in result.stdout
    single = _run("eval_multipro.py", root, directory)  # one worker gives exactly what two did
    assert single.returncode == 0
    assert json.loads((directory / "eval_epoch_1.json").read_text())["object"] == summary["object"]
    # what training's validation (TRAIN.eval_period 1) recorded for epoch 1: the same figures, every head's
    history = json.loads((directory / "history.json").read_text())
    assert [h["validation"] for h in history if "validation" in h] == [figures(summary)]
    best = json.loads((directory / "best.json").read_text())
    assert best["epoch"] == 1 and best["metric"] == "object/mean_iou"
    assert best["value"] == summary["object"]["mean_iou"] and (directory / "decoder_best.pth").is_file()


def test_the_server_answers_every_head(trained):
    """python -m mit_semseg.serve with a UPP model: every head's classes, the scenes, each head's label file."""
    root, directory, _ = trained
    opts = _opts(root, directory, "TEST.checkpoint", "epoch_1.pth", "TEST.precision", "fp32")
    image = sorted((root / "images" / "validation").glob("*.jpg"))[0]
    pred = Segmenter(load_config(CONFIG, opts), "cpu").predict(str(image))
    with serving(CONFIG, opts) as (_, port):
        status, _, body = request(port, "POST", "/v1/segment?include=map", image.read_bytes())
        assert status == 200, body
        answer = json.loads(body)
        assert list(answer["heads"]) == ["object", "part", "material"]
        assert answer["scenes"][0]["name"] == SCENES[int(np.argmax(pred["scene"]))]
        for head in ("object", "part", "material"):
            mapped = np.frombuffer(base64.b64decode(answer["heads"][head]["map"]), "<u2").reshape(pred[head].shape)
            np.testing.assert_array_equal(mapped, pred[head])  # table labels: class id + 1, 0 unlabelled
        status, _, png = request(port, "POST", "/v1/segment?output=label&head=part", image.read_bytes())
        saved = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert status == 200 and saved.dtype == np.uint16
        np.testing.assert_array_equal(saved, pred["part"])  # the file test.py writes


def test_test_py_writes_the_multitask_files_and_segmenter_agrees(trained, tmp_path):
    root, directory, _ = trained
    images = sorted((root / "images" / "validation").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "test.py"),
            "--imgs",
            str(images[0].parent),
            "--cfg",
            str(CONFIG),
            "--gpu",
            "cpu",
            *_opts(root, directory, "TEST.result", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scene: " in result.stdout
    cfg = load_config(CONFIG, _opts(root, directory))
    segmenter = Segmenter(cfg, precision="fp32")
    tables = read_label_tables(root / "tables")
    for path in images:
        stem = out / path.stem
        picture = cv2.cvtColor(cv2.imread(f"{stem}.png"), cv2.COLOR_BGR2RGB)
        original = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        h, w = original.shape[:2]
        assert picture.shape[1] == 4 * w and picture.shape[0] > h  # image | objects | parts | materials, legends
        obj = cv2.imread(f"{stem}_object.png", cv2.IMREAD_UNCHANGED)
        part = cv2.imread(f"{stem}_part.png", cv2.IMREAD_UNCHANGED)
        material = cv2.imread(f"{stem}_material.png", cv2.IMREAD_UNCHANGED)
        assert obj.dtype == np.uint16 and part.dtype == np.uint16 and material.dtype == np.uint8
        assert obj.shape == part.shape == material.shape == original.shape[:2]
        pred = segmenter.predict(str(path))
        assert np.array_equal(pred["object"], obj) and np.array_equal(pred["part"], part)
        assert np.array_equal(pred["material"], material)
        heads = segmenter.task.prediction.classes_per_head(pred)
        assert heads["scene"] == np.argmax(pred["scene"]) and heads["part"] is pred["part"]
        again, probs = segmenter.predict(str(path), probabilities=True)
        assert all(np.array_equal(again[k], pred[k]) for k in pred)
        assert probs["object"].shape == (len(tables.objects), h, w) and probs["scene"].shape == (len(tables.scenes),)
        assert np.array_equal(probs["object"].argmax(0), obj) and np.array_equal(probs["material"].argmax(0), material)
        assert [g.shape[0] for g in probs["part"]] == tables.part_group_sizes
        for p in (probs["object"], probs["material"], *probs["part"]):
            np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
        for g, group in enumerate(tables.groups):  # inside a predicted object, its part is its group's arg-max
            inside = obj == group.object_label
            labels = np.asarray(group.part_labels)[probs["part"][g].argmax(0)]
            assert np.array_equal(part[inside], labels[inside])
        for k, (labels, names) in enumerate(
            ((obj, tables.objects), (part, tables.parts), (material, tables.materials)), start=1
        ):
            colors = palette(len(names))[1:]  # label 0 (unlabelled) is black
            panel = picture[:, k * w : (k + 1) * w]
            np.testing.assert_array_equal(panel[:h], colorize(labels.astype(np.int64) - 1, colors))
            assert_legend(panel[h:], labels.astype(np.int64) - 1, colors)
        # a pixel's part belongs to its object's group; 0 where that object has no parts
        allowed = {g.object_label: set(g.part_labels) for g in tables.groups}
        for o in np.unique(obj):
            assert set(np.unique(part[obj == o])) <= allowed.get(int(o), {0})
        report = json.loads(Path(f"{stem}.json").read_text())
        assert len(report["scenes"]) == 3 and report["scenes"][0]["probability"] >= report["scenes"][1]["probability"]
        assert report["scenes"][0]["name"] == tables.scenes[int(np.argmax(pred["scene"]))]
        assert set(report["objects"]) <= set(OBJECTS) and set(report["materials"]) <= set(MATERIALS)
    assert PARTS[0] == "-"


def test_torchrun_two_ranks_with_skipped_heads(upp_set, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    validation = ["TRAIN.eval_period", "1", "VAL.max_images", "4", "VAL.precision", "fp32"]  # a share on each rank
    result = _run(
        "train.py",
        upp_set,
        tmp_path / "ddp",
        "TRAIN.epoch_iters",
        "6",
        "TRAIN.disp_iter",
        "4",
        *validation,
        launcher=launcher,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights identical on all 2 ranks" in result.stderr
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert "object_acc" in history[0] and "material_acc" not in history[0]  # iterations 1-4 drew the scenes
    assert "material_acc" in history[1] and "object_acc" not in history[1]  # 5-6 the surfaces
    # every head's figures, as evaluate() (eval_multipro.py) gives them for the epoch's checkpoint
    summary = evaluate(load_config(CONFIG, _opts(upp_set, tmp_path / "ddp", *validation)), ["cpu"])
    assert (
        history[2] == {"epoch": 1.0, "validation": figures(summary)} and "material/mean_iou" in history[2]["validation"]
    )


@pytest.mark.numeric
def test_two_replicas_equal_one_model_over_the_concatenated_batch(upp_set):
    """The engine's synchronized batch norm and gradients on a multi-task batch, in float64."""
    cfg = load_config(CONFIG, _opts(upp_set, "unused"))
    tables = read_label_tables(cfg.DATASET.label_tables)
    records = [
        r
        for r in read_multitask_records(cfg.DATASET.list_train, cfg.DATASET.root_dataset, tables)
        if r["source"] == "scenes"
    ]
    dataset = MultiTaskTrainDataset(records, tables, 128)
    collate = MultiTaskCollate(tables, 32, 4)
    batches = []
    for keys in ([(0, 64, False), (1, 64, True)], [(2, 64, False)]):
        batch = collate([dataset[k] for k in keys])
        # one size for both, so that one model can run the three images together
        batch["img_data"] = normalise_batch(batch.pop("images"), batch.pop("sizes"), "caffe")[..., :64, :64].double()
        for key in ("seg_object", "seg_part"):
            batch[key] = batch[key][..., :16, :16]
        batches.append({k: v for k, v in batch.items() if k not in ("failed", "fatal", "num_samples")})
    torch.manual_seed(0)
    model = build_model(cfg).double().train()
    reference = copy.deepcopy(model)
    results = DictDataParallel(model, ["cpu", "cpu"])(batches)
    sum(out["loss"] for out in results).backward()
    whole = {
        k: (torch.cat([b[k] for b in batches]) if torch.is_tensor(batches[0][k]) else batches[0][k]) for k in batches[0]
    }
    pred = reference.decoder(reference.encoder(whole["img_data"], return_feature_maps=True), tasks=whole["tasks"])
    rows = lambda v, r: [g[r] for g in v] if isinstance(v, list) else v[r] if torch.is_tensor(v) else v
    losses = [
        reference.loss({k: rows(v, r) for k, v in pred.items()}, {k: rows(v, r) for k, v in whole.items()})["loss"]
        for r in (slice(0, 2), slice(2, 3))
    ]
    sum(losses).backward()
    for out, expected in zip(results, losses):
        torch.testing.assert_close(out["loss"], expected, atol=1e-10, rtol=1e-10)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        if q.grad is None:
            assert p.grad is None or not p.grad.any(), name
        else:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-8, msg=name)


def test_two_epochs_equal_one_plus_a_resumed_one(upp_set, tmp_path):
    """In this process (the command line's --stop-after-epoch and --resume are test_training's)."""
    schedule = ("TRAIN.num_epoch", "2", "TRAIN.epoch_iters", "3", "TRAIN.workers", "0")
    cpu = Runtime([torch.device("cpu")])
    train(load_config(CONFIG, _opts(upp_set, tmp_path / "straight", *schedule)), cpu)
    resumed = load_config(CONFIG, _opts(upp_set, tmp_path / "resumed", *schedule))
    assert train(resumed, cpu, stop_after_epoch=1).epoch == 1
    assert train(resumed, cpu, resume=True).finished
    assert_same_weights(checkpoint_weights(tmp_path / "straight", 2), checkpoint_weights(tmp_path / "resumed", 2))


def test_bf16_training_runs_every_head(upp_set, tmp_path):
    result = _run(
        "train.py",
        upp_set,
        tmp_path / "bf16",
        "TRAIN.amp",
        "bf16",
        "TRAIN.epoch_iters",
        "2",
        "DATASET.imgSizes",
        "(64,)",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision bf16" in result.stderr
    history = json.loads((tmp_path / "bf16" / "history.json").read_text())
    assert all(np.isfinite(v) for entry in history for k, v in entry.items() if k.endswith("loss"))


def _texture_lists(root):
    return (
        "DATASET.list_texture_train",
        str(root / "texture_training.jsonl"),
        "DATASET.list_texture_val",
        str(root / "texture_validation.jsonl"),
        "TRAIN.texture_num_epoch",
        "2",
        "TRAIN.texture_epoch_iters",
        "5",
        "TRAIN.texture_batch_size_per_gpu",
        "8",
        "TRAIN.texture_size",
        "32",
    )


def _texture_stage(root, directory, source, flags=()):
    extra = (*_texture_lists(root), "TRAIN.texture_from", str(source))
    result = _run("train.py", root, directory, *extra, flags=("--gpus", "cpu", "--stage", "texture", *flags))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_texture_stage_adds_a_head_and_changes_nothing_else(trained, tmp_path):
    """train.py --stage texture from a trained model in another folder, then eval_multipro.py and test.py: the
    other heads' figures are the same to the last digit, the texture figures come with names, and a stopped and
    resumed stage ends with the same head."""
    root, source, _ = trained
    before = _run("eval_multipro.py", root, source, *_texture_lists(root))
    assert before.returncode == 0, before.stderr[-3000:]
    assert "has no texture head, textures are not evaluated" in before.stderr
    figures_before = json.loads((source / "eval_epoch_1.json").read_text())
    assert "texture" not in figures_before

    stage = tmp_path / "stage"
    log = _texture_stage(root, stage, source).stderr
    assert "(stage texture)" in log and f"6 of the 6 textures; the model of {source / 'encoder_epoch_1.pth'}" in log
    assert "checkpoints texture_epoch_1.pth and encoder_epoch_1.pth and decoder_epoch_1.pth" in log
    written = {p.name for p in stage.iterdir()}
    assert {"texture_epoch_1.pth", "texture_history.json", "texture_training.png", "texture_config.yaml"} <= written
    assert "texture_train_state_epoch_2_iter_0.pth" in written and not {"history.json", "config.yaml"} & written
    assert_same_weights(checkpoint_weights(source, 1), checkpoint_weights(stage, 1))  # DIR holds the whole model
    history = json.loads((stage / "texture_history.json").read_text())
    assert {"loss", "texture_loss", "texture_acc", "lr", "epoch"} == set(history[-1]) and history[-1]["epoch"] == 2

    after = _run("eval_multipro.py", root, stage, *_texture_lists(root))
    assert after.returncode == 0, after.stderr[-3000:]
    figures = json.loads((stage / "eval_epoch_1.json").read_text())
    for head in ("object", "part", "material", "scene"):
        assert figures[head] == figures_before[head], head
    texture = figures["texture"]
    assert texture["images"] == 60 and [c["name"] for c in texture["classes"]] == list(TEXTURES)
    assert texture["accuracy"] == pytest.approx(np.mean([c["accuracy"] for c in texture["classes"]]))  # 10 each
    assert f"texture   {'':>10}{100 * texture['accuracy']:>9.2f}%  (60 texture images)" in after.stdout

    out = tmp_path / "out"
    image = sorted((root / "images" / "validation").glob("*.jpg"))[0]
    shown = subprocess.run(
        [sys.executable, str(REPO / "test.py"), "--imgs", str(image), "--cfg", str(CONFIG), "--gpu", "cpu"]
        + _opts(root, stage, "TEST.result", str(out)),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "  textures: " in shown.stdout and "wrote 6 files" in shown.stdout
    texture_map = cv2.imread(str(out / f"{image.stem}_texture.png"), cv2.IMREAD_UNCHANGED)
    original = cv2.imread(str(image))
    assert texture_map.dtype == np.uint8 and texture_map.shape == original.shape[:2] and texture_map.min() >= 1
    assert cv2.imread(str(out / f"{image.stem}.png")).shape[1] == 5 * original.shape[1]
    pred = Segmenter(load_config(CONFIG, _opts(root, stage)), precision="fp32").predict(str(image))
    assert np.array_equal(pred["texture"] + 1, texture_map)
    report = json.loads((out / f"{image.stem}.json").read_text())
    assert set(report["textures"]) <= set(TEXTURES) and len(report["textures"]) <= 5

    resumed = tmp_path / "resumed"  # in this process: `train.py --stage texture` ran above
    extra = (*_texture_lists(root), "TRAIN.texture_from", str(source), "TRAIN.stage", "texture", "TRAIN.workers", "0")
    cfg, cpu = load_config(CONFIG, _opts(root, resumed, *extra)), Runtime([torch.device("cpu")])
    assert train(cfg, cpu, stop_after_epoch=1).epoch == 1
    assert (resumed / "texture_train_state_epoch_1_iter_0.pth").is_file() and train(cfg, cpu, resume=True).finished
    for name in ("texture_epoch_1.pth", "encoder_epoch_1.pth", "decoder_epoch_1.pth"):
        a, b = (torch.load(d / name, weights_only=True) for d in (stage, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
