"""The CLI reference page (docs/cli-reference.md), generated from the parser itself, so that
every command and option it lists exists and says what ``--help`` says.

    python -m mistudio.cli.reference > docs/cli-reference.md

A test checks that the page in docs/ is the one this writes (with no plugins installed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from mistudio.cli.parser import build_parser

INTRO = """# Command-line reference

Generated from the parser (`python -m mistudio.cli.reference > docs/cli-reference.md`); a
test keeps it current. Every command also takes `--workspace DIR`, `--json` and `--online`,
before or after the command. See [The command line](cli.md) for a guided tour.
"""
GLOBAL = {"--workspace", "--json", "--online", "-h"}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _option_rows(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        names = action.option_strings
        if set(names) & GLOBAL:
            continue
        if names:
            value = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            shown = ", ".join(f"`{n}{value}`" for n in names)
        else:
            shown = f"`{action.metavar or action.dest.upper()}`"
        text = (action.help or "").replace("|", "\\|").replace("\n", " ")
        if action.choices and not isinstance(action.choices, dict):
            text += f" (one of: {', '.join(map(str, action.choices))})"
        if (action.default not in (None, False, argparse.SUPPRESS) and names
                and "%(default)" not in (action.help or "") and "default" not in text.lower()):
            text += f" (default: {action.default})"
        yield f"| {shown} | {text.strip()} |"


def _command(name: str, parser: argparse.ArgumentParser, summary: str) -> list[str]:
    out = [f"## mistudio {name}", "", summary[:1].upper() + summary[1:] + ".", ""]
    rows = list(_option_rows(parser))
    if rows:
        out += ["| option | what it does |", "|---|---|", *rows, ""]
    for action_name, sub in _subcommands(parser).items():
        out += [f"### mistudio {name} {action_name}", "",
                (_help_of(parser, action_name) or action_name).capitalize() + ".", ""]
        sub_rows = list(_option_rows(sub))
        if sub_rows:
            out += ["| option | what it does |", "|---|---|", *sub_rows, ""]
    return out


def reference() -> str:
    """The whole page, commands in the order ``mistudio --help`` lists them."""
    parser = build_parser()
    lines = [INTRO, "## mistudio", "", "With no command: the desktop app.", "",
             "| option | what it does |", "|---|---|", *_option_rows(parser), ""]
    for name, sub in _subcommands(parser).items():
        lines += _command(name, sub, _help_of(parser, name))
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
