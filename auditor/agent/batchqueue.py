"""The queue between the poll loops and the writer: packet batches, bounded in batches *and* rows.

A bound in batches alone does not bound memory (a batch may hold one event or 50,000); the row
bound does. An empty queue takes any batch, so one oversized batch never deadlocks a poll loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class BatchQueue:
    """FIFO of ``(item, rows)``; :meth:`put` waits for room up to a timeout, then refuses."""

    def __init__(self, max_batches: int, max_rows: int) -> None:
        self.max_batches, self.max_rows = max(1, max_batches), max(1, max_rows)
        self._items: deque[tuple[Any, int]] = deque()
        self._rows = 0
        self._cond = threading.Condition()
        self.peak_rows = 0

    def put(self, item: Any, rows: int, timeout: float) -> bool:
        """Append, waiting up to ``timeout`` s for room; False if there was none (the caller counts it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items and (len(self._items) >= self.max_batches or self._rows + rows > self.max_rows):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._items.append((item, rows))
            self._rows += rows
            self.peak_rows = max(self.peak_rows, self._rows)
            self._cond.notify_all()
            return True

    def put_always(self, item: Any) -> None:
        """Append a control item (no rows) whatever the bounds."""
        with self._cond:
            self._items.append((item, 0))
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
            item, rows = self._items.popleft()
            self._rows -= rows
            self._cond.notify_all()
            return True, item

    @property
    def rows(self) -> int:
        with self._cond:
            return self._rows
