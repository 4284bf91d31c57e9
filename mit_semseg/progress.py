"""Progress for people: a bar on a terminal; in a log file or under a batch scheduler, a plain line now and then.

tqdm rewrites its line at every refresh; written to a file, that is one line of hundreds of kilobytes.
Without a terminal, `Progress` prints a line every `every` steps (and at the end) instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm


class Progress:
    """`update()` as steps are done, `set_postfix(**values)` for figures to show, `write(text)` for other lines.

    Without a terminal the plain lines go to `printer` (default: printed to the stream).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        initial: int = 0,
        every: int | None = None,
        enabled: bool = True,
        unit_scale: bool = False,
        stream: TextIO | None = None,
        printer: Callable[[str], None] | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.printer = printer or (lambda line: print(line, file=self.stream, flush=True))
        self.total, self.desc, self.unit, self.count, self.unit_scale = total, desc, unit, initial, unit_scale
        self.every = every or max(1, (total or 0) // 10)
        self.enabled, self.postfix, self.started = enabled, "", time.perf_counter()
        terminal = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = (
            tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                unit_scale=unit_scale,
                dynamic_ncols=True,
                file=self.stream,
            )
            if terminal
            else None
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _amount(self, n: float) -> str:
        return tqdm.format_sizeof(n) if self.unit_scale else str(n)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (self.count % self.every < n or self.count == self.total):
            seconds = time.perf_counter() - self.started
            total = f"/{self._amount(self.total)}" if self.total else ""
            self.printer(f"{self.desc}: {self._amount(self.count)}{total} {self.unit} ({seconds:.0f} s){self.postfix}")

    def set_postfix(self, **values: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix(refresh=False, **values)
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def write(self, text: str, file: TextIO | None = None) -> None:
        """A line of its own (to `file`, default the progress stream), not broken by the bar."""
        if self.bar is not None:
            self.bar.write(text, file=file or self.stream)
        else:
            print(text, file=file or self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
