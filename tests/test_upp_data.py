"""Multi-task records, part targets and their validity, batches, the multi-source sampler, and the losses."""

import json
import math

import cv2
import numpy as np
import pytest
import torch
from helpers import write_small_tables

from mit_semseg.data.label_tables import read_label_tables
from mit_semseg.data.multitask import (
    MultiTaskCollate,
    MultiTaskTrainDataset,
    PartTargets,
    read_multitask_records,
    source_tasks,
)
from mit_semseg.data.records import DataError
from mit_semseg.data.sampling import LoaderRequest, MultiSourceBatchSampler, aspect_keys
from mit_semseg.models.unified import accuracy, masked_nll, part_loss


@pytest.fixture
def tables(tmp_path):
    return read_label_tables(write_small_tables(tmp_path / "tables"))


def test_part_targets_and_validity_by_hand(tables):
    # objects: 1 table (parts 0, 1 leg, 2 top), 2 wall (no parts), 3 chair (parts 0, 1 leg, 3 seat)
    objects = np.array([[1, 1, 1], [3, 3, 2], [0, 3, 3]])
    parts = np.array([[2, 0, 3], [3, 1, 1], [2, 0, 0]])
    index, valid = PartTargets(tables)(objects, parts)
    # table: top -> 2, none -> 0, seat (not a table part) -> 0; chair: seat -> 2, leg -> 1; wall and unlabelled: 0
    assert index.tolist() == [[2, 0, 0], [2, 1, 0], [0, 0, 0]]
    assert valid.tolist() == [True, True]
    _, valid = PartTargets(tables)(objects, np.where(objects == 3, 0, parts))
    assert valid.tolist() == [True, False]  # the chair shows no part other than index 0


def test_validity_is_decided_after_resizing_to_label_resolution(tables, tmp_path):
    image = np.full((16, 16, 3), 128, np.uint8)
    objects = np.full((16, 16), 1, np.uint16)
    parts = np.zeros((16, 16), np.uint16)
    parts[0, 0] = 1  # one leg pixel, not at a cell centre of the 4 x 4 label cells
    for name, array in (("a.jpg", image), ("o.png", objects), ("p.png", parts)):
        cv2.imwrite(str(tmp_path / name), array)
    record = {
        "fpath_img": str(tmp_path / "a.jpg"),
        "fpath_object": str(tmp_path / "o.png"),
        "fpath_part": str(tmp_path / "p.png"),
        "scene": 1,
        "source": "x",
        "width": 16,
        "height": 16,
    }
    dataset = MultiTaskTrainDataset([record], tables, 1000)
    batch = MultiTaskCollate(tables, 4, 4)([dataset[(0, 16, False)]])
    assert batch["tasks"] == ("object", "part", "scene")
    assert batch["valid_part"].tolist() == [[False, False]]
    parts[2, 2] = 1  # at the centre of the first cell
    cv2.imwrite(str(tmp_path / "p.png"), parts)
    batch = MultiTaskCollate(tables, 4, 4)([dataset[(0, 16, False)]])
    assert batch["valid_part"].tolist() == [[True, False]] and batch["seg_part"][0, 0, 0] == 1
    assert batch["seg_object"].shape == (1, 4, 4) and batch["scene"].tolist() == [1]


def test_records_are_validated_with_line_numbers(tables, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    good = {"fpath_img": "a.jpg", "width": 4, "height": 4, "source": "s", "fpath_material": "m.png"}
    lines = [
        good,
        dict(good, scene=7),
        {"fpath_img": "a.jpg", "width": 4, "height": 4, "source": "s"},
        dict(good, fpath_part="p.png"),
    ]
    messages = [
        "1 files listed are missing:\n  " + str(tmp_path / "m.png"),
        "line 1: scene must be -1 (none) or a label 0..1, got 7",
        "line 1: no annotation",
        "line 1: fpath_part needs fpath_object",
    ]
    for record, message in zip(lines, messages):
        (tmp_path / "list.jsonl").write_text(json.dumps(record) + "\n")
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_multitask_records(tmp_path / "list.jsonl", tmp_path, tables)
    (tmp_path / "list.jsonl").write_text(json.dumps(good) + "\n")
    (tmp_path / "m.png").write_bytes(b"x")
    records = read_multitask_records(tmp_path / "list.jsonl", tmp_path, tables)
    assert records[0]["scene"] == -1 and records[0]["fpath_material"] == str(tmp_path / "m.png")
    assert source_tasks(records + [{"source": "t", "scene": 0, "fpath_object": "o"}]) == {
        "s": ("material",),
        "t": ("object", "scene"),
    }


def test_a_label_out_of_range_is_named(tables, tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "m.png"), np.full((8, 8), 3, np.uint8))  # materials are 0..2
    record = {
        "fpath_img": str(tmp_path / "a.jpg"),
        "fpath_material": str(tmp_path / "m.png"),
        "scene": -1,
        "source": "s",
        "width": 8,
        "height": 8,
    }
    sample = MultiTaskTrainDataset([record], tables, 100)[(0, 8, False)]
    assert sample.fatal == (
        f"label {tmp_path / 'm.png'} has value 3, above the last label of material.csv in {tables.folder} (2)"
    )


def test_every_iteration_draws_one_source_for_all_devices_in_proportion():
    sources = ["a"] * 300 + ["b"] * 100
    portrait, keys = [i % 3 == 0 for i in range(400)], aspect_keys((64, 96), True)
    sampler = MultiSourceBatchSampler(sources, portrait, 2, keys, 5, LoaderRequest(2000, per_step=2))
    batches = list(sampler)
    assert len(batches) == 2000
    drawn = [{sources[i] for i, _, _ in b} for b in batches]
    assert all(len(d) == 1 for d in drawn)
    assert all(drawn[i] == drawn[i + 1] for i in range(0, 2000, 2))  # both devices of an iteration
    share = sum(d == {"a"} for d in drawn[::2]) / 1000
    assert abs(share - 0.75) < 0.05
    resumed = list(MultiSourceBatchSampler(sources, portrait, 2, keys, 5, LoaderRequest(2000, per_step=2, start=1234)))
    assert resumed == batches[1234:]
    ranks = [
        list(
            MultiSourceBatchSampler(
                sources, [0] * 400, 2, aspect_keys((64,), False), 5, LoaderRequest(50, rank=r, world_size=2)
            )
        )
        for r in range(2)
    ]
    assert [{sources[b[0][0]]} for b in ranks[0]] == [{sources[b[0][0]]} for b in ranks[1]]  # ranks agree
    assert not {i for b in ranks[0][:50] for i, _, _ in b} & {i for b in ranks[1][:50] for i, _, _ in b}


@pytest.mark.numeric
def test_part_loss_by_hand():
    torch.manual_seed(0)
    groups = [torch.randn(1, 3, 2, 2).log_softmax(1), torch.randn(1, 2, 2, 2).log_softmax(1)]
    seg_object = torch.tensor([[[1, 1], [3, 0]]])
    seg_part = torch.tensor([[[1, 2], [1, 0]]])
    g0, g1 = groups[0][0], groups[1][0]
    expected = -(g0[1, 0, 0] + g0[2, 0, 1]) / 2 - g1[1, 1, 0]
    loss, acc = part_loss(groups, seg_part, seg_object, torch.tensor([[True, True]]), [1, 3])
    torch.testing.assert_close(loss, expected)
    hits = int(g0[:, 0, 0].argmax() == 1) + int(g0[:, 0, 1].argmax() == 2) + int(g1[:, 1, 0].argmax() == 1)
    assert acc.item() == pytest.approx(hits / 3)
    loss, _ = part_loss(groups, seg_part, seg_object, torch.tensor([[True, False]]), [1, 3])
    torch.testing.assert_close(loss, -(g0[1, 0, 0] + g0[2, 0, 1]) / 2)
    loss, acc = part_loss(groups, seg_part, seg_object, torch.tensor([[False, False]]), [1, 3])
    assert loss.item() == 0 and acc.item() == 0


@pytest.mark.numeric
def test_object_and_scene_losses_by_hand():
    log_probs = torch.log(torch.tensor([[[[0.5]], [[0.25]], [[0.25]]], [[[0.1]], [[0.8]], [[0.1]]]]))  # N=2, 1x1
    target = torch.tensor([[[2]], [[0]]])  # the second pixel is unlabelled
    assert masked_nll(log_probs, target, 0).item() == pytest.approx(-math.log(0.25))
    assert accuracy(log_probs, target, 0).item() == 0
    assert masked_nll(log_probs, torch.zeros_like(target), 0).item() == 0  # nothing labelled: 0, not NaN
    scenes = torch.log(torch.tensor([[0.7, 0.3], [0.2, 0.8]]))
    assert masked_nll(scenes, torch.tensor([1, -1]), -1).item() == pytest.approx(-math.log(0.3))
