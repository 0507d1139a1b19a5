"""Hardware profiles: ready descriptions of a board's LED displays, GPIO devices and sensors.

A profile is a TOML file in ``hardware/``; ``edged`` can start from its name. :func:`load_profile` takes a path or
a name and searches ``$EDGED_HARDWARE_DIR``, ``/etc/edged/hardware`` and the ``hardware/`` directory of a source
checkout, in that order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..bundled import bundled_dir
from ..errors import ConfigError
from ..tomlconfig import load_toml
from .backends import BackendConfig, EmulatedBackendConfig, SpiBackendConfig, Ws281xBackendConfig
from .geometry import DisplayConfig
from .gpio import GpioConfig, GpioDeviceConfig
from .output import LedOutput, open_led_output
from .sensors import SPI0_CLOCK, SPI0_MOSI, SensorConfig

#: LEDs one rpi_ws281x DMA transfer (65,536 bytes) can drive on a PWM string; PCM manages about twice that
_WS281X_MAX_LEDS = {"pwm": 2_700, "pcm": 5_400}


class DisplayProfile(BaseModel):
    """One display of a profile: its model, its backend and its frame rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    display: DisplayConfig
    backend: BackendConfig = Field(default_factory=EmulatedBackendConfig)
    fps: float = Field(30.0, gt=0, le=240)
    notes: str = ""

    @model_validator(mode="after")
    def _fits_backend(self) -> DisplayProfile:
        if isinstance(self.backend, Ws281xBackendConfig) and self.backend.gpio != 10:
            limit = _WS281X_MAX_LEDS["pcm" if self.backend.gpio == 21 else "pwm"]
            if self.display.led_count > limit:
                raise ValueError(
                    f"{self.display.led_count} LEDs exceed the ~{limit} one ws281x DMA transfer can drive on GPIO "
                    f"{self.backend.gpio}; split the display or use another backend"
                )
        if isinstance(self.backend, SpiBackendConfig) and self.backend.mode == "leds0":
            if self.display.color_order not in ("RGB", "RGBW"):
                raise ValueError(
                    "the leds0 device takes RGB(W) and orders the wire itself; set color_order to RGB or RGBW"
                )
            if self.display.gamma != 1.0 or self.display.gamma_table is not None:
                # ws2812-pio-rp1 runs every byte through its own gamma table (1/0.45, about 2.2) unless brightness is 0
                raise ValueError(
                    "the leds0 device applies its own gamma curve (about 2.2) to every value, so a gamma here would "
                    "be applied twice; leave gamma and gamma_table out (or set gamma = 1.0)"
                )
        return self


class HardwareProfile(BaseModel):
    """A named board setup: LED displays, GPIO devices (``[gpio.NAME]``) and sensors (``[sensors.NAME]``), as
    :class:`~edged.hardware.gpio.GpioConfig` defines them. ``notes`` carry the wiring (pins, level shifting, power,
    series resistor). No pin may serve both an LED display and a GPIO device or sensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    notes: str = ""
    displays: dict[str, DisplayProfile] = Field(default_factory=dict)
    gpio: dict[str, GpioDeviceConfig] = Field(default_factory=dict)
    sensors: dict[str, SensorConfig] = Field(default_factory=dict)
    pin_factory: Literal["lgpio", "rpigpio", "pigpio", "native"] | None = None

    @model_validator(mode="after")
    def _pins(self) -> HardwareProfile:
        try:
            board = self.gpio_config()
        except ValidationError as exc:
            raise ValueError("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
        led_pins = {pin: f"LED display {name!r}" for name, dp in self.displays.items() for pin in _led_pins(dp)}
        clashes = [f"pin {pin} drives {led_pins[pin]} and {who}" for pin, who in board.pin_users() if pin in led_pins]
        if clashes:
            raise ValueError("; ".join(clashes))
        return self

    def gpio_config(self) -> GpioConfig:
        """The GPIO part of the profile, for :class:`~edged.hardware.gpio.GpioBoard`."""
        return GpioConfig(gpio=self.gpio, sensors=self.sensors, pin_factory=self.pin_factory)

    def led_pins(self) -> set[int]:
        """The BCM pins the LED displays use (for the device policy's reserved pins)."""
        return {pin for dp in self.displays.values() for pin in _led_pins(dp)}


def _led_pins(dp: DisplayProfile) -> list[int]:
    if isinstance(dp.backend, Ws281xBackendConfig):
        return [dp.backend.gpio]
    if isinstance(dp.backend, SpiBackendConfig):
        if dp.backend.mode == "leds0":
            return [dp.backend.gpio]  # the ws2812-pio overlay's data pin
        if dp.backend.bus == 0:
            return [SPI0_MOSI, SPI0_CLOCK]
    return []  # emulated


def profile_dirs() -> list[Path]:
    """Where profiles are looked up by name, in order."""
    dirs = []
    if env := os.environ.get("EDGED_HARDWARE_DIR"):
        dirs.append(Path(env))
    dirs.append(Path("/etc/edged/hardware"))
    dirs.append(bundled_dir("hardware"))
    return dirs


def list_profiles() -> dict[str, Path]:
    """Every profile found by name (the first directory wins)."""
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return found


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load a profile from a path, or by name from :func:`profile_dirs`; problems raise
    :class:`~edged.errors.ConfigError` naming the key and line."""
    path = Path(name_or_path)
    if not path.is_file():
        available = list_profiles()
        if str(name_or_path) not in available:
            names = ", ".join(available) or "none"
            hint = (
                ""
                if available
                else "; profiles are looked up in $EDGED_HARDWARE_DIR, /etc/edged/hardware and the ones edged ships "
                f"({bundled_dir('hardware')}, missing: reinstall edged)"
            )
            raise ConfigError(f"no hardware profile {str(name_or_path)!r} (available: {names}){hint}")
        path = available[str(name_or_path)]
    return load_toml(HardwareProfile, path)


def open_outputs(profile: HardwareProfile, *, emulate: bool = False) -> dict[str, LedOutput]:
    """An opened :class:`~edged.hardware.output.LedOutput` per display of ``profile`` (all emulated with
    ``emulate``). If one fails to open, the ones already open are closed (blanked) before the error propagates."""
    outputs: dict[str, LedOutput] = {}
    try:
        for name, dp in profile.displays.items():
            outputs[name] = open_led_output(dp.display, dp.backend, emulate=emulate)
    except BaseException:
        for out in outputs.values():
            out.close()
        raise
    return outputs
