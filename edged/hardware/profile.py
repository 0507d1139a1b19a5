"""Hardware profiles: ready descriptions of a board's LED displays (and, later, its inputs and sensors).

A profile is a TOML file in ``hardware/``; ``edged`` can start from its name. :func:`load_profile` takes a path or
a name and searches ``$EDGED_HARDWARE_DIR``, ``/etc/edged/hardware`` and the ``hardware/`` directory of a source
checkout, in that order.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError
from ..tomlconfig import load_toml
from .backends import BackendConfig, EmulatedBackendConfig, SpiBackendConfig, Ws281xBackendConfig
from .geometry import DisplayConfig

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
        if (
            isinstance(self.backend, SpiBackendConfig)
            and self.backend.mode == "leds0"
            and self.display.color_order not in ("RGB", "RGBW")
        ):
            raise ValueError("the leds0 device takes RGB(W) and orders the wire itself; set color_order to RGB or RGBW")
        return self


class HardwareProfile(BaseModel):
    """A named board setup. ``notes`` carry the wiring (pins, level shifting, power, series resistor)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    notes: str = ""
    displays: dict[str, DisplayProfile] = Field(default_factory=dict)


def profile_dirs() -> list[Path]:
    """Where profiles are looked up by name, in order."""
    dirs = []
    if env := os.environ.get("EDGED_HARDWARE_DIR"):
        dirs.append(Path(env))
    dirs.append(Path("/etc/edged/hardware"))
    dirs.append(Path(__file__).resolve().parents[2] / "hardware")
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
            raise ConfigError(f"no hardware profile {str(name_or_path)!r} (available: {names})")
        path = available[str(name_or_path)]
    return load_toml(HardwareProfile, path)
