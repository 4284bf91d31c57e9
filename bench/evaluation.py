"""End-to-end evaluation: our eval path against the original's evaluation loop, on the same images.

    python bench/evaluation.py [--images 12] [--encoder resnet18dilated --decoder ppm_deepsup]

Writes a checkpoint (random weights: the timing does not depend on them) and 480 x 640 scenes,
then evaluates them at two scales twice, timing the whole wall time of each: our `evaluate()`
with its default settings (one CPU worker process), and a re-implementation of the original's
loop (PIL resizing, a 2-worker DataLoader, full-size probabilities from each scale added up,
arg-max, histogram-based metrics). Both must print the same summary line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from common import machine, print_machine, write_results
from metrics import original_accuracy, original_intersection_and_union
from PIL import Image
from torch import nn

from mit_semseg.checkpoints import model_files, save_parts
from mit_semseg.config import load_config
from mit_semseg.data.records import read_odgt
from mit_semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, round_up
from mit_semseg.evaluation import evaluate
from mit_semseg.models import ENCODERS, ModelBuilder, SegmentationModule
from mit_semseg.synthetic.scenes import generate


class OriginalValDataset(torch.utils.data.Dataset):
    """The original's validation sample: PIL loading and resizing, per-scale normalised tensors."""

    def __init__(self, records, cfg):
        self.records, self.cfg = records, cfg

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record, d = self.records[index], self.cfg.DATASET
        img = Image.open(record["fpath_img"]).convert("RGB")
        segm = np.array(Image.open(record["fpath_segm"])).astype(np.int64) - 1
        width, height = img.size
        images = []
        for short in d.imgSizes:
            scale = min(short / float(min(height, width)), d.imgMaxSize / float(max(height, width)))
            h, w = round_up(int(height * scale), d.padding_constant), round_up(int(width * scale), d.padding_constant)
            array = np.float32(np.array(img.resize((w, h), Image.BILINEAR))) / 255.0
            tensor = torch.from_numpy(array.transpose((2, 0, 1)).copy())
            mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
            images.append(((tensor - mean) / std)[None])
        return {"img_data": images, "seg_label": segm}


def original_evaluation(cfg) -> dict:
    """The original eval loop over one worker, with its model built and loaded inside the timing."""
    m, num_class = cfg.MODEL, cfg.DATASET.num_class
    files = model_files(cfg.DIR, cfg.VAL.checkpoint)
    encoder = ModelBuilder.build_encoder(m.arch_encoder, m.fc_dim, weights=files["encoder"])
    decoder = ModelBuilder.build_decoder(
        m.arch_decoder, m.fc_dim, num_class, use_softmax=True, weights=files["decoder"]
    )
    model = SegmentationModule(encoder, decoder, nn.NLLLoss(ignore_index=-1)).eval()
    records = read_odgt(cfg.DATASET.list_val, cfg.DATASET.root_dataset)
    loader = torch.utils.data.DataLoader(OriginalValDataset(records, cfg), batch_size=None, num_workers=2)
    inter, union, correct, pixels = np.zeros(num_class), np.zeros(num_class), 0.0, 0
    for item in loader:
        label = item["seg_label"].numpy()
        size = (label.shape[0], label.shape[1])
        with torch.no_grad():
            scores = torch.zeros(1, num_class, *size)
            for image in item["img_data"]:
                scores = scores + model({"img_data": image}, segSize=size) / len(cfg.DATASET.imgSizes)
            pred = torch.max(scores, dim=1)[1].squeeze(0).numpy()
        acc, pix = original_accuracy(pred, label)
        i, u = original_intersection_and_union(pred, label, num_class)
        inter, union, correct, pixels = inter + i, union + u, correct + acc * pix, pixels + pix
    iou = inter / (union + 1e-10)
    return {"mean_iou": float(iou.mean()), "pixel_accuracy": float(correct / pixels)}


def bench_config(root: str, args) -> object:
    """The synthetic validation set, a model of random weights (favouring the scenes' classes) saved as a checkpoint,
    and the config that evaluates it, in `root`."""
    generate(root, 0, args.images, seed=0, min_side=640, max_side=640)
    cfg = load_config(
        None,
        [
            "DIR",
            root,
            "DATASET.root_dataset",
            root,
            "DATASET.list_val",
            os.path.join(root, "validation.odgt"),
            "DATASET.imgSizes",
            args.sizes,
            "MODEL.arch_encoder",
            args.encoder,
            "MODEL.arch_decoder",
            args.decoder,
            "MODEL.fc_dim",
            str(ENCODERS[args.encoder].fc_dim),
            "VAL.checkpoint",
            "bench.pth",
        ],
    )
    torch.manual_seed(0)
    encoder = ModelBuilder.build_encoder(args.encoder, pretrained=False)
    decoder = ModelBuilder.build_decoder(args.decoder, cfg.MODEL.fc_dim, 150)
    with torch.no_grad():  # favour the scenes' classes, so the metrics compared are not all zero
        decoder.conv_last[-1].bias[:8] += 3.0
    save_parts(root, cfg.VAL.checkpoint, {"encoder": encoder, "decoder": decoder})
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--encoder", default="resnet18dilated")
    parser.add_argument("--decoder", default="ppm_deepsup")
    parser.add_argument("--sizes", default="(300, 400)", help="DATASET.imgSizes (default: two scales)")
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    with tempfile.TemporaryDirectory() as root:
        cfg = bench_config(root, args)
        started = time.perf_counter()
        ours = evaluate(cfg, ["cpu"])
        ours_seconds = time.perf_counter() - started
        started = time.perf_counter()
        baseline = original_evaluation(cfg)
        baseline_seconds = time.perf_counter() - started
    line = lambda m: f"Mean IoU: {m['mean_iou']:.4f}, Accuracy: {100 * m['pixel_accuracy']:.2f}%"
    same = line(ours) == line(baseline)
    ratio = ours_seconds / baseline_seconds
    print(
        f"{args.images} images of 480 x 640 at short sides {args.sizes}, {args.encoder} + {args.decoder}, "
        f"150 classes, CPU"
    )
    print(f"{'loop':<22}{'wall s':>8}{'images/s':>10}{'mean IoU':>10}{'accuracy':>10}")
    for name, seconds, metrics in (("original's loop", baseline_seconds, baseline), ("ours", ours_seconds, ours)):
        print(
            f"{name:<22}{seconds:>8.1f}{args.images / seconds:>10.2f}{metrics['mean_iou']:>10.4f}"
            f"{100 * metrics['pixel_accuracy']:>9.2f}%"
        )
    print(
        f"ours / original wall time: {ratio:.2f} (target <= 0.8); same summary line: {'yes' if same else 'NO'} "
        f"(mean IoU differs by {abs(ours['mean_iou'] - baseline['mean_iou']):.1e}, accuracy by "
        f"{abs(ours['pixel_accuracy'] - baseline['pixel_accuracy']):.1e}: images are resized by torch's "
        "antialiased bilinear, within one grey level of PIL's)"
    )
    path = write_results(
        "evaluation",
        {
            "machine": info,
            "images": args.images,
            "img_sizes": args.sizes,
            "model": f"{args.encoder}+{args.decoder}",
            "wall_seconds": {"original": baseline_seconds, "ours": ours_seconds},
            "images_per_s": {"original": args.images / baseline_seconds, "ours": args.images / ours_seconds},
            "ratio": ratio,
            "same_summary_line": same,
            "metrics": {"original": baseline, "ours": {k: ours[k] for k in ("mean_iou", "pixel_accuracy")}},
        },
    )
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
