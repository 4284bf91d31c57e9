"""Saving and loading weights: round trips, tolerated differences, and errors that name the file."""

import collections
import io
import os
from pathlib import Path

import pytest
import torch
from httpserver import serve
from torch import nn

from mit_semseg.checkpoints import (
    PARTS,
    TEXTURE,
    checkpoint_of,
    epoch_checkpoint,
    epoch_files,
    epochs_in,
    latest_state,
    model_files,
    part_name,
    save_parts,
    source_files,
    state_path,
)
from mit_semseg.hub import DownloadError
from mit_semseg.models import CheckpointError, ModelBuilder, load_weights


def _randomised(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point() and not name.split(".")[-1].startswith("_"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return module


@pytest.fixture
def saved_pair(tmp_path):
    enc = _randomised(ModelBuilder.build_encoder("mobilenetv2dilated", pretrained=False), 1)
    dec = _randomised(ModelBuilder.build_decoder("c1_deepsup", fc_dim=320, num_class=5), 2)
    torch.save(enc.state_dict(), tmp_path / "encoder_epoch_1.pth")
    torch.save(dec.state_dict(), tmp_path / "decoder_epoch_1.pth")
    return enc, dec, tmp_path


@pytest.mark.numeric
def test_round_trip_gives_the_same_outputs(saved_pair):
    enc, dec, tmp = saved_pair
    enc2 = ModelBuilder.build_encoder("mobilenetv2dilated", weights=str(tmp / "encoder_epoch_1.pth"))
    dec2 = ModelBuilder.build_decoder(
        "c1_deepsup", fc_dim=320, num_class=5, weights=str(tmp / "decoder_epoch_1.pth"), use_softmax=True
    )
    dec.use_softmax = True
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        a = dec.eval()(enc.eval()(x, return_feature_maps=True), segSize=(48, 64))
        b = dec2.eval()(enc2.eval()(x, return_feature_maps=True), segSize=(48, 64))
    assert torch.equal(a, b)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, enc2.state_dict()[k]), k


def test_module_prefix_is_stripped_and_num_batches_tracked_may_be_missing(saved_pair, tmp_path):
    _, dec, _ = saved_pair
    state = collections.OrderedDict(
        ("module." + k, v) for k, v in dec.state_dict().items() if not k.endswith("num_batches_tracked")
    )
    torch.save(state, tmp_path / "wrapped.pth")
    net = ModelBuilder.build_decoder("c1_deepsup", fc_dim=320, num_class=5, weights=str(tmp_path / "wrapped.pth"))
    assert torch.equal(net.conv_last.weight, dec.conv_last.weight)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("cbr.1.running_mean"), r"missing keys \(1\): cbr\.1\.running_mean"),
        (lambda s: s.pop("cbr.1._tmp_running_var"), r"missing keys \(1\): cbr\.1\._tmp_running_var"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), r"unexpected keys \(1\): extra\.weight"),
        (
            lambda s: s.__setitem__("conv_last.bias", torch.zeros(7)),
            r"mis-shaped keys \(1\): conv_last\.bias \(file \(7,\), model \(5,\)\)",
        ),
    ],
)
def test_mismatched_checkpoints_name_the_file_and_the_keys(saved_pair, tmp_path, change, message):
    _, dec, _ = saved_pair
    state = dec.state_dict()
    change(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=message) as err:
        ModelBuilder.build_decoder("c1_deepsup", fc_dim=320, num_class=5, weights=str(path))
    assert str(path) in str(err.value)


def test_wrong_architecture_lists_many_keys_briefly(saved_pair):
    _, _, tmp = saved_pair
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): .* and \d+ more") as err:
        ModelBuilder.build_encoder("resnet18", weights=str(tmp / "encoder_epoch_1.pth"))
    assert "encoder_epoch_1.pth" in str(err.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        ModelBuilder.build_encoder("resnet18", weights=str(tmp_path / "nothere.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth: not a readable PyTorch weights file"):
        ModelBuilder.build_encoder("resnet18", weights=str(corrupt))
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="list.pth: expected a state dict"):
        ModelBuilder.build_encoder("resnet18", weights=str(listed))


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoint_code_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_weights(torch.nn.Conv2d(1, 1, 1), tmp_path / "evil.pth")
    assert not (tmp_path / "PWNED").exists()


def test_imagenet_weights_drop_the_classifier(tmp_path):
    enc = _randomised(ModelBuilder.build_encoder("resnet18", pretrained=False))
    state = {k: v for k, v in enc.state_dict().items() if "_tmp_" not in k and "_running_iter" not in k}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    cache = tmp_path / "cache" / "pretrained"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet18-imagenet.pth")
    loaded = ModelBuilder.build_encoder("resnet18dilated", pretrained=True)
    assert torch.equal(loaded.layer4[1].conv2.weight, enc.layer4[1].conv2.weight)
    assert torch.equal(loaded.bn1.running_var, enc.bn1.running_var)
    torch.testing.assert_close(loaded.state_dict()["bn1._tmp_running_var"], enc.bn1.running_var)


def test_mobilenet_imagenet_file_drops_last_conv_and_classifier(tmp_path):
    enc = ModelBuilder.build_encoder("mobilenetv2dilated", pretrained=False)
    state = dict(enc.state_dict())
    state["features.18.0.weight"] = torch.zeros(1280, 320, 1, 1)
    state["classifier.1.weight"] = torch.zeros(1000, 1280)
    cache = tmp_path / "cache" / "pretrained"
    cache.mkdir(parents=True)
    torch.save(state, cache / "mobilenet_v2.pth.tar")
    ModelBuilder.build_encoder("mobilenetv2dilated", pretrained=True)


def test_pretrained_weights_are_downloaded_once(tmp_path, monkeypatch):
    enc = _randomised(ModelBuilder.build_encoder("resnet18", pretrained=False))
    buffer = io.BytesIO()
    torch.save(enc.state_dict(), buffer)
    with serve({"/pretrained/resnet18-imagenet.pth": buffer.getvalue()}) as (url, server):
        monkeypatch.setenv("MIT_SEMSEG_PRETRAINED_URL", url + "/pretrained/")
        loaded = ModelBuilder.build_encoder("resnet18", pretrained=True)
        ModelBuilder.build_encoder("resnet18dilated", pretrained=True)
    assert len(server.requests) == 1
    assert torch.equal(loaded.conv1.weight, enc.conv1.weight)
    assert (tmp_path / "cache" / "pretrained" / "resnet18-imagenet.pth").is_file()


def test_pretrained_offline_says_how_to_go_on(tmp_path):
    with pytest.raises(DownloadError) as err:
        ModelBuilder.build_encoder("resnet50dilated", pretrained=True)
    text = str(err.value)
    assert "resnet50-imagenet.pth failed" in text
    assert str(tmp_path / "cache" / "pretrained" / "resnet50-imagenet.pth") in text
    assert "pretrained=False" in text


def test_pretrained_false_never_touches_the_cache(tmp_path, monkeypatch):
    def forbidden(*args):
        raise AssertionError("pretrained=False must not look for ImageNet weights")

    monkeypatch.setattr("mit_semseg.models.builder.pretrained_path", forbidden)
    ModelBuilder.build_encoder("resnet18", pretrained=False)
    ModelBuilder.build_encoder("resnet18", weights="", pretrained=False)


def test_the_checkpoint_owner_names_and_resolves_every_layout(tmp_path):
    assert part_name("encoder", epoch_checkpoint(3)) == "encoder_epoch_3.pth"
    assert checkpoint_of(tmp_path / "decoder_epoch_3.pth", "decoder") == "epoch_3.pth"
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*encoder_epoch_2.pth"):
        model_files(tmp_path, "epoch_2.pth")
    net = nn.Conv2d(1, 2, 1)
    assert save_parts(tmp_path, "epoch_2.pth", {"encoder": net, "decoder": net}) == [
        "encoder_epoch_2.pth",
        "decoder_epoch_2.pth",
    ]
    assert torch.equal(torch.load(tmp_path / "decoder_epoch_2.pth", weights_only=True)["weight"], net.weight)
    (tmp_path / "decoder_epoch_3.pth").write_bytes(b"")  # an epoch without its encoder
    assert epochs_in(tmp_path) == [3, 2]
    assert source_files(str(tmp_path)) == epoch_files(tmp_path, 2)  # the latest complete pair
    assert source_files(f"{tmp_path}/epoch_2.pth") == epoch_files(tmp_path, 2)
    assert source_files("a.pth, b.pth") == {"encoder": "a.pth", "decoder": "b.pth"}
    assert set(model_files(tmp_path, "epoch_2.pth", optional=[TEXTURE])) == set(PARTS)  # no texture file: left out
    (tmp_path / "texture_epoch_2.pth").write_bytes(b"")
    assert model_files(tmp_path, "epoch_2.pth", optional=[TEXTURE])[TEXTURE] == str(tmp_path / "texture_epoch_2.pth")
    for epoch, iteration, prefix in ((1, 0, ""), (1, 7, ""), (2, 0, ""), (5, 0, "texture_")):
        Path(state_path(tmp_path, epoch, iteration, prefix)).write_bytes(b"")
    assert Path(latest_state(tmp_path)).name == "train_state_epoch_2_iter_0.pth"
    assert Path(latest_state(tmp_path, "texture_")).name == "texture_train_state_epoch_5_iter_0.pth"
    assert latest_state(tmp_path / "nothing") is None
