"""The defaults, the seven presets, and every config error."""

from pathlib import Path

import pytest

from mit_semseg.config import ConfigError, cfg, load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def test_defaults_are_the_originals():
    assert cfg.DIR == "ckpt/ade20k-resnet50dilated-ppm_deepsup"
    assert cfg.DATASET.imgSizes == (300, 375, 450, 525, 600)
    assert (cfg.DATASET.imgMaxSize, cfg.DATASET.padding_constant, cfg.DATASET.segm_downsampling_rate) == (1000, 8, 8)
    assert (cfg.DATASET.num_class, cfg.DATASET.random_flip) == (150, True)
    assert (cfg.MODEL.arch_encoder, cfg.MODEL.arch_decoder, cfg.MODEL.fc_dim) == (
        "resnet50dilated",
        "ppm_deepsup",
        2048,
    )
    assert (cfg.MODEL.pretrained, cfg.MODEL.bn_momentum) == (True, 0.001)
    t = cfg.TRAIN
    assert (t.batch_size_per_gpu, t.num_epoch, t.start_epoch, t.epoch_iters, t.optim) == (2, 20, 0, 5000, "SGD")
    assert (t.lr_encoder, t.lr_decoder, t.lr_pow, t.beta1, t.weight_decay) == (0.02, 0.02, 0.9, 0.9, 1e-4)
    assert (t.deep_sup_scale, t.fix_bn, t.workers, t.disp_iter, t.seed) == (0.4, False, 16, 20, 304)
    assert (cfg.VAL.batch_size, cfg.VAL.visualize, cfg.VAL.checkpoint) == (1, False, "epoch_20.pth")
    assert (cfg.TEST.batch_size, cfg.TEST.checkpoint, cfg.TEST.result) == (1, "epoch_20.pth", "./")


PRESETS = {
    "ade20k-resnet50dilated-ppm_deepsup": ("resnet50dilated", "ppm_deepsup", 2048, 20, 8, 8),
    "ade20k-resnet18dilated-ppm_deepsup": ("resnet18dilated", "ppm_deepsup", 512, 20, 8, 8),
    "ade20k-resnet101dilated-ppm_deepsup": ("resnet101dilated", "ppm_deepsup", 2048, 25, 8, 8),
    "ade20k-mobilenetv2dilated-c1_deepsup": ("mobilenetv2dilated", "c1_deepsup", 320, 20, 8, 8),
    "ade20k-resnet50-upernet": ("resnet50", "upernet", 2048, 30, 32, 4),
    "ade20k-resnet101-upernet": ("resnet101", "upernet", 2048, 50, 32, 4),
    "ade20k-hrnetv2": ("hrnetv2", "c1", 720, 30, 32, 4),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets(name):
    c = load_config(CONFIG_DIR / f"{name}.yaml")
    enc, dec, fc, epochs, padding, rate = PRESETS[name]
    assert (c.MODEL.arch_encoder, c.MODEL.arch_decoder, c.MODEL.fc_dim) == (enc, dec, fc)
    assert (c.DATASET.padding_constant, c.DATASET.segm_downsampling_rate) == (padding, rate)
    assert c.TRAIN.num_epoch == epochs
    assert c.VAL.checkpoint == c.TEST.checkpoint == f"epoch_{epochs}.pth"
    assert c.DIR == ("ckpt/ade20k-hrnetv2-c1" if name == "ade20k-hrnetv2" else f"ckpt/{name}")
    assert c.DATASET.imgSizes == (300, 375, 450, 525, 600) and c.TRAIN.weight_decay == 1e-4


def test_command_line_overrides_the_file_and_leaves_defaults_alone():
    c = load_config(
        CONFIG_DIR / "ade20k-resnet18dilated-ppm_deepsup.yaml",
        ["TRAIN.num_epoch", "3", "DATASET.imgSizes", "(200, 250)", "MODEL.arch_encoder", "ResNet18Dilated"],
    )
    assert c.TRAIN.num_epoch == 3 and c.DATASET.imgSizes == (200, 250)
    assert c.MODEL.arch_encoder == "resnet18dilated"
    assert cfg.TRAIN.num_epoch == 20 and cfg.MODEL.arch_encoder == "resnet50dilated"


def test_unknown_key_names_itself_and_the_closest(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"command line: unknown config key 'MODEL\.arch_encodr'; "
        r"did you mean 'MODEL\.arch_encoder'\?",
    ):
        load_config(None, ["MODEL.arch_encodr", "resnet18"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN:\n  lr_encodr: 0.1\n")
    with pytest.raises(
        ConfigError,
        match=r"bad\.yaml: unknown config key 'TRAIN\.lr_encodr'; "
        r"did you mean 'TRAIN\.lr_encoder'\?",
    ):
        load_config(bad)


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"MODEL\.arch_encoder: unknown architecture 'resnet34'; valid: .*resnet18"):
        load_config(None, ["MODEL.arch_encoder", "resnet34"])
    with pytest.raises(ConfigError, match=r"MODEL\.arch_decoder: unknown architecture 'fcn'; valid: c1, c1_deepsup"):
        load_config(None, ["MODEL.arch_decoder", "fcn"])


def test_fc_dim_mismatch_says_the_right_value():
    with pytest.raises(
        ConfigError,
        match=r"MODEL\.fc_dim is 2048, but encoder hrnetv2 gives 720 channels: "
        r"set MODEL\.fc_dim 720",
    ):
        load_config(None, ["MODEL.arch_encoder", "hrnetv2"])


def test_padding_must_be_a_multiple_of_the_label_rate():
    with pytest.raises(
        ConfigError, match=r"padding_constant \(12\) must be a multiple of .*segm_downsampling_rate \(8\)"
    ):
        load_config(None, ["DATASET.padding_constant", "12"])
    assert load_config(None, ["DATASET.padding_constant", "32"]).DATASET.padding_constant == 32


@pytest.mark.parametrize(
    "opts, message",
    [
        (["TRAIN.lr_encoder", "fast"], r"command line: .*Type mismatch.*TRAIN\.lr_encoder"),
        (["TRAIN.num_epoch"], r"KEY VALUE pairs; 'TRAIN\.num_epoch' has no value"),
        (["DATASET.imgSizes", "(300, -1)"], r"DATASET\.imgSizes must be positive integers"),
        (["DATASET.num_class", "0"], r"DATASET\.num_class must be positive"),
        (["MODEL.bn_momentum", "1.5"], r"MODEL\.bn_momentum must be in \(0, 1\]"),
        (["TRAIN.batch_size_per_gpu", "0"], r"TRAIN\.batch_size_per_gpu must be positive"),
    ],
)
def test_bad_values(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, opts)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not a valid YAML config"):
        load_config(broken)
    typed = tmp_path / "typed.yaml"
    typed.write_text("TRAIN:\n  num_epoch: many\n")
    with pytest.raises(ConfigError, match=r"typed\.yaml: .*Type mismatch"):
        load_config(typed)
