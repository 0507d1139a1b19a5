"""edged's host functions: the plugin ABI for displays, GPIO, sensors and shared values.

All live in ``extism:host/user``. The primary forms pass Extism memory handles (JSON or bytes), so every PDK can
call them, Rust's ``#[host_fn]`` included; the ``*_i``/``*_f`` forms are raw-integer fast paths for C, Zig and
AssemblyScript. Each function needs a capability: a plugin importing one it was not granted fails to load, and a
call naming a pin or sensor outside its grant fails that call before any hardware is touched. Documented in
docs/plugin-abi.md.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import CapabilityDenied, HardwareError, PluginError
from ..runtime import CurrentPlugin, HostFunction, LogLimiter
from .capabilities import Capabilities

USER = "extism:host/user"
LEGACY = "env"


class DeviceIO(Protocol):
    """What host functions need from the hardware layer. Pins are BCM numbers; ``gpio_watch`` callbacks receive
    (pin, "rising" | "falling", ``time.monotonic()`` of the edge) on any thread."""

    def gpio_read(self, pin: int) -> int: ...
    def gpio_write(self, pin: int, value: int) -> None: ...
    def gpio_pwm(self, pin: int, duty: float) -> None: ...
    def gpio_watch(self, pin: int, callback: Callable[[int, str, float], None]) -> None: ...
    def sensor_read(self, name: str) -> tuple[float, str]: ...


class SharedValues:
    """Values published by sensor plugins and read by animation plugins (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[bytes, float]] = {}

    def set(self, key: str, value: bytes) -> None:
        with self._lock:
            self._values[key] = (value, time.monotonic())

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._values.get(key)
        return item[0] if item else None

    def snapshot(self) -> dict[str, bytes]:
        with self._lock:
            return {k: v for k, (v, _) in self._values.items()}


@dataclass(frozen=True)
class DisplayInfo:
    """What an animation plugin is told about the display it draws on."""

    width: int
    height: int
    fps: float = 30.0
    serpentine: bool = False
    brightness: int = 255

    def config(self) -> dict[str, str]:
        """The Matricks config keys, all strings, passed through Extism config."""
        return {
            "width": str(self.width),
            "height": str(self.height),
            "target_fps": f"{self.fps:g}",
            "serpentine": "true" if self.serpentine else "false",
            "brightness": str(self.brightness),
        }


@dataclass
class GpioEvent:
    pin: int
    edge: str
    t: float


#: the most queued GPIO events one :meth:`DevicePlugin.deliver_events` hands to ``on_gpio`` (per frame or tick), so
#: an edge flood cannot stall the frame path; the rest wait, in order, for the next frames
EVENTS_PER_DELIVERY = 16
#: GPIO events queued per plugin; when full, the oldest is dropped (and counted in ``HostContext.events_dropped``)
EVENT_QUEUE_SIZE = 1024


@dataclass
class HostContext:
    """Everything the host functions of one plugin act on."""

    plugin: str
    grant: Capabilities
    io: DeviceIO | None
    values: SharedValues
    display: DisplayInfo | None
    logger: logging.Logger
    started: float = field(default_factory=time.monotonic)
    #: GPIO edge events waiting to be delivered to the plugin's ``on_gpio`` export (on the engine's thread)
    events: deque[GpioEvent] = field(default_factory=lambda: deque(maxlen=EVENT_QUEUE_SIZE))
    #: events dropped because the queue was full (the oldest go first)
    events_dropped: int = 0
    #: pins the plugin watches, with the edges it wants (1 rising, 2 falling, 3 both)
    watched: dict[int, int] = field(default_factory=dict)
    _events_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: the Matricks log functions go through the same sanitising and rate limit as the Extism ones
    log_limiter: LogLimiter | None = field(default=None, repr=False)

    def queue_event(self, event: GpioEvent) -> None:
        """Queue an edge event (from any thread); a full queue drops its oldest event and counts it."""
        with self._events_lock:
            if len(self.events) == self.events.maxlen:
                self.events_dropped += 1
            self.events.append(event)

    # --- checks ------------------------------------------------------------------------------------------------

    def _pin(self, fn: str, pin: int, direction: str) -> int:
        allowed = getattr(self.grant.gpio, direction)
        if pin not in allowed:
            raise CapabilityDenied(f"{fn}: pin {pin} is not granted for gpio.{direction} (granted: {allowed})")
        if self.io is None:
            raise PluginError(f"{fn}: this device has no GPIO")
        return pin

    def _sensor(self, fn: str, name: str) -> str:
        if name not in self.grant.sensors:
            raise CapabilityDenied(f"{fn}: sensor '{name}' is not granted (granted: {self.grant.sensors})")
        if self.io is None:
            raise PluginError(f"{fn}: this device has no sensors")
        return name


def _json_arg(fn: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PluginError(f"{fn}: argument is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PluginError(f"{fn}: argument must be a JSON object")
    return value


def _int_field(fn: str, doc: dict[str, Any], key: str) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise PluginError(f"{fn}: '{key}' must be an integer")
    return v


def _duty(fn: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise PluginError(f"{fn}: duty must be a number from 0 to 1")
    return float(value)


_EDGES = {"rising": 1, "falling": 2, "both": 3}


# One row per host function: name, wasm (params, results), the capability it needs, and the implementation.
# Implementations take (ctx, current, *raw_args) and return the raw result.
@dataclass(frozen=True)
class Spec:
    name: str
    params: tuple[str, ...]
    results: tuple[str, ...]
    capability: str | None  # a dotted path into Capabilities; None means always available
    impl: Callable[..., Any]


def _display_info(ctx: HostContext, cur: CurrentPlugin) -> int:
    d = ctx.display
    if d is None:
        raise PluginError("edged_display_info: this plugin has no display")
    info = {"width": d.width, "height": d.height, "fps": d.fps, "serpentine": d.serpentine, "brightness": d.brightness}
    return cur.write(json.dumps(info))


def _time_us(ctx: HostContext, cur: CurrentPlugin) -> int:
    return int((time.monotonic() - ctx.started) * 1e6)


def _gpio_read(ctx: HostContext, cur: CurrentPlugin, h: int) -> int:
    doc = _json_arg("edged_gpio_read", cur.read(h))
    pin = ctx._pin("edged_gpio_read", _int_field("edged_gpio_read", doc, "pin"), "read")
    assert ctx.io is not None
    return cur.write(json.dumps({"pin": pin, "value": int(ctx.io.gpio_read(pin))}))


def _gpio_read_i(ctx: HostContext, cur: CurrentPlugin, pin: int) -> int:
    ctx._pin("edged_gpio_read_i", pin, "read")
    assert ctx.io is not None
    return int(ctx.io.gpio_read(pin))


def _gpio_write(ctx: HostContext, cur: CurrentPlugin, h: int) -> None:
    fn = "edged_gpio_write"
    doc = _json_arg(fn, cur.read(h))
    pin = ctx._pin(fn, _int_field(fn, doc, "pin"), "write")
    value = _int_field(fn, doc, "value")
    assert ctx.io is not None
    ctx.io.gpio_write(pin, 1 if value else 0)


def _gpio_write_i(ctx: HostContext, cur: CurrentPlugin, pin: int, value: int) -> None:
    ctx._pin("edged_gpio_write_i", pin, "write")
    assert ctx.io is not None
    ctx.io.gpio_write(pin, 1 if value else 0)


def _gpio_pwm(ctx: HostContext, cur: CurrentPlugin, h: int) -> None:
    fn = "edged_gpio_pwm"
    doc = _json_arg(fn, cur.read(h))
    pin = ctx._pin(fn, _int_field(fn, doc, "pin"), "pwm")
    duty = _duty(fn, doc.get("duty"))
    assert ctx.io is not None
    ctx.io.gpio_pwm(pin, duty)


def _gpio_pwm_i(ctx: HostContext, cur: CurrentPlugin, pin: int, permille: int) -> None:
    fn = "edged_gpio_pwm_i"
    ctx._pin(fn, pin, "pwm")
    if not 0 <= permille <= 1000:
        raise PluginError(f"{fn}: duty must be 0-1000 per mille")
    assert ctx.io is not None
    ctx.io.gpio_pwm(pin, permille / 1000.0)


def _gpio_watch(ctx: HostContext, cur: CurrentPlugin, h: int) -> None:
    fn = "edged_gpio_watch"
    doc = _json_arg(fn, cur.read(h))
    pin = ctx._pin(fn, _int_field(fn, doc, "pin"), "events")
    edges = doc.get("edges", "both")
    if edges not in _EDGES:
        raise PluginError(f"{fn}: edges must be 'rising', 'falling' or 'both'")
    _watch(ctx, pin, _EDGES[edges])


def _gpio_watch_i(ctx: HostContext, cur: CurrentPlugin, pin: int, edges: int) -> None:
    ctx._pin("edged_gpio_watch_i", pin, "events")
    if edges not in (1, 2, 3):
        raise PluginError("edged_gpio_watch_i: edges must be 1 (rising), 2 (falling) or 3 (both)")
    _watch(ctx, pin, edges)


def _watch(ctx: HostContext, pin: int, mask: int) -> None:
    """Subscribe to a pin's edges; watching it again replaces the edges (the board's callback stays, reading the
    current mask, since a board cannot drop a callback)."""
    first = pin not in ctx.watched
    ctx.watched[pin] = mask
    if not first:
        return

    def on_edge(p: int, edge: str, t: float) -> None:
        if _EDGES[edge] & ctx.watched.get(p, 0):
            ctx.queue_event(GpioEvent(p, edge, round(t - ctx.started, 6)))

    assert ctx.io is not None
    ctx.io.gpio_watch(pin, on_edge)


def _sensor_read(ctx: HostContext, cur: CurrentPlugin, h: int) -> int:
    name = ctx._sensor("edged_sensor_read", cur.read(h).decode("utf-8", errors="replace"))
    assert ctx.io is not None
    value, unit = ctx.io.sensor_read(name)
    return cur.write(json.dumps({"name": name, "value": value, "unit": unit, "t": time.monotonic() - ctx.started}))


def _sensor_read_f(ctx: HostContext, cur: CurrentPlugin, h: int) -> float:
    name = ctx._sensor("edged_sensor_read_f", cur.read(h).decode("utf-8", errors="replace"))
    assert ctx.io is not None
    value, _ = ctx.io.sensor_read(name)
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _value_set(ctx: HostContext, cur: CurrentPlugin, key: int, value: int) -> None:
    name = cur.read(key).decode("utf-8", errors="replace")
    if name not in ctx.grant.publish:
        raise CapabilityDenied(
            f"edged_value_set: value '{name}' is not granted for publish (granted: {ctx.grant.publish})"
        )
    data = cur.read(value)
    if len(data) > 64 * 1024:
        raise PluginError("edged_value_set: values are limited to 64 KiB")
    ctx.values.set(name, data)


def _value_get(ctx: HostContext, cur: CurrentPlugin, key: int) -> int:
    name = cur.read(key).decode("utf-8", errors="replace")
    if name not in ctx.grant.subscribe:
        raise CapabilityDenied(
            f"edged_value_get: value '{name}' is not granted for subscribe (granted: {ctx.grant.subscribe})"
        )
    data = ctx.values.get(name)
    return cur.write(data) if data else 0


def _matricks_log(level: int) -> Callable[..., None]:
    def log(ctx: HostContext, cur: CurrentPlugin, h: int) -> None:
        if ctx.log_limiter is None:
            ctx.log_limiter = LogLimiter(ctx.logger)
        ctx.log_limiter.log(level, cur.read(h))

    return log


SPECS: list[Spec] = [
    Spec("edged_display_info", (), ("i64",), "led", _display_info),
    Spec("edged_time_us", (), ("i64",), None, _time_us),
    Spec("edged_gpio_read", ("i64",), ("i64",), "gpio.read", _gpio_read),
    Spec("edged_gpio_read_i", ("i32",), ("i32",), "gpio.read", _gpio_read_i),
    Spec("edged_gpio_write", ("i64",), (), "gpio.write", _gpio_write),
    Spec("edged_gpio_write_i", ("i32", "i32"), (), "gpio.write", _gpio_write_i),
    Spec("edged_gpio_pwm", ("i64",), (), "gpio.pwm", _gpio_pwm),
    Spec("edged_gpio_pwm_i", ("i32", "i32"), (), "gpio.pwm", _gpio_pwm_i),
    Spec("edged_gpio_watch", ("i64",), (), "gpio.events", _gpio_watch),
    Spec("edged_gpio_watch_i", ("i32", "i32"), (), "gpio.events", _gpio_watch_i),
    Spec("edged_sensor_read", ("i64",), ("i64",), "sensors", _sensor_read),
    Spec("edged_sensor_read_f", ("i64",), ("f64",), "sensors", _sensor_read_f),
    Spec("edged_value_set", ("i64", "i64"), (), "publish", _value_set),
    Spec("edged_value_get", ("i64",), ("i64",), "subscribe", _value_get),
    *(
        Spec(f"matricks_{lvl}", ("i64",), (), None, _matricks_log(level))
        for lvl, level in (("debug", logging.DEBUG), ("info", logging.INFO), ("warn", logging.WARNING))
    ),
    Spec("matricks_error", ("i64",), (), None, _matricks_log(logging.ERROR)),
]
SPECS_BY_NAME = {s.name: s for s in SPECS}


def has_capability(grant: Capabilities, capability: str | None) -> bool:
    """Is the capability (``"led"``, ``"gpio.write"``, ``"sensors"``, ...) granted at all?"""
    if capability is None:
        return True
    value: Any = grant
    for part in capability.split("."):
        value = getattr(value, part)
    return bool(value)


def check_imports(imports: list[tuple[str, str]], grant: Capabilities, plugin: str) -> None:
    """Fail the load if the plugin imports an edged host function whose capability it was not granted."""
    for module, name in imports:
        spec = SPECS_BY_NAME.get(name)
        if spec is None or module not in (USER, LEGACY):
            continue
        if not has_capability(grant, spec.capability):
            raise CapabilityDenied(
                f"{plugin}: imports {module}::{name}, which needs the '{spec.capability}' capability; "
                "the manifest does not ask for it or the device policy does not allow it"
            )


def host_functions(ctx: HostContext, imports: list[tuple[str, str]]) -> list[HostFunction]:
    """The host functions for the edged imports of one plugin, bound to ``ctx``.

    Only imported functions are defined. Matricks' log functions are offered under both ``env`` (legacy plugins)
    and ``extism:host/user``.
    """
    out: list[HostFunction] = []
    for module, name in imports:
        spec = SPECS_BY_NAME.get(name)
        if spec is None or module not in (USER, LEGACY):
            continue
        if module == LEGACY and not name.startswith("matricks_"):
            continue
        out.append(_bind(spec, module, ctx))
    return out


def _bind(spec: Spec, namespace: str, ctx: HostContext) -> HostFunction:
    impl = spec.impl

    def call(current: CurrentPlugin, *args: Any) -> Any:
        try:
            return impl(ctx, current, *args)
        except HardwareError as exc:  # the plugin's call fails (a strike), never the frame loop
            raise PluginError(f"{spec.name}: {exc}") from exc

    return HostFunction(call, spec.name, namespace, ["current", *spec.params], list(spec.results))
