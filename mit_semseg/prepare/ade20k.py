"""Download ADE20K (the SceneParsing challenge release) and write its record lists.

    python -m mit_semseg.prepare.ade20k [--data DIR]

Downloads ADEChallengeData2016.zip into DIR (default `data`), resuming a partial download,
unzips it, and writes DIR/training.odgt and DIR/validation.odgt.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile

from ..data.records import DataError, write_odgt
from ..hub import DownloadError, download
from .make_odgt import make_odgt, summary

ADE20K_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
FOLDER = "ADEChallengeData2016"


def prepare(data_dir: str, url: str = ADE20K_URL) -> None:
    archive = os.path.join(data_dir, os.path.basename(url))
    dataset = os.path.join(data_dir, FOLDER)
    if not os.path.isdir(os.path.join(dataset, "images")):
        download(url, archive)
        print(f"unzipping {archive}")
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(data_dir)
        except zipfile.BadZipFile as err:
            raise DataError(f"{archive} is not a valid zip file ({err}); delete it and run again") from err
    for split in ("training", "validation"):
        out = os.path.join(data_dir, f"{split}.odgt")
        report = make_odgt(
            os.path.join(dataset, "images", split), os.path.join(dataset, "annotations", split), root=data_dir
        )
        if not report.records:
            raise DataError(f"no image/label pairs found under {dataset} for {split}")
        write_odgt(out, report.records)
        print(summary(report, out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data", help="data folder (default: data)")
    parser.add_argument("--url", default=os.environ.get("ADE20K_URL", ADE20K_URL), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        prepare(args.data, args.url)
    except (DownloadError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
