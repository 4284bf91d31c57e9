"""Record lists in the original `.odgt` format: one JSON object per line.

Each record has `fpath_img`, `fpath_segm`, `width` and `height`; paths are relative to the
dataset root unless absolute.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

REQUIRED_KEYS = ("fpath_img", "fpath_segm", "width", "height")
MAX_LISTED = 20


class DataError(ValueError):
    """Bad data: the message names the file (and line) at fault."""


def read_json_lines(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(`<path>, line N`, record) for each non-empty line of a record list; bad JSON names the line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"record list not found: {path}")
    found = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: malformed JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object")
            found = True
            yield where, record
    if not found:
        raise DataError(f"{path}: the record list is empty")


def check_record(record: dict, where: str, required: Iterable[str]) -> None:
    """The record has the `required` keys, and positive integer `width` and `height`."""
    missing = [k for k in required if k not in record]
    if missing:
        raise DataError(f"{where}: missing key {', '.join(repr(k) for k in missing)}")
    for key in ("width", "height"):
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DataError(f"{where}: {key} must be a positive integer, got {value!r}")


def check_files_exist(path: str | os.PathLike, files: Iterable[str]) -> None:
    """Every one of `files` (listed in the record list `path`) exists; the missing ones are named together."""
    missing = [p for p in files if not os.path.isfile(p)]
    if missing:
        listed = "\n  ".join(missing[:MAX_LISTED])
        more = f"\n  ... and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise DataError(f"{os.fspath(path)}: {len(missing)} files listed are missing:\n  {listed}{more}")


def read_odgt(path: str | os.PathLike, root: str | os.PathLike = "", check_files: bool = True) -> list[dict]:
    """Read and validate a record list; paths in the result are resolved against `root`.

    With `check_files`, every missing image or label is reported together in one error.
    """
    records = []
    for where, record in read_json_lines(path):
        check_record(record, where, REQUIRED_KEYS)
        for key in ("fpath_img", "fpath_segm"):
            record[key] = os.path.join(os.fspath(root), record[key])
        records.append(record)
    if check_files:
        check_files_exist(path, (p for r in records for p in (r["fpath_img"], r["fpath_segm"])))
    return records


def write_json(path: str | os.PathLike, value: object, indent: int | None = None) -> None:
    """Write `value` as JSON, atomically (a temporary file of this process renamed when whole)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=indent)
    os.replace(tmp, path)


def write_json_lines(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically (a temporary file renamed when whole)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def write_odgt(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Write records in the `.odgt` format (the required keys only), atomically."""
    write_json_lines(path, ({k: record[k] for k in REQUIRED_KEYS} for record in records))
