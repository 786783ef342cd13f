"""Typed records that read and write JSON: manifests, summaries, results.

A :class:`Record` is a dataclass whose fields name what a JSON object holds. ``from_json`` is
forgiving in the two ways files on disk need: a key the class does not know (written by a newer
or older version) is kept in ``extra`` and written back unchanged, and a key the file lacks (a
field added since it was written) takes the field's default. Nested records, lists and dicts of
records are converted from the annotations, so ``manifest.summary.tokens`` is checked by name
where ``manifest["summary"]["tokens"]`` was not.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar, Union

R = TypeVar("R", bound="Record")


@dataclasses.dataclass
class Record:
    """A JSON object with named fields (subclasses are dataclasses)."""

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, kw_only=True, repr=False,
                                              compare=False)
    """Keys this version does not know, kept so that rewriting a file never drops them."""

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any] | None) -> R:
        """The record of a JSON object (missing keys at their defaults, unknown ones kept)."""
        data = dict(data or {})
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name != "extra" and f.name in data:
                kwargs[f.name] = _convert(hints[f.name], data.pop(f.name))
        return cls(**kwargs, extra=data)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: fields, then the unknown keys read with it."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = _plain(getattr(self, f.name))
        return {**self.extra, **out}

    def replace(self: R, **changes: Any) -> R:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as the annotation ``hint`` says: records built, the rest as is."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Record) and isinstance(value, dict):
        return hint.from_json(value)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_convert(item, v) for v in value]
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_convert(item, v) for v in value)
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """A field's value as JSON (records, tuples and nested containers included)."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value
