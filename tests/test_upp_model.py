"""The UPP decoder: the original's checkpoint layout, its heads' outputs in training and inference, label tables."""
import json
from pathlib import Path

import pytest
import torch

from mit_semseg.data.label_tables import read_label_tables
from mit_semseg.data.records import DataError
from mit_semseg.models import ModelBuilder

from conftest import write_small_tables

UPP_LAYOUT = json.loads((Path(__file__).resolve().parent / "data" / "upp_state_dict_layout.json").read_text())
ORIGINAL_NAMES = {"upp": "upernet", "upp_lite": "upernet_lite"}  # the original's names of the two decoders


def _layout(module):
    return {k: [list(v.shape), str(v.dtype)] for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch", ["upp", "upp_lite"])
def test_decoder_state_dict_equals_the_original_layout_key_for_key(arch):
    net = ModelBuilder.build_decoder(arch=arch, fc_dim=2048, use_softmax=True)
    reference = UPP_LAYOUT["decoders"][ORIGINAL_NAMES[arch]]
    assert list(_layout(net).items()) == list(reference.items())
    tables = read_label_tables()
    assert tables.num_classes == {k: UPP_LAYOUT["nr_classes"][k] for k in ("object", "part", "scene", "material")}


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_encoders_equal_the_original_layout(arch):
    net = ModelBuilder.build_encoder(arch, pretrained=False)
    assert _layout(net) == UPP_LAYOUT["encoders"][arch]


def test_over_resnet18_with_own_tables_in_training_and_inference(tmp_path):
    torch.manual_seed(0)
    encoder = ModelBuilder.build_encoder("resnet18", pretrained=False)
    decoder = ModelBuilder.build_decoder("upp_lite", fc_dim=512, label_tables=str(write_small_tables(tmp_path)))
    maps = encoder(torch.randn(2, 3, 64, 96), return_feature_maps=True)
    out = decoder(maps)
    assert out["scene"].shape == (2, 2) and out["object"].shape == (2, 4, 16, 24)
    assert out["material"].shape == (2, 3, 16, 24)
    assert [p.shape for p in out["part"]] == [(2, 3, 16, 24), (2, 3, 16, 24)]
    torch.testing.assert_close(out["scene"].exp().sum(1), torch.ones(2))
    decoder.eval()
    with torch.no_grad():
        probs = decoder(encoder.eval()(torch.randn(1, 3, 64, 96), return_feature_maps=True), segSize=(50, 70))
    assert probs["scene"].shape == (1, 2) and probs["object"].shape == (1, 4, 50, 70)
    for group in probs["part"]:
        assert group.shape == (1, 3, 50, 70)
        torch.testing.assert_close(group.sum(1), torch.ones(1, 50, 70))
    only = decoder(maps, tasks=("material",))
    assert set(only) == {"material"}


def test_skipped_heads_get_no_gradient(tmp_path):
    encoder = ModelBuilder.build_encoder("resnet18", pretrained=False)
    decoder = ModelBuilder.build_decoder("upp_lite", fc_dim=512, label_tables=str(write_small_tables(tmp_path)))
    decoder(encoder(torch.randn(2, 3, 64, 64), return_feature_maps=True), tasks=("material",))["material"].sum()\
        .backward()
    assert decoder.material_head[1].weight.grad is not None and decoder.fpn_in[0][0].weight.grad is not None
    assert decoder.object_head[1].weight.grad is None and decoder.conv_fusion[0].weight.grad is None
    assert decoder.scene_head[2].weight.grad is None


@pytest.mark.parametrize("file, text, message", [
    ("object.csv", "label,name\n0,-\n2,wall\n", "labels must run 0..1 in order"),
    ("part.csv", "id,name\n0,-\n", "expected the columns label,name"),
    ("object_part_hierarchy.csv", "object_label,object_name,part_labels,part_names\n9,x,0;1,-;leg\n",
     "line 2: object label 9 is not in object.csv"),
    ("object_part_hierarchy.csv", "object_label,object_name,part_labels,part_names\n1,table,1;2,leg;top\n",
     "part labels must start with 0"),
])
def test_bad_tables_are_named(tmp_path, file, text, message):
    folder = write_small_tables(tmp_path)
    (folder / file).write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_label_tables(folder)
    assert file in str(err.value)


def test_upp_configs_are_validated(tmp_path):
    from mit_semseg.config import ConfigError, load_config
    from conftest import REPO
    preset = REPO / "config" / "broden-resnet50-upp.yaml"
    cfg = load_config(preset)
    assert cfg.MODEL.arch_decoder == "upp" and cfg.MODEL.input_normalisation == "caffe" and cfg.TRAIN.num_epoch == 40
    assert (cfg.TRAIN.loss_weight_part, cfg.TRAIN.loss_weight_scene) == (0.5, 0.25)
    with pytest.raises(ConfigError, match="DATASET.label_tables: label table not found: .*object.csv"):
        load_config(preset, ["DATASET.label_tables", str(tmp_path)])
    with pytest.raises(ConfigError, match="TEST.mode slide: a UPP decoder"):
        load_config(preset, ["TEST.mode", "slide"])
    with pytest.raises(ConfigError, match="MODEL.input_normalisation: unknown 'bgr'; valid: imagenet, caffe"):
        load_config(preset, ["MODEL.input_normalisation", "bgr"])
