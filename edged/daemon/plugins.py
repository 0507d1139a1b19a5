"""Finding plugins: the config's ``[plugins]`` table, plus every plugin folder under ``daemon.plugins_dir``."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .config import DaemonConfig, PluginConfig

log = logging.getLogger("edged.daemon")


def plugin_in_folder(folder: Path) -> Path | None:
    """The manifest (or bare wasm) of the plugin in ``folder``: ``NAME.manifest.json``, ``manifest.json`` or
    ``NAME.wasm``, where NAME is the folder's name."""
    name = folder.name
    for candidate in (folder / f"{name}.manifest.json", folder / "manifest.json", folder / f"{name}.wasm"):
        if candidate.is_file():
            return candidate
    return None


def discover(config: DaemonConfig) -> dict[str, PluginConfig]:
    """All plugins the config can name: folders under ``plugins_dir`` first, then ``[plugins]`` entries (which win,
    so a config can point a name elsewhere or give it config)."""
    found: dict[str, PluginConfig] = {}
    for root in config.daemon.plugins_dir:
        if not root.is_dir():
            log.warning("plugins_dir %s is not a folder", root, extra={"path": str(root)})
            continue
        for folder in sorted(p for p in root.rglob("*") if p.is_dir() and "node_modules" not in p.parts):
            path = plugin_in_folder(folder)
            if path is not None:
                found.setdefault(folder.name, PluginConfig(path=path))
    found.update(config.plugins)
    return found


def fingerprint(path: Path) -> str:
    """A digest of a plugin's manifest and every file next to it, to tell on reload whether it changed."""
    h = hashlib.sha256()
    folder = path.parent
    files = [path, *sorted(p for p in folder.glob("*.wasm") if p != path)]
    for f in files:
        try:
            h.update(f.name.encode())
            h.update(f.read_bytes())
        except OSError:
            h.update(b"<missing>")
    return h.hexdigest()
