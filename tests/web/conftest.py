"""A daemon on the emulated sensor kit (8×8, GRB wiring, gamma 2.8, current limiter) with its web server, in
process: tests compare what the page and the API say with the emulated LEDs' own buffers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.daemon import Daemon, load_config
from edged.daemon.hardware import DeviceHardware
from edged.hardware.backends import EmulatedBackend
from edged.web.server import WebServer
from tests.daemon.test_daemon import write_plugin
from tests.engine.anims import solid

GALLERY = Path(__file__).resolve().parents[2] / "plugins" / "gallery"
TOKEN = "test-credential-0123456789abcdef"

CONFIG = """
[daemon]
hardware = "pi4-sensor-kit"
plugins_dir = ["plugins", "{gallery}"]
state_dir = "state"
calibrate_fuel = false

[policy]
sensors = ["distance"]

[[displays]]
name = "main"
fps = 30
layers = [{{ name = "main", playlist = "colors" }}]

[playlists.colors]
items = [{{ plugin = "red", duration_s = 1000 }}, {{ plugin = "green", duration_s = 1000 }},
         {{ plugin = "plasma", duration_s = 1000 }}]

[playlists.fire]
items = [{{ plugin = "fire", duration_s = 1000 }}]

[[sensors]]
plugin = "distance_sensor"
interval_s = 0.1
"""


@dataclass
class Face:
    daemon: Daemon
    web: WebServer
    root: Path

    @property
    def url(self) -> str:
        return self.web.url

    def output(self, display: str = "main") -> Any:
        return self.daemon.led_output(display)

    def backend(self, display: str = "main") -> EmulatedBackend:
        backend = self.output(display).backend
        assert isinstance(backend, EmulatedBackend)
        return backend

    def image_of(self, seq: int, display: str = "main") -> np.ndarray | None:
        """The logical image of LED frame number ``seq`` as the emulated backend recorded it (None if gone)."""
        backend = self.backend(display)
        frames = backend.frames()
        back = backend.frame_count - seq
        if not 0 <= back < len(frames):
            return None
        return self.output(display).pipeline.inverse(frames[-1 - back].data)

    def latest(self, display: str = "main") -> np.ndarray:
        frame = self.backend(display).latest()
        assert frame is not None
        return self.output(display).pipeline.inverse(frame.data)


def make_site(root: Path) -> Path:
    write_plugin(root, "red", solid(255, 0, 0))
    write_plugin(root, "green", solid(0, 255, 0))
    path = root / "edged.toml"
    path.write_text(CONFIG.format(gallery=GALLERY.as_posix()))
    return path


@pytest.fixture
def start_face(tmp_path: Path) -> Iterator[Callable[..., Face]]:
    """Start the daemon and its web server (``bind``, ``open_reads``); stopped at the end of the test."""
    started: list[Face] = []

    def start(bind: str = "127.0.0.1", open_reads: bool = False, fps_max: float = 30.0) -> Face:
        path = make_site(tmp_path)
        daemon = Daemon(load_config(path), DeviceHardware("pi4-sensor-kit", emulate=True), config_path=path)
        daemon.start()
        web = WebServer(
            daemon, bind=bind, port=0, token=TOKEN, open_reads=open_reads, device="test-pi", fps_max=fps_max
        )
        web.start()
        face = Face(daemon, web, tmp_path)
        started.append(face)
        return face

    yield start
    for face in started:
        face.web.close()
        face.daemon.stop()


@pytest.fixture
def face(start_face: Callable[..., Face]) -> Face:
    return start_face()
