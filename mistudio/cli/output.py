"""Terminal output for the CLI: a progress bar (or log lines), JSON or text, simple tables."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mistudio.core.runtime.tasks import CallbackTask, CancelToken


class CliProgress:
    """A progress bar on a terminal, or a status line every few seconds in a log."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._status = ""
        self._last_line = 0.0
        self._last_text = ""

    def progress(self, fraction: float) -> None:
        if not self.enabled:
            return
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=1000, file=sys.stderr, leave=False,
                                 bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
            self._bar.n = int(fraction * 1000)
            self._bar.set_description_str(self._status[:50], refresh=False)
            self._bar.refresh()
        elif self._status:  # a log line says what is being done, never a bare percentage
            line = f"[{fraction:4.0%}] {self._status}"
            if line != self._last_text and (time.monotonic() - self._last_line > 5
                                            or fraction >= 1.0):
                self._last_line, self._last_text = time.monotonic(), line
                print(line, file=sys.stderr, flush=True)

    def status(self, text: str) -> None:
        self._status = text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def cli_task(args: argparse.Namespace) -> Iterator[CallbackTask]:
    """A task wired to the terminal; Ctrl-C sets its cancel token instead of killing the job."""
    bar = CliProgress(enabled=not args.json and not getattr(args, "quiet", False))
    token = CancelToken()

    def on_sigint(_sig: int, _frame: Any) -> None:
        if token.is_set():
            raise KeyboardInterrupt
        token.cancel()
        print("\nCancelling... (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield CallbackTask(bar.progress, bar.status, cancel=token)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()


def emit(args: argparse.Namespace, data: Any, text: Callable[[Any], str] | str) -> None:
    """Print ``data`` as JSON with --json (typed records as their JSON), else the text."""
    if args.json:
        print(json.dumps(jsonable(data), indent=2, default=str))
    else:
        print(text(data) if callable(text) else text)


def jsonable(data: Any) -> Any:
    """``data`` with typed records, catalog rows and named tuples as plain JSON values."""
    if hasattr(data, "to_json"):
        return data.to_json()
    if hasattr(data, "_asdict"):
        return {k: jsonable(v) for k, v in data._asdict().items()}
    if isinstance(data, list | tuple):
        return [jsonable(v) for v in data]
    if isinstance(data, dict):
        return {k: jsonable(v) for k, v in data.items()}
    return data


def table(rows: list[list[Any]], header: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def fmt_dict(d: dict[str, Any], indent: int = 0) -> str:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(" " * indent + f"{k}:")
            lines.append(fmt_dict(v, indent + 2))
        else:
            lines.append(" " * indent + f"{k}: {v}")
    return "\n".join(lines)


def fmt_num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
