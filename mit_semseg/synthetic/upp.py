"""A synthetic multi-task set for Unified Perceptual Parsing, in the prepared layout, deterministic by seed.

    python -m mit_semseg.synthetic.upp --out data/synthetic_upp --train 240 --val 60 --textures 240 60 --seed 0

Source `scenes` annotates objects, their parts and the scene: streets (road, houses with roofs,
doors and windows, cars with wheels and windows), gardens (grass, trees with trunks and crowns, a
house) and rooms (wall, floor, tables with tops and legs); the scene type is told apart only by what
the image contains. Source `surfaces` annotates materials only: regions of brick, wood, metal and
fabric textures. Source `textures`, for the texture stage only, is images of one regular pattern each
(`TEXTURES`: bands, checks, dots, zigzags, a grid, waves) at a random period and angle, in dark ink on
light paper of random hues, listed in `texture_training.jsonl` and `texture_validation.jsonl`
(`fpath_img`, `texture`).
The set's label tables, `texture.csv` included, are written beside the record lists (`tables/`).
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

from ..data.records import write_json_lines

OBJECTS = ("-", "sky", "grass", "road", "wall", "floor", "house", "car", "table", "tree")
PARTS = ("-", "roof", "door", "window", "wheel", "leg", "top", "trunk", "crown")
GROUPS = {
    "house": ("-", "roof", "door", "window"),
    "car": ("-", "wheel", "window"),
    "table": ("-", "leg", "top"),
    "tree": ("-", "trunk", "crown"),
}
SCENES = ("street", "garden", "room")
MATERIALS = ("-", "brick", "wood", "metal", "fabric")
TEXTURES = ("banded", "chequered", "dotted", "zigzagged", "grid", "wavy")  # DTD's names for these patterns
SPLITS = {"training": 1, "validation": 2}
TEXTURE_SPLITS = {"training": 3, "validation": 4}  # streams of their own: the other sources stay as they were
O, P, M = ({name: i for i, name in enumerate(t)} for t in (OBJECTS, PARTS, MATERIALS))


def write_tables(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    tables = (("object", OBJECTS), ("part", PARTS), ("scene", SCENES), ("material", MATERIALS), ("texture", TEXTURES))
    for name, rows in tables:
        with open(os.path.join(folder, f"{name}.csv"), "w") as f:
            f.write("label,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(rows)))
    with open(os.path.join(folder, "object_part_hierarchy.csv"), "w") as f:
        f.write("object_label,object_name,part_labels,part_names\n")
        for obj, parts in GROUPS.items():
            f.write(f"{O[obj]},{obj},{';'.join(str(P[p]) for p in parts)},{';'.join(parts)}\n")


class Canvas:
    """An image with its object and part maps; `fill` paints a mask in a noisy colour with its labels."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng, self.h, self.w = rng, height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.objects = np.zeros((height, width), np.uint16)
        self.parts = np.zeros((height, width), np.uint16)

    def fill(self, mask: np.ndarray, rgb, obj: str, part: str = "-", noise: float = 6.0) -> None:
        colour = np.clip(np.array(rgb) + self.rng.integers(-25, 26, 3), 0, 255)
        self.image[mask] = colour + self.rng.normal(0, noise, (int(mask.sum()), 1))
        self.objects[mask], self.parts[mask] = O[obj], P[part]

    def mask(self, draw) -> np.ndarray:
        layer = np.zeros((self.h, self.w), np.uint8)
        draw(layer)
        return layer > 0

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return self.mask(lambda m: cv2.rectangle(m, (int(x0), int(y0)), (int(x1), int(y1)), 1, -1))


def _house(c: Canvas, x: float, base: float, size: float) -> None:
    w, h = size, size * c.rng.uniform(0.6, 0.9)
    c.fill(c.rect(x, base - h, x + w, base), (200, 170, 130), "house")
    roof = np.array([[x - 0.1 * w, base - h], [x + 1.1 * w, base - h], [x + w / 2, base - h - 0.5 * w]], np.int32)
    c.fill(c.mask(lambda m: cv2.fillPoly(m, [roof], 1)), (150, 40, 30), "house", "roof")
    c.fill(c.rect(x + 0.4 * w, base - 0.45 * h, x + 0.6 * w, base), (90, 60, 30), "house", "door")
    for wx in (0.12, 0.7):
        c.fill(
            c.rect(x + wx * w, base - 0.8 * h, x + (wx + 0.18) * w, base - 0.55 * h), (120, 180, 220), "house", "window"
        )


def _car(c: Canvas, x: float, base: float, size: float) -> None:
    w, h = size, size * 0.35
    c.fill(
        c.rect(x, base - h, x + w, base - 0.2 * h), c.rng.choice([(200, 30, 30), (30, 60, 200), (230, 200, 40)]), "car"
    )
    c.fill(c.rect(x + 0.25 * w, base - 1.6 * h, x + 0.75 * w, base - h), (110, 170, 210), "car", "window")
    for wx in (0.22, 0.78):
        c.fill(
            c.mask(lambda m: cv2.circle(m, (int(x + wx * w), int(base - 0.2 * h)), max(2, int(0.28 * h)), 1, -1)),
            (25, 25, 25),
            "car",
            "wheel",
        )


def _tree(c: Canvas, x: float, base: float, size: float) -> None:
    c.fill(c.rect(x - 0.08 * size, base - size, x + 0.08 * size, base), (100, 70, 40), "tree", "trunk")
    centre = (int(x), int(base - size))
    c.fill(
        c.mask(lambda m: cv2.circle(m, centre, max(3, int(0.4 * size)), 1, -1)),
        (40, 130, 40),
        "tree",
        "crown",
        noise=20,
    )


def _table(c: Canvas, x: float, base: float, size: float) -> None:
    w, h = size, size * 0.5
    c.fill(c.rect(x, base - h, x + w, base - h + 0.12 * w), (150, 100, 50), "table", "top", noise=12)
    for lx in (0.05, 0.85):
        c.fill(c.rect(x + lx * w, base - h + 0.12 * w, x + (lx + 0.1) * w, base), (120, 80, 40), "table", "leg")


def render_scene(rng: np.random.Generator, height: int, width: int, scene: int):
    """An image, its object and part maps (uint16) for scene type `scene` (an index of SCENES)."""
    c = Canvas(rng, height, width)
    rows = np.arange(height)[:, None] * np.ones((1, width), bool)
    horizon = height * rng.uniform(0.35, 0.55)
    count = lambda: int(rng.integers(1, 3))
    place = lambda size: rng.uniform(-0.1 * width, width - 0.6 * size)
    if SCENES[scene] == "room":
        c.fill(rows < horizon, (220, 215, 190), "wall", noise=4)
        c.fill(rows >= horizon, (170, 150, 120), "floor", noise=10)
        for _ in range(count()):
            size = width * rng.uniform(0.25, 0.45)
            _table(c, place(size), rng.uniform(horizon + 0.3 * (height - horizon), height), size)
        return c.image, c.objects, c.parts
    c.fill(rows < horizon, (120, 170, 235), "sky", noise=3)
    ground = "road" if SCENES[scene] == "street" else "grass"
    c.fill(
        rows >= horizon,
        (95, 95, 100) if ground == "road" else (70, 140, 60),
        ground,
        noise=4 if ground == "road" else 25,
    )
    if SCENES[scene] == "street":
        for _ in range(count()):
            size = width * rng.uniform(0.25, 0.4)
            _house(c, place(size), horizon + 0.05 * height, size)
        for _ in range(count()):
            size = width * rng.uniform(0.2, 0.35)
            _car(c, place(size), rng.uniform(horizon + 0.3 * (height - horizon), height), size)
    else:
        if rng.random() < 0.5:
            size = width * rng.uniform(0.2, 0.3)
            _house(c, place(size), horizon + 0.05 * height, size)
        for _ in range(count() + 1):
            _tree(
                c,
                rng.uniform(0.05, 0.95) * width,
                rng.uniform(horizon + 0.1 * height, height),
                height * rng.uniform(0.25, 0.45),
            )
    return c.image, c.objects, c.parts


def _texture(rng: np.random.Generator, material: str, height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    if material == "brick":
        course = (rows // 8).astype(int)
        mortar = (rows % 8 < 1.5) | (((cols + 8 * (course % 2)) % 16) < 1.5)
        base = np.where(mortar[..., None], np.array([200, 200, 190]), np.array([160, 70, 50]))
    elif material == "wood":
        grain = np.sin(cols / 3.0 + 2 * np.sin(rows / 15.0)) * 25
        base = np.array([150, 100, 55]) + grain[..., None]
    elif material == "metal":
        base = np.array([170, 175, 185]) + (rows / max(height, 1) * 40)[..., None]
    else:  # fabric: a woven check
        base = np.where(
            (((rows // 4) + (cols // 4)) % 2 == 0)[..., None], np.array([60, 80, 170]), np.array([200, 200, 220])
        )
    return base + rng.normal(0, 6, (height, width, 1))


def render_surfaces(rng: np.random.Generator, height: int, width: int):
    """An image of textured regions (vertical bands of 2-3 materials) and its material map (uint8)."""
    image = np.zeros((height, width, 3), np.float32)
    materials = np.zeros((height, width), np.uint8)
    cuts = np.sort(rng.uniform(0.2, 0.8, int(rng.integers(1, 3))) * width).astype(int)
    for x0, x1 in zip([0, *cuts], [*cuts, width]):
        name = MATERIALS[int(rng.integers(1, len(MATERIALS)))]
        image[:, x0:x1] = _texture(rng, name, height, width)[:, x0:x1]
        materials[:, x0:x1] = M[name]
    materials[:, cuts] = 0  # region boundaries are unlabelled
    return image, materials


def render_texture(rng: np.random.Generator, height: int, width: int, texture: int) -> np.ndarray:
    """An image of one regular pattern (`TEXTURES[texture]`) at a random period (an eighth to a quarter of the short
    side: 8-16 px at the texture stage's 64) and angle, in dark ink on light paper of random hues: as in most
    photographed textures, the pattern is in the lightness (with two colours at random, a from-scratch encoder's C2
    tells the patterns apart no better than chance)."""
    period, angle = min(height, width) * rng.uniform(0.125, 0.25), rng.uniform(0, np.pi)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    u = cols * np.cos(angle) + rows * np.sin(angle) + rng.uniform(0, period)
    v = rows * np.cos(angle) - cols * np.sin(angle) + rng.uniform(0, period)
    name = TEXTURES[texture]
    if name == "banded":
        ink = u % period < period / 2
    elif name == "chequered":
        ink = ((u // (period / 2)) + (v // (period / 2))) % 2 == 0
    elif name == "dotted":
        ink = (u % period - period / 2) ** 2 + (v % period - period / 2) ** 2 < (0.3 * period) ** 2
    elif name == "zigzagged":
        triangle = np.abs((v / period) % 2 - 1)  # 0..1 and back, every 2 periods
        ink = (u + period * triangle) % period < period / 2
    elif name == "grid":
        ink = (u % period < 0.2 * period) | (v % period < 0.2 * period)
    else:  # wavy
        ink = (u + 0.3 * period * np.sin(2 * np.pi * v / (1.5 * period))) % period < period / 2
    dark = rng.integers(0, 256, 3) * rng.uniform(0, 0.35)  # ink: a dark colour of a random hue
    light = 255 - rng.integers(0, 256, 3) * rng.uniform(0, 0.35)  # paper: a light one
    return np.where(ink[..., None], dark, light) + rng.normal(0, 6, (height, width, 1))


def _size(rng: np.random.Generator, min_side: int, max_side: int) -> tuple[int, int]:
    ratio = rng.choice([0.75, 1.0, 1.33, 1.5])
    long = int(rng.integers(min_side, max_side + 1))
    return (int(long / ratio), long) if ratio >= 1 else (long, int(long * ratio))


def generate(
    out: str,
    num_train: int = 240,
    num_val: int = 60,
    seed: int = 0,
    min_side: int = 96,
    max_side: int = 160,
    surface_share: float = 0.3,
    num_textures: tuple[int, int] = (240, 60),
) -> None:
    """Write images, labels, `training.jsonl`, `validation.jsonl`, `tables/` and the texture source's
    `texture_training.jsonl` and `texture_validation.jsonl` (`num_textures` images) under `out`."""
    write_tables(os.path.join(out, "tables"))
    for split, count in (("training", num_train), ("validation", num_val)):
        rng = np.random.default_rng([seed, SPLITS[split]])
        records = []
        for i in range(count):
            height, width = _size(rng, min_side, max_side)
            name = f"{split}/syn_upp_{i:05d}"
            os.makedirs(os.path.join(out, "images", split), exist_ok=True)
            os.makedirs(os.path.join(out, "labels", split), exist_ok=True)
            record = {"fpath_img": f"images/{name}.jpg", "width": width, "height": height}
            if rng.random() < surface_share:
                image, materials = render_surfaces(rng, height, width)
                cv2.imwrite(os.path.join(out, "labels", f"{name}_material.png"), materials)
                record.update(source="surfaces", fpath_material=f"labels/{name}_material.png")
            else:
                scene = int(rng.integers(len(SCENES)))
                image, objects, parts = render_scene(rng, height, width, scene)
                cv2.imwrite(os.path.join(out, "labels", f"{name}_object.png"), objects)
                cv2.imwrite(os.path.join(out, "labels", f"{name}_part.png"), parts)
                record.update(
                    source="scenes",
                    fpath_object=f"labels/{name}_object.png",
                    fpath_part=f"labels/{name}_part.png",
                    scene=scene,
                )
            picture = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
            cv2.imwrite(os.path.join(out, "images", f"{name}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
            records.append(record)
        write_json_lines(os.path.join(out, f"{split}.jsonl"), records)
    for split, count in zip(TEXTURE_SPLITS, num_textures):
        write_json_lines(os.path.join(out, f"texture_{split}.jsonl"), _textures(out, split, count, seed))


def _textures(out: str, split: str, count: int, seed: int) -> list[dict]:
    """`count` texture images of `split` (as many of each texture, in turn), written under out/images/textures."""
    rng = np.random.default_rng([seed, TEXTURE_SPLITS[split]])
    os.makedirs(os.path.join(out, "images", "textures", split), exist_ok=True)
    records = []
    for i in range(count):
        height, width = _size(rng, 64, 128)
        texture = i % len(TEXTURES)
        name = f"images/textures/{split}/syn_texture_{i:05d}.jpg"
        picture = np.clip(render_texture(rng, height, width, texture), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(out, name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        records.append({"fpath_img": name, "texture": texture, "width": width, "height": height})
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/synthetic_upp")
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument(
        "--textures", type=int, nargs=2, default=(240, 60), metavar=("TRAIN", "VAL"), help="texture images per split"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate(args.out, args.train, args.val, args.seed, num_textures=tuple(args.textures))
    print(
        f"wrote {args.train} training and {args.val} validation images, {args.textures[0]} and {args.textures[1]} "
        f"texture images, record lists and label tables to {args.out}"
    )


if __name__ == "__main__":
    main()
