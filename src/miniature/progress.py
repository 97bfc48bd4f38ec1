"""Progress lines for long steps: forward passes, attacks, fine-tuning and distillation.

A step that takes minutes must say how far it is and how long it has left, or users kill it.
Where someone watches (a terminal, not ``-q``), a line every ``every`` seconds and one at the end;
elsewhere (CI logs, ``-q``) one line when the step finishes, so logs stay short.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Says ``what``: ``done``/``total`` ``unit``, the rate, and the time left at that rate."""

    def __init__(self, say: Callable[[str], None], what: str, total: int, *, unit: str = "points",
                 live: bool = True, every: float = 10.0, per: str = "s") -> None:
        self.say, self.what, self.total, self.unit = say, what, total, unit
        self.live, self.every, self.per = live, every, per
        self.start = self.last = time.perf_counter()
        self.done = 0

    def rate(self, elapsed: float) -> str:
        if elapsed <= 0 or self.done == 0:
            return ""
        scale = 60.0 if self.per == "min" else 1.0
        return f", {self.done / elapsed * scale:.1f} {self.unit}/{self.per}"

    def line(self, extra: str = "", *, final: bool = False) -> str:
        elapsed = time.perf_counter() - self.start
        text = f"{self.what}: {self.done}/{self.total} {self.unit}{self.rate(elapsed)}"
        if extra:
            text += f", {extra}"
        if final:
            return f"{text}, done in {_duration(elapsed)}"
        left = (self.total - self.done) * elapsed / self.done if self.done else None
        return text + (f", ~{_duration(left)} left" if left is not None else "")

    def update(self, done: int, extra: str = "") -> None:
        """``done`` units finished so far; a line when one is due (live) or when the step is complete."""
        self.done = done
        now = time.perf_counter()
        if done >= self.total:
            self.say(self.line(extra, final=True))
        elif self.live and now - self.last >= self.every:
            self.last = now
            self.say(self.line(extra))

    def __call__(self, done: int, total: int | None = None) -> None:
        """The ``progress(done, total)`` callback shape the backends take."""
        if total is not None:
            self.total = total
        self.update(done)
