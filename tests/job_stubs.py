"""Stand-ins for the app's jobs, for tests of the job center (importable by child processes:
the tests' folder is on the path the children inherit)."""

from __future__ import annotations

import time
from typing import Any

from mistudio.core.jobs.services import ModelKey
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import check_cancelled


def count(ws: Any, n: int, task: Any = None) -> str:
    """Far more reports than a UI could draw, then a result."""
    for i in range(n):
        task.set_progress(i / n)
        task.emit_partial(i)
    return "done"


def until_cancelled(ws_or_ctx: Any, *args: Any, task: Any = None, **kwargs: Any) -> None:
    """Says it is working, then waits for its cancel (any placement, any arguments)."""
    task.set_status("stub working")
    while True:
        check_cancelled(task)
        time.sleep(0.01)


def bad(ws: Any, task: Any = None) -> None:
    raise InvalidInputError("The thing is wrong.", "Use «batch_size=1024».")


def where(ws_or_ctx: Any, task: Any = None) -> int:
    """The process it runs in."""
    import os

    return os.getpid()


def stub_model(root: str, *args: Any, **kwargs: Any) -> ModelKey:
    """A model key of its own for each job (its first argument), so their services differ."""
    return ModelKey(f"stub-{args[0]}" if args else "stub-model")
