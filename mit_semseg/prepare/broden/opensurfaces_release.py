"""OpenSurfaces from its public release, `opensurfaces-release-0.zip`: Django JSON dumps, no photos, no labels.

What the original's processing script does with the dumps, done here once the archive is unpacked:
- `photos.csv`: the photos with a correct scene category that are not `special`, sorted by
  (num_vertices, scene_category_correct, scene_category_correct_score), descending, ties in the
  dump's order (the script ran under Python 2, where a missing value sorts below every number).
  The split lists' `file_index` counts in this order.
- `photos/<id>.jpg`: each photo, fetched from the OpenSurfaces host (`<host>/<image_orig>`); only
  the ones the split lists use.
- `photos-labels/<id>.png`: an RGB image of height 1024 and width int(1024 * aspect_ratio), filled
  with (0, 0, scene); over it, the photo's shapes that are high quality and not special, most
  vertices first, each triangle filled by Pillow with (substance, name, scene). Substances (those
  that did not fail), names (likewise) and scenes are numbered from 1 in the order of their names.

$MIT_SEMSEG_OPENSURFACES_MIRROR fetches the photos from a mirror of the host instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...data.records import DataError
from ...hub import DownloadError, download
from ...progress import Progress
from .tables import SUBSTANCES, read_split_lists, read_substance_colors

PHOTO_HOST = "http://labelmaterial.s3.amazonaws.com"
RELEASE_MARKER = "photos.photo.json"
PHOTO_LIST = "photos.csv"
LABEL_HEIGHT = 1024
DOWNLOAD_THREADS = 16
MAX_NAMED = 10  # failures named one by one; the rest are counted
# The fields each dump must have, as the original's script reads them.
DUMPS = {
    "photos.photo.json": (
        "image_orig",
        "aspect_ratio",
        "scene_category",
        "scene_category_correct",
        "scene_category_correct_score",
        "special",
        "num_vertices",
    ),
    "photos.photoscenecategory.json": ("name",),
    "shapes.materialshape.json": (
        "photo",
        "substance",
        "name",
        "vertices",
        "triangles",
        "num_vertices",
        "special",
        "high_quality",
    ),
    "shapes.shapesubstance.json": ("name", "fail"),
    "shapes.shapename.json": ("name", "fail"),
}
CSV_COLUMNS = ("photo_id", "scene_category_name", "scene_category_score", "whitebalanced", "whitebalanced_score", "fov")


def photo_host() -> str:
    return os.environ.get("MIT_SEMSEG_OPENSURFACES_MIRROR", PHOTO_HOST).rstrip("/")


def find_dumps(folder: Path) -> Path | None:
    """The folder holding the dumps: `folder` itself or, as the archive unpacks, a folder in it."""
    candidates = [folder, *sorted(d for d in folder.iterdir() if d.is_dir())] if folder.is_dir() else []
    return next((d for d in candidates if (d / RELEASE_MARKER).is_file()), None)


def load_dump(folder: Path, name: str) -> list[dict]:
    """A Django JSON dump as a list of its entries' fields, with `pk`; a missing field names the file and entry."""
    path = folder / name
    if not path.is_file():
        raise DataError(f"OpenSurfaces dump not found: {path}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        rows = [{**entry["fields"], "pk": entry["pk"]} for entry in entries]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise DataError(
            f'{path}: not a Django JSON dump (a list of {{"pk": .., "fields": {{..}}}}): {type(err).__name__}: {err}'
        ) from None
    for row in rows:
        missing = [f for f in DUMPS[name] if f not in row]
        if missing:
            raise DataError(f"{path}: entry pk {row['pk']} has no {', '.join(missing)}")
    return rows


def _python2_key(*values) -> tuple:
    """A sort key ordering values as Python 2 did, a missing value (None) below every number."""
    return tuple((v is not None, v if v is not None else 0) for v in values)


def photo_order(photos: list[dict]) -> list[dict]:
    """The photos the original keeps, in its order: the order of `photos.csv`."""
    kept = [p for p in photos if p["scene_category_correct"] and not p["special"]]
    return sorted(
        kept,
        key=lambda p: _python2_key(p["num_vertices"], p["scene_category_correct"], p["scene_category_correct_score"]),
        reverse=True,
    )


def shapes_by_photo(shapes: list[dict]) -> dict[int, list[dict]]:
    """Each photo's shapes that are drawn, in drawing order (most vertices first, ties in the dump's order)."""
    kept = [s for s in shapes if not s["special"] and s["high_quality"]]
    by_photo: dict[int, list[dict]] = {}
    for shape in sorted(kept, key=lambda s: _python2_key(s["num_vertices"]), reverse=True):
        by_photo.setdefault(shape["photo"], []).append(shape)
    return by_photo


def colour_codes(entries: list[dict], skip_failed: bool) -> dict[int, int]:
    """pk -> colour value: 1, 2, ... in the order of the names (ties in the dump's order)."""
    kept = [e for e in entries if not (skip_failed and e["fail"])]
    return {e["pk"]: value for value, e in enumerate(sorted(kept, key=lambda e: e["name"]), start=1)}


def check_substances(red: dict[int, int], dump: Path) -> None:
    """The dump's substance colours must be opensurfaces_substance_colors.csv's: label_assignment.csv counts in them."""
    shipped = {pk: value for pk, (value, _) in read_substance_colors().items()}
    if red != shipped:
        differ = sorted(set(red.items()) ^ set(shipped.items()))[:5]
        raise DataError(
            f"{dump}: its substances give other red values than {SUBSTANCES} (substance id, red: "
            f"{differ}); label_assignment.csv would misread the materials"
        )


def render_labels(photo: dict, shapes: list[dict], red: dict, green: dict, blue: dict):
    """The photo's label image (a PIL RGB image), as the original's script draws it."""
    from PIL import Image, ImageDraw  # an optional extra: pip install 'mit_semseg[broden]'

    width, height = int(LABEL_HEIGHT * photo["aspect_ratio"]), LABEL_HEIGHT
    scene = blue.get(photo["scene_category"], 0)
    image = Image.new("RGB", (width, height), (0, 0, scene))
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        colour = (red.get(shape["substance"], 0), green.get(shape["name"], 0), scene)
        try:
            coords = [float(v) for v in shape["vertices"].split(",")]
            points = [(int(x * width), int(y * height)) for x, y in zip(coords[::2], coords[1::2])]
            corners = [int(v) for v in shape["triangles"].split(",")]
            for t in range(0, len(corners) - 2, 3):
                draw.polygon([points[i] for i in corners[t : t + 3]], fill=colour)
        except (ValueError, IndexError, AttributeError) as err:
            raise DataError(
                f"shape {shape['pk']} of photo {photo['pk']}: bad vertices or triangles ({type(err).__name__}: {err})"
            ) from None
    return image


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_photo_list(path: Path, photos: list[dict], scenes: dict[int, str]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in photos:
        writer.writerow(
            (
                p["pk"],
                scenes.get(p["scene_category"], ""),
                p["scene_category_correct_score"],
                p.get("whitebalanced"),
                p.get("whitebalanced_score"),
                p.get("fov"),
            )
        )
    _write_atomically(path, text.getvalue().encode("utf-8"))


def _summarise(failures: list[str], total: int) -> str:
    named = "\n  ".join(failures[:MAX_NAMED])
    more = f"\n  ... and {len(failures) - MAX_NAMED} more" if len(failures) > MAX_NAMED else ""
    return (
        f"{len(failures)} problems with the {total} photos the split lists use (run again to retry):\n  {named}{more}"
    )


def fetch_photos(photos: list[dict], folder: Path, progress: bool = True) -> list[str]:
    """Fetch the photos not yet in `folder` (resuming partial ones) over several threads; returns the failures.

    When the host cannot be reached before any photo arrived, the rest are not tried: one failure
    says so, within seconds.
    """
    host, reached, unreachable = photo_host(), threading.Event(), []

    def one(photo: dict) -> str:
        if unreachable and not reached.is_set():
            return ""
        url = f"{host}/{photo['image_orig']}"
        try:
            download(url, str(folder / f"{photo['pk']}.jpg"), progress=False)
        except DownloadError as err:
            cause = err.__cause__
            if (
                not reached.is_set()
                and isinstance(cause, (urllib.error.URLError, OSError))
                and not isinstance(cause, urllib.error.HTTPError)
            ):
                unreachable.append(err)
                return ""
            return f"photo {photo['pk']}: {err}"
        reached.set()
        return ""

    with (
        ThreadPoolExecutor(DOWNLOAD_THREADS) as pool,
        Progress(len(photos), "OpenSurfaces photos", unit="photo", enabled=progress) as bar,
    ):
        failures = []
        for failure in pool.map(one, photos):
            failures += [failure] if failure else []
            bar.update()
    if unreachable and not reached.is_set():
        missing = sum(not (folder / f"{p['pk']}.jpg").is_file() for p in photos)
        failures.insert(
            0,
            f"cannot reach the photos' host {host} ($MIT_SEMSEG_OPENSURFACES_MIRROR points at a "
            f"mirror), {missing} photos not fetched: {unreachable[0]}",
        )
    return failures


def _write_labels(chosen: list[dict], labels: Path, drawing, progress: bool) -> list[str]:
    """Each chosen photo's label image as `labels`/<pk>.png, unless there already (`drawing(photo)`: its shapes and
    colour codes for `render_labels`); returns the failures."""

    def label(photo: dict) -> str:
        try:
            image = render_labels(photo, *drawing(photo))
        except DataError as err:
            return str(err)
        encoded = io.BytesIO()
        image.save(encoded, format="PNG")
        _write_atomically(labels / f"{photo['pk']}.png", encoded.getvalue())
        return ""

    failures = []
    todo = [p for p in chosen if not (labels / f"{p['pk']}.png").is_file()]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow draws and encodes without the GIL
        with Progress(len(todo), "OpenSurfaces labels", unit="label", enabled=progress) as bar:
            for failure in pool.map(label, todo):
                failures += [failure] if failure else []
                bar.update()
    return failures


def complete(folder: Path, splits: Path, progress: bool = True) -> str:
    """From the unpacked dumps in `folder` (or a folder in it): the photo list, the label images and the photos
    the split lists use, in `folder`.

    Idempotent: labels and photos already there are kept. Returns what was done; DataError lists
    what could not be done.
    """
    source = find_dumps(folder)
    if source is None:
        raise DataError(f"no {RELEASE_MARKER} in {folder}: not OpenSurfaces' release")
    dumps = source / RELEASE_MARKER
    photos = photo_order(load_dump(source, "photos.photo.json"))
    scenes = load_dump(source, "photos.photoscenecategory.json")
    write_photo_list(folder / PHOTO_LIST, photos, {s["pk"]: s["name"] for s in scenes})
    red = colour_codes(load_dump(source, "shapes.shapesubstance.json"), skip_failed=True)
    check_substances(red, source / "shapes.shapesubstance.json")
    green = colour_codes(load_dump(source, "shapes.shapename.json"), skip_failed=True)
    blue = colour_codes(scenes, skip_failed=False)
    shapes = shapes_by_photo(load_dump(source, "shapes.materialshape.json"))
    wanted = sorted({e.file_index for e in read_split_lists(splits) if e.dataset == "os"})
    beyond = [i for i in wanted if i >= len(photos)]
    failures = (
        [
            f"{len(beyond)} split-list entries (file_index {beyond[0]}..{beyond[-1]}) are beyond the "
            f"{len(photos)} photos of {dumps}"
        ]
        if beyond
        else []
    )
    chosen = [photos[i] for i in wanted if i < len(photos)]
    labels = folder / "photos-labels"
    failures += _write_labels(chosen, labels, lambda photo: (shapes.get(photo["pk"], []), red, green, blue), progress)
    failures = fetch_photos(chosen, folder / "photos", progress) + failures
    if failures:
        raise DataError(_summarise(failures, len(chosen)))
    return (
        f"{len(photos)} photos listed in {folder / PHOTO_LIST}; the {len(chosen)} the split lists use are "
        f"in {folder / 'photos'} with their labels in {labels}"
    )
