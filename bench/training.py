"""Training step time and peak memory: fp32 eager against bf16 + channels-last (and torch.compile).

    python bench/training.py [--device cpu|cuda] [--model resnet50+upernet] [--batch 8] [--size 512x512]

Times full optimisation steps (forward, loss, backward, SGD) on random images and labels, after
warm-up, for each variant, as a ratio to fp32 eager in the same run. On a GPU it also reports the
model FLOP utilisation: FLOPs of one step (`torch.utils.flop_counter`) over the measured step
time, against the GPU's bf16 matrix peak measured here with a large matmul.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import time
from contextlib import nullcontext

import torch
from common import machine, model_for, print_machine, write_results
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mit_semseg.precision import training_amp

VARIANTS = {
    "fp32 eager": (None, False, False),
    "bf16 + channels_last": (torch.bfloat16, True, False),
    "bf16 + channels_last + compile": (torch.bfloat16, True, True),
}


def build(pair: str, device) -> nn.Module:
    torch.manual_seed(0)
    return model_for(pair).to(device).train()


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bf16_peak_flops(device) -> float:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    started, n = time.perf_counter(), 20
    for _ in range(n):
        a @ a
    torch.cuda.synchronize()
    return 2 * 8192**3 * n / (time.perf_counter() - started)


def time_variant(
    name: str, pair: str, images: torch.Tensor, labels: torch.Tensor, steps: int, peak, device: torch.device
) -> dict | None:
    """The median step of one variant (precision, memory format, compilation) of the model, its memory and, on a GPU,
    its FLOPs and MFU; None (said) when the variant cannot run here."""
    gpu = device.type == "cuda"
    dtype, channels_last, compiled = VARIANTS[name]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build(pair, device).to(memory_format=fmt)
    step_model = torch.compile(model, dynamic=False) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch_dict = {"img_data": images.contiguous(memory_format=fmt), "seg_label": labels}
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def step():
        with autocast:
            loss = step_model(batch_dict)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if gpu:
            torch.cuda.synchronize()

    try:
        for _ in range(3 if gpu else 1):
            step()
    except Exception as err:
        print(f"{name:<34}skipped: {type(err).__name__}: {str(err).splitlines()[0][:80]}")
        return None
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    flops = None
    if gpu:
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    return {
        "step_ms": 1000 * seconds,
        "images_per_s": len(images) / seconds,
        "peak_mib": peak_bytes(device) / 2**20,
        "mfu": flops / seconds / peak if gpu else None,
        "step_flops": flops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--model",
        default=None,
        help="ENCODER+DECODER (default: resnet50+upernet on a GPU, resnet18dilated+ppm_deepsup on the CPU)",
    )
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on a GPU, 2 on the CPU")
    parser.add_argument("--size", default=None, help="H x W (default: 512x512 on a GPU, 256x256 on the CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on a GPU, 3 on the CPU)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    pair = args.model or ("resnet50+upernet" if gpu else "resnet18dilated+ppm_deepsup")
    batch = args.batch or (8 if gpu else 2)
    height, width = (int(v) for v in (args.size or ("512x512" if gpu else "256x256")).split("x"))
    steps = args.steps or (20 if gpu else 3)
    info = machine()
    print_machine(info)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if any(VARIANTS[name][0] is torch.bfloat16 for name in args.variants):
        training_amp("bf16", device)  # warns where bf16 is emulated
    torch.backends.cudnn.benchmark = True
    rate = 4 if pair.split("+")[1].startswith("upernet") or pair.startswith("hrnet") else 8
    images = torch.randn(batch, 3, height, width, device=device)
    labels = torch.randint(-1, 150, (batch, height // rate, width // rate), device=device)
    peak = bf16_peak_flops(device) if gpu else None
    rows = {}
    print(f"{pair}, batch {batch}, {height} x {width}, {args.device}")
    print(f"{'variant':<34}{'step ms':>9}{'images/s':>10}{'speed-up':>10}{'peak MiB':>10}{'MFU':>8}")
    for name in args.variants:
        row = time_variant(name, pair, images, labels, steps, peak, device)
        if row is None:
            continue
        rows[name] = row
        base = rows.get("fp32 eager", row)["step_ms"]
        mfu = f"{100 * row['mfu']:.1f}%" if gpu else "-"
        print(
            f"{name:<34}{row['step_ms']:>9.1f}{row['images_per_s']:>10.2f}{base / row['step_ms']:>9.2f}x"
            f"{row['peak_mib']:>10.0f}{mfu:>8}",
            flush=True,
        )
    if not gpu:
        print("(on the CPU the peak is the process's resident memory, the largest so far)")
    results = {
        "machine": info,
        "model": pair,
        "batch": batch,
        "size": [height, width],
        "device": args.device,
        "bf16_peak_tflops": peak / 1e12 if peak else None,
        "variants": rows,
    }
    print(f"results written to {write_results('training_' + args.device, results)}")


if __name__ == "__main__":
    main()
