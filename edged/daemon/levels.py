"""The displays' brightness and power as last set (``edged ctl brightness``, the web page, Home Assistant), kept in
``<state_dir>/levels.json`` across restarts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write

log = logging.getLogger("edged.daemon")

#: the file under ``state_dir``
LEVELS_FILE = "levels.json"


def led_output(sink: object) -> Any:
    """The LED output (:class:`~edged.hardware.output.LedOutput`: pipeline and backend) behind a display's sink, or
    None for a sink that is not one."""
    out = getattr(sink, "output", sink)
    return out if hasattr(out, "pipeline") else None


def save_levels(state_dir: Path, sinks: Mapping[str, object]) -> None:
    """Save the brightness and power of every display (name -> sink) that has an LED output."""
    levels = {}
    for name, sink in sinks.items():
        out = led_output(sink)
        if out is not None:
            levels[name] = {"brightness": out.pipeline.brightness, "power": out.pipeline.power}
    try:
        atomic_write(state_dir / LEVELS_FILE, json.dumps(levels).encode())
    except OSError as exc:
        log.warning("could not save the displays' brightness and power: %s", exc)


def restore_levels(state_dir: Path, display: str, sink: object) -> None:
    """Set a display's brightness and power as they were before the last stop (nothing when none were saved)."""
    try:
        doc = json.loads((state_dir / LEVELS_FILE).read_text()).get(display)
    except (OSError, ValueError, AttributeError):
        return
    out = led_output(sink)
    if not isinstance(doc, dict) or out is None:
        return
    brightness, power = doc.get("brightness"), doc.get("power")
    try:
        out.pipeline.set_level(
            brightness if isinstance(brightness, int) else None, power if isinstance(power, bool) else None
        )
    except ValueError:
        log.warning("ignoring a bad saved brightness", extra={"display": display})
