"""Fine-tuning a released-layout model (150 classes) on 5 classes of one's own through train.py --init-from."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, checkpoint_weights, use_reduced_encoders

from mit_semseg.checkpoints import PARTS, epoch_checkpoint, save_parts, source_files
from mit_semseg.config import load_config
from mit_semseg.evaluation import evaluate
from mit_semseg.models.checkpoint import CheckpointError
from mit_semseg.synthetic.scenes import generate
from mit_semseg.tasks import task_for
from mit_semseg.training.init_from import init_from
from mit_semseg.training.loop import Runtime, train

CONFIG = REPO / "config" / "ade20k-mobilenetv2dilated-c1_deepsup.yaml"
# One worker runs this file (`make test` distributes tests one by one): its module fixtures train a model.
pytestmark = pytest.mark.xdist_group("test_finetune")
# the synthetic scenes' 8 classes merged into 5: sky | grass, road | wall | ball, box | roof, fence
MERGE = np.array([0, 1, 2, 2, 3, 4, 4, 5, 5], np.uint8)
CPU = Runtime([torch.device("cpu")])
_REDUCED = ("MODEL.fc_dim", "40")  # the reduced MobileNetV2 of tests/helpers.py


def _opts(data, directory, num_class, *extra):
    return [
        "DIR",
        str(directory),
        "DATASET.root_dataset",
        str(data),
        "DATASET.list_train",
        str(data / "training.odgt"),
        "DATASET.list_val",
        str(data / "validation.odgt"),
        "DATASET.num_class",
        str(num_class),
        "DATASET.imgSizes",
        "(96, 112)",
        "DATASET.imgMaxSize",
        "160",
        "MODEL.pretrained",
        "False",
        "MODEL.bn_momentum",
        "0.1",
        "TRAIN.num_epoch",
        "1",
        "TRAIN.workers",
        "0",
        "TRAIN.disp_iter",
        "10",
        "VAL.checkpoint",
        "epoch_1.pth",
        *extra,
    ]


def _run(script, *args):
    return subprocess.run(
        [sys.executable, script, "--cfg", str(CONFIG), "--gpus", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Synthetic scenes (8 classes), a 5-class dataset of one's own, and an untrained model of the released layout
    (150 classes, full width) in `released/` as `train.py` writes it."""
    root = tmp_path_factory.mktemp("finetune")
    generate(str(root / "scenes"), num_train=24, num_val=8, seed=21, min_side=96, max_side=128)
    generate(str(root / "mine"), num_train=24, num_val=8, seed=22, min_side=96, max_side=128)
    for label in (root / "mine" / "annotations").rglob("*.png"):
        cv2.imwrite(str(label), MERGE[cv2.imread(str(label), cv2.IMREAD_UNCHANGED)])
    model = task_for(load_config(CONFIG, _opts(root / "scenes", root / "released", 150))).model.build()
    (root / "released").mkdir()
    save_parts(root / "released", epoch_checkpoint(1), {part: getattr(model, part) for part in PARTS})
    return root


@pytest.fixture(scope="module")
def pretrained(datasets):
    """A reduced model of the released layout (150 classes) trained 120 iterations on the synthetic scenes."""
    with pytest.MonkeyPatch.context() as patch:
        use_reduced_encoders(patch)
        train(
            load_config(
                CONFIG, _opts(datasets / "scenes", datasets / "pretrained", 150, *_REDUCED, "TRAIN.epoch_iters", "120")
            ),
            CPU,
        )
    return datasets / "pretrained" / "epoch_1"


def test_trunk_loaded_by_value_and_classifiers_fresh_through_train_py(datasets):
    """With learning rates 0 and frozen batch norms, epoch 1 is the model training started from (full width)."""
    root = datasets
    still = ["TRAIN.epoch_iters", "2", "TRAIN.lr_encoder", "0.0", "TRAIN.lr_decoder", "0.0", "TRAIN.fix_bn", "True"]
    tuned = _run("train.py", "--init-from", str(root / "released"), *_opts(root / "mine", root / "start", 5, *still))
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    # the same from scratch, in this process: its classifiers are what fresh ones are (the same seed)
    train(load_config(CONFIG, _opts(root / "mine", root / "start_scratch", 5, *still)), CPU)
    source, start, fresh = (
        checkpoint_weights(d, e) for d, e in ((root / "released", 1), (root / "start", 1), (root / "start_scratch", 1))
    )
    for key, value in start["encoder"].items():
        assert torch.equal(value, source["encoder"][key]), key
    classifiers = ("conv_last.", "conv_last_deepsup.")
    for key, value in start["decoder"].items():
        if key.startswith(classifiers):
            assert value.shape[0] == 5 and torch.equal(value, fresh["decoder"][key]), key  # fresh, as from scratch
        else:
            assert torch.equal(value, source["decoder"][key]), key
    log = tuned.stderr
    assert f"MODEL.init_from {root / 'released'}:" in log and f"encoder: {len(source['encoder'])} tensors loaded" in log
    assert (
        "initialised fresh (shapes depend on the classes): conv_last.weight, conv_last.bias, "
        "conv_last_deepsup.weight, conv_last_deepsup.bias" in log
    )


def test_fine_tuning_learns_more_than_the_same_schedule_from_scratch(datasets, pretrained, monkeypatch):
    """In this process (train.py --init-from is the test above), reduced: MODEL.init_from is what the flag sets."""
    use_reduced_encoders(monkeypatch)
    root, figures = datasets, {}
    for name, init in (("tuned", ["MODEL.init_from", str(pretrained)]), ("scratch", [])):
        opts = _opts(root / "mine", root / name, 5, *_REDUCED)
        train(load_config(CONFIG, [*opts, "TRAIN.epoch_iters", "20", *init]), CPU)
        figures[name] = evaluate(load_config(CONFIG, opts), ["cpu"])["mean_iou"]
    print(f"mean IoU after 20 iterations: fine-tuned {figures['tuned']:.4f}, from scratch {figures['scratch']:.4f}")
    assert figures["tuned"] > figures["scratch"] + 0.15, figures  # 0.34 against 0.08 at one thread and at two


def test_what_does_not_fit_is_named(datasets, tmp_path):
    root = datasets
    cfg = load_config(
        CONFIG, _opts(root / "mine", tmp_path, 5, "MODEL.arch_encoder", "resnet18dilated", "MODEL.fc_dim", "512")
    )
    model = task_for(cfg).model.build()
    with pytest.raises(CheckpointError, match=r"encoder_epoch_1.pth does not fit ResNetEncoder:\n  missing keys"):
        init_from(model, str(root / "released"))
    assert source_files(f"{root}/released/epoch_1.pth")["decoder"] == str(root / "released/decoder_epoch_1.pth")
    with pytest.raises(FileNotFoundError, match="no such released model, folder or files"):
        source_files(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    "opts, message",
    [
        (["DATASET.num_class", "1"], "DATASET.num_class is 1: with one class the loss is always 0"),
        (
            ["MODEL.init_from", "x", "MODEL.weights_decoder", "y"],
            "MODEL.init_from and MODEL.weights_encoder/weights_decoder",
        ),
    ],
)
def test_bad_fine_tuning_configs_exit_2(opts, message):
    result = _run("train.py", *opts)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_upp_model_fine_tunes_onto_other_label_tables(tmp_path):
    """Broden+'s heads into a model of one's own tables: the trunk loads, every head's classifier is fresh."""
    from helpers import write_small_tables

    opts = [
        "MODEL.arch_encoder",
        "resnet18",
        "MODEL.fc_dim",
        "512",
        "MODEL.arch_decoder",
        "upp_lite",
        "MODEL.pretrained",
        "False",
    ]
    upp = REPO / "config" / "broden-resnet50-upp.yaml"
    source = task_for(load_config(upp, opts)).model.build()
    for part in ("encoder", "decoder"):
        torch.save(getattr(source, part).state_dict(), tmp_path / f"{part}.pth")
    target_cfg = load_config(upp, [*opts, "DATASET.label_tables", str(write_small_tables(tmp_path / "tables"))])
    target = task_for(target_cfg).model.build()
    report = init_from(target, f"{tmp_path / 'encoder.pth'},{tmp_path / 'decoder.pth'}")
    heads = ("scene_head.2.", "object_head.1.", "part_head.1.", "material_head.1.")
    for key, value in target.decoder.state_dict().items():
        if key.startswith(heads):
            assert value.shape != source.decoder.state_dict()[key].shape and key in report, key
        else:
            assert torch.equal(value, source.decoder.state_dict()[key]), key
