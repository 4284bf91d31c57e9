"""Hugging Face UperNet folders (config.json and model.safetensors as transformers' save_pretrained writes them),
built here from the facts (key names, shapes, config fields) for a reduced ConvNeXt, and loaded strictly: the model
equals UperNet computed by hand from the folder's own tensors in float64. No transformers, no internet."""

import contextlib
import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, use_reduced_encoders
from safetensors.torch import load_file, save_file

from mit_semseg import Segmenter, convert, hf
from mit_semseg.config import load_config
from mit_semseg.data.transforms import normalise
from mit_semseg.hub import DownloadError
from mit_semseg.models import convnext, swin
from mit_semseg.models.checkpoint import CheckpointError
from mit_semseg.tasks import task_for

DEPTHS, WIDTHS = (1, 1, 2, 1), (16, 24, 32, 48)  # the reduced convnext_tiny of tests/helpers.py
CLASSES = ["wall", "floor", "sky", "tree", "person"]
CHANNELS = 512  # UperNet's hidden_size


def _tensors(depths=DEPTHS, widths=WIDTHS) -> dict[str, torch.Tensor]:
    """UperNetForSemanticSegmentation's tensors for a ConvNeXt backbone, by their names there, random."""
    g = torch.Generator().manual_seed(0)
    t: dict[str, torch.Tensor] = {}

    def add(name, *shape, scale=0.1):
        t[name] = torch.randn(*shape, generator=g) * scale

    def norm(name, width):
        add(f"{name}.weight", width)
        t[f"{name}.weight"] += 1
        add(f"{name}.bias", width)

    def conv_module(name, cin, cout, k):  # conv without bias, batch norm
        add(f"{name}.conv.weight", cout, cin, k, k, scale=(cin * k * k) ** -0.5)
        norm(f"{name}.batch_norm", cout)
        add(f"{name}.batch_norm.running_mean", cout)
        t[f"{name}.batch_norm.running_var"] = torch.rand(cout, generator=g) + 0.5
        t[f"{name}.batch_norm.num_batches_tracked"] = torch.tensor(100)

    add("backbone.embeddings.patch_embeddings.weight", widths[0], 3, 4, 4, scale=0.2)
    add("backbone.embeddings.patch_embeddings.bias", widths[0])
    norm("backbone.embeddings.layernorm", widths[0])
    for i, (depth, width) in enumerate(zip(depths, widths)):
        stage = f"backbone.encoder.stages.{i}"
        if i:
            norm(f"{stage}.downsampling_layer.0", widths[i - 1])
            add(f"{stage}.downsampling_layer.1.weight", width, widths[i - 1], 2, 2, scale=0.2)
            add(f"{stage}.downsampling_layer.1.bias", width)
        for j in range(depth):
            layer = f"{stage}.layers.{j}"
            add(f"{layer}.dwconv.weight", width, 1, 7, 7, scale=0.1)
            add(f"{layer}.dwconv.bias", width)
            norm(f"{layer}.layernorm", width)
            add(f"{layer}.pwconv1.weight", 4 * width, width, scale=width**-0.5)
            add(f"{layer}.pwconv1.bias", 4 * width)
            add(f"{layer}.pwconv2.weight", width, 4 * width, scale=(4 * width) ** -0.5)
            add(f"{layer}.pwconv2.bias", width)
            add(f"{layer}.layer_scale_parameter", width, scale=0.5)
        norm(f"backbone.hidden_states_norms.stage{i + 1}", width)
    for k in range(4):
        conv_module(f"decode_head.psp_modules.{k}.1", widths[-1], CHANNELS, 1)
    conv_module("decode_head.bottleneck", widths[-1] + 4 * CHANNELS, CHANNELS, 3)
    for i in range(3):
        conv_module(f"decode_head.lateral_convs.{i}", widths[i], CHANNELS, 1)
        conv_module(f"decode_head.fpn_convs.{i}", CHANNELS, CHANNELS, 3)
    conv_module("decode_head.fpn_bottleneck", 4 * CHANNELS, CHANNELS, 3)
    add("decode_head.classifier.weight", len(CLASSES), CHANNELS, 1, 1, scale=CHANNELS**-0.5)
    add("decode_head.classifier.bias", len(CLASSES))
    conv_module("auxiliary_head.convs.0", widths[2], 256, 3)
    add("auxiliary_head.classifier.weight", len(CLASSES), 256, 1, 1)
    add("auxiliary_head.classifier.bias", len(CLASSES))
    return t


def _config(depths=DEPTHS, widths=WIDTHS, **changes) -> dict:
    """config.json as transformers writes it for UperNet with a ConvNeXt backbone (the fields read here and a few
    more)."""
    backbone = {
        "model_type": "convnext",
        "depths": list(depths),
        "hidden_sizes": list(widths),
        "hidden_act": "gelu",
        "drop_path_rate": 0.0,
        "layer_scale_init_value": 1e-6,
        "num_channels": 3,
        "num_stages": 4,
        "patch_size": 4,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
        "out_indices": [1, 2, 3, 4],
        "stage_names": ["stem", "stage1", "stage2", "stage3", "stage4"],
    }
    config = {
        "model_type": "upernet",
        "architectures": ["UperNetForSemanticSegmentation"],
        "backbone_config": backbone,
        "hidden_size": CHANNELS,
        "pool_scales": [1, 2, 3, 6],
        "use_auxiliary_head": True,
        "auxiliary_in_channels": widths[2],
        "auxiliary_channels": 256,
        "auxiliary_num_convs": 1,
        "auxiliary_concat_input": False,
        "loss_ignore_index": 255,
        "id2label": {str(k): name for k, name in enumerate(CLASSES)},
        "label2id": {name: k for k, name in enumerate(CLASSES)},
        "transformers_version": "5.25.0",
    }
    config.update(changes)
    return config


# preprocessor_config.json as SegformerImageProcessor's save_pretrained writes it (transformers 5.25.0, by hand): the
# Hub's UperNets hold its defaults
PROCESSOR = {
    "do_normalize": True,
    "do_reduce_labels": False,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "SegformerImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 512, "width": 512},
}


def write_folder(folder, tensors=None, config=None, pickled=False, processor=PROCESSOR):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or _config(), indent=2))
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    tensors = tensors if tensors is not None else _tensors()
    if pickled:
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _by_hand(t: dict, x: torch.Tensor) -> torch.Tensor:
    """UperNet with a ConvNeXt backbone from the folder's tensors, as functions in float64: class probabilities at
    the input's size."""
    t = {k: v.double() for k, v in t.items()}

    def ln(y, name):  # over the channels of an N x C x H x W map
        out = F.layer_norm(y.permute(0, 2, 3, 1), y.shape[1:2], t[f"{name}.weight"], t[f"{name}.bias"], 1e-6)
        return out.permute(0, 3, 1, 2)

    def cbr(y, name, padding=0):
        y = F.conv2d(y, t[f"{name}.conv.weight"], padding=padding)
        stats = [t[f"{name}.batch_norm.{s}"] for s in ("running_mean", "running_var", "weight", "bias")]
        return F.relu(F.batch_norm(y, *stats, training=False, eps=1e-5))

    def up(y, size):
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

    y = ln(
        F.conv2d(
            x,
            t["backbone.embeddings.patch_embeddings.weight"],
            t["backbone.embeddings.patch_embeddings.bias"],
            stride=4,
        ),
        "backbone.embeddings.layernorm",
    )
    maps = []
    for i, depth in enumerate(DEPTHS):
        stage = f"backbone.encoder.stages.{i}"
        if i:
            down = f"{stage}.downsampling_layer"
            y = F.conv2d(ln(y, f"{down}.0"), t[f"{down}.1.weight"], t[f"{down}.1.bias"], stride=2)
        for j in range(depth):
            p = f"{stage}.layers.{j}"
            z = F.conv2d(y, t[f"{p}.dwconv.weight"], t[f"{p}.dwconv.bias"], padding=3, groups=y.shape[1])
            z = F.layer_norm(
                z.permute(0, 2, 3, 1), z.shape[1:2], t[f"{p}.layernorm.weight"], t[f"{p}.layernorm.bias"], 1e-6
            )
            z = F.linear(
                F.gelu(F.linear(z, t[f"{p}.pwconv1.weight"], t[f"{p}.pwconv1.bias"])),
                t[f"{p}.pwconv2.weight"],
                t[f"{p}.pwconv2.bias"],
            )
            y = y + (t[f"{p}.layer_scale_parameter"] * z).permute(0, 3, 1, 2)
        maps.append(ln(y, f"backbone.hidden_states_norms.stage{i + 1}"))
    top = maps[-1]
    pooled = [
        up(cbr(F.adaptive_avg_pool2d(top, s), f"decode_head.psp_modules.{k}.1"), top.shape[-2:])
        for k, s in enumerate((1, 2, 3, 6))
    ]
    laterals = [cbr(maps[i], f"decode_head.lateral_convs.{i}") for i in range(3)]
    laterals.append(cbr(torch.cat([top, *pooled], 1), "decode_head.bottleneck", 1))
    for i in (3, 2, 1):
        laterals[i - 1] = laterals[i - 1] + up(laterals[i], laterals[i - 1].shape[-2:])
    outs = [cbr(laterals[i], f"decode_head.fpn_convs.{i}", 1) for i in range(3)] + [laterals[3]]
    fused = cbr(
        torch.cat([outs[0]] + [up(o, outs[0].shape[-2:]) for o in outs[1:]], 1), "decode_head.fpn_bottleneck", 1
    )
    logits = F.conv2d(fused, t["decode_head.classifier.weight"], t["decode_head.classifier.bias"])
    return torch.softmax(up(logits, x.shape[-2:]), 1)


@pytest.fixture
def reduced(monkeypatch):
    """convnext_tiny is the reduced one of tests/helpers.py, as the folders here are."""
    use_reduced_encoders(monkeypatch)
    monkeypatch.setitem(convnext.SIZES, "tiny", (DEPTHS, WIDTHS))


@pytest.mark.numeric
@pytest.mark.parametrize("pickled", [False, True], ids=["safetensors", "pytorch_model.bin"])
def test_a_folder_loads_strictly_and_equals_upernet_by_hand(reduced, tmp_path, pickled):
    tensors = _tensors()
    folder = write_folder(tmp_path / "upernet-convnext-tiny", tensors, pickled=pickled)
    segmenter = Segmenter.from_pretrained(str(folder), precision="fp32")
    assert segmenter.class_names == CLASSES and segmenter.cfg.MODEL.arch_encoder == "convnext_tiny"
    test = segmenter.cfg.TEST  # mmsegmentation's ConvNeXt configs' test: 512 windows every 341
    assert (test.pipeline, test.mode, test.crop_size, test.stride) == ("mmseg", "slide", 512, 341)
    assert (segmenter.cfg.DATASET.imgSizes, segmenter.cfg.MODEL.arch_decoder) == ((512,), "uperhead")
    x = torch.randn(2, 3, 70, 90, generator=torch.Generator().manual_seed(1))
    model = segmenter.model
    with torch.no_grad():
        ours = model.decoder(model.encoder(x, return_feature_maps=True), segSize=(70, 90))
    expected = _by_hand(tensors, x.double())
    assert (ours.double() - expected).abs().max() < 1e-5
    assert (ours.argmax(1) == expected.argmax(1)).float().mean() > 0.999


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "segformer"}, "model_type 'segformer'; only upernet is supported"),
        ({"backbone_config": {"model_type": "beit"}}, "backbone 'beit' is not supported (supported: convnext"),
        ({"pool_scales": [1, 2, 4]}, "pool_scales [1, 2, 4]; ours are [1, 2, 3, 6]"),
        ({"hidden_size": 256}, "hidden_size 256; our uperhead has 512"),
        ({"auxiliary_num_convs": 2}, "an auxiliary head of 2 convs"),
    ],
)
def test_what_is_not_supported_is_named(reduced, tmp_path, change, message):
    folder = write_folder(tmp_path / "m", config=_config(**change))
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        Segmenter.from_pretrained(str(folder))


def test_the_image_processor_config_gives_the_input_normalisation(reduced, tmp_path):
    """preprocessor_config.json: ImageNet's mean and std over 0..1 RGB is our `imagenet` normalisation (and so is no
    file); another is an error naming its values, an unreadable one an error naming the file."""
    x = torch.tensor([[[[0]], [[128]], [[255]]]], dtype=torch.uint8)
    mean, std = torch.tensor(PROCESSOR["image_mean"]).view(1, 3, 1, 1), torch.tensor(PROCESSOR["image_std"])
    expected = (x / 255 - mean) / std.view(1, 3, 1, 1)  # what their processor gives a pixel
    for name, processor in (("hub", PROCESSOR), ("none", None)):
        segmenter = Segmenter.from_pretrained(str(write_folder(tmp_path / name, processor=processor)))
        assert segmenter.cfg.MODEL.input_normalisation == "imagenet"
        assert torch.allclose(normalise(x, segmenter.cfg.MODEL.input_normalisation), expected, atol=1e-6)
    other = write_folder(tmp_path / "other", processor=dict(PROCESSOR, image_mean=[0.5, 0.5, 0.5]))
    with pytest.raises(CheckpointError, match=r"preprocessor_config.json: images rescaled by 0.0039\d+, less mean "):
        Segmenter.from_pretrained(str(other))
    (other / "preprocessor_config.json").write_text("{")
    with pytest.raises(CheckpointError, match="other.preprocessor_config.json: not a readable image processor config"):
        Segmenter.from_pretrained(str(other))


@pytest.mark.parametrize("size", [*(f"convnext_{s}" for s in convnext.SIZES), *(f"swin_{s}" for s in swin.SIZES)])
def test_each_hub_model_is_tested_as_its_mmsegmentation_preset(size):
    """A Hub UperNet's test (scale, windows) is that of the preset of its architecture, which is mmsegmentation's
    config it was trained with: ConvNeXt large and xlarge at 640, the others at 512."""
    options = hf.config_options(hf.HFModel(size, CLASSES, {}, {}, {}), "")
    given = dict(zip(options[::2], options[1::2]))
    (preset,) = (REPO / "config").glob(f"ade20k-{size}-upernet-*-160k.yaml")
    cfg = load_config(preset)
    keys = ["DATASET.imgSizes", "DATASET.imgMaxSize", "TEST.pipeline", "TEST.mode", "VAL.mean_iou_over"]
    keys += ["TEST.crop_size", "TEST.stride"] if cfg.TEST.mode == "slide" else []
    assert {k: given[k] for k in keys} == {k: str(cfg[k.split(".")[0]][k.split(".")[1]]) for k in keys}


def test_stray_or_missing_tensors_are_named(reduced, tmp_path):
    tensors = _tensors()
    tensors["decode_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="1 tensors of no known layer: extra.weight"):
        Segmenter.from_pretrained(str(write_folder(tmp_path / "stray", tensors)))
    tensors = _tensors()
    del tensors["backbone.encoder.stages.2.layers.1.pwconv2.bias"]
    with pytest.raises(CheckpointError, match="missing keys.*stages.2.1.pwconv2.bias"):
        Segmenter.from_pretrained(str(write_folder(tmp_path / "missing", tensors)))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(_config()))
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        Segmenter.from_pretrained(str(tmp_path / "empty"))


def test_test_py_takes_a_folder(tmp_path):
    """A folder of the full convnext_tiny's layout (random): test.py --model FOLDER writes the label file
    Segmenter.from_pretrained gives."""
    full = convnext.SIZES["tiny"]
    assert full == ((3, 3, 9, 3), (96, 192, 384, 768))  # the paper's, which openmmlab/upernet-convnext-tiny has
    folder = write_folder(tmp_path / "upernet-convnext-tiny", _tensors(*full), _config(*full))
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    small = ["DATASET.imgSizes", "(96,)", "TEST.precision", "fp32"]  # quicker than its 512
    command = [sys.executable, str(REPO / "test.py"), "--model", str(folder), "--imgs", str(photo), "--gpu", "cpu"]
    result = subprocess.run(
        [*command, *small, "TEST.result", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    labels = cv2.imread(str(tmp_path / "out" / "photo_label.png"), cv2.IMREAD_UNCHANGED)
    segmenter = Segmenter.from_pretrained(str(folder), opts=small)
    expected = segmenter.predict(str(photo))
    np.testing.assert_array_equal(labels, expected + 1)


class _Hub(BaseHTTPRequestHandler):
    """The Hugging Face Hub's few answers huggingface_hub's snapshot_download asks for: the repository's revision and
    file tree (JSON), and each file at /OWNER/NAME/resolve/COMMIT/FILE with its commit and ETag headers."""

    def log_message(self, *args):
        self.server.requests.append(self.path)

    def do_HEAD(self):
        self._answer(with_body=False)

    def do_GET(self):
        self._answer(with_body=True)

    def _answer(self, with_body):
        repo, files = self.server.repo, self.server.files
        headers = {"Content-Type": "application/json"}
        if self.path.startswith(f"/api/models/{repo}/tree/"):
            tree = [
                {"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                for n, d in files.items()
            ]
            data = json.dumps(tree).encode()
        elif self.path.startswith(f"/api/models/{repo}/revision/"):
            data = json.dumps({"id": repo, "sha": HUB_COMMIT, "siblings": [{"rfilename": n} for n in files]}).encode()
        else:
            data = (
                files.get(self.path.rsplit("/", 1)[-1])
                if self.path.startswith(f"/{repo}/resolve/{HUB_COMMIT}/")
                else None
            )
            headers = {"X-Repo-Commit": HUB_COMMIT, "ETag": f'"{hashlib.sha256(data or b"").hexdigest()}"'}
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if with_body:
            self.wfile.write(data)


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@contextlib.contextmanager
def serving_hub(repo, folder, monkeypatch):
    """`folder`'s files as the Hub's repository `repo`, on 127.0.0.1 (HF_ENDPOINT), until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    server.repo, server.requests = repo, []
    server.files = {p.name: p.read_bytes() for p in folder.iterdir()}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_imagenet_weights_come_from_the_hub_classifier(reduced, tmp_path, monkeypatch):
    """MODEL.pretrained: ConvNeXt's ImageNet weights from facebook/convnext-tiny-224 (a ConvNextForImageClassification
    folder: the backbone under `convnext.`, its final norm and classifier left out), the maps' norms at their start."""
    backbone = {k.removeprefix("backbone."): v for k, v in _tensors().items() if k.startswith("backbone.")}
    classifier = {f"convnext.{k}": v for k, v in backbone.items() if not k.startswith("hidden_states_norms")}
    classifier |= {
        "convnext.layernorm.weight": torch.ones(WIDTHS[-1]),
        "convnext.layernorm.bias": torch.zeros(WIDTHS[-1]),
    }
    classifier |= {"classifier.weight": torch.zeros(1000, WIDTHS[-1]), "classifier.bias": torch.zeros(1000)}
    config = {"model_type": "convnext", "depths": list(DEPTHS), "hidden_sizes": list(WIDTHS), "num_labels": 1000}
    folder = tmp_path / "convnext-tiny-224"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(classifier, str(folder / "model.safetensors"))
    preset = REPO / "config/ade20k-convnext_tiny-upernet-512x512-160k.yaml"
    cfg = load_config(preset, ["MODEL.fc_dim", str(WIDTHS[-1]), "MODEL.pretrained", "True"])
    with serving_hub("facebook/convnext-tiny-224", folder, monkeypatch):
        encoder = task_for(cfg).model.build().encoder.state_dict()
    assert torch.equal(encoder["downsample.0.0.weight"], backbone["embeddings.patch_embeddings.weight"])
    assert torch.equal(encoder["stages.2.1.gamma"], backbone["encoder.stages.2.layers.1.layer_scale_parameter"])
    assert torch.equal(encoder["out_norms.3.weight"], torch.ones(WIDTHS[-1]))  # not in a classifier: at its start


def test_a_hub_repository_is_fetched_once_then_read_offline(reduced, tmp_path, monkeypatch):
    """Segmenter.from_pretrained("openmmlab/upernet-convnext-tiny") through huggingface_hub from a Hub on 127.0.0.1
    (HF_ENDPOINT), then from its cache with HF_HUB_OFFLINE; an unknown repository is named."""
    folder = write_folder(tmp_path / "files", _tensors())
    with serving_hub("openmmlab/upernet-convnext-tiny", folder, monkeypatch) as server:
        fetched = Segmenter.from_pretrained("openmmlab/upernet-convnext-tiny", precision="fp32")
        assert any(r.endswith("/model.safetensors") for r in server.requests) and fetched.class_names == CLASSES
        with pytest.raises(
            DownloadError, match="cannot fetch openmmlab/upernet-convnext-base from the Hugging Face Hub"
        ):
            Segmenter.from_pretrained("openmmlab/upernet-convnext-base")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = Segmenter.from_pretrained("openmmlab/upernet-convnext-tiny", precision="fp32")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = (
            s.model.decoder(s.model.encoder(x, return_feature_maps=True), segSize=(64, 64)) for s in (fetched, cached)
        )
    assert torch.equal(a, b)


def test_convert_to_hf_writes_the_folder_back(reduced, tmp_path, capsys):
    """Their folder -> ours -> `python -m mit_semseg.convert --to hf`: the same tensors under the same names (the
    auxiliary head, which our checkpoints leave out, aside), a config with the same architecture and classes."""
    tensors = _tensors()
    segmenter = Segmenter.from_pretrained(str(write_folder(tmp_path / "theirs", tensors)))
    (tmp_path / "cfg.yaml").write_text(segmenter.cfg.dump())
    assert convert.main(["--cfg", str(tmp_path / "cfg.yaml"), "--to", "hf", str(tmp_path / "back")]) == 0
    assert "a Hugging Face UperNet folder, convnext_tiny + uperhead, without auxiliary head" in capsys.readouterr().out
    written = load_file(str(tmp_path / "back" / "model.safetensors"))
    expected = {k: v for k, v in tensors.items() if not k.startswith("auxiliary_head.")}
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], v) for k, v in expected.items())
    config, original = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("back", "theirs"))
    for key in ("model_type", "hidden_size", "pool_scales", "id2label", "label2id"):
        assert config[key] == original[key], key
    for key in ("model_type", "depths", "hidden_sizes", "out_features", "layer_scale_init_value"):
        assert config["backbone_config"][key] == original["backbone_config"][key], key
    assert config["use_auxiliary_head"] is False
    processor = json.loads((tmp_path / "back" / "preprocessor_config.json").read_text())
    for key in ("image_mean", "image_std"):
        assert processor.pop(key) == pytest.approx(PROCESSOR[key], abs=1e-12)
    assert processor == {k: v for k, v in PROCESSOR.items() if k not in ("image_mean", "image_std")}
    (tmp_path / "other.yaml").write_text(
        segmenter.cfg.dump().replace("arch_decoder: uperhead", "arch_decoder: upernet")
    )
    assert convert.main(["--cfg", str(tmp_path / "other.yaml"), "--to", "hf", str(tmp_path / "x")]) == 2
    assert "convnext_tiny + upernet is none of Hugging Face's UperNets here" in capsys.readouterr().err


SWIN = (12, (1, 1, 2, 1), (2, 2, 4, 4), 3)  # the reduced swin_tiny of tests/helpers.py: width, depths, heads, window


def _swin_tensors(transformers5=False) -> dict[str, torch.Tensor]:
    """UperNet with a Swin backbone, by transformers 4's names (the Hub's files: q, k and v apart, the relative
    position index saved) or 5's."""
    width, depths, heads, window = SWIN
    widths = tuple(width * 2**i for i in range(4))
    t = {k: v for k, v in _tensors(DEPTHS, widths).items() if not k.startswith("backbone.")}
    g = torch.Generator().manual_seed(2)
    rand = lambda *shape: torch.randn(*shape, generator=g) * 0.1
    t["backbone.embeddings.patch_embeddings.projection.weight"] = rand(width, 3, 4, 4)
    t["backbone.embeddings.patch_embeddings.projection.bias"] = rand(width)
    t["backbone.embeddings.norm.weight"], t["backbone.embeddings.norm.bias"] = 1 + rand(width), rand(width)
    index = torch.arange(window**4).view(window**2, window**2)  # any int64 of its shape: not read
    for i, (depth, head) in enumerate(zip(depths, heads)):
        w = widths[i]
        for j in range(depth):
            b = f"backbone.encoder.layers.{i}.blocks.{j}."
            for norm in ("layernorm_before", "layernorm_after"):
                t[f"{b}{norm}.weight"], t[f"{b}{norm}.bias"] = 1 + rand(w), rand(w)
            names = (
                {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
                if transformers5
                else {"q": "self.query", "k": "self.key", "v": "self.value", "o": "output.dense"}
            )
            for key in "qkvo":
                t[f"{b}attention.{names[key]}.weight"], t[f"{b}attention.{names[key]}.bias"] = rand(w, w), rand(w)
            table = (
                "relative_position_bias.relative_position_bias_table"
                if transformers5
                else "self.relative_position_bias_table"
            )
            t[f"{b}attention.{table}"] = rand((2 * window - 1) ** 2, head)
            if not transformers5:
                t[f"{b}attention.self.relative_position_index"] = index.clone()
            mlp = ("mlp.fc1", "mlp.fc2") if transformers5 else ("intermediate.dense", "output.dense")
            t[f"{b}{mlp[0]}.weight"], t[f"{b}{mlp[0]}.bias"] = rand(4 * w, w), rand(4 * w)
            t[f"{b}{mlp[1]}.weight"], t[f"{b}{mlp[1]}.bias"] = rand(w, 4 * w), rand(w)
        if i < 3:
            d = f"backbone.encoder.layers.{i}.downsample."
            t[f"{d}reduction.weight"] = rand(2 * w, 4 * w)
            t[f"{d}norm.weight"], t[f"{d}norm.bias"] = 1 + rand(4 * w), rand(4 * w)
        t[f"backbone.hidden_states_norms.stage{i + 1}.weight"] = 1 + rand(w)
        t[f"backbone.hidden_states_norms.stage{i + 1}.bias"] = rand(w)
    return t


def _swin_config(**changes) -> dict:
    width, depths, heads, window = SWIN
    backbone = {
        "model_type": "swin",
        "embed_dim": width,
        "depths": list(depths),
        "num_heads": list(heads),
        "window_size": window,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "use_absolute_embeddings": False,
        "patch_size": 4,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    }
    backbone.update(changes)
    return _config(backbone_config=backbone, auxiliary_in_channels=4 * width)


def test_a_swin_folder_of_either_transformers_loads_strictly(reduced, monkeypatch, tmp_path):
    """Swin's names of transformers 4 (the Hub's files) and 5 give the same model; a Swin of another window, MLP
    ratio or absolute position embeddings is refused, named; and it is written back in 4's names."""
    from mit_semseg.models import swin

    monkeypatch.setitem(swin.SIZES, "tiny", SWIN)
    models = []
    for version, five in (("4", False), ("5", True)):
        folder = write_folder(tmp_path / f"swin{version}", _swin_tensors(five), _swin_config())
        models.append(Segmenter.from_pretrained(str(folder), precision="fp32"))
    assert models[0].cfg.MODEL.arch_encoder == "swin_tiny" and models[0].cfg.TEST.mode == "whole"
    x = torch.randn(1, 3, 45, 61, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = (m.model.decoder(m.model.encoder(x, return_feature_maps=True), segSize=(45, 61)) for m in models)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    for change, message in (
        ({"window_size": 7}, "a Swin tiny of window 7; ours has 3"),
        ({"mlp_ratio": 2.0}, "a Swin of .*'mlp_ratio': 2.0"),
        ({"use_absolute_embeddings": True}, "'use_absolute_embeddings': True"),
    ):
        folder = write_folder(tmp_path / str(change), _swin_tensors(), _swin_config(**change))
        with pytest.raises(CheckpointError, match=message):
            Segmenter.from_pretrained(str(folder))
    (tmp_path / "cfg.yaml").write_text(models[0].cfg.dump())
    assert convert.main(["--cfg", str(tmp_path / "cfg.yaml"), "--to", "hf", str(tmp_path / "back")]) == 0
    written = load_file(str(tmp_path / "back" / "model.safetensors"))
    original = {k: v for k, v in _swin_tensors().items() if not k.startswith("auxiliary_head.")}
    expected = {k: v for k, v in original.items() if not k.endswith("relative_position_index")}
    assert written.keys() == expected.keys() and all(torch.equal(written[k], v) for k, v in expected.items())
