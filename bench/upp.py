"""Unified Perceptual Parsing: Precise RoI pooling in the pyramid pooling against adaptive average pooling,
and UPP's inference latency beside UPerNet's.

    python bench/upp.py [--device cpu|cuda] [--size 384x512] [--repeats 5]

The pooling rows time the four pyramid scales (1, 2, 3, 6) over one ResNet-50 C5 map of the input
size, the pooling alone and the whole branch (pooling, upsampling, 1x1 conv-BN-ReLU, in the original's
order). The latency rows time one image through resnet50 + upernet (150 classes), resnet50 + upp (Broden+ heads) and
resnet50 + upp with the texture head (the fifth head, on C2), optimised fp32 path, one scale: network, resize to
the image, softmax and arg-max of every head (for UPP also each pixel's part within its predicted object's group).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import machine, model_for, print_machine, write_results
from torch import nn

from mit_semseg.data.label_tables import read_label_tables
from mit_semseg.inference import fuse, prepare_for_inference
from mit_semseg.models.texture import build_texture_head
from mit_semseg.nn import prroi_pool2d
from mit_semseg.tasks.unified.prediction import predict_multitask

SCALES = (1, 2, 3, 6)


def median_ms(run, repeats: int, device) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def pooling_rows(height: int, width: int, repeats: int, device) -> list[dict]:
    torch.manual_seed(0)
    conv5 = torch.randn(1, 2048, -(-height // 32), -(-width // 32), device=device)
    h, w = conv5.shape[-2:]
    rois = torch.tensor([[0, 0, 0, w, h]], dtype=torch.float32, device=device)
    convs = (
        nn.ModuleList(
            nn.Sequential(nn.Conv2d(2048, 512, 1, bias=False), nn.BatchNorm2d(512), nn.ReLU()) for _ in SCALES
        )
        .to(device)
        .eval()
    )
    pools = {
        "adaptive average pooling": lambda s: F.adaptive_avg_pool2d(conv5, s),
        "Precise RoI pooling": lambda s: prroi_pool2d(conv5, rois, s, s, 1.0),
    }
    rows = []
    with torch.inference_mode():
        for name, pool in pools.items():
            alone = median_ms(lambda: [pool(s) for s in SCALES], repeats, device)
            branch = median_ms(
                lambda: [
                    conv(F.interpolate(pool(s), (h, w), mode="bilinear", align_corners=False))
                    for s, conv in zip(SCALES, convs)
                ],
                repeats,
                device,
            )
            rows.append({"pooling": name, "map": [2048, h, w], "pooling_ms": alone, "branch_ms": branch})
    return rows


def latency_rows(height: int, width: int, repeats: int, device) -> list[dict]:
    torch.manual_seed(0)
    image = torch.randn(1, 3, height, width, device=device)
    upernet = model_for("resnet50+upernet", inference=True)
    upp = model_for("resnet50+upp", inference=True)
    textured = model_for("resnet50+upp", inference=True)
    textured.texture = build_texture_head("resnet50", len(read_label_tables().textures))
    upernet, upp, textured = (prepare_for_inference(m.to(device)) for m in (upernet, upp, textured))

    def segment():
        with torch.inference_mode():
            logits = upernet.decoder.main_logits(upernet.encoder(image, return_feature_maps=True)).float()
            return fuse([logits[0]], (height, width))

    return [
        {"model": "resnet50 + upernet (150 classes)", "ms": median_ms(segment, repeats, device)},
        {
            "model": "resnet50 + upp (scene 365, objects 336, parts 427 in 77 groups, materials 26)",
            "ms": median_ms(lambda: predict_multitask(upp, [image], (height, width)), repeats, device),
        },
        {
            "model": "resnet50 + upp + texture head (DTD's 47 textures, on C2)",
            "ms": median_ms(lambda: predict_multitask(textured, [image], (height, width)), repeats, device),
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", default="384x512", help="input height x width (default 384x512)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine()
    print_machine(info)
    height, width = (int(v) for v in args.size.split("x"))
    pooling = pooling_rows(height, width, args.repeats, device)
    print(f"pyramid pooling of a C5 map {pooling[0]['map']} (scales {SCALES}), {args.device}")
    print(f"{'pooling':<28}{'pooling ms':>12}{'branch ms':>12}")
    for row in pooling:
        print(f"{row['pooling']:<28}{row['pooling_ms']:>12.2f}{row['branch_ms']:>12.2f}")
    latency = latency_rows(height, width, args.repeats, device)
    print(f"inference, one {height} x {width} image, optimised fp32, {args.device}")
    base = latency[0]["ms"]
    for row in latency:
        print(f"{row['model']:<80}{row['ms']:>10.1f} ms ({row['ms'] / base:.2f}x)")
    results = {"machine": info, "size": [height, width], "device": args.device, "pooling": pooling, "latency": latency}
    print(f"results written to {write_results('upp_' + args.device, results)}")


if __name__ == "__main__":
    main()
