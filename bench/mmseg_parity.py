"""mmsegmentation's own code beside ours, from the same checkpoint files. Run where mmsegmentation 1.x is installed
(mmcv-lite is enough: the compiled operators, which these models do not use, are stood in for), this repository on
the path:

    pip install mmengine "mmcv-lite==2.1.0" mmsegmentation ftfy regex yacs
    PYTHONPATH=. python bench/mmseg_parity.py [--only upernet-769] [--scale 1024x512]

For each model (UPerNet R50 Cityscapes 512x1024: whole; UPerNet R50 Cityscapes 769x769: slide windows, aligned
corners; PSPNet R50-D8 ADE20K: whole) it builds mmsegmentation's model from its own config with random weights
(batch-norm statistics measured on images), saves its checkpoint file, and predicts one image with mmsegmentation's
`inference_model` and with our preset (`Segmenter`, TEST.pipeline mmseg) from that file: the largest difference in
class probability. Then it writes our converted model back with `convert.to_mmseg`, loads that file into
mmsegmentation strictly, and compares again. `--scale` replaces each config's test scale (long x short), for speed.
`--ohem` instead: its OHEMPixelSampler and CrossEntropyLoss beside our TRAIN.ohem_* loss on random logits (which
pixels are kept, and the loss).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import cv2
import numpy as np
import torch

# mmcv-lite has no compiled operators; mmsegmentation imports a few names from them at import time only
_ops = types.ModuleType("mmcv.ops")
for _name in ("DeformConv2d", "ModulatedDeformConv2d", "CrissCrossAttention", "PSAMask", "point_sample"):
    setattr(_ops, _name, None)
_ops.sigmoid_focal_loss = None
sys.modules["mmcv.ops"] = _ops

import mmseg  # noqa: E402
from mmengine.runner import load_checkpoint  # noqa: E402
from mmseg.apis import inference_model, init_model  # noqa: E402

from mit_semseg import Segmenter, convert  # noqa: E402
from mit_semseg.config import load_config  # noqa: E402
from mit_semseg.models.losses import PixelLoss, ohem_kept  # noqa: E402
from mit_semseg.synthetic.scenes import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(mmseg.__file__).parent / ".mim" / "configs"
MODELS = {  # ours: (our preset, mmsegmentation's config)
    "upernet-512x1024": (
        "cityscapes-resnet50-upernet-512x1024-40k",
        "upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py",
    ),
    "upernet-769": ("cityscapes-resnet50-upernet-769x769-40k", "upernet/upernet_r50_4xb2-40k_cityscapes-769x769.py"),
    "pspnet-ade20k": ("ade20k-resnet50-pspnet-512x512-80k", "pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py"),
}


def _their_model(config: str, scale, checkpoint: str | None = None, strict: bool = False):
    """mmsegmentation's model of `config` on the CPU, its test scale replaced by `scale` (long, short) if given."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / config))
    if scale:
        for step in cfg.test_pipeline:
            if step["type"] == "Resize":
                step["scale"] = scale
    model = init_model(cfg, None, device="cpu")
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location="cpu", strict=strict)
    return model.eval()


def _conditioned(model, seed: int = 0) -> None:
    """Weights shaped as trained ones are: small residual branches (each bottleneck's last batch-norm weight 0.1,
    where random weights would make the network chaotic: any rounding difference at its input grows to the
    output), and batch-norm statistics measured on random images, so that activations keep their scale."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for block in model.backbone.modules():
            if hasattr(block, "norm3_name"):  # its Bottleneck
                block.norm3.weight.mul_(0.1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model.decode_head(model.extract_feat(torch.randn(2, 3, 256, 512)))
    model.eval()


def _their_probabilities(model, image_path: str) -> np.ndarray:
    result = inference_model(model, image_path)
    return torch.softmax(result.seg_logits.data.float(), 0).numpy()


def _ours(preset: str, checkpoint: str, scale) -> tuple:
    opts = ["MODEL.pretrained", "False"]
    if scale:
        opts += ["DATASET.imgSizes", f"({scale[1]},)", "DATASET.imgMaxSize", str(scale[0])]
    cfg = load_config(REPO / "config" / f"{preset}.yaml", opts)
    return cfg, Segmenter(cfg, checkpoint=checkpoint, precision="fp32")


def check(name: str, image: str, folder: Path, scale) -> list[str]:
    preset, config = MODELS[name]
    theirs = _their_model(config, scale)
    _conditioned(theirs)
    file = folder / f"{name}.pth"
    torch.save({"meta": {"note": "random weights"}, "state_dict": theirs.state_dict()}, file)
    started = time.perf_counter()
    expected = _their_probabilities(theirs, image)
    their_time = time.perf_counter() - started
    cfg, ours = _ours(preset, str(file), scale)
    started = time.perf_counter()
    _, got = ours.predict(image, probabilities=True)
    our_time = time.perf_counter() - started
    lines = [
        f"{name}: {preset} vs {config}: image {cv2.imread(image).shape[:2]}, probabilities {expected.shape}",
        f"  from its file: max |p_ours - p_mmseg| {np.abs(got - expected).max():.2e}, arg-max agreement "
        f"{(got.argmax(0) == expected.argmax(0)).mean():.6f} ({their_time:.1f} s mmseg, {our_time:.1f} s ours)",
    ]
    # and back: our converted model written as its file, loaded strictly there (auxiliary head from a state)
    from mit_semseg import mmseg as our_mmseg

    parts = our_mmseg.read(file)
    state = folder / f"{name}_state.pth"
    torch.save({"encoder": parts.encoder_state, "training_parts": {"aux_head": parts.aux_state}}, state)
    written = folder / f"{name}_written.pth"
    convert.to_mmseg(cfg, str(file), str(written), str(state))
    back = _their_model(config, scale, str(written), strict=True)
    again = _their_probabilities(back, image)
    lines.append(
        f"  our written file, loaded strictly by mmsegmentation: max |p - p_ours| {np.abs(again - got).max():.2e}, "
        f"max |p - p_mmseg| {np.abs(again - expected).max():.2e}"
    )
    return lines


def ohem_check(threshold: float | None, min_kept: int, class_weights: list[float] | None) -> str:
    """mmsegmentation's OHEM sampler and cross-entropy (ignore 255) beside our PixelLoss (ignore -1)."""
    from mmseg.models.losses import CrossEntropyLoss
    from mmseg.structures.sampler.ohem_pixel_sampler import OHEMPixelSampler

    torch.manual_seed(min_kept)
    logits = torch.randn(2, 8, 64, 96) * 2
    label = torch.randint(0, 8, (2, 64, 96))
    if class_weights is None:  # with class weights, its CrossEntropyLoss fails on unlabelled pixels (1.2.2)
        label[torch.rand(2, 64, 96) < 0.2] = 255
    their_loss = CrossEntropyLoss(class_weight=class_weights)
    context = types.SimpleNamespace(ignore_index=255, loss_decode=their_loss)
    their_kept = OHEMPixelSampler(context, thresh=threshold, min_kept=min_kept).sample(logits, label.unsqueeze(1))
    theirs = their_loss(logits, label, weight=their_kept, ignore_index=255)
    ours_label = torch.where(label == 255, -1, label)
    weights = None if class_weights is None else torch.tensor(class_weights)
    log_probs = torch.log_softmax(logits, 1)
    kept = ohem_kept(log_probs, ours_label, threshold or 0.0, min_kept, weights)
    ours = PixelLoss(weights, threshold or 0.0, min_kept)(log_probs, ours_label)
    return (
        f"OHEM thresh {threshold} min_kept {min_kept}{' class weights' if class_weights else ''}: kept "
        f"{int(kept.sum())} (theirs {int(their_kept.sum())}, the same pixels: {torch.equal(kept, their_kept.bool())}), "
        f"loss {ours.item():.7f} (theirs {theirs.item():.7f}, difference {abs(ours - theirs).item():.1e})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(MODELS), action="append")
    parser.add_argument("--scale", help="LONGxSHORT test scale for every model (default: each config's)")
    parser.add_argument("--ohem", action="store_true", help="only the OHEM loss comparison")
    args = parser.parse_args()
    if args.ohem:
        for setting in ((0.7, 2000, None), (0.7, 8000, None), (None, 3000, [1.0, 2.0, 0.5, 1.0, 1.5, 1.0, 1.0, 1.0])):
            print(ohem_check(*setting))
        return 0
    scale = tuple(int(v) for v in args.scale.split("x")) if args.scale else None
    print(f"mmsegmentation {mmseg.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(str(folder / "scenes"), num_train=1, num_val=1, seed=5, min_side=200, max_side=260)
        photo = next((folder / "scenes" / "images" / "validation").iterdir())
        image = cv2.resize(cv2.imread(str(photo)), (1100, 530), interpolation=cv2.INTER_LINEAR)  # not the test scale
        cv2.imwrite(str(folder / "image.png"), image)
        for name in args.only or MODELS:
            for line in check(name, str(folder / "image.png"), folder, scale):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MIT_SEMSEG_HOME", tempfile.mkdtemp())
    raise SystemExit(main())
