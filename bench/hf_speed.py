"""Ours beside transformers on the same weights and the same input: UperNet with a ConvNeXt or Swin backbone.

    PYTHONPATH=/path/to/transformers python bench/hf_speed.py [--backbones convnext swin] [--size 512x512] [--runs 5]

transformers (not a dependency of ours) builds `UperNetForSemanticSegmentation` with random weights and writes it
with `save_pretrained`; ours loads that folder (`Segmenter.from_pretrained`). Both run the network on one image of
`--size` to the class probabilities at its size (its logits, which transformers resizes to the image, then a
softmax): transformers in fp32, ours in fp32 (`prepare_for_inference`: batch norms folded into the convs, the
memory formats, Winograd's 3x3 convolutions in the head) and at `TEST.precision auto` (bf16 where the CPU computes
it natively). Prints the median milliseconds of `--runs`, ours as a ratio of transformers' (below 1: faster), and the
largest probability difference from transformers' in fp32 with the share of pixels whose class is the same.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

BACKBONES = {  # transformers' config of each backbone, tiny
    "convnext": ("ConvNextConfig", {"depths": [3, 3, 9, 3], "hidden_sizes": [96, 192, 384, 768]}, 384),
    "swin": ("SwinConfig", {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]}, 384),
}


def _median_ms(run, runs: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def compare(kind: str, size: tuple[int, int], runs: int, folder: str) -> str:
    import transformers

    from mit_semseg import Segmenter
    from mit_semseg.precision import autocast

    config_class, options, aux_in = BACKBONES[kind]
    backbone = getattr(transformers, config_class)(out_features=["stage1", "stage2", "stage3", "stage4"], **options)
    labels = {i: f"class{i}" for i in range(150)}
    config = transformers.UperNetConfig(backbone_config=backbone, auxiliary_in_channels=aux_in, id2label=labels)
    theirs = transformers.UperNetForSemanticSegmentation(config).eval()
    theirs.save_pretrained(folder)
    x = torch.randn(1, 3, *size)
    their_probabilities = lambda: torch.softmax(theirs(pixel_values=x).logits, 1)  # the logits at the image's size
    with torch.inference_mode():
        their_ms = _median_ms(their_probabilities, runs)
        reference = their_probabilities()
    rows = []
    for precision in ("fp32", "auto"):
        ours = Segmenter.from_pretrained(folder, precision=precision)
        model = ours.model

        def run():
            with autocast(ours.device, ours.dtype):
                return model.decoder(model.encoder(x, return_feature_maps=True), segSize=size)

        with torch.inference_mode():
            our_ms = _median_ms(run, runs)
            probs = run().float()
        diff = float((probs - reference).abs().max())
        same = float((probs.argmax(1) == reference.argmax(1)).float().mean())
        rows.append(
            f"{kind:<9}{size[0]}x{size[1]}  transformers fp32 {their_ms:8.0f} ms  "
            f"ours {ours.precision:<5}{our_ms:8.0f} ms  ratio {our_ms / their_ms:5.2f}  "
            f"max |p - theirs| {diff:.1e}, same class {100 * same:.2f}%"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--size", default="512x512", help="HEIGHTxWIDTH of the image")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    try:
        import transformers
    except ModuleNotFoundError:
        print("bench/hf_speed.py needs transformers on the path (not a dependency of mit_semseg)", file=sys.stderr)
        return 1
    from mit_semseg.precision import describe_cpu

    size = tuple(int(v) for v in args.size.split("x"))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CPU: {describe_cpu()}")
    for kind in args.backbones:
        with tempfile.TemporaryDirectory() as folder:
            print(compare(kind, size, args.runs, folder), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MIT_SEMSEG_HOME", tempfile.mkdtemp())
    raise SystemExit(main())
