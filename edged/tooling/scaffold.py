"""Scaffold a new plugin from ``plugins/templates/LANG/``: source, manifest and (implicitly) its build entry.

``plugins/build`` discovers ``plugins/**/NAME/NAME.{ts,c,zig}`` by itself, so a plugin scaffolded under
``plugins/`` is part of the build as soon as it exists; one scaffolded elsewhere builds with
``plugins/build DIR/NAME``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import EdgedError

log = logging.getLogger("edged.tooling")

#: language code → (template folder, source suffix)
LANGUAGES: dict[str, str] = {"as": ".ts", "c": ".c", "zig": ".zig"}
PLACEHOLDER = "__NAME__"
# the manifest's rule for edged.name, minus '-': the name is also a C/Zig/AssemblyScript identifier in templates
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ScaffoldError(EdgedError, ValueError):
    """A plugin cannot be scaffolded (bad name or language, folder already there, no templates)."""


def default_templates_dir() -> Path:
    """``plugins/templates`` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "plugins" / "templates"


def new_plugin(name: str, lang: str, dest: str | Path, *, templates: str | Path | None = None) -> Path:
    """Create ``dest/NAME/`` from the language's template and return it. Never overwrites anything."""
    if not _NAME.match(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use 1-64 lowercase letters, digits or '_', starting with a letter"
        )
    if lang not in LANGUAGES:
        raise ScaffoldError(f"unknown language {lang!r}: choose one of {', '.join(LANGUAGES)}")
    source = Path(templates) if templates is not None else default_templates_dir()
    template = source / lang
    if not template.is_dir():
        raise ScaffoldError(f"no template for {lang!r} in {source}")
    target = Path(dest) / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists; pick another name or remove it")
    files = sorted(p for p in template.rglob("*") if p.is_file())
    target.mkdir(parents=True)
    for path in files:
        rel = Path(str(path.relative_to(template)).replace(PLACEHOLDER, name))
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(path.read_text(encoding="utf-8").replace(PLACEHOLDER, name), encoding="utf-8")
    log.info("scaffolded plugin", extra={"plugin": name, "lang": lang, "path": str(target)})
    return target
