"""python -m mit_semseg.serve --model NAME | --cfg CFG [--checkpoint C] | --onnx FILE [...]: the page and the HTTP API.

Several models at once (each flag may repeat); the first (or --default) answers requests that name none.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import cli
from ..config import ConfigError, load_config
from ..segmenter import Segmenter

PROG = "python -m mit_semseg.serve"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        type=cli.model_name,
        metavar="NAME",
        help=cli.MODEL_HELP,
    )
    parser.add_argument(
        "--cfg",
        action="append",
        default=[],
        metavar="FILE",
        help="a config; weights DIR/{encoder,decoder}_<TEST.checkpoint> (named by the file's stem)",
    )
    parser.add_argument("--checkpoint", help="with --cfg: this checkpoint instead of TEST.checkpoint")
    parser.add_argument("--onnx", action="append", default=[], metavar="FILE", help="an exported file (on the CPU)")
    parser.add_argument("--default", help="the model that answers requests naming none (default: the first)")
    parser.add_argument("--gpu", default="0", help="GPU index, or cpu (default: 0, the CPU when there is no GPU)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--queue-size", type=int, default=8, help="requests waiting per model before 503 (default 8)")
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="queued images of one size run through the network together, up to this many (default 1: one by one; "
        "faster on a GPU, not on a CPU)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait and run (default 60)")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    parser.add_argument("--max-megapixels", type=float, default=25.0, help="largest decoded image (default 25)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model: KEY VALUE ...")
    return parser


def _segmenters(args: argparse.Namespace, device) -> dict[str, Segmenter]:
    """The models the flags name, by name (a released model's, a config's or an ONNX file's stem)."""
    loaded = {}
    for name in args.model:
        loaded[name] = Segmenter.from_pretrained(name, device, args.opts)
    for path in args.cfg:
        cfg = load_config(path, args.opts)
        loaded[os.path.splitext(os.path.basename(path))[0]] = Segmenter(cfg, device, args.checkpoint)
    for path in args.onnx:
        loaded[os.path.splitext(os.path.basename(path))[0]] = Segmenter.from_onnx(path, args.opts)
    return loaded


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (args.model or args.cfg or args.onnx):
        return cli.usage(PROG, "name a model: --model NAME, --cfg FILE or --onnx FILE")
    try:
        import uvicorn

        from .app import Limits, create_app
        from .runner import ModelRunner
    except ModuleNotFoundError as err:
        return cli.fail(PROG, f"{err.name} is missing: pip install 'mit_semseg[serve]'")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        devices = cli.devices(args.gpu, PROG, "--gpu")
        segmenters = _segmenters(args, devices[0])
    except (ConfigError, ValueError) as err:
        return cli.usage(PROG, err)
    except (ModuleNotFoundError, *cli.RUN_ERRORS) as err:
        return cli.fail(PROG, err)
    default = args.default or next(iter(segmenters))
    if default not in segmenters:
        return cli.usage(PROG, f"--default {default}: not a loaded model ({', '.join(segmenters)})")
    if args.batch < 1 or args.queue_size < 1:
        return cli.usage(PROG, f"--batch and --queue-size must be 1 or more, got {args.batch} and {args.queue_size}")
    runners = {name: ModelRunner(name, s, args.queue_size, args.batch) for name, s in segmenters.items()}
    limits = Limits(int(args.max_body_mb * 2**20), int(args.max_megapixels * 1e6), args.timeout)
    print(f"serving {', '.join(runners)} (default {default}) on http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(
        create_app(runners, default, limits),
        host=args.host,
        port=args.port,
        access_log=False,
        timeout_graceful_shutdown=int(args.timeout) + 5,
        log_level="info",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
