"""Errors raised by the BASIC engine.

Every error a script author can cause is one of these, carrying a line (and a column for compile
errors) so `basic check` and the chat console can point at the offending spot instead of showing a
Python traceback.
"""

from __future__ import annotations


class BasicError(Exception):
    """Base class of every error the engine raises on purpose."""


class CompileError(BasicError):
    """The source cannot be compiled; `line` and `col` are 1-based."""

    def __init__(self, message: str, line: int, col: int = 1) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.message = message
        self.line = line
        self.col = col


class BasicRuntimeError(BasicError):
    """A script failed while running; `line` is filled in by the VM when it is not known here."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class LimitExceeded(BasicRuntimeError):
    """A sandbox limit (instructions, wall time, value or output size) was hit; never trappable."""


class MemoryLimitExceeded(LimitExceeded):
    """The run holds more values than its memory limit (apps/basic/memory.py), or the process ran out of memory
    while it ran (a MemoryError): the run ends and lets go of its values."""


def out_of_memory(where: str = "") -> MemoryLimitExceeded:
    """The error a MemoryError inside a run becomes (the process lives on; the run that was allocating ends)."""
    return MemoryLimitExceeded(f"memory limit: the server ran out of memory{f' in {where}' if where else ''} "
                               "while running this script")


class StateError(BasicError):
    """A saved VM state cannot be resumed (corrupt, from another program version, not waiting)."""
