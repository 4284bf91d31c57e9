"""The ten slowest tests of all of `make test`'s runs, from their JUnit reports (setup, call and teardown together).

python tests/slowest.py REPORT.xml [REPORT.xml ...]
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SHOWN = 10


def slowest(reports: list[str], shown: int = SHOWN) -> list[tuple[float, str, str]]:
    """(seconds, run, test) of the slowest tests of the reports; a report's run is its file name."""
    rows = [
        (float(case.get("time", 0.0)), Path(report).stem, f"{case.get('classname')}::{case.get('name')}")
        for report in reports
        for case in ET.parse(report).iter("testcase")
    ]
    return sorted(rows, reverse=True)[:shown]


if __name__ == "__main__":
    print(f"the {SHOWN} slowest tests of make test (seconds, run, test):")
    for seconds, run, test in slowest(sys.argv[1:]):
        print(f"{seconds:8.2f}  {run:<10} {test}")
