"""Command-line options generated from the core's configuration dataclasses.

Each field of a config (``TrainConfig``, ``ExtractConfig``, ...) becomes an option: its name
gives the flag (``batch_size`` -> ``--batch-size``), its annotation the type and choices, its
docstring the help text, its default the default shown. The parser's default is None for every
generated option, and :func:`config_kwargs` passes on only what was given, so the dataclass
stays the one place a default is written. A new setting is one field with its docstring.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union


@dataclasses.dataclass(frozen=True)
class Option:
    """How one field appears on the command line, where it differs from the general rule."""

    flag: str | None = None
    """The option's name (default: ``--`` and the field's name with hyphens)."""
    aliases: tuple[str, ...] = ()
    """More names for the same option."""
    repeat: bool = False
    """A tuple field given by repeating the option (``--layer 6 --layer 12``)."""
    sweep: bool = False
    """Comma-separated values, several making a sweep (train)."""
    choices: tuple[str, ...] | None = None
    """Choices instead of the annotation's (an extra value the CLI maps itself)."""
    default: Any = None
    """A default for the command line only (e.g. the embedded model)."""
    help: str | None = None
    metavar: str | None = None
    required: bool | None = None
    """Whether the option must be given (default: when the field has no default)."""


def add_config(parser: argparse.ArgumentParser, cls: type, options: dict[str, Option] | None = None,
               skip: tuple[str, ...] = ()) -> None:
    """Add an option for every init field of ``cls`` but those in ``skip``."""
    options = options or {}
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        opt = options.get(f.name, Option())
        kind, choices, item = _describe(hints[f.name])
        flags = [opt.flag or "--" + f.name.replace("_", "-"), *opt.aliases]
        kw: dict[str, Any] = {"dest": f.name, "default": opt.default,
                              "help": opt.help or _help(docs.get(f.name, ""), f, opt.default)}
        if opt.required if opt.required is not None else (
                _default(f) is dataclasses.MISSING and opt.default is None):
            kw["required"] = True
        if kind is bool:
            if _default(f) is True:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["action"] = "store_true"
            parser.add_argument(*flags, **kw)
            continue
        if opt.choices is not None or choices is not None:
            kw["choices"] = list(opt.choices or choices or ())
        if opt.sweep:
            kw["type"] = _comma_list(item or kind, kw.pop("choices", None))
        elif opt.repeat or kind is tuple:
            kw.update(type=item or str, action="append") if opt.repeat else kw.update(
                type=item or str, nargs="+")
        else:
            kw["type"] = kind
        if opt.metavar or opt.sweep:
            kw["metavar"] = opt.metavar or "VALUES"
        parser.add_argument(*flags, **kw)


def config_kwargs(args: argparse.Namespace, cls: type,
                  skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (tuples for repeated options)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        value = getattr(args, f.name, None)
        if value is None or (value is False and _default(f) is False):
            continue
        out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every option's destination -> its first long flag, across all subcommands."""
    out: dict[str, str] = {}
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings and action.dest not in out:
                longs = [s for s in action.option_strings if s.startswith("--")]
                if longs:
                    out[action.dest] = longs[0]
    return out


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (its own and its bases'), read
    from the source; empty where the source is not at hand."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in itertools.pairwise(body):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and \
                    isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and \
                    isinstance(after.value.value, str):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def _describe(hint: Any) -> tuple[Any, tuple[str, ...] | None, Any]:
    """(python type, choices, item type of a tuple) of an annotation."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _describe(options[0]) if len(options) == 1 else (str, None, None)
    if origin is Literal:
        values = typing.get_args(hint)
        return type(values[0]), tuple(str(v) for v in values), None
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        item = args[0] if args and isinstance(args[0], type) else str
        return tuple, None, item
    return (hint if isinstance(hint, type) else str), None, None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _help(doc: str, f: dataclasses.Field, cli_default: Any = None) -> str:
    """The field's docstring (its first sentence when long) and its default (the CLI's own,
    when it has one)."""
    text = doc.split(". ")[0].rstrip(".") if len(doc) > 160 else doc.rstrip(".")
    default = _default(f) if cli_default is None else cli_default
    if default is dataclasses.MISSING:
        return (text + " (required)").replace("%", "%%")
    if default in (None, False, ()) or isinstance(default, bool):
        return text.replace("%", "%%")
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{text} (default: {shown})".replace("%", "%%")


def _comma_list(kind: Callable[[str], Any],
                choices: list[str] | None) -> Callable[[str], list[Any]]:
    """argparse type: one value or a comma-separated list of them."""
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} values like 16,32") \
                from err
        if not values or (choices and any(str(v) not in choices for v in values)):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices or [])}")
        return values
    return parse
