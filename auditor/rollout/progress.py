"""Progress of a rollout test on stderr: the phase, the elapsed time, requests and failures so far.

On a terminal, one live line (rich) under the lines already printed; elsewhere (CI logs, pipes), one
plain line per phase change and a count line at most every ``every_s`` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any, Protocol


class Progress(Protocol):
    def phase(self, name: str, detail: str = "") -> None: ...

    def counts(self, requests: int | None, failed: int = 0) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    def phase(self, name: str, detail: str = "") -> None:
        pass

    def counts(self, requests: int | None, failed: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """Plain lines: ``[  12.3s] rollout: 2 of 3 updated, 2 available, 4 total | 6,120 requests, 43 failed``."""

    def __init__(
        self, stream: IO[str] | None = None, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream or sys.stderr
        self.every_s, self.clock = every_s, clock
        self.start = clock()
        self.name, self.detail = "", ""
        self.requests: int | None = None
        self.failed = 0
        self._last = -1e9

    def _emit(self) -> None:
        load = f" | {self.requests:,} requests, {self.failed:,} failed" if self.requests is not None else ""
        detail = f": {self.detail}" if self.detail else ""
        self.stream.write(f"[{self.clock() - self.start:7.1f}s] {self.name}{detail}{load}\n")
        self.stream.flush()
        self._last = self.clock()

    def phase(self, name: str, detail: str = "") -> None:
        if (name, detail) == (self.name, self.detail):
            return
        self.name, self.detail = name, detail
        self._emit()

    def counts(self, requests: int | None, failed: int = 0) -> None:
        """The load's counts so far (None: no load running)."""
        self.requests, self.failed = requests, failed
        if requests is not None and self.clock() - self._last >= self.every_s:
            self._emit()

    def close(self) -> None:
        pass


class RichProgress:
    """One live status line on a terminal; each phase change also leaves a line above it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.clock, self.start = clock, clock()
        self.name, self.detail = "", ""
        self.requests: int | None = None
        self.failed = 0
        self._live: Any = Live(self._render(), console=self.console, transient=True, refresh_per_second=4,
                               get_renderable=self._render)  # fmt: skip
        self._live.start()

    def _render(self) -> Any:
        from rich.text import Text

        text = Text()
        text.append(f"{self.name or 'starting'}", style="bold cyan")
        if self.detail:
            text.append(f" {self.detail}")
        text.append(f"  {self.clock() - self.start:6.1f}s", style="dim")
        if self.requests is not None:
            text.append(f"  {self.requests:,} requests")
            text.append(f"  {self.failed:,} failed", style="bold red" if self.failed else "green")
        return text

    def phase(self, name: str, detail: str = "") -> None:
        if name != self.name:
            from rich.text import Text

            line = Text.assemble((f"{self.clock() - self.start:6.1f}s ", "dim"), name, f": {detail}" if detail else "")
            self.console.print(line, highlight=False)
        self.name, self.detail = name, detail

    def counts(self, requests: int | None, failed: int = 0) -> None:
        self.requests, self.failed = requests, failed

    def close(self) -> None:
        self._live.stop()


def make_progress(quiet: bool = False) -> Progress:
    if quiet:
        return NullProgress()
    if sys.stderr.isatty():
        return RichProgress()
    return PlainProgress()


__all__ = ["NullProgress", "PlainProgress", "Progress", "RichProgress", "make_progress"]
