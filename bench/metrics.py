"""Metric accumulation: our bincount confusion matrix against the original's histogram-based helper.

    python bench/metrics.py [--images 50]

Both accumulate the same per-class intersection and union over random 512 x 683 label maps with
150 classes (about 10% unlabelled pixels); the baseline re-implements the original's
`intersectionAndUnion` (numpy histograms over the shifted maps) and `accuracy`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import machine, print_machine, write_results

from mit_semseg.metrics import ConfusionMatrix
from mit_semseg.testing.reference import original_accuracy, original_intersection_and_union


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--classes", type=int, default=150)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    rng = np.random.default_rng(0)
    c = args.classes
    pairs = []
    for _ in range(args.images):
        label = rng.integers(0, c, (512, 683))
        label[rng.random((512, 683)) < 0.1] = -1
        pairs.append((rng.integers(0, c, (512, 683)), label))

    started = time.perf_counter()
    inter, union, correct, pixels = np.zeros(c, np.int64), np.zeros(c, np.int64), 0.0, 0
    for pred, label in pairs:
        i, u = original_intersection_and_union(pred, label, c)
        acc, pix = original_accuracy(pred, label)
        inter += i
        union += u
        correct += acc * pix
        pixels += pix
    baseline = (time.perf_counter() - started) / args.images

    started = time.perf_counter()
    matrix = ConfusionMatrix(c)
    for pred, label in pairs:
        matrix.update(pred, label)
    ours = (time.perf_counter() - started) / args.images

    m = matrix.matrix
    assert np.array_equal(np.diag(m), inter) and np.array_equal(m.sum(0) + m.sum(1) - np.diag(m), union)
    print(f"{'method':<32}{'ms/image':>10}   (512 x 683 maps, {c} classes, {args.images} images)")
    print(f"{'original histogram helpers':<32}{1000 * baseline:>10.2f}")
    print(f"{'ours (bincount confusion)':<32}{1000 * ours:>10.2f}")
    print(f"speed-up: {baseline / ours:.1f}x (same intersection and union)")
    path = write_results(
        "metrics",
        {
            "machine": info,
            "ms_per_image": {"original": 1000 * baseline, "ours": 1000 * ours},
            "speedup": baseline / ours,
            "images": args.images,
            "classes": c,
        },
    )
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
