"""Plugins installed over MQTT, running in the daemon: the :class:`~edged.deploy.target.DeployTarget` of ``edged run``.

A deployed plugin joins the daemon's catalog under its name, overriding a plugin of that name from
``plugins_dir``. Displays whose playlists name it are rebuilt off their frame threads and swapped in between two
frames; a deployed plugin that no playlist names plays on the first layer of ``deploy_display`` (an animation) or
as a sensor plugin of it (a sensor), so a fleet operator's "install this" shows up without editing configs.
Health is what the engine measured since the activation: frames (or sensor ticks) run and strikes.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from ..deploy.target import PluginHealth, manifest_for
from ..errors import PluginError
from .config import PluginConfig
from .daemon import Daemon

log = logging.getLogger("edged.daemon")


class DaemonTarget:
    """Deploys into a running :class:`Daemon`. Calls come from the agent's worker thread, one at a time."""

    def __init__(self, daemon: Daemon, state_dir: Path) -> None:
        self.daemon = daemon
        self.folder = state_dir / "deployed"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def activate(self, name: str, version: str, wasm_path: Path, manifest: dict[str, Any]) -> None:
        path = self.folder / f"{name}.manifest.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest_for(wasm_path, manifest)))
        tmp.replace(path)
        with self._lock:
            problems = len(self.daemon.problems)
            self.daemon.deploy(name, PluginConfig(path=path))
            new = self.daemon.problems[problems:]
        failed = [p.message for p in new if f"'{name}'" in p.message]
        if failed:
            raise PluginError(f"{name} {version} did not start: {failed[0]}")
        log.info("deployed plugin active", extra={"plugin": name, "version": version})

    def deactivate(self, name: str) -> None:
        with self._lock:
            self.daemon.undeploy(name)
        (self.folder / f"{name}.manifest.json").unlink(missing_ok=True)

    def apply_playlist(self, items: list[str] | None) -> None:
        """The marketplace's playlist for this device (plugin names in play order) on the first layer of the first
        display; ``None`` goes back to the device's own config. Names that do not load are skipped (and listed in
        ``edged ctl problems``)."""
        with self._lock:
            self.daemon.set_remote_playlist(items)
        log.info("playlist from the marketplace", extra={"items": items})

    def health(self, name: str) -> PluginHealth:
        frames, strikes, last_error, running = self.daemon.plugin_health(name)
        return PluginHealth(frames=frames, strikes=strikes, last_error=last_error, running=running)
