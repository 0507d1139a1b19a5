"""Helpers for the gallery tests: load a gallery plugin as the device would, and render frames on the frame grid.

A plain module, not a conftest: importing edged.runtime installs wasmtime's trap handlers, which must happen after
pytest enables faulthandler (an initial conftest is imported before that, and a wasm trap then kills the process)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.hardware.gpio import GpioBoard, GpioConfig
from edged.host.capabilities import Capabilities, DevicePolicy
from edged.host.frames import Tick
from edged.host.functions import DeviceIO, DisplayInfo, SharedValues
from edged.host.plugin import DevicePlugin

ROOT = Path(__file__).resolve().parents[2]
GALLERY = ROOT / "plugins" / "gallery"
FPS = 60
PERIOD_US = 1_000_000 // FPS

#: config that makes a plugin deterministic in tests (the clock reads the wall clock unless given a time)
FIXED = {"clock": {"time": "09:41:00"}}


def manifest(name: str) -> dict:
    return json.loads((GALLERY / name / "manifest.json").read_text())


def policy_for(name: str) -> DevicePolicy:
    """A device policy that allows exactly what the plugin's manifest asks for."""
    caps = Capabilities.from_manifest_block(manifest(name)["edged"]["capabilities"])
    return DevicePolicy(
        gpio_read=caps.gpio.read,
        gpio_write=caps.gpio.write,
        gpio_pwm=caps.gpio.pwm,
        gpio_events=caps.gpio.events,
        sensors=caps.sensors,
        values=[*caps.publish, *caps.subscribe],
        wasi=caps.wasi,
    )


def board_for(name: str) -> GpioBoard | None:
    """An emulated board (gpiozero MockFactory) with a button on every pin the plugin watches or reads, and an
    HC-SR04 distance sensor if it reads one; None if the plugin needs no hardware."""
    caps = Capabilities.from_manifest_block(manifest(name)["edged"]["capabilities"])
    pins = sorted({*caps.gpio.events, *caps.gpio.read})
    if not pins and not caps.sensors:
        return None
    gpio = {f"button{pin}": {"type": "button", "pin": pin} for pin in pins}
    sensors = {s: {"type": "distance", "echo": 23, "trigger": 24, "max_distance": 2.0} for s in caps.sensors}
    return GpioBoard(GpioConfig.model_validate({"gpio": gpio, "sensors": sensors}), emulated=True)


def load(
    name: str,
    size: int | tuple[int, int] = 16,
    config: Mapping[str, str] | None = None,
    *,
    io: DeviceIO | None = None,
    values: SharedValues | None = None,
    fixed: bool = True,
) -> DevicePlugin:
    """A fresh instance of a gallery plugin on a display of ``size``, with fuel metering on."""
    w, h = (size, size) if isinstance(size, int) else size
    merged = {**(FIXED.get(name, {}) if fixed else {}), **(config or {})}
    return DevicePlugin(
        GALLERY / name / "manifest.json",
        policy=policy_for(name),
        io=io if io is not None else board_for(name),
        values=values,
        display=DisplayInfo(w, h, FPS) if manifest(name)["edged"]["kind"] != "sensor" else None,
        config=merged,
        fuel=10**9,
    )


@dataclass
class Run:
    frames: list[np.ndarray]
    fuel: list[int]
    #: index of the call that returned "done", if any
    done_at: int | None


def tick(i: int, w: int, h: int, period_us: int = PERIOD_US) -> Tick:
    return Tick(i, i * period_us, period_us if i else 0, w, h, i == 0)


def render(plugin: DevicePlugin, n: int, *, period_us: int = PERIOD_US) -> Run:
    """Render up to ``n`` frames on the frame grid (stopping at "done")."""
    assert plugin.display is not None
    w, h = plugin.display.width, plugin.display.height
    frames, fuel = [], []
    for i in range(n):
        frame = plugin.frame(tick(i, w, h, period_us))
        fuel.append(plugin.last_fuel_used or 0)
        if frame is None:
            return Run(frames, fuel, i)
        frames.append(frame.copy())
    return Run(frames, fuel, None)


def ascii_art(frame: np.ndarray) -> str:
    """A frame as '#' (lit) and '.' (black) rows, for readable assertion messages."""
    return "\n".join("".join("#" if v else "." for v in row) for row in frame[..., :3].sum(axis=2) > 0)
