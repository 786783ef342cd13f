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


def as_user_error(err: BaseException) -> MiStudioError | None:
    """The one-line form of an operating-system error a user can fix (a full disk, a folder
    without write permission), or None for anything else. The CLI and the app use it as their
    last net, so no such error ever reaches the user as a traceback."""
    import errno

    if isinstance(err, MiStudioError):
        return err
    if not isinstance(err, OSError):
        return None
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"The disk is full{where}; the job stopped and completed work is "
                             "kept.", "Free some space and run it again to continue.")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ResourceError(f"miStudio may not write there{where}.",
                             "Choose a writable workspace folder (--workspace or MISTUDIO_HOME).")
    return None
