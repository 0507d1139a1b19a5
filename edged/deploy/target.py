"""What the device agent deploys into: the daemon's plugin runner, behind a small protocol.

``edged run`` implements :class:`DeployTarget` over its frame engine. :class:`EmulatedTarget` is an in-process one
for tests and benchmarks: it really loads the wasm with :class:`~edged.host.plugin.DevicePlugin` and renders frames
on a thread, so a plugin that traps collects strikes and a health check can really fail.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import PluginError
from ..host.capabilities import DevicePolicy
from ..host.frames import Tick
from ..host.functions import DisplayInfo
from ..host.plugin import DevicePlugin

log = logging.getLogger("edged.deploy.target")


@dataclass(frozen=True)
class PluginHealth:
    """Frames (or sensor ticks) run and strikes collected since the last activation."""

    frames: int
    strikes: int
    last_error: str | None = None
    running: bool = True
    #: the version the target runs under this name, if it knows (the agent never counts the health of another
    #: version as the new one's)
    version: str | None = None


@runtime_checkable
class DeployTarget(Protocol):
    """Where deployed plugins run. Calls come from the agent's worker thread, one at a time."""

    def activate(self, name: str, version: str, wasm_path: Path, manifest: dict[str, Any]) -> None:
        """Start ``name`` at ``version``, replacing a running one; raise (a PluginError) if it cannot load."""
        ...

    def deactivate(self, name: str) -> None:
        """Stop ``name``; no error if it is not running."""
        ...

    def health(self, name: str) -> PluginHealth:
        """Frames run and strikes since ``name`` was last activated (and, if known, the version that runs)."""
        ...

    # Optional (the agent calls it only if the target has it, see SupportsPlaylist):
    # def apply_playlist(self, items: list[str] | None) -> None


@runtime_checkable
class SupportsPlaylist(Protocol):
    """The optional part of :class:`DeployTarget`: play the desired state's playlist.

    The agent calls ``apply_playlist`` from its worker thread when the playlist its desired state asks for (the
    device's own document's, else its groups') differs from the last one it applied, once no plugin named in it is
    still being installed. ``items`` are plugin names in play order; they may name a plugin that is not running
    (its install failed): skip it. ``None`` means no playlist is asked for (any more): go back to the device's own
    configuration. Raise ``ValueError`` (or an ``EdgedError``) to refuse it; the agent reports ``failed`` with reason
    ``playlist`` and keeps the previous one in its reported state.
    """

    def apply_playlist(self, items: list[str] | None) -> None: ...


def manifest_for(wasm_path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The bundle's manifest with its (single) ``wasm`` entry pointing at ``wasm_path``; a ``hash`` stays, so the
    loader checks it again."""
    out = dict(manifest)
    entries = manifest.get("wasm") or [{}]
    entry = dict(entries[-1]) if isinstance(entries[-1], dict) else {}
    entry.pop("url", None)
    entry.pop("data", None)
    entry["path"] = str(wasm_path)
    out["wasm"] = [entry]
    return out


class _Runner:
    def __init__(self, plugin: DevicePlugin, version: str, fps: float, max_strikes: int) -> None:
        self.plugin = plugin
        self.version = version
        self.fps = fps
        self.max_strikes = max_strikes
        self.frames = 0
        self.strikes = 0
        self.last_error: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"emulated-{plugin.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        d = self.plugin.display
        w, h = (d.width, d.height) if d else (0, 0)
        period = 1.0 / self.fps
        t0 = time.monotonic()
        n = 0
        try:
            while not self.stop.is_set() and self.strikes < self.max_strikes:
                tick = Tick(n, int((time.monotonic() - t0) * 1e6), int(period * 1e6), w, h, first=n == 0)
                try:
                    if self.plugin.kind == "sensor":
                        self.plugin.tick(tick)
                    else:
                        self.plugin.frame(tick)
                    self.frames += 1
                except PluginError as exc:
                    self.strikes += 1
                    self.last_error = str(exc)
                    log.info("strike", extra={"plugin": self.plugin.name, "error": str(exc)})
                    self.plugin.restart()
                n += 1
                self.stop.wait(max(0.0, t0 + n * period - time.monotonic()))
        finally:
            self.plugin.close()


class EmulatedTarget:
    """Runs each activated plugin on its own thread at ``fps`` on an emulated ``width``×``height`` display.

    A plugin that raises :class:`~edged.errors.PluginError` gets a strike and a fresh instance; after
    ``max_strikes`` it stops (quarantined). ``history`` records ``(op, name, version)`` for tests.
    """

    def __init__(
        self,
        *,
        width: int = 16,
        height: int = 16,
        fps: float = 60.0,
        max_strikes: int = 3,
        policy: DevicePolicy | None = None,
    ) -> None:
        self.display = DisplayInfo(width, height, fps)
        self.fps = fps
        self.max_strikes = max_strikes
        self.policy = policy or DevicePolicy()
        self._runners: dict[str, _Runner] = {}
        self._lock = threading.Lock()
        self.history: list[tuple[str, str, str | None]] = []
        #: the playlist applied last (None: the device's own), and every one applied, in order
        self.playlist: list[str] | None = None
        self.playlists: list[list[str] | None] = []

    def activate(self, name: str, version: str, wasm_path: Path, manifest: dict[str, Any]) -> None:
        plugin = DevicePlugin(manifest_for(wasm_path, manifest), policy=self.policy, display=self.display, name=name)
        with self._lock:
            old = self._runners.pop(name, None)
        if old is not None:
            old.stop.set()
            old.thread.join(timeout=10)
        with self._lock:
            self._runners[name] = _Runner(plugin, version, self.fps, self.max_strikes)
            self.history.append(("activate", name, version))

    def deactivate(self, name: str) -> None:
        with self._lock:
            old = self._runners.pop(name, None)
            self.history.append(("deactivate", name, None))
        if old is not None:
            old.stop.set()
            old.thread.join(timeout=10)

    def health(self, name: str) -> PluginHealth:
        with self._lock:
            r = self._runners.get(name)
        if r is None:
            return PluginHealth(0, 0, "not running", running=False)
        return PluginHealth(r.frames, r.strikes, r.last_error, running=r.thread.is_alive(), version=r.version)

    def apply_playlist(self, items: list[str] | None) -> None:
        """Record the playlist (the emulated display runs every active plugin regardless)."""
        with self._lock:
            self.playlist = list(items) if items is not None else None
            self.playlists.append(self.playlist)
            self.history.append(("playlist", ",".join(items) if items is not None else "", None))

    def running(self) -> dict[str, str]:
        """``{name: version}`` of what runs now."""
        with self._lock:
            return {n: r.version for n, r in self._runners.items() if r.thread.is_alive()}

    def close(self) -> None:
        """Stop every plugin."""
        for name in list(self._runners):
            self.deactivate(name)
