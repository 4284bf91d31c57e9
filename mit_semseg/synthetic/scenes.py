"""A synthetic scene-parsing set in ADE20K layout, deterministic by seed.

    python -m mit_semseg.synthetic.scenes --out data/synthetic --train 300 --val 60 --seed 0

Scenes have a sky, a ground of grass or road, sometimes a wall, and objects in front: balls
(round), boxes (rectangles), roofs (triangles) and fences (striped). Colours overlap between
classes on purpose, so shape and texture matter too. Object outlines are left unlabelled (0),
as in ADE20K. Sizes and aspect ratios vary, portrait and landscape.
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

from ..data.classes import write_class_table
from ..data.records import write_odgt

CLASSES = ("sky", "grass", "road", "wall", "ball", "box", "roof", "fence")
NUM_CLASS = len(CLASSES)
SKY, GRASS, ROAD, WALL, BALL, BOX, ROOF, FENCE = range(1, NUM_CLASS + 1)
SHAPES = ((4, 3), (3, 4), (16, 9), (9, 16), (1, 1), (3, 2), (2, 3))
SPLITS = {"training": 1, "validation": 2}


def _jitter(rng: np.random.Generator, rgb, spread: int = 30) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in rgb)


def _noise(rng: np.random.Generator, shape, amplitude: float) -> np.ndarray:
    return rng.normal(0, amplitude, size=shape + (1,)).astype(np.float32)


def _paint(image: np.ndarray, label: np.ndarray, mask: np.ndarray, layer: np.ndarray, cls: int) -> None:
    image[mask] = layer[mask]
    label[mask] = cls


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image and its label map (0 unlabelled, 1..NUM_CLASS)."""
    # One function on purpose, longer than most: its random draws, in this order, are the demo's data set and so its
    # published figures; read top to bottom, the order is plain to see and hard to change by accident.
    image = np.zeros((height, width, 3), np.float32)
    label = np.zeros((height, width), np.uint8)
    rows, cols = np.mgrid[0:height, 0:width]
    horizon = int(height * rng.uniform(0.3, 0.6))

    top, bottom = np.array(_jitter(rng, (90, 150, 230))), np.array(_jitter(rng, (190, 215, 245)))
    t = (rows / max(horizon, 1)).clip(0, 1)[..., None]
    sky = top * (1 - t) + bottom * t + _noise(rng, (height, width), 3)
    _paint(image, label, rows < horizon, sky, SKY)

    grass = np.array(_jitter(rng, (70, 140, 60))) + _noise(rng, (height, width), 28)
    _paint(image, label, rows >= horizon, grass, GRASS)
    if rng.random() < 0.6:  # a road: a wedge from the bottom edge to the horizon, smooth dark grey
        centre, half = rng.uniform(0.2, 0.8) * width, rng.uniform(0.15, 0.35) * width
        far = (rows - horizon) / max(height - horizon, 1)
        road = (rows >= horizon) & (np.abs(cols - centre) < half * (0.2 + 0.8 * far))
        road_layer = np.array(_jitter(rng, (95, 95, 100), 20)) + _noise(rng, (height, width), 4)
        _paint(image, label, road, road_layer, ROAD)
    if rng.random() < 0.5:  # a wall: a flat block standing on the horizon, faint brick rows
        x0 = int(rng.uniform(0, 0.6) * width)
        x1 = min(width, x0 + int(rng.uniform(0.25, 0.5) * width))
        y0 = int(horizon * rng.uniform(0.1, 0.6))
        wall = (rows >= y0) & (rows < horizon + 2) & (cols >= x0) & (cols < x1)
        bricks = ((rows // 6) % 2 == 0)[..., None] * 14.0
        wall_layer = np.array(_jitter(rng, (180, 150, 120), 25)) + bricks
        _paint(image, label, wall, wall_layer, WALL)

    outline = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(2, 7)):
        cls = int(rng.choice([BALL, BOX, ROOF, FENCE]))
        mask = np.zeros((height, width), np.uint8)
        size = int(min(height, width) * rng.uniform(0.12, 0.35))
        cx, cy = int(rng.uniform(0.1, 0.9) * width), int(rng.uniform(0.3, 0.95) * height)
        # Balls and roofs share warm colours, boxes and fences cool ones: shape and texture decide.
        base = _jitter(rng, (200, 70, 50) if cls in (BALL, ROOF) else (60, 90, 190), 45)
        if cls == BALL:
            cv2.circle(mask, (cx, cy), size // 2, 1, -1)
            shade = 1.0 - 0.35 * (np.hypot(rows - cy + size / 5, cols - cx + size / 5) / max(size, 1)).clip(0, 1)
            layer = np.array(base) * shade[..., None]
        elif cls == ROOF:
            points = np.array(
                [[cx, cy - size // 2], [cx - size // 2, cy + size // 3], [cx + size // 2, cy + size // 3]]
            )
            cv2.fillPoly(mask, [points.astype(np.int32)], 1)
            layer = np.array(base) + _noise(rng, (height, width), 6)
        elif cls == BOX:
            w, h = int(size * rng.uniform(0.7, 1.4)), int(size * rng.uniform(0.7, 1.4))
            cv2.rectangle(mask, (cx - w // 2, cy - h // 2), (cx + w // 2, cy + h // 2), 1, -1)
            layer = np.array(base) + _noise(rng, (height, width), 6)
        else:
            w, h = int(size * rng.uniform(1.0, 1.8)), int(size * rng.uniform(0.6, 1.0))
            cv2.rectangle(mask, (cx - w // 2, cy - h // 2), (cx + w // 2, cy + h // 2), 1, -1)
            period = int(rng.integers(6, 12))
            stripes = ((cols // (period // 2)) % 2)[..., None]
            layer = np.array(base) * (1 - stripes) + np.array(_jitter(rng, (235, 235, 235), 15)) * stripes
        mask = mask.astype(bool)
        _paint(image, label, mask, layer, cls)
        edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        outline |= edge
    label[outline.astype(bool)] = 0
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(
    out: str, num_train: int = 300, num_val: int = 60, seed: int = 0, min_side: int = 160, max_side: int = 320
) -> dict[str, str]:
    """Write images, annotations, `training.odgt`, `validation.odgt` and `class_info.csv` under `out`."""
    lists = {}
    for split, count in (("training", num_train), ("validation", num_val)):
        os.makedirs(os.path.join(out, "images", split), exist_ok=True)
        os.makedirs(os.path.join(out, "annotations", split), exist_ok=True)
        records = []
        for i in range(count):
            rng = np.random.default_rng([seed, SPLITS[split], i])
            a, b = SHAPES[rng.integers(len(SHAPES))]
            long_side = int(rng.integers(min_side, max_side + 1))
            height, width = (long_side, long_side * b // a) if a > b else (long_side * a // b, long_side)
            image, label = render_scene(rng, height, width)
            stem = f"synthetic_{split}_{i:05d}"
            image_rel, label_rel = f"images/{split}/{stem}.jpg", f"annotations/{split}/{stem}.png"
            cv2.imwrite(
                os.path.join(out, image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
            )
            cv2.imwrite(os.path.join(out, label_rel), label)
            records.append({"fpath_img": image_rel, "fpath_segm": label_rel, "width": width, "height": height})
        lists[split] = os.path.join(out, f"{split}.odgt")
        write_odgt(lists[split], records)
    write_class_table(os.path.join(out, "class_info.csv"), list(CLASSES))
    return lists


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/synthetic", help="output folder (default: data/synthetic)")
    parser.add_argument("--train", type=int, default=300, help="training images (default: 300)")
    parser.add_argument("--val", type=int, default=60, help="validation images (default: 60)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    lists = generate(args.out, args.train, args.val, args.seed)
    print(
        f"wrote {args.train} training and {args.val} validation scenes ({NUM_CLASS} classes) to {args.out}: "
        f"{lists['training']}, {lists['validation']}"
    )


if __name__ == "__main__":
    main()
