"""The losses for imbalanced classes (TRAIN.class_weights, OHEM, TRAIN.extra_loss), each against a computation of its
own in float64; the defaults give the original's loss."""

import itertools
import json

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, use_reduced_encoders
from torch import nn

from mit_semseg.config import load_config
from mit_semseg.data.class_weights import class_weights, median_frequency_weights
from mit_semseg.data.records import DataError
from mit_semseg.errors import ConfigError
from mit_semseg.models.losses import PixelLoss, lovasz_softmax, ohem_kept
from mit_semseg.synthetic.scenes import generate
from mit_semseg.tasks import task_for
from mit_semseg.training.loop import Runtime, train

SEGMENTATION = REPO / "config/ade20k-mobilenetv2dilated-c1_deepsup.yaml"


def _batch(seed=0, n=2, c=5, h=6, w=7):
    """Log-probabilities and labels with about a fifth of the pixels unlabelled (-1)."""
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(3 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64), 1)
    label = torch.randint(0, c, (n, h, w), generator=g)
    label[torch.rand(n, h, w, generator=g) < 0.2] = -1
    return log_probs, label


def _pixels(log_probs, label):
    """(log-probabilities of the labelled pixels' true classes, their classes), in numpy, pixel order N, H, W."""
    lp, y = log_probs.numpy(), label.numpy()
    where = np.argwhere(y >= 0)
    return np.array([lp[i, y[i, a, b], a, b] for i, a, b in where]), y[y >= 0]


@pytest.mark.numeric
def test_the_default_is_the_original_nll_loss():
    log_probs, label = _batch()
    assert torch.equal(PixelLoss()(log_probs, label), nn.NLLLoss(ignore_index=-1)(log_probs.float(), label))
    main, other = task_for(load_config(SEGMENTATION, ["MODEL.pretrained", "False"])).model.losses()
    assert main.class_weights is None and main.ohem_min_kept == 0 and main.extra is None
    assert torch.equal(main(log_probs, label), other(log_probs, label))


@pytest.mark.numeric
def test_class_weights_give_the_weighted_mean():
    log_probs, label = _batch(1)
    weights = torch.tensor([0.5, 2.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    true, classes = _pixels(log_probs, label)
    expected = sum(-w * t for w, t in zip(weights.numpy()[classes], true)) / weights.numpy()[classes].sum()
    got = PixelLoss(weights)(log_probs.double(), label)  # computed in float32
    assert got.item() == pytest.approx(expected, rel=1e-6)


def _ohem_by_hand(log_probs, label, threshold, min_kept, weights=None):
    """mmsegmentation's rule written out: the kept pixels' (weighted) losses summed over the label map's size, each
    labelled pixel counted at its class weight."""
    true, classes = _pixels(log_probs, label)
    w = np.ones(len(true)) if weights is None else weights[classes]
    budget = min_kept * label.shape[0]
    if threshold:
        probability = np.exp(true)
        bar = max(sorted(probability)[min(budget, len(probability) - 1)], threshold)
        kept = probability < bar
    else:
        kept = np.zeros(len(true), bool)
        kept[np.argsort(-w * -true, kind="stable")[:budget]] = True
    unlabelled = int((label < 0).sum())
    return (w * -true * kept).sum() / (w.sum() + unlabelled), kept.sum()


@pytest.mark.numeric
@pytest.mark.parametrize("threshold, min_kept", [(0.7, 3), (0.2, 30), (0.0, 10)])
def test_ohem_keeps_mmsegmentations_pixels(threshold, min_kept):
    log_probs, label = _batch(2)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0, 1.5])
    for w in (None, weights):
        expected, count = _ohem_by_hand(log_probs, label, threshold, min_kept, None if w is None else w.numpy())
        kept = ohem_kept(log_probs.float(), label, threshold, min_kept, w)
        assert int(kept.sum()) == count and not kept[label < 0].any()
        got = PixelLoss(w, threshold, min_kept)(log_probs, label)
        assert got.item() == pytest.approx(expected, rel=1e-6)
    if threshold == 0.7:  # the threshold keeps more than the minimum; at 0.2, the minimum decides
        assert count > min_kept * 2
    if threshold == 0.2:
        assert count >= min_kept * 2


def _lovasz_by_integral(probs, labels):
    """The Lovász extension as its integral form: for each class present, the integral over t of the Jaccard loss
    |M| / |F u M| of the set M = {pixels with error > t}, F its pixels; the mean over the classes."""
    losses = []
    for c in sorted(set(labels.tolist())):
        fg = labels == c
        errors = np.abs(fg.astype(float) - probs[:, c])
        levels = np.concatenate([[0.0], np.unique(errors)])
        total = 0.0
        for low, high in itertools.pairwise(levels):
            mispredicted = errors >= high  # the set for every t in [low, high)
            total += (high - low) * mispredicted.sum() / (fg | mispredicted).sum()
        losses.append(total)
    return np.mean(losses)


@pytest.mark.numeric
def test_lovasz_softmax_is_the_lovasz_extension_of_the_jaccard_loss():
    log_probs, label = _batch(3, c=4, h=5, w=5)
    valid = label >= 0
    probs = log_probs.exp().permute(0, 2, 3, 1)[valid].numpy()
    expected = _lovasz_by_integral(probs, label[valid].numpy())
    leaf = log_probs.clone().requires_grad_()
    got = lovasz_softmax(leaf, label)
    assert got.item() == pytest.approx(expected, abs=1e-12)
    got.backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    # a perfect prediction costs nothing; as a term, times its weight
    perfect = torch.log(torch.nn.functional.one_hot(label.clamp(min=0), 4).permute(0, 3, 1, 2).double() + 1e-30)
    assert lovasz_softmax(perfect, label).item() == pytest.approx(0.0, abs=1e-12)
    plain = PixelLoss()(log_probs, label)
    with_term = PixelLoss(extra="lovasz", extra_weight=0.5)(log_probs, label)
    assert with_term.item() == pytest.approx(plain.item() + 0.5 * expected, rel=1e-6)


def _write_labels(folder, maps):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, m in enumerate(maps):
        paths.append(str(folder / f"{k}.png"))
        cv2.imwrite(paths[-1], np.asarray(m, np.uint8))
    return paths


def test_median_frequency_counts_the_images_holding_each_class(tmp_path):
    # image a: 6 pixels of class 1, 2 of class 2, 4 unlabelled; image b: 4 of class 1, 4 of class 3 (labels 1..4)
    a = [[1, 1, 1, 0], [1, 1, 1, 0], [2, 2, 0, 0]]
    b = [[1, 1, 3, 3], [1, 1, 3, 3]]
    weights, pixels = median_frequency_weights(_write_labels(tmp_path, [a, b]), 4)
    # f1 = 10 / (8 + 8), f2 = 2 / 8, f3 = 4 / 8; class 4 absent: weight 0; median of (0.625, 0.25, 0.5) = 0.5
    assert pixels.tolist() == [10, 2, 4, 0]
    np.testing.assert_allclose(weights, [0.5 / 0.625, 0.5 / 0.25, 1.0, 0.0], rtol=1e-12)
    with pytest.raises(DataError, match="no labelled pixel"):
        median_frequency_weights(_write_labels(tmp_path / "empty", [[[0, 0]]]), 4)


def test_weights_files_are_read_and_checked(tmp_path):
    cfg = load_config(SEGMENTATION, ["DATASET.num_class", "3"])
    text = tmp_path / "weights.txt"
    text.write_text("# wall, floor, sky\n1.0, 2.5\n0.25  # sky is everywhere\n")
    cfg.TRAIN.class_weights = str(text)
    assert class_weights(cfg).tolist() == [1.0, 2.5, 0.25]
    listed = tmp_path / "weights.json"
    listed.write_text(json.dumps({"weights": [1, 2, 3]}))
    cfg.TRAIN.class_weights = str(listed)
    assert class_weights(cfg).tolist() == [1.0, 2.0, 3.0]
    for content, message in (("1 2", "2 weights for DATASET.num_class 3"), ("1 -2 3", "finite and 0 or more")):
        text.write_text(content)
        cfg.TRAIN.class_weights = str(text)
        with pytest.raises(DataError, match=f"{text}: .*{message}"):
            class_weights(cfg)
    cfg.TRAIN.class_weights = str(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="cannot read .*missing.txt"):
        class_weights(cfg)


@pytest.mark.parametrize(
    "config, opts, message",
    [
        (SEGMENTATION, ["TRAIN.extra_loss", "dice"], "TRAIN.extra_loss: unknown 'dice'; valid: '', lovasz"),
        (SEGMENTATION, ["TRAIN.ohem_threshold", "1.5", "TRAIN.ohem_min_kept", "9"], "TRAIN.ohem_threshold must be in"),
        (
            REPO / "config/broden-resnet50-upp.yaml",
            ["TRAIN.ohem_min_kept", "9"],
            "are segmentation losses; a UPP decoder",
        ),
    ],
)
def test_bad_loss_settings_are_named(config, opts, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config, opts)


def test_training_with_every_option_counts_the_weights_once(tmp_path, monkeypatch):
    """Median-frequency weights, OHEM and Lovász together, on a reduced model: the weights in DIR/class_weights.json
    are the training labels', the loss is finite, and the next run reads the cache instead of the labels."""
    use_reduced_encoders(monkeypatch)
    generate(str(tmp_path / "data"), num_train=4, num_val=2, seed=5, min_side=64, max_side=96)
    data = tmp_path / "data"
    opts = ["DIR", str(tmp_path / "run"), "DATASET.root_dataset", str(data), "DATASET.list_train"]
    opts += [str(data / "training.odgt"), "DATASET.num_class", "8", "DATASET.imgSizes", "(64,)", "MODEL.fc_dim", "40"]
    opts += ["MODEL.pretrained", "False", "TRAIN.num_epoch", "1", "TRAIN.epoch_iters", "2", "TRAIN.workers", "0"]
    opts += ["TRAIN.class_weights", "median_frequency", "TRAIN.ohem_threshold", "0.7", "TRAIN.ohem_min_kept", "50"]
    opts += ["TRAIN.extra_loss", "lovasz"]
    cfg = load_config(SEGMENTATION, opts)
    assert train(cfg, Runtime([torch.device("cpu")])).finished
    cached = json.loads((tmp_path / "run" / "class_weights.json").read_text())
    labels = sorted(str(p) for p in (data / "annotations" / "training").glob("*.png"))
    np.testing.assert_allclose(cached["weights"], median_frequency_weights(labels, 8)[0], rtol=1e-12)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(np.isfinite(h["loss"]) for h in history if "loss" in h)
    monkeypatch.setattr("mit_semseg.data.class_weights.read_label", None)  # reading a label now would fail
    assert class_weights(cfg).tolist() == pytest.approx(cached["weights"])
    (data / "training.odgt").write_text((data / "training.odgt").read_text().splitlines()[0] + "\n")
    with pytest.raises(TypeError):  # another list: counted again
        class_weights(cfg)
