"""``mistudio``: the scriptable face of the core library.

Every subcommand takes ``--workspace``, ``--json`` and ``--online``. Errors the user can fix
print one line (the problem and the fix) and exit with status 2; Ctrl-C cancels the running job
cleanly (a second Ctrl-C aborts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mistudio import __version__
from mistudio.cli.output import CliProgress, cli_task, emit
from mistudio.cli.parser import build_parser
from mistudio.cli.words import CliWords
from mistudio.core.runtime.errors import Cancelled, MiStudioError, as_user_error
from mistudio.core.store.workspace import Workspace

__all__ = ["CliProgress", "build_parser", "cli_task", "emit", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test(args)
    if args.command is None:
        if argv is None and _gui_available():  # `mistudio` alone, or a double click: the app
            from mistudio.gui.app import run_app

            # the same folder `mistudio gui` opens: --workspace, else $MISTUDIO_HOME, else the
            # one the app remembers
            return run_app(args.workspace or os.environ.get("MISTUDIO_HOME") or None)
        parser.print_help()
        print("\nStart with: mistudio quickstart --headless", file=sys.stderr)
        return 0
    if args.online:
        from mistudio.core.runtime.online import set_online

        set_online(True)
    ws = None
    try:
        ws = Workspace(args.workspace)
        args.func(args, ws)
        return 0
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = None  # type: ignore[assignment]  # nothing more can be written there
        return 0
    except (MiStudioError, OSError) as err:
        user = as_user_error(err)
        if user is None:
            raise
        report_error(user, parser, bool(getattr(args, "json", False)))
        return user.exit_code
    except (Cancelled, KeyboardInterrupt):
        print("Cancelled. Completed work is kept; run the same command to resume where "
              "supported.", file=sys.stderr)
        return 130
    finally:
        if ws is not None:
            ws.close()


def report_error(err: MiStudioError, parser: argparse.ArgumentParser, as_json: bool) -> None:
    """One line on stderr naming the options and commands that fix it; with --json, the
    structured error (problem, fix, the settings it names) as a JSON object on stdout."""
    words = CliWords(parser)
    if as_json:
        print(json.dumps(err.to_json(words), indent=2))
    print(f"error: {err.render(words)}", file=sys.stderr)


def self_test(args: argparse.Namespace) -> int:
    """The core's self-test, then the window built and closed offscreen."""
    import os
    import time

    from mistudio.core.jobs.selftest import self_test as core_self_test

    try:
        with cli_task(args) as task:
            report = core_self_test(task)
    except MiStudioError as err:
        print(f"self-test FAILED: {err}", file=sys.stderr)
        return 1
    t = time.perf_counter()
    try:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from mistudio.gui.app import smoke_window

        report["steps"]["window"] = {**smoke_window(), "seconds": round(time.perf_counter() - t,
                                                                        2)}
    except ImportError as err:  # a CLI-only installation has no Qt
        report["steps"]["window"] = {"skipped": f"no Qt ({err})"}
    emit(args, report, lambda r: "\n".join(
        [f"  {name:<9} {s.get('seconds', 0):6.1f} s  " + ", ".join(
            f"{k} {v}" for k, v in s.items() if k != "seconds") for name, s in r["steps"].items()]
        + [f"self-test passed in {r['seconds']:.0f} s: miStudio {__version__} works offline "
           "on this machine."]))
    return 0


def _gui_available() -> bool:
    try:
        from mistudio.gui.app import can_show_window
    except ImportError:  # a build without PySide6: the CLI still works
        return False
    return can_show_window()


def cmd_gui(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.gui.app import can_show_window, run_app

    if not can_show_window():
        raise MiStudioError("There is no display to show the window on.",
                            "Run it on a desktop, or set QT_QPA_PLATFORM=offscreen to test.")
    ws.close()
    code = run_app(str(ws.root), args.quit_after, args.startup_time)
    if code:
        raise MiStudioError(f"The app ended with status {code}.", "See the messages above.")


if __name__ == "__main__":
    raise SystemExit(main())
