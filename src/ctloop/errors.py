"""Errors that ctloop reports to its users.

Every error a user can cause (a bad file, a bad value, an unreachable database) is a
`CtloopError`: the CLI prints its message and exits non-zero without a traceback, while
programming errors still surface as ordinary exceptions.
"""

from __future__ import annotations


class CtloopError(Exception):
    """A problem the user can fix; the message says what and where."""


class FeatureViewError(CtloopError):
    """A feature view file is missing or malformed."""


class StoreUnavailableError(CtloopError):
    """The feature store database cannot be reached or used."""


class DataValidationError(CtloopError):
    """Input rows broke the feature view's contract; nothing was written."""

    def __init__(self, message: str, problems: list | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []
