"""Errors that reach the user as one line: what, where, what to do."""

from __future__ import annotations


class AuditorError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``str(error)`` as a single line on stderr and exits with ``exit_code``;
    it never shows a traceback for these.
    """

    exit_code = 2

    def __init__(self, what: str, where: str | None = None, hint: str | None = None) -> None:
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.hint:
            parts.append(self.hint)
        return " — ".join(parts).replace("\n", " ")


class InputError(AuditorError):
    """A file that cannot be read at all (not a capture, empty, only unsupported link types...)."""
