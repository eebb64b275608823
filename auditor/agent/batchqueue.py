"""The queue between the poll loops and the writer: packet batches, bounded in batches, rows *and* bytes.

A bound in batches alone does not bound memory (a batch may hold one event or 50,000); the row bound
does for large batches, and the byte bound for many small ones: a packet table costs ~60 bytes a row
plus ~50 KB of its own (pandas objects, one categorical per text column), so 4,096 one-row batches
would hold 200 MB that the row bound never sees. The caller gives each item's estimated bytes
(:func:`auditor.agent.frames.frame_bytes`). An empty queue takes any batch, so one oversized batch
never deadlocks a poll loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class BatchQueue:
    """FIFO of ``(item, rows, bytes)``; :meth:`put` waits for room up to a timeout, then refuses."""

    def __init__(self, max_batches: int, max_rows: int, max_bytes: int = 0) -> None:
        """``max_bytes`` 0: no byte bound."""
        self.max_batches, self.max_rows = max(1, max_batches), max(1, max_rows)
        self.max_bytes = max(0, max_bytes)
        self._items: deque[tuple[Any, int, int]] = deque()
        self._rows = 0
        self._bytes = 0
        self._cond = threading.Condition()
        self.peak_rows = 0
        self.peak_bytes = 0

    def _full(self, rows: int, nbytes: int) -> bool:
        return bool(self._items) and (
            len(self._items) >= self.max_batches
            or self._rows + rows > self.max_rows
            or (self.max_bytes > 0 and self._bytes + nbytes > self.max_bytes)
        )

    def put(self, item: Any, rows: int, timeout: float, nbytes: int = 0) -> bool:
        """Append, waiting up to ``timeout`` s for room; False if there was none (the caller counts it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._full(rows, nbytes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._items.append((item, rows, nbytes))
            self._rows += rows
            self._bytes += nbytes
            self.peak_rows = max(self.peak_rows, self._rows)
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            self._cond.notify_all()
            return True

    def put_always(self, item: Any) -> None:
        """Append a control item (no rows) whatever the bounds."""
        with self._cond:
            self._items.append((item, 0, 0))
            self._cond.notify_all()

    def get(self, timeout: float) -> tuple[bool, Any]:
        """``(True, item)``, or ``(False, None)`` if nothing came within ``timeout`` s (0: do not wait)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False, None
                self._cond.wait(remaining)
            item, rows, nbytes = self._items.popleft()
            self._rows -= rows
            self._bytes -= nbytes
            self._cond.notify_all()
            return True, item

    @property
    def rows(self) -> int:
        with self._cond:
            return self._rows

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes
