"""Training-sample throughput: our OpenCV pipeline against a PIL pipeline doing the same work.

    python bench/data_loading.py [--images 48] [--batches 40] [--workers 1]

Both read the same synthetic scenes (ADE20K-like sizes), flip, resize to the same drawn short
side (bilinear images, nearest labels), normalise, pad the batch and sample the label cells,
through a DataLoader with the same sampler and worker count. Prints samples/s and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from common import machine, print_machine, write_results
from PIL import Image
from torch.utils.data import DataLoader

from mit_semseg.config import load_config
from mit_semseg.data.dataset import TrainCollate, TrainDataset, TrainLoader
from mit_semseg.data.records import read_odgt
from mit_semseg.data.sampling import LoaderRequest, aspect_sampler
from mit_semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, round_up, scaled_size
from mit_semseg.synthetic.scenes import NUM_CLASS, generate


class PILDataset(TrainDataset):
    """The same sample work with PIL and plain numpy, as a PIL-based pipeline would do it."""

    def __getitem__(self, key):
        index, short, flip = key
        record = self.records[index]
        image = Image.open(record["fpath_img"]).convert("RGB")
        label = Image.open(record["fpath_segm"])
        if flip:
            image, label = image.transpose(Image.FLIP_LEFT_RIGHT), label.transpose(Image.FLIP_LEFT_RIGHT)
        h, w = scaled_size(image.height, image.width, short, self.img_max_size)
        image = image.resize((w, h), Image.BILINEAR)
        label = label.resize((w, h), Image.NEAREST)
        return np.array(image), np.array(label)


class PILCollate:
    def __init__(self, padding, rate):
        self.padding, self.rate = padding, rate
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, samples):
        height = round_up(max(i.shape[0] for i, _ in samples), self.padding)
        width = round_up(max(i.shape[1] for i, _ in samples), self.padding)
        images = torch.zeros(len(samples), 3, height, width)
        labels = torch.full((len(samples), height // self.rate, width // self.rate), -1, dtype=torch.long)
        for n, (image, label) in enumerate(samples):
            tensor = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
            images[n, :, : image.shape[0], : image.shape[1]] = (tensor - self.mean) / self.std
            cells = torch.from_numpy(label.astype(np.int64) - 1)[
                self.rate // 2 :: self.rate, self.rate // 2 :: self.rate
            ]
            labels[n, : cells.shape[0], : cells.shape[1]] = cells
        return {"img_data": images, "seg_label": labels}


def throughput(dataset, collate, sampler, workers: int, wrap=lambda loader: loader) -> float:
    loader = wrap(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers))
    iterator = iter(loader)
    next(iterator)  # start-up (worker fork, first batch) is not timed
    samples, started = 0, time.perf_counter()
    for batch in iterator:
        samples += batch["img_data"].shape[0]
    return samples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    cfg = load_config("config/ade20k-resnet50dilated-ppm_deepsup.yaml", ["DATASET.num_class", str(NUM_CLASS)])
    with tempfile.TemporaryDirectory() as root:
        lists = generate(root, args.images, 0, seed=0, min_side=480, max_side=700)
        records = read_odgt(lists["training"], root)
        ours = TrainDataset(records, NUM_CLASS, cfg.DATASET.imgMaxSize)
        pil = PILDataset(records, NUM_CLASS, cfg.DATASET.imgMaxSize)

        def sampler():
            return aspect_sampler(
                ours.portrait(),
                cfg.TRAIN.batch_size_per_gpu,
                cfg.DATASET.imgSizes,
                True,
                0,
                LoaderRequest(args.batches + 1),
            )

        rates = {"ours_opencv": [], "pil": []}
        for _ in range(args.repeats):
            rates["ours_opencv"].append(throughput(ours, TrainCollate(8, 8), sampler(), args.workers, TrainLoader))
            rates["pil"].append(throughput(pil, PILCollate(8, 8), sampler(), args.workers))
    best = {k: max(v) for k, v in rates.items()}
    ratio = best["ours_opencv"] / best["pil"]
    print(
        f"{'pipeline':<14}{'samples/s':>10}   (best of {args.repeats}; {args.workers} worker(s), "
        f"batch {cfg.TRAIN.batch_size_per_gpu}, short sides {cfg.DATASET.imgSizes}, scenes 480-700 px)"
    )
    for name, value in best.items():
        print(f"{name:<14}{value:>10.1f}")
    print(f"ratio ours / PIL: {ratio:.2f}x")
    path = write_results(
        "data_loading",
        {
            "machine": info,
            "samples_per_s": best,
            "all_runs": rates,
            "ratio": ratio,
            "workers": args.workers,
            "batches": args.batches,
        },
    )
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
