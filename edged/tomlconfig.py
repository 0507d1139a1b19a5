"""Loading TOML into pydantic models with errors that name the key and the line it is on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigError

if TYPE_CHECKING:  # pydantic loads with the first model validated: reading a file (edged ctl) does without it
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")

_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+?)\s*=")


def _split(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in dotted.split(".")]


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each table and key path (with array-of-tables indexes) to its 1-based line number.

    Understands ``[table]``, ``[[array.of.tables]]`` (nested ones too) and ``key = value`` lines, which is how
    edged's configs are written; keys inside inline tables map to the line of their parent key.
    """
    lines: dict[tuple[str | int, ...], int] = {}
    counts: dict[tuple[str | int, ...], int] = {}
    current: tuple[str | int, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _ARRAY_TABLE.match(line):
            parts = _split(m.group(1))
            path: list[str | int] = []
            for i, part in enumerate(parts):
                path.append(part)
                # an array table nested in another array table belongs to that table's latest element
                if i < len(parts) - 1 and tuple(path) in counts:
                    path.append(counts[tuple(path)] - 1)
            key = tuple(path)
            index = counts.get(key, 0)
            counts[key] = index + 1
            current = (*key, index)
            lines.setdefault(key, number)
            lines[current] = number
        elif m := _TABLE.match(line):
            path = []
            for part in _split(m.group(1)):
                path.append(part)
                if tuple(path) in counts:
                    path.append(counts[tuple(path)] - 1)
            current = tuple(path)
            lines[current] = number
        elif m := _KEY.match(line):
            lines[(*current, *_split(m.group(1)))] = number
    return lines


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


_NAMED = re.compile(r"^Value error, ([A-Za-z_][\w-]*(?:\.[\w-]+)*): (.*)$", re.S)


def format_errors(exc: ValidationError, text: str, source: str) -> str:
    """One line per problem: ``FILE:LINE: key.path: message``."""
    lines = key_lines(text)
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        # a cross-field check names its key itself: "Value error, displays.0.layers.0.playlist: unknown ..."
        named = _NAMED.match(msg) if err["type"] == "value_error" else None
        if named:
            loc = loc + tuple(int(p) if p.isdigit() else p for p in named.group(1).split("."))
            msg = named.group(2)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        where = _line_for(loc, lines)
        prefix = f"{source}:{where}" if where else source
        out.append(f"{prefix}: {dotted}: {msg}")
    return "\n".join(out)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, unvalidated; a file that cannot be read or parsed raises :class:`ConfigError`."""
    return _parse(_read(path), str(path))


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None


def load_toml(model: type[M], path: str | Path | None = None, text: str | None = None) -> M:
    """Parse and validate a TOML file (or text) into ``model``; every problem raises :class:`ConfigError`."""
    from pydantic import ValidationError

    source = str(path) if path is not None else "<config>"
    if text is None:
        if path is None:
            raise ValueError("give a path or text")
        text = _read(path)
    data = _parse(text, source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, text, source)) from None
