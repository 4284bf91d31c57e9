"""Command line of the Broden+ tools: `download` the raw sources, `prepare` them into the multi-task layout."""

from __future__ import annotations

import argparse
import sys

from ...data.records import DataError
from .download import fetch_all
from .prepare import Settings, format_summary, prepare
from .tables import SPLITS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mit_semseg.prepare.broden",
        description="Download and prepare Broden+ for Unified Perceptual Parsing.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="download and unpack the raw sources (resumable)")
    get.add_argument("--raw", default="data/broden/raw", help="raw folder (default: data/broden/raw)")
    get.add_argument(
        "--splits",
        default=str(SPLITS),
        help="folder of the split lists, which say which OpenSurfaces photos to fetch (default: the original's)",
    )
    get.add_argument("--no-progress", action="store_true", help="no progress bars")
    make = commands.add_parser("prepare", help="prepare the raw sources into the multi-task layout")
    make.add_argument("raw", help="the raw folder the download wrote")
    make.add_argument("out", help="the prepared folder (DATASET.root_dataset)")
    make.add_argument("--workers", type=int, default=None, help="processes (default: every CPU core)")
    make.add_argument("--limit", type=int, default=Settings.limit, help="largest side length (default: 512)")
    make.add_argument(
        "--side",
        choices=("short", "long"),
        default=Settings.side,
        help="the side --limit applies to: short (default, the sizes of the original's split lists) "
        "or long (no side above the limit)",
    )
    make.add_argument("--splits", default=str(SPLITS), help="folder of the split lists (default: the original's)")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "download":
        failures = fetch_all(args.raw, progress=not args.no_progress, splits=args.splits)
        for failure in failures:
            print(f"error: {failure}", file=sys.stderr)
        return 1 if failures else 0
    if args.limit < 1:
        parser.error(f"--limit must be positive, got {args.limit}")
    try:
        summary = prepare(
            args.raw,
            args.out,
            Settings(args.limit, args.side),
            args.splits,
            args.workers,
            progress=not args.no_progress,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary, args.out))
    if summary["problems"]:
        prepared = sum(c.get("prepared", 0) for c in summary["images"].values())
        print(
            f"error: {len(summary['problems'])} problems left images or sources out ({prepared} images prepared); "
            "see the problems above and fix them, then run again: finished images are kept",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
