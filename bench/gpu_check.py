"""GPU smoke run: every CUDA path of the project on one GPU, in a few minutes, as a table.

    python bench/gpu_check.py            # = make gpu-check; needs a CUDA device
    python bench/gpu_check.py --device cpu --only engine,test.py   # the same checks on the CPU, where they apply

On a small synthetic set written to a temporary folder: `train.py --gpus 0` in fp32, bf16 and fp16
with channels-last and with `TRAIN.compile`; two replicas of the dict-scattering engine on the one
GPU against one model over the concatenated batch (float64); `torchrun` with NCCL (one process:
the distributed code path); evaluation; `test.py`; `Segmenter` (against the CPU); Unified Perceptual
Parsing training and inference; Precise RoI pooling's gradcheck; the inference and training
benches. Each row says ok, FAILED (with the error's last line) or skipped, its seconds and a figure;
the exit code is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from common import machine, model_for, print_machine, write_results

from mit_semseg import Segmenter
from mit_semseg.checkpoints import epoch_files
from mit_semseg.config import load_config
from mit_semseg.nn import prroi_pool2d
from mit_semseg.parallel import DictDataParallel
from mit_semseg.synthetic import scenes as synthetic
from mit_semseg.synthetic import upp as synthetic_upp

REPO = Path(__file__).resolve().parents[1]
SEGMENTATION = REPO / "config" / "synthetic-mobilenetv2dilated-c1_deepsup.yaml"
UPP = REPO / "config" / "synthetic-resnet18-upp_lite.yaml"
MINUTES = 10


class Skipped(Exception):
    """The check does not apply to this device."""


def run(command: list[str], timeout: int = 300, env: dict | None = None) -> str:
    """Run a project command; its output, or RuntimeError with the end of it."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {(result.stderr or result.stdout).strip()[-600:]}")
    return result.stdout + result.stderr


class Checks:
    def __init__(self, device: str, folder: Path, iterations: int = 20) -> None:
        self.device, self.folder, self.iterations = device, folder, iterations
        self.gpu = "0" if device == "cuda" else "cpu"

    @cached_property
    def seg_data(self) -> Path:
        """The synthetic scene set, made when a check first reads it."""
        path = self.folder / "synthetic"
        synthetic.generate(str(path), num_train=24, num_val=6, seed=1, min_side=96, max_side=160)
        return path

    @cached_property
    def upp_data(self) -> Path:
        """The synthetic multi-task set, made when a check first reads it."""
        path = self.folder / "synthetic_upp"
        synthetic_upp.generate(str(path), num_train=24, num_val=6, seed=1, min_side=96, max_side=160)
        return path

    def seg_opts(self, run_dir: str, *extra: str) -> list[str]:
        d = self.seg_data
        return [
            "DIR",
            str(self.folder / run_dir),
            "DATASET.root_dataset",
            str(d),
            "DATASET.list_train",
            str(d / "training.odgt"),
            "DATASET.list_val",
            str(d / "validation.odgt"),
            "DATASET.class_info",
            str(d / "class_info.csv"),
            "TRAIN.num_epoch",
            "1",
            "TRAIN.epoch_iters",
            str(self.iterations),
            "TRAIN.workers",
            "2",
            "VAL.checkpoint",
            "epoch_1.pth",
            "TEST.checkpoint",
            "epoch_1.pth",
            *extra,
        ]

    def upp_opts(self, *extra: str) -> list[str]:
        d = self.upp_data
        return [
            "DIR",
            str(self.folder / "upp"),
            "DATASET.root_dataset",
            str(d),
            "DATASET.list_train",
            str(d / "training.jsonl"),
            "DATASET.list_val",
            str(d / "validation.jsonl"),
            "DATASET.label_tables",
            str(d / "tables"),
            "TRAIN.num_epoch",
            "1",
            "TRAIN.epoch_iters",
            str(self.iterations),
            "TRAIN.workers",
            "2",
            "VAL.checkpoint",
            "epoch_1.pth",
            "TEST.checkpoint",
            "epoch_1.pth",
            *extra,
        ]

    def trained(self, config: Path = SEGMENTATION) -> None:
        """The fp32 segmentation run (or the UPP one) that evaluation and inference read, trained if not yet."""
        if not os.path.isfile(epoch_files(self.folder / ("fp32" if config == SEGMENTATION else "upp"), 1)["decoder"]):
            self.train("fp32", config=config)

    def train(self, run_dir: str, *extra: str, config: Path = SEGMENTATION) -> str:
        opts = self.seg_opts(run_dir, *extra) if config == SEGMENTATION else self.upp_opts(*extra)
        started = time.perf_counter()
        out = run([sys.executable, "train.py", "--cfg", str(config), "--gpus", self.gpu, *opts])
        history = json.loads((Path(opts[1]) / "history.json").read_text())
        return f"loss {history[-1]['loss']:.3f}, {time.perf_counter() - started:.0f} s" + (
            " (precision " + out.split("precision ")[1].split()[0] + ")" if "precision " in out else ""
        )

    # the checks ---------------------------------------------------------------------------------------------------

    def train_fp32(self) -> str:
        return self.train("fp32")

    def train_bf16_channels_last(self) -> str:
        return self.train("bf16", "TRAIN.amp", "bf16", "TRAIN.channels_last", "True")

    def train_fp16_channels_last(self) -> str:
        if self.device != "cuda":
            raise Skipped("fp16 needs a GPU")
        return self.train("fp16", "TRAIN.amp", "fp16", "TRAIN.channels_last", "True")

    def train_compile(self) -> str:
        return self.train("compile", "TRAIN.amp", "bf16", "TRAIN.channels_last", "True", "TRAIN.compile", "True")

    def engine(self) -> str:
        """Two replicas on the one device, batches of 2 and 1 images: losses and gradients equal one model's."""
        torch.manual_seed(3)
        device = torch.device(self.device)
        batches = [
            {"img_data": torch.randn(n, 3, 64, 96, dtype=torch.float64), "seg_label": torch.randint(-1, 5, (n, 8, 12))}
            for n in (2, 1)
        ]
        model = model_for("resnet18dilated+c1_deepsup", num_class=5).double().to(device).train()
        reference = copy.deepcopy(model)
        results = DictDataParallel(model, [device, device])(batches)
        sum(out["loss"] for out in results).backward()
        whole = torch.cat([b["img_data"] for b in batches]).to(device)
        main, deepsup = reference.decoder(reference.encoder(whole, return_feature_maps=True))
        losses = []
        for rows, b in ((slice(0, 2), batches[0]), (slice(2, 3), batches[1])):
            label = b["seg_label"].to(device)
            losses.append(reference.crit(main[rows], label) + 0.4 * reference.crit(deepsup[rows], label))
        sum(losses).backward()
        worst = max(
            max(abs(a["loss"].item() - b.item()) for a, b in zip(results, losses)),
            max((p.grad - q.grad).abs().max().item() for p, q in zip(model.parameters(), reference.parameters())),
        )
        if worst > 1e-8:
            raise RuntimeError(f"the engine differs from one model by {worst:.2e}")
        return f"max difference {worst:.1e} (float64)"

    def torchrun(self) -> str:
        backend = "NCCL" if self.device == "cuda" else "gloo"
        out = run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "1",
                "train.py",
                "--cfg",
                str(SEGMENTATION),
                "--gpus",
                self.gpu,
                *self.seg_opts("ddp"),
            ]
        )
        if "weights identical on all 1 ranks" not in out:
            raise RuntimeError("the distributed path did not run")
        return f"{backend}, 1 process"

    def evaluation(self) -> str:
        self.trained()
        out = run(
            [
                sys.executable,
                "eval_multipro.py",
                "--cfg",
                str(SEGMENTATION),
                "--gpus",
                self.gpu,
                "--procs",
                "2",
                *self.seg_opts("fp32"),
            ]
        )
        return next(line for line in out.splitlines() if line.startswith("Mean IoU"))

    def test_py(self) -> str:
        self.trained()
        out = run(
            [
                sys.executable,
                "test.py",
                "--imgs",
                str(self.seg_data / "images" / "validation"),
                "--cfg",
                str(SEGMENTATION),
                "--gpu",
                self.gpu,
                *self.seg_opts("fp32", "TEST.result", str(self.folder / "pictures")),
            ]
        )
        return next(line for line in out.splitlines() if line.startswith("segmenting ")).split(", ", 1)[1]

    def segmenter(self) -> str:
        self.trained()
        cfg = load_config(SEGMENTATION, self.seg_opts("fp32"))
        here = Segmenter(cfg, self.device, precision="fp32")
        cpu = Segmenter(load_config(SEGMENTATION, self.seg_opts("fp32")), "cpu", precision="fp32")
        images = sorted((self.seg_data / "images" / "validation").glob("*.jpg"))
        same = np.mean([(here.predict(str(p)) == cpu.predict(str(p))).mean() for p in images])
        return f"{100 * same:.2f}% of pixels as on the CPU"

    def upp_training(self) -> str:
        amp = "bf16" if self.device == "cuda" else "none"
        return self.train("upp", "TRAIN.amp", amp, config=UPP)

    def upp_inference(self) -> str:
        self.trained(UPP)
        out = run(
            [
                sys.executable,
                "test.py",
                "--imgs",
                str(self.upp_data / "images" / "validation"),
                "--cfg",
                str(UPP),
                "--gpu",
                self.gpu,
                *self.upp_opts("TEST.result", str(self.folder / "upp_pictures")),
            ]
        )
        segmenter = Segmenter(load_config(UPP, self.upp_opts()), self.device)
        image = next((self.upp_data / "images" / "validation").glob("*.jpg"))
        pred, probs = segmenter.predict(str(image), probabilities=True)
        if not np.array_equal(probs["object"].argmax(0), pred["object"]):
            raise RuntimeError("the object probabilities' arg-max is not the prediction")
        return (
            f"{out.count('scene: ')} images, {segmenter.precision}; probabilities of {len(probs['part'])} part groups"
        )

    def prroi_gradcheck(self) -> str:
        if self.device != "cuda":
            raise Skipped("the CPU's gradcheck is in the test suite")
        features = torch.randn(2, 3, 6, 7, dtype=torch.float64, device="cuda", requires_grad=True)
        rois = torch.tensor([[0, 0.5, 1.0, 5.5, 4.0], [1, -1.0, 0.0, 8.0, 6.5]], dtype=torch.float64, device="cuda")
        ok = torch.autograd.gradcheck(lambda f: prroi_pool2d(f, rois, 2, 3, 1.0), (features,))
        return "passed" if ok else "failed"

    def inference_bench(self) -> str:
        out = run(
            [
                sys.executable,
                "bench/inference.py",
                "--device",
                self.device,
                "--models",
                "resnet50dilated+ppm_deepsup",
                "resnet50+upernet",
            ],
            timeout=600,
        )
        return "; ".join(" ".join(line.split()[:4]) for line in out.splitlines() if "+" in line.split(" ")[0])

    def training_bench(self) -> str:
        out = run([sys.executable, "bench/training.py", "--device", self.device, "--steps", "5"], timeout=600)
        return "; ".join(line.strip() for line in out.splitlines() if " ms" in line)[-300:]


CHECKS = {
    "train fp32": Checks.train_fp32,
    "train bf16 + channels-last": Checks.train_bf16_channels_last,
    "train fp16 + channels-last": Checks.train_fp16_channels_last,
    "train compile": Checks.train_compile,
    "engine": Checks.engine,
    "torchrun": Checks.torchrun,
    "evaluation": Checks.evaluation,
    "test.py": Checks.test_py,
    "Segmenter": Checks.segmenter,
    "UPP training": Checks.upp_training,
    "UPP inference": Checks.upp_inference,
    "PrRoI gradcheck": Checks.prroi_gradcheck,
    "inference bench": Checks.inference_bench,
    "training bench": Checks.training_bench,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--only", help=f"comma-separated checks (by a word of their names); all: {', '.join(CHECKS)}")
    parser.add_argument("--iterations", type=int, default=20, help="of each training check (default: 20)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu to run the checks on the CPU)", file=sys.stderr)
        return 1
    info = machine()
    print_machine(info)
    wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None
    names = [n for n in CHECKS if wanted is None or any(w in n.lower() for w in wanted)]
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        checks = Checks(args.device, Path(folder), args.iterations)
        for name in names:
            began = time.perf_counter()
            try:
                status, detail = "ok", CHECKS[name](checks)
            except Skipped as why:
                status, detail = "skipped", str(why)
            except Exception as err:  # every check reports, the others go on
                status, detail = "FAILED", f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}"
                traceback.print_exc(file=sys.stderr)
            rows.append({"check": name, "status": status, "seconds": time.perf_counter() - began, "detail": detail})
            print(f"{name:<28}{status:<9}{rows[-1]['seconds']:>7.1f} s  {detail}", flush=True)
    total = time.perf_counter() - started
    print(
        f"{len(rows)} checks in {total / 60:.1f} min (budget {MINUTES} min): "
        f"{sum(r['status'] == 'ok' for r in rows)} ok, {sum(r['status'] == 'FAILED' for r in rows)} failed, "
        f"{sum(r['status'] == 'skipped' for r in rows)} skipped"
    )
    print(f"results written to {write_results('gpu_check_' + args.device, {'machine': info, 'rows': rows})}")
    return 1 if any(r["status"] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
