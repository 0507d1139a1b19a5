"""AssemblyScript plugins are built with --runtime stub, which never frees: they must allocate nothing per frame, or
a plugin that plays for an hour runs out of memory. Each runs thousands of frames in the smallest memory it starts
in plus one page (64 KiB): a leak of 13 bytes a frame would exhaust it."""

from __future__ import annotations

import json

import pytest

from edged.errors import PluginError
from edged.host.capabilities import DevicePolicy
from edged.host.functions import DisplayInfo, SharedValues
from edged.host.plugin import DevicePlugin

from .helpers import GALLERY, manifest, tick

AS_DRAWING = sorted(
    name
    for name in (p.name for p in GALLERY.iterdir() if (p / f"{p.name}.ts").exists())
    if manifest(name)["edged"]["kind"] != "sensor"
)
SIZE = 32


def limited(name: str, max_pages: int) -> DevicePlugin:
    doc = manifest(name)
    doc["wasm"] = [{"path": str(GALLERY / name / f"{name}.wasm")}]
    doc["memory"] = {"max_pages": max_pages}
    values = SharedValues()
    values.set("distance_m", b"1.0")
    caps = doc["edged"]["capabilities"]
    policy = DevicePolicy(values=caps.get("subscribe", []))
    return DevicePlugin(json.dumps(doc), policy=policy, values=values, display=DisplayInfo(SIZE, SIZE, 60))


def runs(name: str, max_pages: int, frames: int) -> bool:
    plugin = limited(name, max_pages)
    try:
        for i in range(frames):
            plugin.frame(tick(i, SIZE, SIZE))
    except PluginError:
        return False
    finally:
        plugin.close()
    return True


@pytest.mark.parametrize("name", AS_DRAWING)
def test_no_memory_growth_per_frame(name: str) -> None:
    assert {"rainbow", "scroll_text", "bar_graph", "matricks_pulse"} <= set(AS_DRAWING)
    base = next(pages for pages in range(1, 64) if runs(name, pages, 30))
    assert runs(name, base + 1, 5000), f"{name} ran out of {base + 1} pages within 5000 frames"
