"""The texture head of Unified Perceptual Parsing: the optional table, the head on C2 with its input detached, the
stage's module and loss, texture records and batches, evaluation counts, predictions and ONNX."""

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import write_small_tables

from mit_semseg.checkpoints import TEXTURE, part_path
from mit_semseg.config import ConfigError, load_config
from mit_semseg.data.label_tables import read_label_tables
from mit_semseg.data.records import DataError
from mit_semseg.data.textures import (
    TextureTrainDataset,
    collate_textures,
    read_texture_records,
    short_side_image,
)
from mit_semseg.models.builder import build_decoder, build_encoder
from mit_semseg.models.texture import TextureHead, build_texture_head
from mit_semseg.models.unified import TextureStageModule, UnifiedParsingModule
from mit_semseg.synthetic.upp import TEXTURES, render_texture
from mit_semseg.tasks import STAGES, UnifiedParsingTask, stage_for, task_for
from mit_semseg.tasks.texture import TEXTURE_STAGE, TextureData, TextureStageModel
from mit_semseg.tasks.unified.evaluation import UnifiedMetrics
from mit_semseg.tasks.unified.prediction import predict_multitask


def write_image(path: str, rgb: np.ndarray) -> None:
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _tables(tmp_path, textures=("banded", "dotted", "grid")):
    folder = write_small_tables(tmp_path / "tables")
    if textures:
        (folder / "texture.csv").write_text("label,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(textures)))
    return read_label_tables(folder)


def _model(tables, texture=True):
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", pretrained=False)
    decoder = build_decoder("upp_lite", (64, 128, 256, 512), label_tables=tables)
    head = build_texture_head("resnet18", len(tables.textures)) if texture else None
    return encoder, decoder, head


def test_texture_csv_is_optional_and_read_like_the_other_tables(tmp_path):
    assert _tables(tmp_path / "a").textures == ("banded", "dotted", "grid")
    assert _tables(tmp_path / "b", textures=()).textures == ()
    assert len(read_label_tables().textures) == 47  # Broden+'s: DTD's
    bad = write_small_tables(tmp_path / "c" / "tables")
    (bad / "texture.csv").write_text("label,name\n1,banded\n")
    with pytest.raises(DataError, match=r"texture.csv: labels must run 0..0 in order"):
        read_label_tables(bad)


def test_the_head_reads_c2_and_its_gradients_stop_there(tmp_path):
    tables = _tables(tmp_path)
    encoder, _decoder, head = _model(tables)
    assert isinstance(head, TextureHead)
    features = encoder(torch.randn(2, 3, 64, 96), return_feature_maps=True)
    logits = head(features[0])
    assert logits.shape == (2, 3, 16, 24)  # C2: stride 4
    logits.sum().backward()
    assert all(p.grad is None for p in encoder.parameters())  # the input is detached
    assert all(p.grad is not None for p in head.parameters())


def test_the_decoder_state_dict_is_the_same_with_or_without_texture_csv(tmp_path):
    with_textures, without = _tables(tmp_path / "a"), _tables(tmp_path / "b", textures=())
    a = build_decoder("upp_lite", (64, 128, 256, 512), label_tables=with_textures).state_dict()
    b = build_decoder("upp_lite", (64, 128, 256, 512), label_tables=without).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    encoder, decoder, head = _model(with_textures)
    model = UnifiedParsingModule(encoder, decoder, with_textures, texture=head)
    assert set(model.decoder.state_dict()) == set(a)  # the head is beside the decoder, not in it
    assert {k.split(".")[0] for k in model.state_dict()} == {"encoder", "decoder", "texture"}


def test_the_stage_module_trains_the_head_only_and_keeps_batch_norm_statistics(tmp_path):
    tables = _tables(tmp_path)
    encoder, decoder, head = _model(tables)
    module = TextureStageModule(encoder, decoder, tables, head).train()
    assert not encoder.training and not decoder.training and head.training
    before = {k: v.clone() for k, v in {**encoder.state_dict(), **decoder.state_dict()}.items()}
    images, labels = torch.randn(3, 3, 64, 64), torch.tensor([2, 0, 1])
    stats = module({"img_data": images, "texture": labels})
    loss = stats["loss"]
    loss.backward()
    assert all(p.grad is None for p in (*encoder.parameters(), *decoder.parameters()))
    assert all(p.grad is not None for p in head.parameters())
    after = {**encoder.state_dict(), **decoder.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics included
    # independently: the mean NLL over every pixel of every image, the image's texture the target everywhere
    with torch.no_grad():
        log_probs = F.log_softmax(head(encoder(images, return_feature_maps=True)[0]), 1)
        nll = -torch.stack([log_probs[i, t] for i, t in enumerate(labels.tolist())]).mean()
        correct = torch.stack([log_probs[i].argmax(0) == t for i, t in enumerate(labels.tolist())]).float().mean()
    torch.testing.assert_close(loss.detach(), nll)
    torch.testing.assert_close(stats["texture_acc"].float(), correct)


def test_texture_records_are_checked_and_named(tmp_path):
    textures = ("banded", "dotted")
    image = tmp_path / "a.jpg"
    write_image(str(image), np.zeros((8, 8, 3), np.uint8))
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"fpath_img": "a.jpg", "texture": 1, "width": 8, "height": 8}\n{"fpath_img": "a.jpg", "texture": 0}\n'
    )
    records = read_texture_records(good, tmp_path, textures)
    assert [r["texture"] for r in records] == [1, 0] and records[0]["fpath_img"] == str(image)
    for line, message in (
        (
            '{"fpath_img": "a.jpg", "texture": 2}',
            r"bad.jsonl, line 1: texture must be a label of texture.csv \(0..1\), got 2",
        ),
        ('{"fpath_img": "a.jpg", "texture": "banded"}', r"line 1: texture must be a label .* got 'banded'"),
        ('{"fpath_img": "a.jpg"}', r"line 1: missing key 'texture'"),
        ('{"fpath_img": "b.jpg", "texture": 0}', r"1 files listed are missing:\n  .*b.jpg"),
    ):
        (tmp_path / "bad.jsonl").write_text(line + "\n")
        with pytest.raises(DataError, match=message):
            read_texture_records(tmp_path / "bad.jsonl", tmp_path, textures)


def test_training_samples_are_squares_of_the_short_side_drawn_from_their_seed(tmp_path):
    rng = np.random.default_rng(0)
    picture = render_texture(rng, 90, 150, 0).clip(0, 255).astype(np.uint8)
    write_image(str(tmp_path / "t.png"), picture)
    dataset = TextureTrainDataset([{"fpath_img": str(tmp_path / "t.png"), "texture": 4}], 32, random_flip=True)
    small = short_side_image(picture, 32)
    assert small.shape == (32, 53, 3)
    seen = set()
    for seed in range(12):
        sample = dataset[(0, seed)]
        assert sample.image.shape == (32, 32, 3) and sample.texture == 4
        np.testing.assert_array_equal(sample.image, dataset[(0, seed)].image)  # the seed decides
        windows = [small[:, x : x + 32] for x in range(53 - 32 + 1)]
        found = [
            x
            for x, w in enumerate(windows)
            if np.array_equal(w, sample.image) or np.array_equal(w[:, ::-1], sample.image)
        ]
        assert found, "a sample is a (mirrored) square of the resized image"
        seen.add(found[0])
    assert len(seen) > 3
    batch = collate_textures([dataset[(0, 1)], dataset[(0, 2)]])
    assert batch["images"].shape == (2, 32, 32, 3) and batch["texture"].tolist() == [4, 4]


def test_synthetic_textures_are_dark_patterns_on_light_paper_of_varied_hues():
    rng = np.random.default_rng(5)
    inks, papers = [], []
    for texture in range(len(TEXTURES)):
        picture = render_texture(rng, 64, 96, texture)
        dark = picture.mean(axis=-1) < 128
        assert 0.1 < dark.mean() < 0.9, TEXTURES[texture]  # ink and paper both show
        assert picture[dark].max() < 0.35 * 255 + 30 and picture[~dark].min() > 0.65 * 255 - 30, TEXTURES[texture]
        inks.append(picture[dark].mean(axis=0))
        papers.append(picture[~dark].mean(axis=0))
    assert np.ptp(inks, axis=0).max() > 20 and np.ptp(papers, axis=0).max() > 20  # hues vary from image to image


def test_short_side_resizing_is_antialiased_bilinear():
    image = np.zeros((128, 256, 3), np.uint8)
    image[:, ::2] = 255  # a one-pixel pattern: averaged away when shrinking 4x, not aliased
    small = short_side_image(image, 32)
    assert small.shape == (32, 64, 3)
    assert np.abs(small[:, 1:-1].astype(int) - 128).max() <= 2  # (the border columns see one side only)
    assert short_side_image(image, 32, padding=24).shape == (48, 72, 3)  # sides rounded up


def test_texture_metrics_are_top_1_per_image_with_per_class_accuracy(tmp_path):
    tables = _tables(tmp_path)
    metrics = UnifiedMetrics(tables)
    for label, predicted in ((0, 0), (0, 2), (1, 1), (1, 1), (2, 0)):
        metrics.add({"texture": (label, predicted)})
    texture = metrics.summary()["texture"]
    assert texture["accuracy"] == pytest.approx(3 / 5) and texture["images"] == 5
    assert texture["classes"] == [
        {"name": "banded", "images": 2, "accuracy": 0.5},
        {"name": "dotted", "images": 2, "accuracy": 1.0},
        {"name": "grid", "images": 1, "accuracy": 0.0},
    ]
    assert "texture" not in UnifiedMetrics(tables).summary()  # no texture image, no texture figures


def test_prediction_gives_a_texture_per_pixel_and_leaves_the_other_heads_alone(tmp_path):
    tables = _tables(tmp_path)
    encoder, decoder, head = _model(tables)
    for m in (encoder, decoder, head):
        m.eval()
    plain = UnifiedParsingModule(encoder, decoder, tables)
    with_texture = UnifiedParsingModule(encoder, decoder, tables, texture=head)
    images = [torch.randn(1, 3, 64, 96)]
    a, _pa = predict_multitask(plain, images, (70, 100), probabilities=True)
    b, pb = predict_multitask(with_texture, images, (70, 100), probabilities=True)
    assert "texture" not in a and b["texture"].shape == (70, 100)
    for key in ("scene", "object", "part", "material"):
        assert torch.equal(a[key], b[key])
    expected = F.interpolate(head(encoder(images[0], return_feature_maps=True)[0]), (70, 100), mode="bilinear")
    expected = torch.softmax(expected, 1)[0]
    torch.testing.assert_close(pb["texture"], expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(b["texture"], pb["texture"].argmax(0))


def _config(tmp_path, *extra):
    tables = _tables(tmp_path)
    return load_config(
        None,
        [
            "MODEL.arch_encoder",
            "resnet18",
            "MODEL.arch_decoder",
            "upp_lite",
            "MODEL.fc_dim",
            "512",
            "MODEL.pretrained",
            "False",
            "DATASET.label_tables",
            tables.folder,
            "DIR",
            str(tmp_path / "run"),
            *extra,
        ],
    )


def test_the_stage_brings_its_roles_and_schedule_with_its_checks(tmp_path):
    assert STAGES == {"texture": TEXTURE_STAGE}
    opts = ("TRAIN.stage", "texture", "DATASET.list_texture_train", "t.jsonl", "TRAIN.texture_lr", "0.005")
    cfg = _config(tmp_path, *opts, "TRAIN.lr_min", "0.01", "TRAIN.start_epoch", "3", "MODEL.init_from", "x")
    stage = stage_for(cfg)
    assert isinstance(stage.model, TextureStageModel) and isinstance(stage.data, TextureData)
    assert stage.files_prefix == "texture_" and stage.list_train == "t.jsonl"
    t = cfg.TRAIN
    assert (stage.num_epoch, stage.epoch_iters) == (t.texture_num_epoch, t.texture_epoch_iters)
    assert (stage.lr_encoder, stage.lr_decoder, stage.lr_min) == (0.005, 0.005, 0.005)  # the floor below its rate
    assert (stage.start_epoch, stage.init_from) == (0, "")  # a stage starts from its source checkpoint
    assert isinstance(task_for(cfg), UnifiedParsingTask)  # the model's task, whatever the stage
    assert (t.num_epoch, t.lr_encoder, cfg.DATASET.list_train) == (20, 0.02, "./data/training.odgt")  # as it was
    model = task_for(cfg).stage()
    assert (model.num_epoch, model.start_epoch, model.init_from, model.files_prefix) == (20, 3, "x", "")
    with pytest.raises(ConfigError, match="TRAIN.stage texture: set DATASET.list_texture_train"):
        _config(tmp_path / "a", "TRAIN.stage", "texture")
    with pytest.raises(ConfigError, match="TRAIN.texture_size must be positive, got 0"):
        _config(tmp_path / "b", "TRAIN.stage", "texture", "DATASET.list_texture_train", "t", "TRAIN.texture_size", "0")
    with pytest.raises(ConfigError, match="TRAIN.stage: unknown stage 'colour'"):
        _config(tmp_path / "c", "TRAIN.stage", "colour")
    with pytest.raises(ConfigError, match="TRAIN.stage texture: decoder upernet has no such stage"):
        load_config(None, ["MODEL.arch_decoder", "upernet", "MODEL.arch_encoder", "resnet50", "TRAIN.stage", "texture"])


def test_a_checkpoint_without_texture_head_says_so_once_and_loads(tmp_path, caplog):
    cfg = _config(tmp_path)
    task = UnifiedParsingTask(cfg)
    encoder, decoder, head = _model(task.tables)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(encoder.state_dict(), run / "encoder_epoch_1.pth")
    torch.save(decoder.state_dict(), run / "decoder_epoch_1.pth")
    with caplog.at_level("WARNING", logger="mit_semseg"):
        model = task.model.load("epoch_1.pth")
        task.model.load("epoch_1.pth")
    assert model.texture is None
    said = [r.getMessage() for r in caplog.records if "no texture head" in r.getMessage()]
    assert said == [
        f"no texture head ({run / 'texture_epoch_1.pth'} not found): predicting scene, objects, parts and "
        "materials; train.py --stage texture trains one"
    ]
    torch.save(head.state_dict(), part_path(run, TEXTURE, "epoch_1.pth"))
    model = task.model.load("epoch_1.pth", optimize=False)
    assert all(torch.equal(a, b) for a, b in zip(model.texture.state_dict().values(), head.state_dict().values()))
    assert task.export.output_names(model)[-1] == "texture"
    outputs = task.export.outputs(model, torch.randn(1, 3, 64, 64))
    assert outputs[-1].shape == (1, 3, 64, 64)
    torch.testing.assert_close(outputs[-1].sum(1), torch.ones(1, 64, 64))


def test_write_outputs_adds_the_texture_map_panel_and_shares(tmp_path):
    task = UnifiedParsingTask(_config(tmp_path))
    t = task.tables
    texture = np.zeros((20, 30), np.int64)
    texture[:, 20:] = 2
    pred = {
        "scene": np.array([0.7, 0.3]),
        "object": np.ones((20, 30), np.int64),
        "part": np.zeros((20, 30), np.int64),
        "material": np.ones((20, 30), np.int64),
        "texture": texture,
    }
    stem = str(tmp_path / "out" / "img")
    (tmp_path / "out").mkdir()
    files, lines = task.prediction.write_outputs(np.zeros((20, 30, 3), np.uint8), pred, stem)
    saved = np.asarray(cv2.imread(f"{stem}_texture.png", -1))
    assert saved.dtype == np.uint8 and np.array_equal(saved, texture + 1)
    summary = json.loads(open(f"{stem}.json").read())
    assert summary["textures"] == {t.textures[0]: pytest.approx(2 / 3), t.textures[2]: pytest.approx(1 / 3)}
    assert sorted(files) == sorted(str(p) for p in (tmp_path / "out").iterdir()) and len(files) == 6
    assert lines[-1] == "  textures: banded 66.7%, grid 33.3%"
    panels = cv2.imread(f"{stem}.png")
    assert panels.shape[1] >= 5 * 30  # image | objects | parts | materials | textures
