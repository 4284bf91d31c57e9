"""The optimizer's groups (mmsegmentation's stage-wise rate decay and no-decay rules) and the warm-up schedule, against
mmsegmentation's rules written out here."""

import pytest
import torch
from helpers import REPO, use_reduced_encoders

from mit_semseg.config import load_config
from mit_semseg.tasks import task_for
from mit_semseg.training.optim import OptimizerSettings, build_optimizer, scheduled_lr


def _mmseg_stage_id(ours: str, num_layers: int) -> int:
    """mmsegmentation's get_stage_id_for_convnext, on its names of our ConvNeXt's parameters (its ConvNeXt:
    `downsample_layers`, `stages.i.j`, the maps' norms `norm{i}`); num_layers as its constructor passes it."""
    theirs = "backbone." + ours.replace("downsample.", "downsample_layers.").replace("out_norms.", "norm")
    if theirs.startswith("backbone.downsample_layers"):
        return 0
    if theirs.startswith("backbone.stages"):
        return int(theirs.split(".")[2]) + 1
    return num_layers - 1


def _groups_of(optimizer):
    """{parameter: (its group's lr, weight decay)}."""
    return {
        id(p): (g["lr"], g.get("weight_decay", optimizer.defaults["weight_decay"]))
        for g in optimizer.param_groups
        for p in g["params"]
    }


def test_convnext_stage_wise_decay_and_no_decay_on_1d_parameters(monkeypatch):
    use_reduced_encoders(monkeypatch)
    preset = REPO / "config/ade20k-convnext_tiny-upernet-512x512-160k.yaml"
    cfg = load_config(preset, ["MODEL.fc_dim", "48", "MODEL.pretrained", "False"])
    model = task_for(cfg).model.build()
    optimizer = build_optimizer(model, 1e-4, 1e-4, OptimizerSettings.from_config(cfg.TRAIN))
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    groups, num_layers = _groups_of(optimizer), 6 + 2
    for name, p in model.encoder.named_parameters():
        lr, decay = groups[id(p)]
        assert lr == pytest.approx(1e-4 * 0.9 ** (num_layers - _mmseg_stage_id(name, num_layers) - 1)), name
        assert decay == (0.0 if p.ndim == 1 else 0.05), name  # its rule: 1-D parameters and biases
    for name, p in model.decoder.named_parameters():
        assert groups[id(p)] == (pytest.approx(1e-4), 0.0 if p.ndim == 1 else 0.05), name
    # the stem's rate is the smallest: 0.9 ** 7; stage 3's blocks 0.9 ** 3
    assert groups[id(model.encoder.downsample[0][0].weight)][0] == pytest.approx(1e-4 * 0.9**7)
    assert groups[id(model.encoder.stages[3][0].dwconv.weight)][0] == pytest.approx(1e-4 * 0.9**3)


def test_swin_no_decay_on_norms_and_bias_tables_only(monkeypatch):
    use_reduced_encoders(monkeypatch)
    preset = REPO / "config/ade20k-swin_tiny-upernet-512x512-160k.yaml"
    cfg = load_config(preset, ["MODEL.fc_dim", "96", "MODEL.pretrained", "False"])
    model = task_for(cfg).model.build()
    groups = _groups_of(build_optimizer(model, 6e-5, 6e-5, OptimizerSettings.from_config(cfg.TRAIN)))
    for name, p in model.named_parameters():
        expected = 0.0 if ("norm" in name or "bias_table" in name) else 0.01  # its custom_keys: decay_mult 0
        assert groups[id(p)] == (pytest.approx(6e-5), expected), name
    assert groups[id(model.encoder.stages[0].blocks[0].attn.query.bias)][1] == 0.01  # biases decay there


def test_the_original_sgd_groups_are_unchanged():
    cfg = load_config(REPO / "config/ade20k-resnet18dilated-ppm_deepsup.yaml", ["MODEL.pretrained", "False"])
    model = task_for(cfg).model.build()
    optimizer = build_optimizer(model, 0.02, 0.02, OptimizerSettings.from_config(cfg.TRAIN))
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    groups = _groups_of(optimizer)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            decays = isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and name == "weight"
            assert groups[id(p)][1] == (1e-4 if decays else 0.0)


def test_warm_up_then_poly_as_mmsegmentation():
    """LinearLR (start factor 1e-6) over 1500 iterations, then PolyLR (power 1, eta_min 0) from 1500 to 160000."""
    lr = lambda it: scheduled_lr(1e-4, it, 160_000, 1.0, 0.0, 1500, 1e-6)
    assert lr(0) == pytest.approx(1e-10)
    assert lr(750) == pytest.approx(1e-4 * (1e-6 + (1 - 1e-6) * 0.5))
    assert lr(1500) == pytest.approx(1e-4)
    assert lr(80_750) == pytest.approx(1e-4 * 0.5)
    assert lr(159_999) == pytest.approx(1e-4 / 158_500)
    assert scheduled_lr(0.02, 50, 100, 0.9) == pytest.approx(0.02 * 0.5**0.9)  # without warm-up: the original's
