"""mmsegmentation's recipes on our engine: the crop pipeline, the learning-rate floor, the auxiliary head, the test
modes, and the presets."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_weights, checkpoint_weights, use_reduced_encoders
from torch import nn

from mit_semseg.config import load_config
from mit_semseg.data import crops
from mit_semseg.data.crops import CropDataset, crop_box, photometric_distortion, rescaled_size
from mit_semseg.data.sampling import LoaderRequest, SeededBatchSampler, seeded_keys
from mit_semseg.data.transforms import prediction_scales
from mit_semseg.errors import ConfigError
from mit_semseg.inference import fuse
from mit_semseg.models import ENCODERS
from mit_semseg.models.decoders import FCNHead
from mit_semseg.models.segmentation import SegmentationModule
from mit_semseg.synthetic.scenes import NUM_CLASS, generate
from mit_semseg.tasks import task_for
from mit_semseg.training.loop import Runtime, TrainingError, train
from mit_semseg.training.optim import poly_lr

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p for p in (REPO / "config").glob("*.yaml") if p.stem.split("-")[-1] in ("20k", "40k", "80k", "160k"))


class Scripted:
    """A stand-in for np.random.Generator whose `integers` returns the values given, in order."""

    def __init__(self, *values: int) -> None:
        self.values, self.calls = list(values), 0

    def integers(self, high: int) -> int:
        self.calls += 1
        value = self.values.pop(0)
        assert 0 <= value < high
        return value


def test_rescale_keeps_the_ratio_within_the_scale():
    assert rescaled_size(1024, 2048, (2048, 1024), 1.0) == (1024, 2048)
    assert rescaled_size(1024, 2048, (2048, 512), 1.0) == (512, 1024)  # the short side limits
    assert rescaled_size(1024, 2048, (2048, 512), 2.0) == (1024, 2048)
    assert rescaled_size(512, 683, (2048, 512), 0.5) == (256, 342)  # 683 * 0.5 = 341.5, rounded half up
    assert rescaled_size(300, 4000, (2048, 512), 1.0) == (154, 2048)  # the long side limits


def test_crop_is_drawn_again_while_one_class_fills_it():
    label = np.zeros((10, 10), np.uint8)
    label[:, :5], label[:, 5:] = 1, 2
    rng = Scripted(0, 0, 0, 3)  # (top, left): (0, 0) is all class 1; (0, 3) holds 2 columns of each
    assert crop_box(label, (4, 4), 0.75, rng) == (0, 3, 4, 7) and rng.calls == 4
    # one class at 75% is too much: cat_max_ratio is a strict bound
    rng = Scripted(0, 2, 0, 3)
    assert crop_box(label, (4, 4), 0.75, rng) == (0, 3, 4, 7)  # (0, 2): 3 columns of 1, 1 of 2 -> 75%, again
    assert rng.calls == 4
    # unlabelled pixels do not count: a crop of class 1 and unlabelled pixels holds one class
    label[:, 3:5] = 0
    rng = Scripted(0, 1, 5, 2)
    assert crop_box(label, (4, 4), 0.75, rng) == (5, 2, 9, 6)


def test_crop_keeps_the_last_of_ten_and_none_with_ratio_one():
    label = np.ones((10, 10), np.uint8)
    rng = Scripted(*[v for i in range(10) for v in (i % 7, 6 - i % 7)])
    assert crop_box(label, (4, 4), 0.75, rng) == (2, 4, 6, 8) and rng.calls == 20  # the tenth draw: (9 % 7, 6 - 2)
    rng = Scripted(3, 1)
    assert crop_box(label, (4, 4), 1.0, rng) == (3, 1, 7, 5) and rng.calls == 2
    assert crop_box(label, (16, 4), 0.75, Scripted(*[0, 5] * 10)) == (0, 5, 10, 9)  # taller than the image


def test_photometric_distortion_is_mmsegmentations_set_of_changes():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)

    class Fixed:
        """Every change on: brightness +10, contrast first at 1.2, saturation 1, hue +0."""

        def __init__(self):
            self.random_values = [0.1, 0.1, 0.1, 0.1, 0.1]
            self.uniform_values = [10.0, 1.2, 1.0]

        def random(self):
            return self.random_values.pop(0)

        def uniform(self, low, high):
            return self.uniform_values.pop(0)

        def integers(self, low, high):
            return 0

    out = photometric_distortion(image, Fixed())
    expected = np.clip(np.clip(image.astype(np.float32) + 10, 0, 255) * 1.2, 0, 255).astype(np.uint8)
    # saturation x1 and hue +0 go through HSV and back: equal to within OpenCV's rounding
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 8
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 1.5


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    generate(str(root), num_train=8, num_val=2, seed=3, min_side=48, max_side=96)
    return root


def crop_config(scenes, *opts):
    return load_config(
        REPO / "config/synthetic-mobilenetv2dilated-c1-crop.yaml",
        [
            "DATASET.root_dataset",
            str(scenes),
            "DATASET.list_train",
            str(scenes / "training.odgt"),
            "DATASET.list_val",
            str(scenes / "validation.odgt"),
            "DATASET.class_info",
            str(scenes / "class_info.csv"),
            *opts,
        ],
    )


def test_crop_samples_are_padded_and_reproducible(scenes):
    cfg = crop_config(scenes, "DATASET.crop_size", "(120, 72)", "DATASET.crop_scale", "(80, 40)")
    records = task_for(cfg).data.read(cfg.DATASET.list_train)
    dataset = CropDataset(records, cfg.DATASET)
    a, b, c = dataset[(0, 11)], dataset[(0, 11)], dataset[(0, 12)]
    assert a.image.shape == (120, 72, 3) and a.label.shape == (120, 72)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)
    # rescaled to at most 80 x 40 (times at most 2), so the crop is padded: image 0, label 0 (unlabelled)
    filled = a.label > 0
    rows, cols = np.nonzero(filled.any(1))[0], np.nonzero(filled.any(0))[0]
    assert rows.max() < 80 and (a.image[rows.max() + 1 :] == 0).all() and (a.label[rows.max() + 1 :] == 0).all()
    assert cols.max() < 72


def test_crop_sampler_resumes_and_shares_between_ranks():
    crops = lambda batch_size, **request: SeededBatchSampler(
        [0] * 10, batch_size, seeded_keys, 5, LoaderRequest(**request)
    )
    whole = list(crops(2, num_batches=7, epoch=1))
    assert len(whole) == 7 and list(crops(2, num_batches=7, epoch=1, start=3)) == whole[3:]
    assert [i for i, _ in whole[0] + whole[1] + whole[2] + whole[3] + whole[4]] != list(range(10))
    assert sorted(i for b in whole[:5] for i, _ in b) == list(range(10))  # one pass over the records, then again
    ranks = [list(crops(1, num_batches=5, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(i for r in ranks for b in r for i, _ in b) == list(range(10))
    assert list(crops(2, num_batches=7, epoch=2)) != whole


def test_learning_rate_floor_by_hand():
    assert poly_lr(0.01, 0, 1000, 0.9, 1e-4) == pytest.approx(0.01)
    assert poly_lr(0.01, 500, 1000, 0.9, 1e-4) == pytest.approx(0.0099 * math.exp(0.9 * math.log(0.5)) + 1e-4)
    assert poly_lr(0.01, 1000, 1000, 0.9, 1e-4) == pytest.approx(1e-4)


def test_auxiliary_head_adds_its_weighted_loss():
    torch.manual_seed(0)

    class Encoder(nn.Module):
        def forward(self, x, return_feature_maps=True):
            return [x[:, :, ::2, ::2].repeat(1, 2, 1, 1), x[:, :, ::4, ::4].repeat(1, 4, 1, 1)]

    class Decoder(nn.Module):
        deep_sup = False

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(12, 5, 1)

        def forward(self, features, segSize=None):
            return F.log_softmax(F.interpolate(self.conv(features[-1]), scale_factor=2.0), dim=1)

    aux = FCNHead(6, 5, channels=8, norm_layer=nn.BatchNorm2d)
    module = SegmentationModule(Encoder(), Decoder(), nn.NLLLoss(ignore_index=-1), None, aux, 0.4).eval()
    image, label = torch.randn(2, 3, 16, 16), torch.randint(-1, 5, (2, 8, 8))
    loss = module({"img_data": image, "seg_label": label})["loss"]
    features = module.encoder(image)
    main = F.nll_loss(module.decoder(features), label, ignore_index=-1)
    aux_logits = F.interpolate(aux(features[0]), size=(8, 8), mode="bilinear", align_corners=False)
    expected = main + 0.4 * F.cross_entropy(aux_logits, label, ignore_index=-1)
    torch.testing.assert_close(loss, expected)
    # the inference model leaves the auxiliary head out
    cfg = load_config(REPO / "config/synthetic-mobilenetv2dilated-c1-crop.yaml", ["DATASET.class_info", ""])
    assert task_for(cfg).model.build().aux_head is not None
    assert task_for(cfg).model.build(inference=True).aux_head is None


def test_test_scales_follow_the_ratios():
    cfg = load_config(None, ["DATASET.imgSizes", "(512,)", "DATASET.imgMaxSize", "2048"])
    assert prediction_scales(cfg.DATASET, cfg.TEST) == [(512, 2048)]
    cfg = load_config(None, ["DATASET.imgSizes", "(512,)", "DATASET.imgMaxSize", "2048", "TEST.ratios", "(0.5, 1.75)"])
    assert prediction_scales(cfg.DATASET, cfg.TEST) == [(256, 1024), (896, 3584)]
    assert load_config(None, ["VAL.flip", "True"]).TEST.flip is True  # the key's old name still works


def test_fuse_with_an_overhanging_extent_is_resize_then_crop():
    logits = [torch.randn(4, 5, 7)]
    pred, prob = fuse(logits, (37, 50), True, [(40, 56)])
    full = torch.softmax(F.interpolate(logits[0][None], size=(40, 56), mode="bilinear", align_corners=False)[0], 0)
    torch.testing.assert_close(prob, full[:, :37, :50])
    assert torch.equal(pred, full[:, :37, :50].argmax(0))


@pytest.mark.parametrize(
    "opts, message",
    [
        (["DATASET.pipeline", "tiles"], "DATASET.pipeline must be aspect or crop"),
        (["DATASET.crop_ratio_range", "(2.0, 0.5)"], "the low end comes first"),
        (["DATASET.cat_max_ratio", "0.0"], "DATASET.cat_max_ratio must be in"),
        (["MODEL.aux_head", "psp"], "MODEL.aux_head: unknown 'psp'"),
        (["MODEL.arch_decoder", "ppm", "MODEL.decoder_dropout", "0.1"], "decoder ppm takes none"),
        (["TRAIN.lr_min", "0.5"], "TRAIN.lr_min (0.5) must be between 0 and"),
        (["MODEL.arch_decoder", "upp_lite", "DATASET.pipeline", "crop"], "use DATASET.pipeline aspect"),
    ],
)
def test_bad_recipe_settings_are_named(opts, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(REPO / "config/synthetic-mobilenetv2dilated-c1-crop.yaml", opts)


def test_presets_cover_the_table():
    names = {p.stem for p in PRESETS}
    for encoder in ("resnet50", "resnet101"):
        assert {
            f"cityscapes-{encoder}-upernet-512x1024-40k",
            f"cityscapes-{encoder}-upernet-512x1024-80k",
            f"cityscapes-{encoder}-upernet-769x769-40k",
            f"cityscapes-{encoder}-upernet-769x769-80k",
            f"voc-{encoder}-upernet-512x512-20k",
            f"voc-{encoder}-upernet-512x512-40k",
            f"ade20k-{encoder}-upernet-512x512-80k",
            f"ade20k-{encoder}-upernet-512x512-160k",
            f"ade20k-{encoder}-pspnet-512x512-80k",
            f"cityscapes-{encoder}-pspnet-512x1024-40k",
        } <= names


def _resnet_recipe(cfg, depth, head, crop):
    """mmsegmentation's ResNet models: ResNetV1c (D8 for PSPNet), its heads (PSPHead's dropout is the ppm decoder's
    own), SGD to a floor of 1e-4, and its test: whole images at its test scale, or 769 windows every 513 at
    (2049, 1025), corners aligned."""
    pspnet = head == "pspnet"
    assert cfg.MODEL.arch_encoder == f"{depth}v1c" + ("dilated" if pspnet else "")
    assert (cfg.MODEL.arch_decoder, cfg.MODEL.decoder_dropout) == (("ppm", 0.0) if pspnet else ("uperhead", 0.1))
    assert cfg.TRAIN.optim == "SGD" and cfg.TRAIN.lr_min == 1e-4 and cfg.TRAIN.warmup_iters == 0
    aligned = crop == (769, 769)
    assert cfg.MODEL.align_corners == aligned and cfg.TEST.mode == ("slide" if aligned else "whole")
    if aligned:
        assert (cfg.TEST.crop_size, cfg.TEST.stride, cfg.DATASET.imgSizes, cfg.DATASET.imgMaxSize) == (
            769,
            513,
            (1025,),
            2049,
        )


def _transformer_recipe(cfg, encoder, head, crop):
    """mmsegmentation's ConvNeXt and Swin UperNets: AdamW with its warm-up, poly 1.0 to 0, stochastic depth; ConvNeXt
    with stage-wise rate decay and no decay on 1-D parameters, tested in windows of the crop every two thirds of it
    (512 every 341; large and xlarge 640 every 426); Swin with no decay on its norms and bias tables, tested on whole
    images."""
    t, convnext = cfg.TRAIN, encoder.startswith("convnext")
    assert (cfg.MODEL.arch_encoder, cfg.MODEL.arch_decoder, head) == (encoder, "uperhead", "upernet")
    assert (t.optim, t.betas, t.warmup_iters, t.warmup_ratio, t.lr_pow, t.lr_min) == (
        "AdamW",
        (0.9, 0.999),
        1500,
        1e-6,
        1.0,
        0.0,
    )
    assert cfg.MODEL.drop_path_rate > 0 and t.batch_size_per_gpu * 8 == 16
    side = crop[0]  # the test's short side is the crop's; the long side at most 4 times it
    assert (cfg.DATASET.imgSizes, cfg.DATASET.imgMaxSize, tuple(cfg.DATASET.crop_scale)) == (
        (side,),
        4 * side,
        (4 * side, side),
    )
    if convnext:
        lr = 8e-5 if encoder == "convnext_xlarge" else 1e-4
        assert (t.lr_encoder, t.weight_decay, t.no_decay, t.lr_decay_rate) == (lr, 0.05, ("ndim1",), 0.9)
        assert t.lr_decay_layers == (6 if encoder == "convnext_tiny" else 12)
        assert (cfg.TEST.mode, cfg.TEST.crop_size, cfg.TEST.stride) == ("slide", side, side * 2 // 3)
        assert crop == ((640, 640) if encoder.endswith("large") else (512, 512))
    else:
        assert (t.lr_encoder, t.weight_decay, t.no_decay, t.lr_decay_rate) == (6e-5, 0.01, ("norm", "bias_table"), 0.0)
        assert cfg.TEST.mode == "whole"


def _shorter_schedule(preset):
    """The preset of the same recipe with the next shorter schedule, if there is one."""
    family = preset.stem.rsplit("-", 1)[0]
    iterations = lambda p: int(p.stem.split("-")[-1][:-1])
    shorter = [p for p in PRESETS if p.stem.rsplit("-", 1)[0] == family and iterations(p) < iterations(preset)]
    return max(shorter, key=iterations) if shorter else None


def _flat(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return out


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_builds_and_trains_a_few_iterations(preset, scenes, tmp_path, monkeypatch):
    cfg = load_config(preset)
    iterations = int(preset.stem.split("-")[-1][:-1]) * 1000
    crop = tuple(int(s) for s in preset.stem.split("-")[-2].split("x"))
    assert cfg.TRAIN.num_epoch * cfg.TRAIN.epoch_iters == iterations and tuple(cfg.DATASET.crop_size) == crop
    assert cfg.DATASET.pipeline == "crop" and cfg.MODEL.aux_head == "fcn"
    assert cfg.TEST.pipeline == "mmseg" and cfg.VAL.mean_iou_over == "present"
    _, encoder, head, _, _ = preset.stem.split("-")
    (_resnet_recipe if encoder.startswith("resnet") else _transformer_recipe)(cfg, encoder, head, crop)
    shorter = _shorter_schedule(preset)
    if shorter is not None:  # the same recipe as a shorter schedule's preset, which trains below: only longer
        same, other = _flat(load_config(shorter)), _flat(cfg)
        schedule = {"TRAIN.num_epoch", "VAL.checkpoint", "TEST.checkpoint", "DIR"}  # and the last epoch's file
        assert {k for k in same if same[k] != other[k]} == schedule, preset.stem
        assert other["TEST.checkpoint"] == other["VAL.checkpoint"] == f"epoch_{cfg.TRAIN.num_epoch}.pth"
        return
    monkeypatch.setattr(crops, "CROP_TRIES", 2)
    use_reduced_encoders(monkeypatch)  # the preset's recipe and heads on a reduced encoder of its architecture
    small = load_config(
        preset,
        [
            "MODEL.fc_dim",
            str(ENCODERS[cfg.MODEL.arch_encoder].fc_dim),
            "DIR",
            str(tmp_path),
            "DATASET.root_dataset",
            str(scenes),
            "DATASET.list_train",
            str(scenes / "training.odgt"),
            "DATASET.class_info",
            "",
            "DATASET.crop_size",
            "(64, 64)",
            "DATASET.crop_scale",
            "(96, 48)",
            "MODEL.pretrained",
            "False",
            "TRAIN.batch_size_per_gpu",
            "2",  # mmsegmentation's heads: batch norm after the 1x1 pooling needs two values per channel
            "TRAIN.num_epoch",
            "1",
            "TRAIN.epoch_iters",
            "2",
            "TRAIN.workers",
            "0",
        ],
    )
    assert small.DATASET.num_class >= NUM_CLASS
    position = train(small, Runtime([torch.device("cpu")]))
    assert position.epoch == 1 and (tmp_path / "decoder_epoch_1.pth").is_file()
    history = (tmp_path / "history.json").read_text()
    assert "loss" in history
    state = torch.load(next(tmp_path.glob("train_state_*.pth")), weights_only=True)
    assert set(state["training_parts"]) == {"aux_head"}
    assert set(torch.load(tmp_path / "decoder_epoch_1.pth", weights_only=True)) == set(
        task_for(small).model.build(inference=True).decoder.state_dict()
    )


def run(script, scenes, directory, *extra, flags=()):
    command = [
        sys.executable,
        str(REPO / script),
        "--cfg",
        str(REPO / "config/synthetic-mobilenetv2dilated-c1-crop.yaml"),
        "--gpu" if script == "test.py" else "--gpus",
        "cpu",
        *flags,
        "DIR",
        str(directory),
        "DATASET.root_dataset",
        str(scenes),
        "DATASET.list_train",
        str(scenes / "training.odgt"),
        "DATASET.list_val",
        str(scenes / "validation.odgt"),
        "DATASET.class_info",
        str(scenes / "class_info.csv"),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def larger_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("larger_scenes")
    generate(str(root), num_train=40, num_val=8, seed=1)
    return root


def test_crop_recipe_with_the_auxiliary_head_learns_and_resumes_exactly(larger_scenes, tmp_path):
    # 2 epochs of 30 iterations (the recipe's 50 reach about the same margins above the bars below)
    straight = run("train.py", larger_scenes, tmp_path / "straight", "TRAIN.epoch_iters", "30")
    assert straight.returncode == 0, straight.stderr
    evaluated = run("eval_multipro.py", larger_scenes, tmp_path / "straight")
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads((tmp_path / "straight" / "eval_epoch_2.json").read_text())
    assert summary["ratios"] == [0.75, 1.0, 1.25] and summary["flip"] is True
    # the baseline: every pixel the most frequent class of the validation labels
    counts = sum(
        np.bincount(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ravel(), minlength=NUM_CLASS + 1)[1:]
        for p in (larger_scenes / "annotations" / "validation").glob("*.png")
    )
    majority = counts.max() / counts.sum()
    assert summary["pixel_accuracy"] > majority + 0.2 and summary["mean_iou"] > 0.2, (summary, majority)
    # exact resume, the auxiliary head's weights and momentum included (on a shorter schedule of the recipe, in this
    # process: the command line's --stop-after-epoch and --resume are test_training's)
    short = crop_config(larger_scenes, "TRAIN.epoch_iters", "6", "TRAIN.workers", "0")
    cpu = Runtime([torch.device("cpu")])
    train(_with(short, "DIR", str(tmp_path / "short")), cpu)
    split = _with(short, "DIR", str(tmp_path / "split"))
    assert train(split, cpu, stop_after_epoch=1).epoch == 1
    assert train(split, cpu, resume=True).finished
    assert_same_weights(checkpoint_weights(tmp_path / "short", 2), checkpoint_weights(tmp_path / "split", 2))
    states = [
        torch.load(next(d.glob("train_state_*.pth")), weights_only=True)
        for d in (tmp_path / "short", tmp_path / "split")
    ]
    assert_same_weights(*({"aux": state["training_parts"]["aux_head"]} for state in states))
    # a resume state from another recipe is refused, named
    with pytest.raises(TrainingError, match=r"training-only parts \['aux_head'\]"):
        train(_with(split, "MODEL.aux_head", "", "TRAIN.num_epoch", "3"), cpu, resume=True)


def _with(cfg, *opts):
    """A copy of `cfg` with `opts` over it."""
    changed = cfg.clone()
    changed.merge_from_list(list(opts))
    return changed


@pytest.mark.end_to_end
def test_slide_windows_and_the_recipes_scales_through_test_py(larger_scenes, tmp_path):
    """test.py at TEST.precision auto (it follows the CPU) on a checkpoint of the recipe trained a few iterations."""
    short = ["TRAIN.num_epoch", "1", "TRAIN.epoch_iters", "2", "TEST.checkpoint", "epoch_1.pth"]
    trained = run("train.py", larger_scenes, tmp_path / "run", *short)
    assert trained.returncode == 0, trained.stderr
    out = run(
        "test.py",
        larger_scenes,
        tmp_path / "run",
        *short,
        "TEST.result",
        str(tmp_path / "out"),
        "TEST.mode",
        "slide",
        "TEST.crop_size",
        "96",
        "TEST.stride",
        "64",
        flags=["--imgs", str(larger_scenes / "images" / "validation")],
    )
    assert out.returncode == 0 and "wrote 16 files" in out.stdout, out.stderr
    labels = cv2.imread(str(tmp_path / "out" / "synthetic_validation_00000_label.png"), cv2.IMREAD_UNCHANGED)
    image = cv2.imread(str(larger_scenes / "images" / "validation" / "synthetic_validation_00000.jpg"))
    assert labels.shape == image.shape[:2] and 1 <= labels.min() and labels.max() <= NUM_CLASS
