"""Scaffold a new plugin from a template: source, manifest and (implicitly) its build entry.

The templates ship inside this package (``edged/tooling/templates/LANG/``, package data read through
:mod:`importlib.resources`), so ``edged plugin new`` works from an installed package as well as from a checkout.

Building needs ``plugins/build`` and the SDKs in ``plugins/sdk/`` of an edged checkout. ``plugins/build`` discovers
``plugins/**/NAME/NAME.{ts,c,zig}`` by itself, so a plugin scaffolded under ``plugins/`` is part of the build as soon
as it exists; one scaffolded anywhere else builds with ``plugins/build DIR/NAME``. :func:`build_hint` says which.
"""

from __future__ import annotations

import logging
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from ..errors import ScaffoldError

log = logging.getLogger("edged.tooling")

#: language code → source suffix
LANGUAGES: dict[str, str] = {"as": ".ts", "c": ".c", "zig": ".zig"}
PLACEHOLDER = "__NAME__"
# the manifest's rule for edged.name, minus '-': the name is also a C/Zig/AssemblyScript identifier in templates
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def default_templates_dir() -> Traversable:
    """The templates shipped with this package (``edged/tooling/templates``), wherever it is installed."""
    return files("edged.tooling") / "templates"


def source_build_script() -> Path | None:
    """``plugins/build`` of the edged checkout this package runs from, or None when installed without one."""
    script = Path(__file__).resolve().parents[2] / "plugins" / "build"
    return script if script.is_file() else None


def build_hint(folder: Path, script: Path | None) -> str:
    """What to run next for a plugin scaffolded in ``folder``, given the checkout's build script (if any)."""
    check = f"edged plugin check {folder}"
    if script is not None:
        return f"next: {script} {folder}  then  {check}"
    return (
        "next: build it with plugins/build from a checkout of the edged repository, which holds the SDKs "
        "(plugins/sdk) this package does not ship; C and Zig need the Python package ziglang, AssemblyScript needs "
        f"Node.js and npm. Run: python EDGED_CHECKOUT/plugins/build {folder}  then  {check}"
    )


def _files(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    """Every file under folder with its relative path ('/'-separated), sorted."""
    out: list[tuple[str, Traversable]] = []
    for entry in folder.iterdir():
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            out.extend(_files(entry, f"{rel}/"))
        elif entry.is_file():
            out.append((rel, entry))
    return sorted(out, key=lambda item: item[0])


def new_plugin(name: str, lang: str, dest: str | Path, *, templates: str | Path | Traversable | None = None) -> Path:
    """Create ``dest/NAME/`` from the language's template and return it. Never overwrites anything."""
    if not _NAME.fullmatch(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use 1-64 lowercase letters, digits or '_', starting with a letter"
        )
    if lang not in LANGUAGES:
        raise ScaffoldError(f"unknown language {lang!r}: choose one of {', '.join(LANGUAGES)}")
    source: Traversable
    if templates is None:
        source = default_templates_dir()
    elif isinstance(templates, str):
        source = Path(templates)
    else:
        source = templates
    template = source / lang
    if not template.is_dir():
        raise ScaffoldError(f"no template for {lang!r} in {source}")
    target = Path(dest) / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists; pick another name or remove it")
    found = _files(template)
    target.mkdir(parents=True)
    for rel, entry in found:
        out = target / rel.replace(PLACEHOLDER, name)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(entry.read_text(encoding="utf-8").replace(PLACEHOLDER, name), encoding="utf-8")
    log.info("scaffolded plugin", extra={"plugin": name, "lang": lang, "path": str(target)})
    return target
