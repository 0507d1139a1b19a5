"""The daemon's view of the device: LED outputs from the hardware profile, GPIO and sensors, and emulation extras
(a live terminal view, a scenario driving the mock inputs)."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Literal, TextIO

import numpy as np

from ..errors import ConfigError
from ..hardware.backends import EmulatedBackend
from ..hardware.gpio import GpioBoard
from ..hardware.output import LedOutput, open_led_output
from ..hardware.profile import DisplayProfile, HardwareProfile, load_profile
from ..hardware.render import TerminalRenderer, emulated_image
from ..hardware.scenario import ScenarioPlayer, load_scenario
from ..host.functions import DeviceIO
from .assembly import DisplayGeometry

log = logging.getLogger("edged.daemon")

Renderer = Literal["terminal", "headless"]


class TerminalSink:
    """An emulated LED output that also draws what the LEDs show on a truecolour terminal."""

    def __init__(self, output: LedOutput, renderer: TerminalRenderer, lock: threading.Lock) -> None:
        self.output = output
        self.renderer = renderer
        self._lock = lock  # one terminal, several displays: draw one at a time

    def show(self, frame: np.ndarray) -> None:
        self.output.show(frame)
        if isinstance(self.output.backend, EmulatedBackend):
            image = emulated_image(self.output.pipeline, self.output.backend)
            if image is not None:
                with self._lock:
                    self.renderer.draw(image)

    def blank(self) -> None:
        self.output.blank()

    def close(self) -> None:
        self.output.close()
        with self._lock:
            self.renderer.close()


class DeviceHardware:
    """Hardware from a profile. ``emulate`` forces the emulated LED backends (and, with the GPIO layer, the mock
    pin factory); ``renderer="terminal"`` draws emulated displays live on ``stream``."""

    def __init__(
        self,
        profile: HardwareProfile | str | Path,
        *,
        emulate: bool,
        renderer: Renderer = "headless",
        stream: TextIO | None = None,
        io: DeviceIO | None = None,
        scenario: str | Path | None = None,
    ) -> None:
        self.profile = profile if isinstance(profile, HardwareProfile) else load_profile(profile)
        self.emulate = emulate
        self.renderer = renderer
        self.stream = stream or sys.stdout
        self.board: GpioBoard | None = None
        if io is None and (self.profile.gpio or self.profile.sensors):
            # gpiozero's MockFactory when emulating, the Pi's real pin factory otherwise
            self.board = GpioBoard(self.profile.gpio_config(), emulated=emulate)
            io = self.board
        self.io = io
        self.player: ScenarioPlayer | None = None
        if scenario is not None:
            if self.board is None or not self.board.emulated:
                raise ConfigError(
                    "a scenario drives emulated inputs: it needs --emulate and a profile with [gpio]/[sensors]"
                )
            self.player = ScenarioPlayer(load_scenario(scenario, config=self.board.config), self.board)
        self.outputs: dict[str, LedOutput] = {}
        self._term_lock = threading.Lock()

    def _display(self, name: str) -> DisplayProfile:
        try:
            return self.profile.displays[name]
        except KeyError:
            raise ConfigError(
                f"display '{name}' is not in hardware profile '{self.profile.name}' "
                f"(it has: {sorted(self.profile.displays)})"
            ) from None

    def reserved_pins(self) -> set[int]:
        """Pins the LED outputs use: never grantable to a plugin."""
        return self.profile.led_pins()

    def geometry(self, display: str) -> DisplayGeometry:
        d = self._display(display).display
        # the engine draws in logical pixels; serpentine wiring is the pipeline's business, not the plugin's
        return DisplayGeometry(d.width, d.height, serpentine=False, brightness=d.brightness)

    def fps(self, display: str) -> float:
        return self._display(display).fps

    def open_sink(self, display: str) -> LedOutput | TerminalSink:
        prof = self._display(display)
        output = open_led_output(prof.display, prof.backend, emulate=self.emulate)
        self.outputs[display] = output
        if self.renderer == "terminal" and isinstance(output.backend, EmulatedBackend):
            scale = 2 if prof.display.width <= 40 else 1  # small matrices read better doubled
            title = f"display {display} at {prof.fps:g} fps"
            return TerminalSink(output, TerminalRenderer(self.stream, scale=scale, title=title), self._term_lock)
        return output

    def advance(self, t: float) -> None:
        """Move scripted emulation inputs to ``t`` seconds after start (no-op without a scenario)."""
        if self.player is not None:
            self.player.advance(t)

    def close(self) -> None:
        for output in self.outputs.values():
            output.close()
        if self.board is not None:
            self.board.close()
