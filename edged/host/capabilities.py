"""Capabilities: what a plugin asks for (its manifest) and what a device may ever grant (its policy).

Deny by default. A plugin gets exactly what it asked for, if the device policy allows all of it; a request that
goes beyond the policy is refused as a whole, with an error that names each excess. Host functions check the grant
before touching hardware.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import CapabilityDenied, ManifestError

_STRICT = ConfigDict(extra="forbid", frozen=True)

#: BCM GPIO numbers on the 40-pin header.
VALID_PINS = frozenset(range(0, 28))


def _pins(v: list[int]) -> list[int]:
    bad = [p for p in v if p not in VALID_PINS]
    if bad:
        raise ValueError(f"not BCM GPIO numbers 0-27: {bad}")
    return sorted(set(v))


class GpioCapabilities(BaseModel):
    """GPIO pins by direction (BCM numbering)."""

    model_config = _STRICT
    read: list[int] = Field(default_factory=list)
    write: list[int] = Field(default_factory=list)
    pwm: list[int] = Field(default_factory=list)
    #: pins whose edge events the plugin may subscribe to (implies nothing about reading the level)
    events: list[int] = Field(default_factory=list)

    _check = field_validator("read", "write", "pwm", "events")(classmethod(lambda cls, v: _pins(v)))

    def all_pins(self) -> set[int]:
        return {*self.read, *self.write, *self.pwm, *self.events}


class Capabilities(BaseModel):
    """The ``capabilities`` object of a manifest's ``edged`` block. Everything defaults to denied."""

    model_config = _STRICT
    #: draw on the display: export ``frame`` (or Matricks ``update``) and read display info
    led: bool = False
    gpio: GpioCapabilities = Field(default_factory=GpioCapabilities)
    #: sensor names from the device's hardware profile (for example ``distance``, ``cpu_temperature``)
    sensors: list[str] = Field(default_factory=list)
    #: shared-value keys the plugin may publish (sensor plugins feeding animations)
    publish: list[str] = Field(default_factory=list)
    #: shared-value keys the plugin may read
    subscribe: list[str] = Field(default_factory=list)
    wasi: bool = False
    #: outgoing HTTP; the manifest's ``allowed_hosts`` still limits where to
    http: bool = False

    @classmethod
    def from_manifest_block(cls, raw: dict[str, Any] | None) -> Capabilities:
        """Validate the raw ``edged.capabilities`` dict, with errors that name the field."""
        try:
            return cls.model_validate(raw or {})
        except ValidationError as exc:
            parts = []
            for err in exc.errors():
                loc = "edged.capabilities." + ".".join(str(p) for p in err["loc"])
                parts.append(f"unknown field '{loc}'" if err["type"] == "extra_forbidden" else f"{loc}: {err['msg']}")
            raise ManifestError("invalid manifest: " + "; ".join(parts)) from None


class DevicePolicy(BaseModel):
    """What this device may ever grant to any plugin (from the daemon's config). Deny by default."""

    model_config = _STRICT
    gpio_read: list[int] = Field(default_factory=list)
    gpio_write: list[int] = Field(default_factory=list)
    gpio_pwm: list[int] = Field(default_factory=list)
    gpio_events: list[int] = Field(default_factory=list)
    #: pins no plugin may ever use, whatever the lists above say (the LED data pin, SPI, ...)
    reserved_pins: list[int] = Field(default_factory=lambda: [10, 18])
    #: sensor names plugins may read; ``"*"`` allows every sensor the hardware profile defines
    sensors: list[str] = Field(default_factory=list)
    #: shared-value keys; ``"*"`` allows any
    values: list[str] = Field(default_factory=lambda: ["*"])
    wasi: bool = False
    http: bool = False
    led: bool = True
    #: host directories plugins with WASI may open, each mapped to its guest path; ``ro:`` before the host path
    #: makes it read-only. A manifest's ``allowed_paths`` only asks: each entry must be one of these, so the device
    #: decides file access, never the plugin. Empty (the default): no plugin touches the host's files.
    allowed_paths: dict[str, str] = Field(default_factory=dict)
    #: the grant for plugins without an ``edged`` block (released Matricks plugins): drawing, and WASI for
    #: clocks and random numbers. WASI alone opens no file: files need ``allowed_paths`` above, as for any plugin
    legacy: Capabilities = Field(default_factory=lambda: Capabilities(led=True, wasi=True))

    _check = field_validator("gpio_read", "gpio_write", "gpio_pwm", "gpio_events", "reserved_pins")(
        classmethod(lambda cls, v: _pins(v))
    )

    def excess(self, caps: Capabilities) -> list[str]:
        """Everything ``caps`` asks for that this policy does not allow, as human-readable items."""
        out: list[str] = []
        reserved = set(self.reserved_pins)
        for direction, allowed in (
            ("read", self.gpio_read),
            ("write", self.gpio_write),
            ("pwm", self.gpio_pwm),
            ("events", self.gpio_events),
        ):
            for pin in getattr(caps.gpio, direction):
                if pin in reserved:
                    out.append(f"gpio.{direction} pin {pin} (reserved by the device)")
                elif pin not in allowed:
                    out.append(f"gpio.{direction} pin {pin}")
        for s in caps.sensors:
            if "*" not in self.sensors and s not in self.sensors:
                out.append(f"sensor '{s}'")
        for key in (*caps.publish, *caps.subscribe):
            if "*" not in self.values and key not in self.values:
                out.append(f"value '{key}'")
        if caps.led and not self.led:
            out.append("led")
        if caps.wasi and not self.wasi:
            out.append("wasi")
        if caps.http and not self.http:
            out.append("http")
        return out

    def paths(self, requested: dict[str, str] | None, plugin: str = "plugin") -> dict[str, str] | None:
        """The WASI preopens for a manifest's ``allowed_paths``: each entry must name a directory this device offers
        (compared after resolving ``..`` and symlinks), under the same guest path, and may be read-write only if the
        device offers it so. Raises :class:`CapabilityDenied` naming every entry that is not offered."""
        if not requested:
            return None
        offered = {_real(host): (guest, host.startswith("ro:")) for host, guest in self.allowed_paths.items()}
        granted: dict[str, str] = {}
        excess: list[str] = []
        for host, guest in requested.items():
            real = _real(host)
            offer = offered.get(real)
            if offer is None or offer[0] != guest:
                excess.append(f"files {host} as {guest} (not offered by the device's allowed_paths)")
            elif offer[1] and not host.startswith("ro:"):
                excess.append(f"files {host} as {guest} read-write (the device offers it read-only)")
            else:
                granted[("ro:" if offer[1] else "") + real] = guest
        if excess:
            raise CapabilityDenied(f"{plugin}: the device policy does not allow: {', '.join(excess)}")
        return granted

    def grant(self, caps: Capabilities, plugin: str = "plugin") -> Capabilities:
        """Return the grant for ``caps``, or raise :class:`CapabilityDenied` naming every excess."""
        excess = self.excess(caps)
        if excess:
            raise CapabilityDenied(f"{plugin}: the device policy does not allow: {', '.join(excess)}")
        return caps


def _real(host: str) -> str:
    """A host directory as the device compares it: without ``ro:``, absolute, ``..`` and symlinks resolved."""
    return os.path.realpath(host.removeprefix("ro:"))
