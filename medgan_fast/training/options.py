"""The keys an architecture adds to the common train config, and the value checks both use.

An architecture declares its keys as a dataclass whose fields are made with :func:`option`
(default, one line of help, the valid values) and registers it (``register(...,
options=UNetOptions)`` in training/registry.py). A config file then sets them as top-level
keys beside the common ones; they are validated with the same unknown-key and closest-match
refusal, and :meth:`TrainConfig.arch_options` gives the architecture its typed object:

    @dataclass(frozen=True)
    class UNetOptions:
        depth: int = option(4, "down-sampling levels", at_least=1)
        segmentation_loss: str = option("bce+dice", "training loss", choices=("bce", "dice", "bce+dice"))
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from ..errors import MedganFastError

__all__ = ["ConfigError", "coerce", "describe", "describe_options", "one_of", "option", "parse_options"]


class ConfigError(MedganFastError):
    """A bad key or value in a train config; the message names it and says what is valid."""


def option(default: Any, help: str, *, choices: tuple | None = None, at_least: int | float | None = None,
           valid: str = "") -> Any:
    """A dataclass field of an architecture's options: its default, one line of help for
    ``train --help``, and what is valid (one of `choices`, a number >= `at_least`, or a
    free-text rule in `valid` that the architecture checks itself)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "at_least": at_least,
                                                        "valid": valid})


def parse_options(schema: type | None, values: dict[str, Any], arch: str) -> dict[str, Any]:
    """`values` checked against the dataclass `schema` and completed with its defaults (a
    plain dict, so configs and checkpoints stay YAML). An architecture without a schema
    takes no options."""
    if not isinstance(values, dict):
        raise ConfigError(f"options: expected a mapping of key: value, got {values!r}")
    names = [field.name for field in dataclasses.fields(schema)] if schema is not None else []
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: not a key of arch {arch}{hint}"
                              + (f" Its own keys: {', '.join(names)}" if names else ""))
    if schema is None:
        return {}
    kinds = typing.get_type_hints(schema)
    parsed = {}
    for field in dataclasses.fields(schema):
        value = coerce(field.name, values.get(field.name, field.default), kinds[field.name])
        if field.metadata.get("choices") is not None:
            value = one_of(field.name, value, field.metadata["choices"])
        low = field.metadata.get("at_least")
        if low is not None and value is not None and value < low:
            raise ConfigError(f"{field.name}: expected {'an integer' if isinstance(low, int) else 'a number'} "
                              f">= {low}, got {value!r}")
        parsed[field.name] = value
    return parsed


def describe_options(schema: type | None) -> list[str]:
    """One line per option: meaning, default and valid values (for ``train --help``)."""
    if schema is None:
        return []
    lines = []
    for field in dataclasses.fields(schema):
        meta = field.metadata
        if meta.get("choices") is not None:
            rule = "one of " + ", ".join(map(str, meta["choices"]))
        elif meta.get("at_least") is not None:
            rule = f">= {meta['at_least']}"
        else:
            rule = meta.get("valid", "")
        lines.append(f"{field.name}: {meta.get('help', '')} (default {shown(field.default)}"
                     f"{'; ' + rule if rule else ''})")
    return lines


def shown(value: Any) -> Any:
    """A default as YAML writes it."""
    if isinstance(value, (str, bool, type(None))):
        return {None: "null", "": "''", True: "true", False: "false"}.get(value, value)
    return value


def one_of(name: str, value: Any, valid: tuple) -> Any:
    """`value` if valid, or the one valid name it matches but for case ("dcgan": "DCGAN")."""
    if value in valid:
        return value
    if isinstance(value, str):
        same = [v for v in valid if isinstance(v, str) and v.lower() == value.lower()]
        if len(same) == 1:
            return same[0]
    lower = {str(v).lower(): str(v) for v in valid}
    close = difflib.get_close_matches(str(value).lower(), list(lower), n=1)
    hint = f"; did you mean {lower[close[0]]!r}?" if close and isinstance(value, str) else ""
    raise ConfigError(f"{name}: expected one of {', '.join(map(str, valid))}, got {value!r}{hint}")


def coerce(name: str, value: Any, kind: Any) -> Any:
    """`value` as the field's type: ints from integral floats or digit strings, floats from ints
    or strings such as "2e-4" (YAML 1.1 reads that as a string), strings from numbers."""
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{name}: expected {describe(options)}, got null")
    for option_type in options:
        if option_type is bool and isinstance(value, bool):
            return value
        if option_type is int and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                return int(value)
        if option_type is float and not isinstance(value, bool):
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
    if str in options and not isinstance(value, bool):
        if isinstance(value, (str, int, float)) or hasattr(value, "__fspath__"):
            return str(value)
    raise ConfigError(f"{name}: expected {describe(options)}, got {value!r}")


def describe(options: tuple) -> str:
    words = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return " or ".join(words.get(option_type, str(option_type)) for option_type in options)
