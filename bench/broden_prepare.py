"""Broden+ preparation: images per second, one process against every core, and what preparing once saves
each training iteration.

    python bench/broden_prepare.py [--images 24] [--workers N]

Writes raw trees in the four source formats (mit_semseg.testing.broden_raw) with `--images` images per source
at typical raw sizes (ADE20K 1024x768, Pascal 500x375, OpenSurfaces 2048x1536, DTD 640x480: assumed,
not measured on the real sets), prepares them with 1 process and with `--workers`, and extrapolates
to the full Broden+ (the original's split lists, plus DTD). Then it times reading one training
sample from the prepared layout against decoding it from the raw files, as a dataset that does not
prepare once must at every iteration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, print_machine, write_results

from mit_semseg.data.imageio import read_image
from mit_semseg.data.label_tables import read_label_tables
from mit_semseg.data.multitask import read_maps, read_multitask_records
from mit_semseg.prepare.broden import ade20k_full, opensurfaces, pascal
from mit_semseg.prepare.broden.prepare import Settings, prepare, target_size
from mit_semseg.prepare.broden.tables import Assigner, read_assignment, read_split_lists
from mit_semseg.testing.broden_raw import (
    write_ade20k,
    write_dtd,
    write_opensurfaces_downloaded,
    write_pascal,
    write_split_lists,
)

SIZES = {"ade20k": (768, 1024), "pascal": (375, 500), "os": (1536, 2048), "dtd": (480, 640)}  # (height, width)


def _blocks(rng, h, w, labels):
    """A label map of random rectangles drawn from `labels`: compressible like real annotations."""
    out = np.full((h, w), labels[0], np.int64)
    for _ in range(12):
        y, x = rng.integers(0, h), rng.integers(0, w)
        out[y : y + rng.integers(h // 8, h // 2), x : x + rng.integers(w // 8, w // 2)] = rng.choice(labels)
    return out


def _photo(rng, h, w):
    """A smooth image with noise (JPEG sizes like a photograph's, not like pure noise)."""
    y, x = np.mgrid[:h, :w]
    base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (w + h))], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def write_tree(root: Path, n: int) -> None:
    """`n` images of each Broden+ source in its raw layout, and split lists using them, under `root` (longer than most
    functions: one literal description per source, read in turn)."""
    rng = np.random.default_rng(0)
    (h, w), ade = SIZES["ade20k"], {}
    for i in range(n):
        ade[i] = {
            "folder": "ADE20K_2016_07_26/images/training/s/street",
            "image": _photo(rng, h, w),
            "objects": _blocks(rng, h, w, [2420, 312, 1831, 401]),
            "parts": _blocks(rng, h, w, [0, 774, 1433]),
        }
    write_ade20k(root / "raw", ade)
    (h, w) = SIZES["pascal"]
    person = np.zeros((h, w), bool)
    person[h // 4 :, w // 4 : w // 2] = True
    write_pascal(
        root / "raw",
        [
            {
                "id": f"2008_{i:06d}",
                "image": _photo(rng, h, w),
                "context": _blocks(rng, h, w, [284, 59, 360, 0]),
                "objects": [{"class": "person", "parts": [("head", person), ("lfoot", ~person)]}],
            }
            for i in range(n)
        ],
    )
    (h, w) = SIZES["os"]  # labels are rendered 1024 high, whatever the photo's size
    write_opensurfaces_downloaded(
        root / "raw",
        [
            {"photo_id": i, "image": _photo(rng, h, w), "substance": _blocks(rng, 1024, 1024 * w // h, [43, 3, 29, 0])}
            for i in range(n)
        ],
    )
    (h, w) = SIZES["dtd"]
    write_dtd(
        root / "raw",
        [
            {"name": f"banded/banded_{i:04d}.jpg", "image": _photo(rng, h, w), "textures": ["banded"], "split": "train"}
            for i in range(n)
        ],
    )

    def entries(dataset: str, indices: range) -> list[dict]:
        width, height = target_size(SIZES[dataset][1], SIZES[dataset][0], Settings())
        return [{"dataset": dataset, "file_index": i, "width": width, "height": height} for i in indices]

    train, val = range(n - n // 5), range(n - n // 5, n)  # a fifth for validation
    write_split_lists(
        root / "splits",
        {
            "broden_ade20k_pascal_train.jsonl.gz": entries("ade20k", train) + entries("pascal", train),
            "broden_ade20k_pascal_val.jsonl.gz": entries("ade20k", val) + entries("pascal", val),
            "broden_os_train.jsonl.gz": entries("os", train),
            "broden_os_val.jsonl.gz": entries("os", val),
        },
    )


def time_prepare(root: Path, workers: int) -> float:
    out = root / f"out{workers}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = prepare(root / "raw", out, Settings(), root / "splits", workers, progress=False)
    seconds = time.perf_counter() - started
    assert not summary["problems"] and not summary["notes"], (summary["problems"] + summary["notes"])[:3]
    return seconds


def sample_read_ms(root: Path, n: int) -> tuple[float, float]:
    """Median ms to read one ADE20K/Pascal/OS training sample: prepared files vs decoding the raw ones."""
    tables = read_label_tables()
    records = [
        r
        for split in ("training", "validation")
        for r in read_multitask_records(root / "out1" / f"{split}.jsonl", root / "out1", tables)
    ]
    prepared = []
    for r in records:
        started = time.perf_counter()
        read_maps(r, tables, read_image(r["fpath_img"]).shape[:2])
        prepared.append(time.perf_counter() - started)
    raw, sources = (
        [],
        {
            "ade20k": ade20k_full.read(root / "raw"),
            "pascal": pascal.read(root / "raw"),
            "os": opensurfaces.read(root / "raw"),
        },
    )
    assigner = Assigner(
        read_assignment(),
        {
            (name, category): words
            for name, source in sources.items()
            for category, words in source.vocabularies.items()
        },
    )
    readers = {"ade20k": ade20k_full, "pascal": pascal, "os": opensurfaces}
    for name, source in sources.items():
        for item in source.items[:n]:  # the ADE20K index lists 22,210 images; the tree holds n
            started = time.perf_counter()
            image = read_image(item.image)
            readers[name].read_labels(item, image, assigner)
            raw.append(time.perf_counter() - started)
    return 1000 * statistics.median(prepared), 1000 * statistics.median(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="images per source")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    full = sum(1 for _ in read_split_lists()) + 5640  # DTD has 5640 images
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_tree(root, args.images)
        total = 4 * args.images
        one, many = time_prepare(root, 1), time_prepare(root, args.workers)
        prepared_ms, raw_ms = sample_read_ms(root, args.images)
        prepared_bytes = sum(p.stat().st_size for p in (root / "out1").rglob("*") if p.is_file())
    rows = {
        "images": total,
        "one_process_s": one,
        "workers": args.workers,
        "workers_s": many,
        "images_per_s_one": total / one,
        "images_per_s_workers": total / many,
        "full_broden_hours_workers": full / (total / many) / 3600,
        "mb_per_image": prepared_bytes / total / 1e6,
        "sample_read_prepared_ms": prepared_ms,
        "sample_read_raw_ms": raw_ms,
    }
    print(
        f"{total} images (4 sources x {args.images}): 1 process {one:.1f} s ({total / one:.1f} images/s); "
        f"{args.workers} processes {many:.1f} s ({total / many:.1f} images/s, {one / many:.2f}x)"
    )
    print(
        f"the full Broden+ ({full} images) at that rate: {rows['full_broden_hours_workers']:.1f} h "
        f"with {args.workers} processes; {rows['mb_per_image']:.2f} MB written per image "
        f"({rows['mb_per_image'] * full / 1000:.1f} GB for the full set, with these synthetic photographs)"
    )
    print(
        f"one training sample: prepared {prepared_ms:.1f} ms, decoded from the raw files {raw_ms:.1f} ms "
        f"({raw_ms / prepared_ms:.1f}x)"
    )
    print(f"results: {write_results('broden_prepare', {'machine': info, **rows})}")


if __name__ == "__main__":
    main()
