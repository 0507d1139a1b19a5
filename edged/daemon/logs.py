"""Structured logs: the context a record carries (its ``extra`` fields: plugin, version, display, device, reason…)
is part of every line, as ``key=value`` pairs after the message in text, as fields in JSON."""

from __future__ import annotations

import json
import logging
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

#: the text format of ``edged`` (before the context)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields attached to ``record`` (everything that is not a standard attribute)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _text_value(value: Any) -> str:
    if not isinstance(value, str):  # lists, dicts, numbers: compact JSON (quoted only if it has spaces)
        value = json.dumps(value, default=str, separators=(",", ":"))
        return json.dumps(value) if any(c.isspace() for c in value) else value
    if value == "" or any(c.isspace() or c in '"=' for c in value):
        return json.dumps(value)  # quoted, so that a reason with spaces stays one field
    return value


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: message key=value …``: the record's context after the message, values with spaces
    quoted."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = context(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # a traceback stays below the line
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return f"{head} {pairs}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"t", "level", "logger", "msg", ...extra}``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "t": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(context(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)
