"""Config validation shared by every dataclass config: errors name the field, value and fix."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config field with an invalid value."""


def check(ok: bool, name: str, value: Any, valid: str) -> None:
    """Raise ConfigError saying which field was wrong and what would be valid."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: expected {valid}")


def dataclass_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build the dataclass ``cls`` from ``data`` (e.g. a saved JSON config), refusing unknown
    fields with a message that lists the valid ones."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields {unknown}; valid: {sorted(known)}")
    return cls(**data)


def field_help(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass, for ``--help`` texts."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
        assert isinstance(body, ast.ClassDef)
        for node, after in zip(body.body, body.body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
            ):
                helps[node.target.id] = " ".join(str(after.value.value).split())
    return helps


def add_option(
    group: Any, name: str, hint: Any, *, default: Any, help: str, many: bool = False
) -> None:
    """One ``--name`` option for a field of type ``hint``: bools get --x / --no-x, lists (or
    ``many``) take one or more values, ``X | None`` takes an X."""
    flag = "--" + name.replace("_", "-")
    args = typing.get_args(hint)
    if hint is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
    elif typing.get_origin(hint) in (list, tuple):
        group.add_argument(flag, nargs="+", type=args[0], default=default, help=help)
    else:
        kinds = [a for a in args if a is not type(None)] or [hint]
        nargs = "+" if many else None
        group.add_argument(flag, type=kinds[0], nargs=nargs, default=default, help=help)


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    unset: bool = False,
    notes: dict[str, str] | None = None,
) -> None:
    """One ``--field-name`` option per dataclass field (see ``add_option``).

    With ``unset``, an option the user does not give is absent from the namespace instead of
    holding the field's default, so the caller can apply defaults of its own (e.g. per data set);
    ``notes`` adds text after a field's default in its help.
    """
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)
    notes = notes or {}
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").split("\n")[0])
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        note = f"; {notes[f.name]}" if f.name in notes else ""
        text = f"{helps.get(f.name, '')} (default: {default}{note})".strip()
        given = argparse.SUPPRESS if unset else default
        add_option(group, f.name, hints[f.name], default=given, help=text)


def argument_values(cls: type, namespace: argparse.Namespace) -> dict[str, Any]:
    """The values of ``cls``'s fields that ``namespace`` holds (see ``add_arguments``)."""
    return {
        f.name: getattr(namespace, f.name)
        for f in dataclasses.fields(cls)
        if f.init and hasattr(namespace, f.name)
    }


def from_arguments(cls: type[T], namespace: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from the options ``add_arguments`` made (validated at construction)."""
    return cls(**{**argument_values(cls, namespace), **overrides})
