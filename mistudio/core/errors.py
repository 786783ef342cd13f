"""One error type for everything a user can get wrong, with the fix spelled out."""

from __future__ import annotations


class MiStudioWarning(UserWarning):
    """Warnings raised by miStudio itself (tests turn these into errors)."""


class MiStudioError(Exception):
    """A problem the user can fix: what went wrong, and what to do about it.

    The CLI prints ``str(err)`` as one line and exits non-zero; the app shows it in a dialog.
    Nothing that raises this may leave the workspace damaged.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip() if fix else problem)


class NotFoundError(MiStudioError):
    """A named artifact, file or model does not exist."""


class InvalidInputError(MiStudioError):
    """An argument or a file's content is not usable."""


class ResourceError(MiStudioError):
    """Not enough memory or disk for the requested operation."""


class CorruptedError(MiStudioError):
    """A manifest, catalog row or data file in the workspace cannot be read."""


class Cancelled(Exception):
    """Raised inside a job when its cancel token is set; the job cleans up and re-raises."""
