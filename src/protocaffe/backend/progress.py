"""A one-line progress bar on stderr for weight writing that takes a while.

It draws nothing for small or quick work: only once `delay` seconds have passed, or from the
start when there are at least `min_bytes` to write. Callers create it only when stderr is a
terminal and the user did not ask for `--quiet`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

_WIDTH = 30  # characters of the bar itself
_REDRAW = 0.1  # seconds between redraws
_MB = 1_000_000


class ProgressBar:
    """Called with (done, total) bytes; redraws `label [####....]  42%  232/553 MB` in place."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        delay: float = 0.5,
        min_bytes: int = 50 * _MB,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream
        self.delay = delay
        self.min_bytes = min_bytes
        self.clock = clock
        self.started = clock()
        self.last_draw: float | None = None
        self.last: tuple[int, int] = (0, 0)

    @property
    def shown(self) -> bool:
        return self.last_draw is not None

    def __call__(self, done: int, total: int) -> None:
        self.last = (done, total)
        now = self.clock()
        if not self.shown and total < self.min_bytes and now - self.started < self.delay:
            return
        if self.last_draw is not None and now - self.last_draw < _REDRAW and done < total:
            return
        self.last_draw = now
        self.stream.write("\r" + render_bar(self.label, done, total))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line, if anything was drawn."""
        if self.shown:
            done, total = self.last
            self.stream.write("\r" + render_bar(self.label, done, total) + "\n")
            self.stream.flush()


def render_bar(label: str, done: int, total: int) -> str:
    fraction = done / total if total else 1.0
    filled = round(fraction * _WIDTH)
    bar = "#" * filled + "." * (_WIDTH - filled)
    return f"{label} [{bar}] {fraction:4.0%}  {done / _MB:.0f}/{total / _MB:.0f} MB"
