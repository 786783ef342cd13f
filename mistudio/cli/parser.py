"""The ``mistudio`` command line: global options, and each module's commands wired in.

The options of the commands that run a core job are generated from the job's configuration
dataclass (:mod:`.config_args`); each command module registers its own commands.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from mistudio.cli.data_commands import add_data_commands
from mistudio.cli.feature_commands import add_feature_commands
from mistudio.cli.sae_commands import add_sae_commands
from mistudio.cli.steer_commands import add_steer_commands


def global_options(top_level: bool) -> argparse.ArgumentParser:
    """--workspace, --json and --online, accepted before or after the subcommand. The
    subcommands' copies default to SUPPRESS, so they never reset a value given before the
    subcommand (argparse's parents would otherwise write their own None / False over it)."""
    opts = argparse.ArgumentParser(add_help=False)
    kw: dict[str, Any] = {} if top_level else {"default": argparse.SUPPRESS}
    opts.add_argument("--workspace", help="workspace folder (default: $MISTUDIO_HOME or the "
                      "per-user data folder)", **kw)
    opts.add_argument("--json", action="store_true", help="machine-readable output", **kw)
    opts.add_argument("--online", action="store_true",
                      help="allow Hugging Face hub downloads for this command", **kw)
    return opts


def build_parser() -> argparse.ArgumentParser:
    common = global_options(top_level=False)
    p = argparse.ArgumentParser(prog="mistudio", description="miStudio: local mechanistic "
                                "interpretability workbench.", parents=[global_options(True)])
    p.add_argument("--version", action=_VersionAction, nargs=0,
                   help="version, git commit, PyTorch and Qt versions, device")
    p.add_argument("--self-test", action="store_true",
                   help="check this installation offline: a tiny extract, train, analyze and "
                   "steer on the embedded model, and the app's window (offscreen); exit 0 if "
                   "all work")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    def actions(sp: argparse.ArgumentParser, func: Callable) -> Any:
        """list / show / remove under ``sp``; more actions are added to the returned object."""
        return _Actions(sp, func, common)

    add_data_commands(add, actions)
    add_sae_commands(add, actions)
    add_feature_commands(add)
    add_steer_commands(add)
    sp = add("gui", _cmd_gui, "open the desktop app (also: `mistudio` with no command)")
    sp.add_argument("--quit-after", type=int, metavar="MS", help="close after MS (smoke tests)")
    sp.add_argument("--startup-time", action="store_true",
                    help="print the seconds from start to the window drawn, then quit")
    return p


class _Actions:
    """The ACTION subcommands of a command (list, show NAME, remove NAME, and more)."""

    def __init__(self, sp: argparse.ArgumentParser, func: Callable,
                 common: argparse.ArgumentParser) -> None:
        self._acts = sp.add_subparsers(dest="action", metavar="ACTION", required=True)
        self._func, self._common = func, common
        self.add_parser("list", help="list them")
        for verb in ("show", "remove"):
            self.add_parser(verb, help=f"{verb} one").add_argument("name")

    def add_parser(self, name: str, help: str) -> argparse.ArgumentParser:
        a = self._acts.add_parser(name, parents=[self._common], help=help)
        a.set_defaults(func=self._func)
        return a


def _cmd_gui(args: argparse.Namespace, ws: Any) -> None:
    from mistudio.cli import cmd_gui

    cmd_gui(args, ws)


class _VersionAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from mistudio.buildinfo import build_info, version_text

        info = build_info()
        print(json.dumps(info, indent=2) if getattr(namespace, "json", False)
              else version_text(info))
        parser.exit()
