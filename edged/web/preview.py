"""``edged preview PLUGIN --serve``: one plugin live in the browser while its author edits it, like Pixlet's serve.

The plugin runs in a real daemon (its frame engine, supervision and pixel pipeline) on an emulated display of the
preview's size or profile, and the same page as ``edged run``'s shows it. When the plugin's files change (a
rebuilt ``.wasm``, an edited manifest), the daemon reloads it; a build that does not load shows as a problem on
the page and the previous one keeps playing.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import TextIO

from ..daemon.config import (
    DaemonConfig,
    DaemonSection,
    DisplaySection,
    LayerConfig,
    PlaylistConfig,
    PluginConfig,
)
from ..daemon.daemon import Daemon
from ..daemon.hardware import DeviceHardware
from ..daemon.plugins import fingerprint
from ..engine.playlist import PlaylistItem
from ..errors import EdgedError
from ..hardware.geometry import DisplayConfig
from ..hardware.profile import DisplayProfile, HardwareProfile
from ..host.capabilities import DevicePolicy
from ..host.functions import DisplayInfo
from ..host.plugin import DevicePlugin
from .auth import is_loopback
from .server import WebServer

log = logging.getLogger("edged.web")

#: how often the plugin's files are checked for a rebuild (seconds)
WATCH_S = 0.5


def preview_config(
    source: Path,
    name: str,
    display: DisplayConfig,
    fps: float,
    policy: DevicePolicy,
    config: dict[str, str],
    state: Path,
) -> tuple[DaemonConfig, HardwareProfile]:
    """A daemon config playing only ``source`` on one display named after the plugin, and its emulated profile."""
    profile = HardwareProfile(name="preview", displays={name: DisplayProfile(display=display, fps=fps)})
    cfg = DaemonConfig(
        daemon=DaemonSection(state_dir=state, hardware="preview", calibrate_fuel=False),
        policy=policy,
        plugins={name: PluginConfig(path=source, config=config)},
        playlists={name: PlaylistConfig(items=[PlaylistItem(plugin=name, duration_s=None)])},
        displays=[DisplaySection(name=name, fps=fps, layers=[LayerConfig(name="main", playlist=name)])],
    )
    return cfg, profile


class PreviewServer:
    """The daemon, its web server and the watcher of the plugin's files. ``start()``, then ``close()``."""

    def __init__(
        self,
        source: Path,
        display: DisplayConfig,
        *,
        fps: float,
        policy: DevicePolicy,
        config: dict[str, str],
        bind: str = "127.0.0.1",
        port: int = 8081,
        profile: HardwareProfile | None = None,
    ) -> None:
        self.source = source.resolve()
        self.name = self.source.name.removesuffix(".json").removesuffix(".manifest").removesuffix(".wasm")
        if self.name == "manifest":
            self.name = self.source.parent.name
        self._tmp = tempfile.TemporaryDirectory(prefix="edged-preview-")
        cfg, hw = preview_config(self.source, self.name, display, fps, policy, config, Path(self._tmp.name))
        if profile is not None:  # the profile's GPIO devices and sensors, emulated, for a plugin that reads them
            hw = hw.model_copy(update={"gpio": profile.gpio, "sensors": profile.sensors})
        if not is_loopback(bind):
            raise ValueError("the preview serves on loopback only (it has no credential)")
        self.config = cfg
        self.display, self.fps, self.plugin_config = display, fps, config
        self.daemon = Daemon(cfg, DeviceHardware(hw, emulate=True))
        self.web = WebServer(self.daemon, bind=bind, port=port, token="", device=f"preview: {self.name}")
        self.reloads = 0
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="edged-preview-watch", daemon=True)

    def start(self) -> None:
        self.daemon.start()
        self.web.start()
        self._watcher.start()

    def _watch(self) -> None:
        seen = fingerprint(self.source)
        while not self._stop.wait(WATCH_S):
            now = fingerprint(self.source)
            if now == seen:
                continue
            seen = now
            try:  # a build that does not load must not replace the one playing
                DevicePlugin(
                    self.source,
                    policy=self.config.policy,
                    io=self.daemon.hardware.io,
                    display=DisplayInfo(self.display.width, self.display.height, self.fps),
                    config=self.plugin_config,
                    name=self.name,
                ).close()
            except (EdgedError, OSError, ValueError) as exc:
                self.daemon._problem(f"rebuilt plugin '{self.name}'", f"not loaded: {exc}; the last build plays on")
                continue
            problems = len(self.daemon.problems)
            self.daemon.reload(self.config)
            self.reloads += 1
            failed = self.daemon.problems[problems:]
            if failed:
                log.warning("rebuilt plugin did not load: %s", failed[-1].message, extra={"plugin": self.name})
            else:
                log.warning("plugin rebuilt: reloaded", extra={"plugin": self.name})

    def close(self) -> None:
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)
        self.web.close()
        self.daemon.stop()
        self._tmp.cleanup()


def serve(server: PreviewServer, stream: TextIO, stop: threading.Event) -> int:
    """Run ``server`` until ``stop`` is set (Ctrl-C); returns the exit code."""
    server.start()
    print(f"edged preview: {server.name} live at {server.web.url}/ (reloads when rebuilt; Ctrl-C stops)", file=stream)
    for problem in server.daemon.problems:
        print(f"edged preview: {problem.where}: {problem.message}", file=stream)
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
