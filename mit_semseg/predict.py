"""`test.py`: segment images with a trained or released model and write pictures and label files."""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import cv2
import numpy as np
import torch
from tqdm import tqdm

from . import zoo
from .config import ConfigError, load_config
from .data.imageio import read_image
from .data.label_tables import LabelTables
from .data.records import DataError
from .hub import DownloadError
from .models import CheckpointError
from .precision import describe_device
from .segmenter import Segmenter
from .unified_evaluation import prediction_panels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_SHARE = 0.001


def find_images(path: str) -> tuple[list[str], str]:
    """Images named by `path` (a file, a folder searched recursively, or a glob) and the folder they are under."""
    if os.path.isfile(path):
        return [path], os.path.dirname(path)
    if os.path.isdir(path):
        found = [os.path.join(d, f) for d, _, files in os.walk(path) for f in files
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        return sorted(found), path
    found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
    return found, os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in found]) if found else ""


def write_outputs(image: np.ndarray, pred: np.ndarray, stem: str, segmenter: Segmenter) -> None:
    """`<stem>.png`: image | coloured prediction; `<stem>_label.png`: class index + 1, the ADE20K format."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    picture = np.concatenate([image, segmenter.colorize(pred)], axis=1).astype(np.uint8)
    cv2.imwrite(f"{stem}.png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    dtype = np.uint8 if len(segmenter.class_names) < 256 else np.uint16
    cv2.imwrite(f"{stem}_label.png", (pred + 1).astype(dtype))


def write_multitask_outputs(image: np.ndarray, pred: dict, stem: str, tables: LabelTables) -> list[str]:
    """A UPP model's files: `<stem>.png` (image with the top scene | objects | parts | materials),
    `<stem>_object.png`, `<stem>_part.png` (16-bit table labels), `<stem>_material.png` (8-bit) and
    `<stem>.json` (the top-5 scenes with probabilities, the shares of objects and materials); returns the
    lines to print."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    picture = np.concatenate(prediction_panels(image, pred, tables), axis=1).astype(np.uint8)
    cv2.imwrite(f"{stem}.png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    for task, dtype in (("object", np.uint16), ("part", np.uint16), ("material", np.uint8)):
        cv2.imwrite(f"{stem}_{task}.png", pred[task].astype(dtype))
    top = np.argsort(-pred["scene"])[:5]
    summary = {"scenes": [{"name": tables.scenes[i], "probability": float(pred["scene"][i])} for i in top],
               "objects": shares(pred["object"], tables.objects),
               "materials": shares(pred["material"], tables.materials)}
    with open(f"{stem}.json", "w") as f:
        json.dump(summary, f, indent=1)
    scenes = ", ".join(f"{s['name']} {100 * s['probability']:.1f}%" for s in summary["scenes"][:3])
    return [f"  scene: {scenes}"] + describe(pred["object"], tables.objects)


def shares(labels: np.ndarray, names) -> dict[str, float]:
    """The share of the image each label covers (above 0.1%), largest first."""
    counts = np.bincount(labels.ravel(), minlength=len(names))
    share = counts / labels.size
    return {names[c]: float(share[c]) for c in np.argsort(-counts) if share[c] > MIN_SHARE}


def describe(pred: np.ndarray, names) -> list[str]:
    """The classes covering more than 0.1% of the image, largest first, with their shares."""
    return [f"  {name}: {100 * share:.2f}%" for name, share in shares(pred, names).items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Segment images; writes <name>.png (image | prediction) and "
                                     "<name>_label.png (class index + 1) into TEST.result.",
                                     epilog="Examples: python test.py --imgs photos/ --cfg config/X.yaml; "
                                     "python test.py --model ade20k-resnet50dilated-ppm_deepsup --imgs a.jpg")
    parser.add_argument("--imgs", required=True, help="an image, a folder (searched recursively) or a glob")
    parser.add_argument("--cfg", metavar="FILE", help="config file; weights DIR/{encoder,decoder}_<TEST.checkpoint>")
    parser.add_argument("--model", choices=list(zoo.MODELS), metavar="NAME",
                        help=f"a released model, downloaded once into the cache: {', '.join(zoo.MODELS)}")
    parser.add_argument("--gpu", default="0", help="GPU index, or cpu (default: 0, the CPU when there is no GPU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if not args.cfg and not args.model:
        parser.error("give --cfg or --model")
    device = "cpu"
    if args.gpu != "cpu":
        if torch.cuda.is_available():
            device = f"cuda:{int(args.gpu)}"
        else:
            print("CUDA is not available: segmenting on the CPU", file=sys.stderr)
    paths, root = find_images(args.imgs)
    if not paths:
        print(f"test.py: error: no images found at {args.imgs}", file=sys.stderr)
        return 1
    try:
        if args.model:
            segmenter = Segmenter.from_pretrained(args.model, device, args.opts)
        else:
            segmenter = Segmenter(load_config(args.cfg, args.opts), device)
    except (ConfigError, CheckpointError, DownloadError, FileNotFoundError, ValueError) as err:
        print(f"test.py: error: {err}", file=sys.stderr)
        return 1
    result_dir = segmenter.cfg.TEST.result
    why = f" (TEST.precision auto on {describe_device(segmenter.device)})" if segmenter.asked == "auto" else ""
    print(f"segmenting {len(paths)} images on {device}, precision {segmenter.precision}{why}", file=sys.stderr)
    failures = []
    for path in tqdm(paths, desc="segmenting", dynamic_ncols=True):
        try:
            image = read_image(path)
        except DataError as err:
            tqdm.write(f"warning: skipped {path}: {err}", file=sys.stderr)
            failures.append(path)
            continue
        pred = segmenter.predict(image)
        stem = os.path.join(result_dir, os.path.splitext(os.path.relpath(os.path.abspath(path),
                                                                         os.path.abspath(root)))[0])
        if segmenter.multitask:
            lines = write_multitask_outputs(image, pred, stem, segmenter.tables)
        else:
            write_outputs(image, pred, stem, segmenter)
            lines = describe(pred, segmenter.class_names)
        tqdm.write("\n".join([f"{path}:"] + lines))
    per_image = 5 if segmenter.multitask else 2
    print(f"wrote {per_image * (len(paths) - len(failures))} files to {result_dir}")
    if failures:
        print(f"test.py: {len(failures)} of {len(paths)} images could not be read:\n  " + "\n  ".join(failures),
              file=sys.stderr)
        return 1
    return 0
