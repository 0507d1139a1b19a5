"""Plugins installed over MQTT, running in the daemon: the :class:`~edged.deploy.target.DeployTarget` of ``edged run``.

A deployed plugin joins the daemon's catalog under its name, overriding a plugin of that name from
``plugins_dir``. Displays whose playlists name it are rebuilt off their frame threads and swapped in between two
frames; a deployed plugin that no playlist names plays where the config's ``[deploy]`` section says (by default
instead of the playlist of the first display's first layer, with a warning in the log; or appended to that
playlist, or on a layer of its own on top), or runs as a sensor plugin of that display (a sensor), so a fleet
operator's "install this" shows up without editing configs.
Health is what the engine measured since the activation, on screen and in an off-screen probe that runs the plugin
as its display would for a minute: frames (or sensor ticks) run and strikes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..deploy.target import PluginHealth, manifest_for
from ..engine.supervisor import Supervised
from ..errors import PluginError
from ..fsutil import atomic_write
from ..host.frames import Tick
from .config import PluginConfig
from .daemon import Daemon

log = logging.getLogger("edged.daemon")

#: how long a just-activated plugin also runs off screen for its health check
PROBE_SECONDS = 60.0


class HealthProbe:
    """Runs a just-activated plugin off screen, as its display would (same size, rate, budget and policy), so its
    health check does not depend on whether a playlist happens to show it within the check's time."""

    def __init__(self, slot: Supervised, period_s: float, sensor: bool, seconds: float = PROBE_SECONDS) -> None:
        self.slot = slot
        self.period = period_s
        self.sensor = sensor
        self.frames = 0
        self._stop = threading.Event()
        self._until = time.monotonic() + seconds
        self._thread = threading.Thread(target=self._run, name=f"edged-probe-{slot.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        info = self.slot.plugin.display
        w, h = (info.width, info.height) if info is not None else (0, 0)
        n = 0
        try:
            while not self._stop.is_set() and time.monotonic() < self._until:
                tick = Tick(n, int(n * self.period * 1e6), int(self.period * 1e6), w, h, n == 0)
                ok = self.slot.tick(tick) if self.sensor else self.slot.frame(tick) is not None
                if ok:
                    self.frames += 1
                n += 1
                self._stop.wait(self.period)
        finally:
            self.slot.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class DaemonTarget:
    """Deploys into a running :class:`Daemon`. Calls come from the agent's worker thread, one at a time."""

    def __init__(self, daemon: Daemon, state_dir: Path) -> None:
        self.daemon = daemon
        self.folder = state_dir / "deployed"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._probes: dict[str, HealthProbe] = {}
        #: the version activated last under each name (what health() measures)
        self._versions: dict[str, str] = {}

    def _stop_probe(self, name: str) -> None:
        probe = self._probes.pop(name, None)
        if probe is not None:
            probe.stop()

    def close(self) -> None:
        """Stop every health probe (the daemon stops the plugins themselves)."""
        for name in list(self._probes):
            self._stop_probe(name)

    def activate(self, name: str, version: str, wasm_path: Path, manifest: dict[str, Any]) -> None:
        path = self.folder / f"{name}.manifest.json"
        atomic_write(path, json.dumps(manifest_for(wasm_path, manifest)))
        with self._lock:
            activation = self.daemon.deploy(name, PluginConfig(path=path))
        if activation.failures:  # this plugin's own problems, by its name: never another plugin's message text
            raise PluginError(f"{name} {version} did not start: {activation.failures[0].message}")
        self._stop_probe(name)
        probe = self.daemon.probe_slot(name)
        if probe is not None:
            slot, period, sensor = probe
            self._probes[name] = HealthProbe(slot, period, sensor)
        self._versions[name] = version
        log.info("deployed plugin active", extra={"plugin": name, "version": version})

    def deactivate(self, name: str) -> None:
        self._stop_probe(name)
        self._versions.pop(name, None)
        with self._lock:
            self.daemon.undeploy(name)
        (self.folder / f"{name}.manifest.json").unlink(missing_ok=True)

    def identify(self, seconds: float) -> None:
        """The marketplace's ``identify`` command: the displays blink a white border for ``seconds``."""
        self.daemon.identify(seconds)

    def apply_playlist(self, items: list[str] | None) -> None:
        """The marketplace's playlist for this device (plugin names in play order), played where ``[deploy]`` puts
        deployed plugins; ``None`` goes back to the device's own config. Names that do not load are skipped (and
        listed in ``edged ctl problems``)."""
        with self._lock:
            self.daemon.set_remote_playlist(items)
        log.info("playlist from the marketplace", extra={"items": items})

    def health(self, name: str) -> PluginHealth:
        """What the display measured since the activation, plus what the off-screen probe measured: the plugin is
        healthy only if neither saw a strike."""
        frames, strikes, last_error, running = self.daemon.plugin_health(name)
        probe = self._probes.get(name)
        if probe is not None:
            frames += probe.frames
            strikes += probe.slot.stats.strikes
            last_error = probe.slot.stats.last_error or last_error
            running = running or not probe.slot.quarantined
        return PluginHealth(
            frames=frames, strikes=strikes, last_error=last_error, running=running, version=self._versions.get(name)
        )
