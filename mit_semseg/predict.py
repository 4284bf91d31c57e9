"""`test.py`: segment images with a trained or released model and write pictures and label files."""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import cv2
import torch

from . import cli
from .config import ConfigError, load_config
from .data.imageio import read_image
from .data.records import DataError
from .pictures import overlay
from .precision import describe_device
from .progress import Progress
from .segmenter import Segmenter

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
PROG = "test.py"


def find_images(path: str) -> tuple[list[str], str]:
    """Images named by `path` (a file, a folder searched recursively, or a glob) and the folder they are under."""
    if os.path.isfile(path):
        return [path], os.path.dirname(path)
    if os.path.isdir(path):
        found = [
            os.path.join(d, f) for d, _, files in os.walk(path) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
        return sorted(found), path
    found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
    return found, os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in found]) if found else ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Segment images; writes <name>.png (image | prediction, "
        "with a legend) and <name>_label.png (class index + 1) into TEST.result; a video: <name>.mp4 (the "
        "prediction over each frame) and with --label-frames <name>_frames/<frame>_<head>.png.",
        epilog="Examples: python test.py --imgs photos/ --cfg config/X.yaml; "
        "python test.py --model ade20k-resnet50dilated-ppm_deepsup --imgs a.jpg; "
        "python test.py --onnx model.onnx --imgs a.jpg",
    )
    parser.add_argument(
        "--imgs", required=True, help="an image, a folder (searched recursively), a glob, or a video (any OpenCV reads)"
    )
    parser.add_argument(
        "--label-frames", action="store_true", help="with a video: also each frame's label maps, as PNGs"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cfg", metavar="FILE", help="config file; weights DIR/{encoder,decoder}_<TEST.checkpoint>")
    source.add_argument("--model", type=cli.model_name, metavar="NAME", help=cli.MODEL_HELP)
    source.add_argument("--onnx", metavar="FILE", help="an exported file, run by ONNX Runtime on the CPU")
    parser.add_argument("--gpu", default="0", help="GPU index, or cpu (default: 0, the CPU when there is no GPU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def _segmenter(args: argparse.Namespace, device: torch.device, cfg) -> Segmenter:
    """The model `--onnx`, `--model` or `--cfg` names."""
    if args.onnx:
        return Segmenter.from_onnx(args.onnx, args.opts)
    if args.model:
        return Segmenter.from_pretrained(args.model, device, args.opts)
    return Segmenter(cfg, device)


def segment(segmenter: Segmenter, paths: list[str], root: str) -> tuple[int, list[str]]:
    """Segment `paths` into TEST.result (their paths below `root` kept); returns the files written and the paths that
    could not be read (skipped, said on the way)."""
    result_dir = segmenter.cfg.TEST.result
    failures, written = [], 0
    with Progress(len(paths), "segmenting", unit="img") as bar:
        for path in paths:
            try:
                image = read_image(path)
            except DataError as err:
                bar.write(f"warning: skipped {path}: {err}")
                failures.append(path)
                bar.update()
                continue
            pred = segmenter.predict(image)
            stem = os.path.join(
                result_dir, os.path.splitext(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))[0]
            )
            os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
            files, lines = segmenter.task.prediction.write_outputs(image, pred, stem)
            written += len(files)
            bar.write("\n".join([f"{path}:"] + lines), file=sys.stdout)
            bar.update()
    return written, failures


def segment_video(segmenter: Segmenter, path: str, label_frames: bool) -> list[str]:
    """TEST.result/<name>.mp4: each frame with the first head's classes coloured over it; with `label_frames`, each
    frame's label maps (`label_maps`, as test.py writes an image's) in <name>_frames/. Returns the files written."""
    stem = os.path.join(segmenter.cfg.TEST.result, os.path.splitext(os.path.basename(path))[0])
    os.makedirs(f"{stem}_frames" if label_frames else os.path.dirname(stem) or ".", exist_ok=True)
    capture = cv2.VideoCapture(path)
    fps, total = capture.get(cv2.CAP_PROP_FPS) or 25.0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    capture.release()
    prediction, writer, written = segmenter.task.prediction, None, [f"{stem}.mp4"]
    started = time.perf_counter()
    with Progress(total, "segmenting", unit="frame") as bar:
        for k, (frame, pred) in enumerate(segmenter.predict_video(path)):
            if writer is None:
                writer = cv2.VideoWriter(f"{stem}.mp4", cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
                if not writer.isOpened():
                    raise DataError(f"cannot write {stem}.mp4: OpenCV has no MPEG-4 writer here")
            painted = overlay(frame, next(iter(prediction.class_maps(pred).values())))
            writer.write(cv2.cvtColor(painted, cv2.COLOR_RGB2BGR))
            if label_frames:
                for head, labels in prediction.label_maps(pred).items():
                    written.append(os.path.join(f"{stem}_frames", f"{k:06d}_{head}.png"))
                    cv2.imwrite(written[-1], labels)
            bar.update()
    if writer is None:
        raise DataError(f"cannot read video {path}: no frame could be read")
    writer.release()
    frames, seconds = k + 1, time.perf_counter() - started
    print(f"{path}: {frames} frames in {seconds:.1f} s, {frames / seconds:.2f} frames/s", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        device = [torch.device("cpu")] if args.onnx else cli.devices(args.gpu, PROG, "--gpu")
        if len(device) != 1:
            raise ValueError(f"--gpu takes one GPU, got '{args.gpu}'")
        cfg = load_config(args.cfg, args.opts) if args.cfg else None
    except (ConfigError, ValueError) as err:
        return cli.usage(PROG, err)
    video = os.path.isfile(args.imgs) and args.imgs.lower().endswith(VIDEO_EXTENSIONS)
    paths, root = ([args.imgs], "") if video else find_images(args.imgs)
    if not paths:
        return cli.fail(PROG, f"no images found at {args.imgs}")
    try:
        segmenter = _segmenter(args, device[0], cfg)
    except ConfigError as err:
        return cli.usage(PROG, err)
    except (ModuleNotFoundError, *cli.RUN_ERRORS) as err:
        return cli.fail(PROG, err)
    why = f" (TEST.precision auto on {describe_device(segmenter.device)})" if segmenter.asked == "auto" else ""
    what = f"the video {args.imgs}" if video else f"{len(paths)} images"
    print(f"segmenting {what} on {device[0]}, precision {segmenter.precision}{why}", file=sys.stderr)
    if video:
        try:
            written = segment_video(segmenter, args.imgs, args.label_frames)
        except DataError as err:
            return cli.fail(PROG, err)
        print(f"wrote {len(written)} files to {segmenter.cfg.TEST.result}")
        return 0
    written, failures = segment(segmenter, paths, root)
    print(f"wrote {written} files to {segmenter.cfg.TEST.result}")
    if failures:
        return cli.fail(PROG, f"{len(failures)} of {len(paths)} images could not be read:\n  " + "\n  ".join(failures))
    return 0
