"""Exceptions raised by rtdub. CLI commands map ``InputError`` to exit code 2."""

from __future__ import annotations


class RtdubError(Exception):
    """Base class of every error rtdub raises on purpose."""


class InputError(RtdubError):
    """Bad user input: a missing file, a file without the expected stream, no face."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class OutputError(RtdubError):
    """An output cannot be written while running: a full disk, a failing device (the command
    line exits 1; a location that cannot take the output at all is an InputError, found
    before the work starts)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ModelError(RtdubError):
    """A model bundle is missing, malformed or incompatible."""


class BackendUnavailable(RtdubError):
    """An inference backend cannot run here (missing package or device)."""
