"""The task layer: one model factory for every entry point, each task's config checks, and the engine's pieces
that used to branch on the task (training statistics, channels-last on several devices, exit codes)."""

import subprocess
import sys

import pytest
import torch
from helpers import REPO, write_small_tables
from torch import nn

from mit_semseg import cli
from mit_semseg.config import ConfigError, load_config
from mit_semseg.models import builder
from mit_semseg.models.builder import DECODERS, ENCODERS, DecoderSpec, EncoderSpec
from mit_semseg.models.decoders import C1DeepSup
from mit_semseg.models.segmentation import SegmentationModule
from mit_semseg.models.unified import UnifiedParsingModule
from mit_semseg.parallel import DictDataParallel
from mit_semseg.tasks import TASKS, SegmentationTask, UnifiedParsingTask, build_model, task_class, task_for
from mit_semseg.training.trainer import train_step

SEGMENTATION = REPO / "config" / "ade20k-mobilenetv2dilated-c1_deepsup.yaml"
UPP = REPO / "config" / "broden-resnet50-upp.yaml"


def _small(*opts):
    return load_config(SEGMENTATION, ["MODEL.pretrained", "False", "DATASET.num_class", "5", *opts])


def test_every_decoder_has_exactly_one_task():
    assert set(TASKS) == {"segmentation", "unified_parsing"}
    for name in DECODERS:
        owners = [t for t in TASKS.values() if issubclass(DECODERS[name].cls, t.decoder_base)]
        assert len(owners) == 1, name
    assert task_class("upp_lite") is UnifiedParsingTask and task_class("UPerNet") is SegmentationTask


def test_the_factory_builds_each_tasks_module(tmp_path):
    model = build_model(_small())
    assert isinstance(model, SegmentationModule) and model.deep_sup_scale == 0.4
    assert model.decoder.conv_last.out_channels == 5 and model.decoder.cbr_deepsup[0].in_channels == 160
    cfg = load_config(
        UPP,
        [
            "MODEL.arch_encoder",
            "resnet18",
            "MODEL.fc_dim",
            "512",
            "MODEL.arch_decoder",
            "upp_lite",
            "MODEL.pretrained",
            "False",
            "DATASET.label_tables",
            str(write_small_tables(tmp_path)),
        ],
    )
    model = task_for(cfg).model.build()
    assert isinstance(model, UnifiedParsingModule) and model.loss_weights == {
        "object": 1.0,
        "part": 0.5,
        "scene": 0.25,
        "material": 1.0,
    }
    assert [m[0].in_channels for m in model.decoder.fpn_in] == [64, 128, 256]


def test_deep_supervision_is_the_decoders_declaration_not_its_name(monkeypatch):
    """A deep-supervised decoder under a name without `deepsup` still trains its deep-supervision head."""
    monkeypatch.setitem(DECODERS, "c1_aux", DecoderSpec(C1DeepSup))
    model = build_model(_small("MODEL.arch_decoder", "c1_aux"))
    assert model.decoder.deep_sup and model.deep_sup_scale == 0.4
    assert build_model(_small("MODEL.arch_decoder", "c1")).deep_sup_scale is None


def test_decoders_take_their_input_widths_from_the_encoders_spec(monkeypatch):
    """An encoder whose last width another one shares: the factory asks its spec, not a guess from fc_dim."""
    resnet18 = ENCODERS["resnet18"]
    monkeypatch.setitem(ENCODERS, "slim18", EncoderSpec(resnet18.build, (64, 128, 256, 512), "x.pth", ()))
    monkeypatch.setitem(ENCODERS, "other512", EncoderSpec(resnet18.build, (32, 96, 512), "y.pth", ()))
    with pytest.raises(ValueError, match="fpn_inplanes"):  # the original's API can only guess, and cannot here
        builder.ModelBuilder.build_decoder("upernet", fc_dim=512)
    model = build_model(_small("MODEL.arch_encoder", "slim18", "MODEL.arch_decoder", "upernet", "MODEL.fc_dim", "512"))
    assert [m[0].in_channels for m in model.decoder.fpn_in] == [64, 128, 256]


def test_each_task_checks_its_config(tmp_path):
    with pytest.raises(ConfigError, match="a UPP decoder .* predicts whole images as the original"):
        load_config(UPP, ["TEST.mode", "slide"])
    with pytest.raises(ConfigError, match="DATASET.label_tables: label table not found"):
        load_config(UPP, ["DATASET.label_tables", str(tmp_path)])
    with pytest.raises(ConfigError, match="DATASET.class_info: class table not found"):
        task_for(_small("DATASET.class_info", str(tmp_path / "none.csv")))


class _Named(nn.Module):
    """A model whose step gives named values, as the tasks' modules do: the `loss` and what to log."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(2.0))

    def forward(self, batch):
        x = batch["img_data"]
        return {"loss": self.weight * x.mean(), "object_acc": x.max(), "object_loss": x.min()}


def test_the_step_minimises_the_named_loss_and_averages_every_named_value_over_the_replicas():
    model = _Named()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    group = [{"img_data": torch.tensor([1.0, 3.0])}, {"img_data": torch.tensor([5.0, -1.0])}]
    loss, stats = train_step(
        DictDataParallel(model, ["cpu", "cpu"]),
        [group],
        torch.device("cpu"),
        torch.contiguous_format,
        optimizer,
        scaler,
    )
    assert loss == pytest.approx((2 * 2 + 2 * 2) / 2)
    assert stats == {"object_acc": pytest.approx((3 + 5) / 2), "object_loss": pytest.approx((1 - 1) / 2)}
    # d(mean loss)/d(weight) = mean of the images' means = 2: one SGD step of 0.5 takes the weight from 2 to 1
    assert model.weight.item() == pytest.approx(1.0)


class _Recorder(nn.Module):
    """A model that records the memory format of each input it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.formats = []

    def forward(self, batch):
        x = batch["img_data"]
        self.formats.append(x.is_contiguous(memory_format=torch.channels_last))
        return {"loss": self.conv(x).mean(), "acc": torch.tensor(1.0)}


@pytest.mark.parametrize("devices", [1, 2])
def test_channels_last_reaches_every_replica(devices):
    """TRAIN.channels_last: the step hands the model channels-last images, on one device and on several."""
    model = _Recorder()
    step_module = DictDataParallel(model, ["cpu"] * devices) if devices > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    group = [{"img_data": torch.randn(2, 3, 8, 8)} for _ in range(devices)]
    for memory_format, expected in ((torch.channels_last, True), (torch.contiguous_format, False)):
        model.formats.clear()
        train_step(step_module, [group], torch.device("cpu"), memory_format, optimizer, scaler)
        assert model.formats == [expected] * devices


def test_devices_are_parsed_one_way():
    assert cli.devices("cpu", "x") == [torch.device("cpu")]
    assert cli.parse_gpus("0-2,5") == [0, 1, 2, 5]
    if not torch.cuda.is_available():
        assert cli.devices("0,1", "x") == [torch.device("cpu")]


@pytest.mark.parametrize("script", ["train.py", "eval_multipro.py", "test.py"])
def test_a_bad_config_exits_2_in_every_script(script, tmp_path):
    flags = ["--imgs", str(tmp_path)] if script == "test.py" else []
    result = subprocess.run(
        [sys.executable, str(REPO / script), "--cfg", str(SEGMENTATION), *flags, "MODEL.arch_decoder", "fcn"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert f"{script}: error: MODEL.arch_decoder: unknown architecture 'fcn'" in result.stderr


def test_the_gpu_smoke_run_runs_its_checks_on_the_cpu():
    """bench/gpu_check.py (make gpu-check) with --device cpu: the checks that apply run, the table says so."""
    result = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--only", "engine,fp16"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    rows = {
        line[:28].strip(): line[28:].split()[0]
        for line in result.stdout.splitlines()
        if line[:28].strip() in ("engine", "train fp16 + channels-last")
    }
    assert rows == {"engine": "ok", "train fp16 + channels-last": "skipped"}
    assert "2 checks in" in result.stdout and "1 ok, 0 failed, 1 skipped" in result.stdout
