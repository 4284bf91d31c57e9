"""Prepare Broden+ from the raw source datasets into the multi-task layout, once, on disk.

Each image of the original's split lists is read in its source's format, its labels mapped
through label_assignment.csv, image and labels shrunk to the size limit (labels by OpenCV's
nearest neighbour, as the original's `resize_images.py`) and written as `<dataset>/<name>.jpg` with `_object.png`,
`_part.png` (16-bit) and `_material.png` (8-bit). The record lists are `training.jsonl` and
`validation.jsonl` (sources `ade20k_pascal` and `os`, as the original trains them) and
`textures.jsonl` (DTD, image-level textures only), and from it the texture stage's lists
`texture_training.jsonl` (DTD's split 1 train + val) and `texture_validation.jsonl` (its test), each
image's texture its DTD category (its folder). Every file is written under a temporary name
and renamed when whole; a journal lets a second run skip the images already done.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ...data.imageio import read_image
from ...data.label_tables import read_label_tables
from ...data.records import DataError, write_json_lines
from ...data.transforms import resize_label
from ...progress import Progress
from . import ade20k_full, dtd, opensurfaces, pascal
from .raw import MissingSource, RawItem
from .tables import SPLITS, Assigner, Vocabulary, read_assignment, read_split_lists

SOURCES = {"ade20k": ade20k_full, "pascal": pascal, "os": opensurfaces, "dtd": dtd}
NEEDS_SCIPY = ("ade20k", "pascal")
TRAINING_SOURCE = {"ade20k": "ade20k_pascal", "pascal": "ade20k_pascal", "os": "os", "dtd": "dtd"}
MAP_SUFFIX = {"object": "_object.png", "part": "_part.png", "material": "_material.png"}
LISTS = {"training": "training.jsonl", "validation": "validation.jsonl", "textures": "textures.jsonl"}
TEXTURE_LISTS = {"texture_training.jsonl": ("train", "val"), "texture_validation.jsonl": ("test",)}  # DTD split 1
JOURNAL, SETTINGS, SUMMARY = ".journal.jsonl", "prepare.json", "summary.json"
JPEG_QUALITY = 95
MAX_SHOWN = 20


@dataclass(frozen=True)
class Settings:
    limit: int = 512  # the largest size allowed for the chosen side
    side: str = "short"  # short: the shorter side (the original's split lists); long: both sides


@dataclass(frozen=True)
class Job:
    item: RawItem
    split: str  # training, validation or textures
    listed: tuple[int, int] | None = None  # (width, height) in the original's split list


@dataclass
class Outcome:
    key: str
    split: str
    dataset: str
    record: dict | None = None
    labels: dict[str, list[int]] = field(default_factory=dict)  # task -> labels present
    unassigned: dict[str, int] = field(default_factory=dict)  # "category/raw label" -> pixels, made 0
    problem: str = ""
    note: str = ""


def target_size(width: int, height: int, settings: Settings) -> tuple[int, int]:
    """(width, height) shrunk, aspect kept, so the chosen side is at most the limit; never enlarged.

    The short side's rule is the original's arithmetic: `w >= h > limit` gives (round(w / h * limit), limit).
    """
    limit = settings.limit
    if settings.side == "short":
        if width >= height > limit:
            return round(width / height * limit), limit
        if height >= width > limit:
            return limit, round(height / width * limit)
        return width, height
    if max(width, height) <= limit:
        return width, height
    scale = limit / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _encode(extension: str, array: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(extension, array, list(params))
    if not ok:
        raise DataError(f"cannot encode a {array.shape} {array.dtype} array as {extension}")
    return data.tobytes()


def _write_all(files: dict[str, bytes]) -> None:
    """Write every file under a temporary name, then rename them all: no half-written file is left."""
    for path, data in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(f"{path}.tmp", "wb") as f:
            f.write(data)
    for path in files:
        os.replace(f"{path}.tmp", path)


class Preparer:
    """Prepares one image: read, label, shrink, write; what went wrong is named in the outcome."""

    def __init__(self, out: str, settings: Settings, vocabularies: dict[tuple[str, str], Vocabulary]) -> None:
        self.out, self.settings = out, settings
        self.assigner = Assigner(read_assignment(), vocabularies)
        self.textures = {name: i for i, name in enumerate(read_label_tables().textures)}

    def __call__(self, job: Job) -> Outcome:
        item = job.item
        outcome = Outcome(item.key, job.split, item.dataset)
        self.assigner.unassigned.clear()
        try:
            outcome.record, outcome.labels, outcome.note = self._prepare(job)
            outcome.unassigned = {
                f"{category}/{raw}": pixels for (_, category, raw), pixels in sorted(self.assigner.unassigned.items())
            }
        except (DataError, cv2.error) as err:
            outcome.problem = str(err) if isinstance(err, DataError) else f"{item.image}: {err}"
        return outcome

    def _prepare(self, job: Job) -> tuple[dict, dict[str, list[int]], str]:
        item = job.item
        image = read_image(item.image)
        maps, scene = SOURCES[item.dataset].read_labels(item, image, self.assigner)
        textures = [self._texture(name, item) for name in item.textures]
        height, width = image.shape[:2]
        size, note = target_size(width, height, self.settings), ""
        if job.listed and self.settings.side == "short" and size != job.listed:
            if max(abs(a - b) for a, b in zip(size, job.listed)) <= 1:
                size = job.listed  # the original rounded the other way: keep its size
            else:
                note = (
                    f"{item.image}: {width}x{height}, prepared at {size[0]}x{size[1]}, but the split list has "
                    f"{job.listed[0]}x{job.listed[1]}"
                )
        record = {
            "fpath_img": f"{item.stem}.jpg",
            "width": size[0],
            "height": size[1],
            "source": TRAINING_SOURCE[item.dataset],
            "dataset": item.dataset,
            "file_index": item.file_index,
        }
        files = {os.path.join(self.out, record["fpath_img"]): self._image_bytes(item.image, image, size)}
        labels = {}
        for task, label in maps.items():
            label = resize_label(label, size[1], size[0])  # OpenCV's nearest neighbour, as the original
            if task == "material":
                label = label.astype(np.uint8)
            record[f"fpath_{task}"] = f"{item.stem}{MAP_SUFFIX[task]}"
            files[os.path.join(self.out, record[f"fpath_{task}"])] = _encode(".png", label)
            labels[task] = [int(v) for v in np.unique(label) if v]
        if item.dataset in ("ade20k", "pascal"):
            record["scene"] = scene
            labels["scene"] = [scene] if scene >= 0 else []
        if item.dataset == "dtd":
            record.update(texture=textures, split=item.split)
            labels["texture"] = textures
        _write_all(files)
        return record, labels, note

    def _texture(self, name: str, item: RawItem) -> int:
        if name not in self.textures:
            raise DataError(f"{item.image}: unknown texture {name!r} (not in texture.csv)")
        return self.textures[name]

    @staticmethod
    def _image_bytes(path: str, image: np.ndarray, size: tuple[int, int]) -> bytes:
        """The raw JPEG itself when its size stays, else the shrunk image as JPEG."""
        if size == (image.shape[1], image.shape[0]) and path.lower().endswith((".jpg", ".jpeg")):
            with open(path, "rb") as f:
                return f.read()
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return _encode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))


_worker: Preparer | None = None


def _start_worker(out: str, settings: Settings, vocabularies: dict[tuple[str, str], Vocabulary]) -> None:
    global _worker
    cv2.setNumThreads(1)
    _worker = Preparer(out, settings, vocabularies)


def _run_in_worker(job: Job) -> Outcome:
    return _worker(job)


def _scipy_missing() -> str:
    if importlib.util.find_spec("scipy") is None:
        return "reading its .mat files needs scipy: pip install 'mit_semseg[broden]'"
    return ""


def collect_jobs(raw: Path, splits: Path) -> tuple[list[Job], list[str], dict[tuple[str, str], Vocabulary]]:
    """The images to prepare, in list order; the problems that leave out whole sources or entries; and
    the vocabulary of each (dataset, category) of raw labels."""
    problems, found, vocabularies = [], {}, {}
    no_scipy = _scipy_missing()
    for name, reader in SOURCES.items():
        if name in NEEDS_SCIPY and no_scipy:
            problems.append(f"{name}: left out: {no_scipy}")
            continue
        try:
            source = reader.read(raw)
        except (MissingSource, DataError) as err:
            problems.append(f"{name}: left out: {err}")
            continue
        found[name] = source.items
        vocabularies.update({(name, category): words for category, words in source.vocabularies.items()})
    jobs, beyond = [], defaultdict(list)
    for entry in read_split_lists(splits):
        if entry.dataset not in found:
            continue
        items = found[entry.dataset]
        if 0 <= entry.file_index < len(items):
            jobs.append(Job(items[entry.file_index], entry.split, (entry.width, entry.height)))
        else:
            beyond[entry.dataset].append(entry.file_index)
    for name, indices in beyond.items():
        problems.append(
            f"{name}: {len(indices)} split-list entries (file_index {min(indices)}..{max(indices)}) "
            f"are beyond the {len(found[name])} images of the raw dataset"
        )
    jobs += [Job(item, "textures") for item in found.get("dtd", [])]
    return jobs, problems, vocabularies


def _check_settings(out: Path, settings: Settings) -> None:
    path = out / SETTINGS
    wanted = {"limit": settings.limit, "side": settings.side}
    if path.is_file():
        before = json.loads(path.read_text())
        if before != wanted:
            raise DataError(f"{out} was prepared with {before}, not {wanted}: use another folder or remove it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted) + "\n")


def _read_journal(out: Path) -> dict[str, Outcome]:
    """The outcomes of images finished by earlier runs whose files are all still there."""
    done = {}
    path = out / JOURNAL
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            outcome = Outcome(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by an interrupted run: that image is done again
        files = [v for k, v in outcome.record.items() if k.startswith("fpath_")]
        if all((out / f).is_file() for f in files):
            done[outcome.key] = outcome
    return done


def _run(jobs: list[Job], out: Path, settings: Settings, vocabularies: dict, workers: int):
    """Outcomes of `jobs`, in completion order, over `workers` processes."""
    if workers <= 1:
        preparer = Preparer(str(out), settings, vocabularies)
        yield from map(preparer, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, _start_worker, (str(out), settings, vocabularies)) as pool:
        yield from pool.imap_unordered(_run_in_worker, jobs, chunksize=4)


def prepare(
    raw: str | os.PathLike,
    out: str | os.PathLike,
    settings: Settings = Settings(),
    splits: str | os.PathLike = SPLITS,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Prepare every image the split lists (and DTD) name; returns the summary also written to summary.json."""
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise DataError(f"raw folder not found: {raw}")
    _check_settings(out, settings)
    for name in SOURCES:  # files a killed run left half written
        for leftover in (out / name).rglob("*.tmp"):
            leftover.unlink()
    jobs, problems, vocabularies = collect_jobs(raw, Path(splits))
    done = _read_journal(out)
    outcomes = dict(done)
    pending = [job for job in jobs if job.item.key not in done]
    workers = min(workers or os.cpu_count() or 1, max(1, len(pending)))
    prepared_now = 0
    with (
        open(out / JOURNAL, "a", encoding="utf-8") as journal,
        Progress(len(pending), "preparing Broden+", unit="img", enabled=progress) as bar,
    ):
        for outcome in _run(pending, out, settings, vocabularies, workers):
            outcomes[outcome.key] = outcome
            if outcome.record is not None:
                journal.write(json.dumps(outcome.__dict__) + "\n")
                journal.flush()
                prepared_now += 1
            bar.update()
    summary = summarise(jobs, outcomes, problems, prepared_now, settings, vocabularies)
    lists = {
        name: [outcomes[j.item.key].record for j in jobs if j.split == split and outcomes[j.item.key].record]
        for split, name in LISTS.items()
    }
    lists.update(texture_lists(lists["textures.jsonl"]))
    for name, records in lists.items():
        if records:
            write_json_lines(out / name, records)
        elif (out / name).exists():
            (out / name).unlink()  # an earlier run's list would name what this run left out
    write_json_lines(out / SUMMARY, [summary])
    return summary


def texture_lists(records: list[dict]) -> dict[str, list[dict]]:
    """The texture stage's record lists (`TEXTURE_LISTS`) from the DTD records: `fpath_img`, `texture` (the label of
    the image's DTD category, the folder it is in), `width`, `height`."""
    label = {name: i for i, name in enumerate(read_label_tables().textures)}
    return {
        name: [
            {
                "fpath_img": r["fpath_img"],
                "texture": label[r["fpath_img"].split("/")[1]],
                "width": r["width"],
                "height": r["height"],
            }
            for r in records
            if r["split"] in splits
        ]
        for name, splits in TEXTURE_LISTS.items()
    }


def summarise(
    jobs: list[Job],
    outcomes: dict[str, Outcome],
    problems: list[str],
    prepared_now: int,
    settings: Settings,
    vocabularies: dict[tuple[str, str], Vocabulary],
) -> dict:
    """Images per dataset and split, labels present per task, raw labels made 0 for want of a row, every problem."""
    problems, notes = list(problems), []
    images: dict[str, Counter] = defaultdict(Counter)
    labels: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    unassigned: dict[tuple[str, str, int], Counter] = defaultdict(Counter)
    for job in jobs:
        o = outcomes[job.item.key]
        images[f"{o.dataset} {job.split}"]["prepared" if o.record else "skipped"] += 1
        if o.record:
            for task, present in o.labels.items():
                labels[job.split][task].update(present)
            for key, pixels in o.unassigned.items():
                category, raw = key.split("/")
                unassigned[o.dataset, category, int(raw)].update(images=1, pixels=pixels)
        problems += [o.problem] if o.problem else []
        notes += [o.note] if o.note else []
    return {
        "settings": settings.__dict__,
        "prepared_now": prepared_now,
        "images": {k: dict(v) for k, v in images.items()},
        "labels": {
            split: {task: {str(k): v for k, v in sorted(c.items())} for task, c in tasks.items()}
            for split, tasks in labels.items()
        },
        "unassigned": [
            {"dataset": d, "category": c, "raw_label": r, "raw_name": vocabularies[d, c][r], **counts}
            for (d, c, r), counts in sorted(unassigned.items())
        ],
        "problems": problems,
        "notes": notes,
    }


def format_summary(summary: dict, out: str | os.PathLike) -> str:
    tables = read_label_tables()
    sizes = {
        "object": len(tables.objects) - 1,
        "part": len(tables.parts) - 1,
        "scene": len(tables.scenes),
        "material": len(tables.materials) - 1,
        "texture": len(tables.textures),
    }
    s = summary["settings"]
    lines = [
        f"Broden+ in {out} ({s['side']} side at most {s['limit']} px; {summary['prepared_now']} images "
        "prepared by this run)",
        f"  {'dataset split':<22}{'images':>8}{'skipped':>9}",
    ]
    for name, count in sorted(summary["images"].items()):
        lines.append(f"  {name:<22}{count.get('prepared', 0):>8}{count.get('skipped', 0):>9}")
    for split, tasks in summary["labels"].items():
        present = ", ".join(f"{task} {len(c)}/{sizes[task]}" for task, c in tasks.items())
        lines.append(f"  labels present in {split}: {present}")
    unassigned = [
        f"{u['dataset']} {u['category']} {u['raw_label']} {u['raw_name']!r}: {u['images']} images, {u['pixels']} pixels"
        for u in summary["unassigned"]
    ]
    for title, entries in (
        ("raw labels without a row in label_assignment.csv, prepared as 0 (not used) as the original does", unassigned),
        ("problems (left out)", summary["problems"]),
        ("notes (prepared anyway)", summary["notes"]),
    ):
        if entries:
            lines.append(f"{len(entries)} {title}:")
            lines += [f"  {p}" for p in entries[:MAX_SHOWN]]
            if len(entries) > MAX_SHOWN:
                lines.append(f"  ... and {len(entries) - MAX_SHOWN} more in {Path(out) / SUMMARY}")
    return "\n".join(lines)
