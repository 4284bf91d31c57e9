"""Training batches (grouping, sizes, padding, label alignment, seeds, workers) and validation samples."""

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mit_semseg.config import load_config
from mit_semseg.data.dataset import (
    SkippedSamples,
    TrainCollate,
    TrainDataset,
    ValDataset,
    build_train_loader,
    finish_batch,
    seed_worker,
)
from mit_semseg.data.records import DataError, read_odgt
from mit_semseg.data.sampling import LoaderRequest, aspect_sampler
from mit_semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mit_semseg.synthetic.scenes import NUM_CLASS, generate


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    lists = generate(str(root), num_train=24, num_val=3, seed=3)
    return root, lists


def _cfg(root, *opts):
    return load_config(
        None,
        [
            "DATASET.root_dataset",
            str(root),
            "DATASET.num_class",
            str(NUM_CLASS),
            "DATASET.imgSizes",
            "(96, 128)",
            "DATASET.imgMaxSize",
            "200",
            "TRAIN.batch_size_per_gpu",
            "3",
            "TRAIN.workers",
            "0",
            "TRAIN.seed",
            "5",
            "MODEL.arch_encoder",
            "mobilenetv2dilated",
            "MODEL.fc_dim",
            "320",
            *opts,
        ],
    )


def test_sampler_groups_by_orientation_and_is_reproducible():
    portrait = [i % 3 == 0 for i in range(30)]
    sampler = aspect_sampler(
        portrait, batch_size=4, img_sizes=(100, 200), random_flip=True, seed=1, request=LoaderRequest(num_batches=12)
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == 12
    for batch in batches:
        assert len(batch) == 4
        assert len({portrait[i] for i, _, _ in batch}) == 1
        assert len({short for _, short, _ in batch}) == 1 and batch[0][1] in (100, 200)
    assert batches == list(aspect_sampler(portrait, 4, (100, 200), True, 1, LoaderRequest(12)))
    assert batches != list(aspect_sampler(portrait, 4, (100, 200), True, 2, LoaderRequest(12)))
    assert batches != list(aspect_sampler(portrait, 4, (100, 200), True, 1, LoaderRequest(12, epoch=1)))
    assert list(aspect_sampler(portrait, 4, (100, 200), True, 1, LoaderRequest(12, start=5))) == batches[5:]
    flips = [f for b in batches for _, _, f in b]
    assert any(flips) and not all(flips)
    assert not any(f for b in aspect_sampler(portrait, 4, (100,), False, 1, LoaderRequest(5)) for _, _, f in b)


def test_ranks_draw_disjoint_shares():
    portrait = [False] * 40
    shares = [
        [
            i
            for b in aspect_sampler(portrait, 2, (100,), False, 0, LoaderRequest(10, rank=r, world_size=2))
            for i, _, _ in b
        ]
        for r in (0, 1)
    ]
    assert set(shares[0]).isdisjoint(shares[1]) and len(set(shares[0]) | set(shares[1])) == 40
    with pytest.raises(DataError, match="3 records cannot be shared among 4 processes"):
        aspect_sampler([False] * 3, 1, (100,), False, 0, LoaderRequest(1, world_size=4))


def _write_pair(folder, name, image, label):
    cv2.imwrite(str(folder / f"{name}.png"), image[..., ::-1])
    cv2.imwrite(str(folder / f"{name}_seg.png"), label)
    return {
        "fpath_img": str(folder / f"{name}.png"),
        "fpath_segm": str(folder / f"{name}_seg.png"),
        "height": image.shape[0],
        "width": image.shape[1],
    }


def test_batch_sizes_padding_and_label_alignment(tmp_path):
    # A 40 x 60 image: class 1 left of column 37, class 2 from it; class 3 in rows 30.. (the last partial cells).
    label = np.ones((40, 60), np.uint8)
    label[:, 37:] = 2
    label[30:, :] = 3
    image = np.full((40, 60, 3), 255, np.uint8)
    wide = _write_pair(tmp_path, "wide", image, label)
    small = _write_pair(tmp_path, "small", np.zeros((20, 30, 3), np.uint8), np.ones((20, 30), np.uint8))
    dataset = TrainDataset([wide, small], num_class=3, img_max_size=1000)
    batch = finish_batch(
        TrainCollate(padding_constant=16, segm_downsampling_rate=8)([dataset[(0, 40, False)], dataset[(1, 40, True)]])
    )
    # both at short side 40: 40 x 60 and 40 x 60, padded to 48 x 64
    assert batch["img_data"].shape == (2, 3, 48, 64) and batch["seg_label"].shape == (2, 6, 8)
    assert batch["img_data"].dtype == torch.float32 and batch["seg_label"].dtype == torch.int64
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(batch["img_data"][0, :, 0, 0], white)
    assert (batch["img_data"][0, :, 40:, :] == 0).all() and (batch["img_data"][0, :, :, 60:] == 0).all()
    cells = batch["seg_label"][0]
    # cell (i, j) takes the pixel (8i + 4, 8j + 4): columns 4..36 are class 1 -> 0, 44..52 class 2 -> 1
    assert cells[0, :5].tolist() == [0] * 5 and cells[0, 5:8].tolist() == [1, 1, -1]
    # rows 4, 12, 20, 28 are above row 30, row 36 below; row 44 is padding
    assert cells[:, 0].tolist() == [0, 0, 0, 0, 2, -1]
    assert (batch["seg_label"][1][:5, :7] == 0).all()


def test_unlabelled_pixels_become_minus_one(tmp_path):
    label = np.zeros((16, 16), np.uint8)
    label[:, 8:] = 5
    rec = _write_pair(tmp_path, "u", np.zeros((16, 16, 3), np.uint8), label)
    batch = finish_batch(TrainCollate(8, 4)([TrainDataset([rec], 5, 100)[(0, 16, False)]]))
    assert batch["seg_label"][0].tolist() == [[-1, -1, 4, 4]] * 4


def test_scaling_keeps_aspect_and_caps_the_long_side(tmp_path):
    rec = _write_pair(tmp_path, "r", np.zeros((50, 200, 3), np.uint8), np.ones((50, 200), np.uint8))
    sample = TrainDataset([rec], 1, img_max_size=300)[(0, 100, False)]
    assert sample.image.shape == (75, 300, 3) and sample.label.shape == (75, 300)


def test_flip_mirrors_image_and_label(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :2] = 255
    label = np.ones((8, 8), np.uint8)
    label[:, :2] = 2
    rec = _write_pair(tmp_path, "f", image, label)
    flipped = TrainDataset([rec], 2, 100)[(0, 8, True)]
    assert (
        (flipped.image[:, 6:] == 255).all() and (flipped.label[:, 6:] == 2).all() and (flipped.label[:, :6] == 1).all()
    )


def test_loader_same_seed_same_batches_with_or_without_workers(synthetic):
    root, lists = synthetic
    records = read_odgt(lists["training"], root)
    serial = list(build_train_loader(records, _cfg(root), LoaderRequest(num_batches=4)))
    parallel = list(build_train_loader(records, _cfg(root, "TRAIN.workers", "2"), LoaderRequest(num_batches=4)))
    for a, b in zip(serial, parallel):
        assert torch.equal(a["img_data"], b["img_data"]) and torch.equal(a["seg_label"], b["seg_label"])
    other = list(build_train_loader(records, _cfg(root, "TRAIN.seed", "6"), LoaderRequest(num_batches=4)))
    assert any(
        a["img_data"].shape != b["img_data"].shape or not torch.equal(a["img_data"], b["img_data"])
        for a, b in zip(serial, other)
    )
    for batch in serial:
        n, _, h, w = batch["img_data"].shape
        assert n == 3 and h % 8 == 0 and w % 8 == 0 and batch["seg_label"].shape == (3, h // 8, w // 8)
        assert batch["seg_label"].min() >= -1 and batch["seg_label"].max() < NUM_CLASS


class _RandomDraws(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return np.random.randint(0, 2**31), torch.utils.data.get_worker_info().id


def test_workers_draw_independent_random_streams():
    loader = DataLoader(
        _RandomDraws(),
        batch_size=1,
        num_workers=2,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(0),
    )
    draws = [(int(v), int(w)) for v, w in loader]
    by_worker = {w: [v for v, ww in draws if ww == w] for w in (0, 1)}
    assert set(by_worker[0]).isdisjoint(by_worker[1])
    again = [
        (int(v), int(w))
        for v, w in DataLoader(
            _RandomDraws(),
            batch_size=1,
            num_workers=2,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(0),
        )
    ]
    assert draws == again


def test_unreadable_samples_are_skipped_then_stop_the_run(synthetic, tmp_path):
    root, lists = synthetic
    records = read_odgt(lists["training"], root)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 broken")
    records[0] = dict(records[0], fpath_img=str(corrupt))
    dataset = TrainDataset(records, NUM_CLASS, 200)
    batch = finish_batch(TrainCollate(8, 8)([dataset[(0, 96, False)], dataset[(1, 96, False)]]))
    assert batch["img_data"].shape[0] == 1 and batch["num_samples"] == 2
    assert len(batch["failed"]) == 1 and str(corrupt) in batch["failed"][0]
    skipped = SkippedSamples()
    skipped.update(batch)  # one failure: warned, not fatal
    good = TrainCollate(8, 8)([dataset[(i, 96, False)] for i in range(1, 24)])
    for _ in range(5):
        skipped.update(good)
    with pytest.raises(DataError, match=r"(?s)2 of the 119 training samples drawn could not be read .*corrupt.jpg"):
        skipped.update(batch)


def test_bad_label_stops_at_once_naming_it(synthetic, tmp_path):
    root, lists = synthetic
    records = read_odgt(lists["training"], root)
    image = cv2.imread(records[0]["fpath_img"])
    bad = tmp_path / "bad.png"
    cv2.imwrite(str(bad), np.full(image.shape[:2], 200, np.uint8))
    records[0] = dict(records[0], fpath_segm=str(bad))
    batch = TrainCollate(8, 8)([TrainDataset(records, NUM_CLASS, 200)[(0, 96, False)]])
    with pytest.raises(DataError, match=r"bad.png has value 200, above DATASET.num_class \(8\)"):
        SkippedSamples().update(batch)


def test_validation_sample_at_every_scale(synthetic):
    root, lists = synthetic
    cfg = _cfg(root, "DATASET.imgSizes", "(50, 77)", "DATASET.padding_constant", "16")
    records = read_odgt(lists["validation"], root)
    item = ValDataset(records, cfg)[0]
    h, w = records[0]["height"], records[0]["width"]
    assert item["img_ori"].shape == (h, w, 3) and item["seg_label"].shape == (h, w)
    assert item["seg_label"].min() >= -1 and item["info"] == records[0]["fpath_img"]
    for short, tensor in zip((50, 77), item["img_data"]):
        scale = min(short / min(h, w), 200 / max(h, w))
        expected = [((int(s * scale) - 1) // 16 + 1) * 16 for s in (h, w)]
        assert list(tensor.shape) == [1, 3, *expected]


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("imagenet", [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225]),
        ("caffe", [30 - 102.9801, 20 - 115.9465, 10 - 122.7717]),  # BGR, 0..255 minus the caffe mean
    ],
)
def test_input_normalisations_by_hand(kind, expected):
    from mit_semseg.data.transforms import normalise, normalise_batch

    rgb = torch.tensor([10, 20, 30], dtype=torch.uint8)
    images = rgb.view(1, 1, 1, 3).expand(1, 2, 3, 3).contiguous()  # N x H x W x 3
    batch = normalise_batch(images, torch.tensor([[2, 2]]), kind)
    single = normalise(images.permute(0, 3, 1, 2), kind)
    torch.testing.assert_close(batch[0, :, 0, 0], torch.tensor(expected))
    torch.testing.assert_close(single[0, :, 1, 1], torch.tensor(expected))
    assert torch.all(batch[0, :, :, 2] == 0)  # beyond the image's width: padding
