"""Inference latency per architecture: plain fp32 eager, the optimised fp32 path, bf16, and what `auto` picks.

    python bench/inference.py [--device cpu|cuda] [--size 384x512] [--models resnet50dilated+ppm_deepsup ...]
    python bench/inference.py --agreement-cfg config/synthetic-mobilenetv2dilated-c1_deepsup.yaml \
        --agreement-images 'data/synthetic/images/validation/*.jpg' DIR demo_output

Every figure is a ratio to the plain fp32 eager path measured in the same run. The optimised path
is `prepare_for_inference`'s (batch norms folded into convs; on the CPU the encoder channels-last, the
decoder contiguous with Winograd's wide 3x3 convolutions; on CUDA all channels-last); bf16 adds
autocast; `auto` (the default of `test.py` and `Segmenter`) is bf16 where the device runs it natively
and the optimised fp32 path elsewhere, so its column repeats the one it picked. Each row also gives the
largest probability difference of the optimised fp32 path from the plain one, next to the plain path's
own rounding (its difference from float64), and the share of pixels whose class in bf16 differs from
fp32 (random weights conditioned like trained ones, one random image: nearly a tie everywhere, so an
upper bound that says little). The ONNX Runtime column (CPU; `--no-onnx` leaves it out) runs the
exported file (network, resize to the input, softmax) and the arg-max, as a ratio to fp32 eager, with
the share of pixels whose class equals fp32 eager's. `--agreement-cfg` measures what matters with a
trained model over real images: per head (a Unified Perceptual Parsing model has four), the share of
pixels (scene: of images) whose class changes in bf16, and the latency of `Segmenter.predict` in fp32
and bf16. A model whose outputs change by more than 1% should not get bf16 from `auto` by default.
"""

from __future__ import annotations

import argparse
import copy
import glob
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext

import torch
from common import machine, print_machine, task_for_pair, write_results
from torch import nn

from mit_semseg import Segmenter
from mit_semseg.config import load_config
from mit_semseg.inference import fuse, prepare_for_inference
from mit_semseg.precision import inference_dtype

RELEASED = [
    "mobilenetv2dilated+c1_deepsup",
    "resnet18dilated+ppm_deepsup",
    "resnet50dilated+ppm_deepsup",
    "resnet101dilated+ppm_deepsup",
    "resnet50+upernet",
    "resnet101+upernet",
    "hrnetv2+c1",
]


def build(pair: str, device) -> nn.Module:
    torch.manual_seed(0)
    model = task_for_pair(pair).model.build(inference=True)
    # Conditioned like a trained network: residual branches start small (the last batch-norm scale of
    # each residual block, as trained ResNets have it), and batch-norm statistics are measured on images.
    with torch.no_grad():
        for block in model.encoder.modules():
            last = getattr(block, "bn3", None) or getattr(block, "bn2", None)
            if hasattr(block, "downsample") and isinstance(last, nn.BatchNorm2d):
                last.weight.mul_(0.1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        for _ in range(2):
            model.encoder(torch.randn(2, 3, 128, 160), return_feature_maps=True)
        model.decoder.train()
        model.decoder.main_logits(model.encoder(torch.randn(2, 3, 128, 160), return_feature_maps=True))
    return model.to(device).eval()


def timed(model, image, size, dtype, repeats: int, device) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Median seconds of one prediction (network, resize to `size`, softmax, arg-max); its logits and classes."""
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def run():
        with torch.inference_mode(), autocast:
            logits = model.decoder.main_logits(model.encoder(image, return_feature_maps=True)).float()
            pred = fuse([logits[0]], size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return logits, pred

    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        logits, pred = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), logits, pred


def onnx_timed(pair: str, model: nn.Module, image: torch.Tensor, repeats: int, folder: str):
    """Median seconds of one prediction through ONNX Runtime on the CPU (the exported file: network, resize to the
    input, softmax; then the arg-max), and its probabilities; None where the `export` extra is missing."""
    try:
        import onnxruntime
    except ImportError:
        return None
    from mit_semseg.onnx_runtime import export_onnx

    task = task_for_pair(pair)
    path = export_onnx(task.export, copy.deepcopy(model).cpu(), os.path.join(folder, "model.onnx"), task.cfg.dump())
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores as torch's
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"image": image.cpu().numpy()}

    def run():
        probabilities = session.run(None, feed)[0]
        return probabilities, probabilities.argmax(1)

    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        probabilities, _ = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), torch.from_numpy(probabilities)


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def photos() -> list:
    """Real photographs: scikit-image's sample images."""
    try:
        import skimage.data
    except ImportError:
        sys.exit("--photos needs scikit-image: .venv/bin/pip install -c constraints.txt -e '.[photos]'")
    return [getattr(skimage.data, name)() for name in PHOTOS]


CHANGE_LIMIT = 0.01  # auto should not give a model bf16 whose outputs change more than this


def agreement(cfg_path: str, images: list, opts: list[str], device) -> dict:
    """Per head, the share of pixels (scene: images) whose class changes in bf16, with a trained model over images
    (paths or RGB arrays); and the median latency of `Segmenter.predict` in fp32 and in bf16."""
    segmenters = {p: Segmenter(load_config(cfg_path, opts), device, precision=p) for p in ("fp32", "bf16")}
    changed, counted, seconds = Counter(), Counter(), {p: [] for p in segmenters}
    for image in images:
        predictions = {}
        for name, segmenter in segmenters.items():
            started = time.perf_counter()
            predictions[name] = segmenter.task.prediction.classes_per_head(segmenter.predict(image))
            seconds[name].append(time.perf_counter() - started)
        for head, a in predictions["fp32"].items():
            b = predictions["bf16"][head]
            changed[head] += int((a != b).sum())
            counted[head] += int(getattr(a, "size", 1))
    shares = {head: changed[head] / counted[head] for head in counted}
    return {
        "images": len(images),
        "changed": shares,
        "worst": max(shares.values(), default=0.0),
        "fp32_ms": 1000 * statistics.median(seconds["fp32"]),
        "bf16_ms": 1000 * statistics.median(seconds["bf16"]),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", default="384x512", help="input height x width (default 384x512)")
    parser.add_argument(
        "--models",
        nargs="*",
        default=RELEASED,
        metavar="ENCODER+DECODER",
        help="the architectures to time with random weights (none: only --agreement-cfg)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-onnx", action="store_true", help="leave out the ONNX Runtime column")
    parser.add_argument("--agreement-cfg", help="config of a trained model for the bf16 agreement on real images")
    parser.add_argument("--agreement-images", help="glob of the images for --agreement-cfg")
    parser.add_argument(
        "--photos",
        action="store_true",
        help="with --agreement-cfg, also measure it on scikit-image's sample photographs",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for --agreement-cfg: KEY VALUE ...")
    return parser


HEADER = [
    "model",
    "fp32 eager ms",
    "optimised ms",
    "bf16 ms",
    "auto ms",
    "max dprob",
    "fp32 vs fp64",
    "bf16 changed",
    "onnxruntime ms",
    "ORT same",
]
WIDTHS = [32, 14, 17, 17, 22, 10, 13, 13, 17, 9]


def _line(cells: list[str]) -> str:
    return cells[0].ljust(WIDTHS[0]) + "".join(c.rjust(w) for c, w in zip(cells[1:], WIDTHS[1:]))


def measure_pair(pair: str, image: torch.Tensor, auto, args, device: torch.device) -> tuple[dict, list[str]]:
    """One architecture's row: eager, optimised, bf16, auto and ONNX Runtime times, and how far their outputs are;
    returns it and its printed cells."""
    size, repeats = tuple(image.shape[-2:]), args.repeats
    plain = build(pair, device)
    fast = prepare_for_inference(copy.deepcopy(plain))
    t_plain, logits_plain, pred_plain = timed(plain, image, size, None, repeats, device)
    t_fast, logits_fast, _ = timed(fast, image, size, None, repeats, device)
    t_bf16, _, pred_bf16 = timed(fast, image, size, torch.bfloat16, repeats, device)
    t_auto = t_bf16 if auto else t_fast  # the same code path as the column it picked
    dprob = (torch.softmax(logits_fast, 1) - torch.softmax(logits_plain, 1)).abs().max().item()
    exact = copy.deepcopy(plain).double()
    with torch.inference_mode():  # the plain path's own rounding: its distance from float64
        logits_exact = exact.decoder.main_logits(exact.encoder(image.double(), return_feature_maps=True))
    noise = (torch.softmax(logits_exact, 1).float() - torch.softmax(logits_plain, 1)).abs().max().item()
    changed = (pred_bf16 != pred_plain).float().mean().item()
    with tempfile.TemporaryDirectory() as folder:
        ort = None if args.no_onnx else onnx_timed(pair, plain, image, repeats, folder)
    row = {
        "model": pair,
        "fp32_eager_ms": 1000 * t_plain,
        "optimised_ms": 1000 * t_fast,
        "bf16_ms": 1000 * t_bf16,
        "auto": "bf16" if auto else "fp32",
        "auto_ms": 1000 * t_auto,
        "optimised_speedup": t_plain / t_fast,
        "bf16_speedup": t_plain / t_bf16,
        "auto_speedup": t_plain / t_auto,
        "max_probability_difference": dprob,
        "fp32_vs_fp64_probability_difference": noise,
        "bf16_share_changed": changed,
        "images_per_s": {"fp32_eager": 1 / t_plain, "optimised": 1 / t_fast, "bf16": 1 / t_bf16},
    }
    timing = lambda t: f"{1000 * t:.1f} ({t_plain / t:.2f}x)"
    ort_cells = ["n/a", "n/a"]
    if ort is not None:
        t_ort, probabilities_ort = ort
        same_ort = (probabilities_ort.argmax(1)[0] == pred_plain.cpu()).float().mean().item()
        row.update(onnxruntime_ms=1000 * t_ort, onnxruntime_speedup=t_plain / t_ort, onnxruntime_share_same=same_ort)
        ort_cells = [timing(t_ort), f"{100 * same_ort:.2f}%"]
    cells = [
        pair,
        f"{1000 * t_plain:.1f}",
        timing(t_fast),
        timing(t_bf16),
        f"{'bf16' if auto else 'fp32'} {timing(t_auto)}",
        f"{dprob:.1e}",
        f"{noise:.1e}",
        f"{100 * changed:.2f}%",
        *ort_cells,
    ]
    return row, cells


def _agreements(args, device: torch.device, results: dict) -> None:
    """--agreement-cfg: bf16 against fp32 with a trained model on real images (and photographs), into `results`."""
    sets = {"images": sorted(glob.glob(args.agreement_images or ""))}
    if args.photos:
        sets["photos"] = photos()
    for name, images in sets.items():
        a = results[f"agreement_{name}"] = agreement(args.agreement_cfg, images, args.opts, device)
        heads = ", ".join(f"{head} {100 * share:.2f}%" for head, share in a["changed"].items())
        verdict = "within" if a["worst"] <= CHANGE_LIMIT else "ABOVE"
        print(
            f"bf16 vs fp32 with {args.agreement_cfg} over {a['images']} {name}: class changed on {heads} "
            f"of pixels (an image-level head: of images), {verdict} the {100 * CHANGE_LIMIT:.0f}% auto allows; "
            f"Segmenter.predict fp32 {a['fp32_ms']:.0f} ms, bf16 {a['bf16_ms']:.0f} ms "
            f"({a['fp32_ms'] / a['bf16_ms']:.2f}x)"
        )


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    device = torch.device(args.device)
    info = machine()
    print_machine(info)
    height, width = (int(v) for v in args.size.split("x"))
    torch.manual_seed(1)
    image = torch.randn(1, 3, height, width, device=device)
    auto = inference_dtype("auto", device)
    inference_dtype("bf16", device, "bench bf16 column")  # warns where bf16 is emulated
    print(f"{height} x {width} on {args.device}; auto picks {'bf16' if auto else 'fp32'} here")
    if args.models:
        print(_line(HEADER))
    rows = []
    for pair in args.models:
        row, cells = measure_pair(pair, image, auto, args, device)
        rows.append(row)
        print(_line(cells), flush=True)
    results = {"machine": info, "size": [height, width], "device": args.device, "rows": rows}
    if args.agreement_cfg:
        _agreements(args, device, results)
    print(f"results written to {write_results('inference_' + args.device, results)}")


if __name__ == "__main__":
    main()
