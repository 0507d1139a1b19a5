#!/usr/bin/env python3
"""Regenerate the gallery's preview GIFs in docs/gallery/ with edged's own preview code.

Usage: .venv/bin/python plugins/gallery_previews.py [NAME ...]

Most plugins go through ``edged preview NAME/manifest.json --gif`` exactly as a user would run it. The two that wait
for hardware are rendered with the same library pieces (DevicePlugin on an emulated board, edged.hardware.render's
GIF writer): bar_graph is fed by distance_sensor while a scenario sweeps the distance, and button_modes gets a
button press every second.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edged.cli import main as edged
from edged.hardware.gpio import GpioBoard, GpioConfig
from edged.hardware.render import save_gif
from edged.hardware.scenario import ScenarioPlayer, load_scenario
from edged.host.capabilities import DevicePolicy
from edged.host.frames import Tick
from edged.host.functions import DisplayInfo, SharedValues
from edged.host.plugin import DevicePlugin

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "plugins" / "gallery"
OUT = ROOT / "docs" / "gallery"
FPS = 30
SIZE = 32
SCALE = 4  # pixels per LED: keeps the committed GIFs small

log = logging.getLogger("gallery_previews")

#: extra `edged preview` arguments per plugin (frames, size, config)
PREVIEW_ARGS: dict[str, list[str]] = {
    "rainbow": [],
    "plasma": [],
    "fire": [],
    "life": ["-c", "rate=15", "--frames", "120"],
    "clock": ["-c", "time=12:34:56", "--size", f"{SIZE}x16", "--frames", "90"],
    "scroll_text": ["-c", "text=Grüße aus edged!", "-c", "speed=20", "--size", f"{SIZE}x16", "--frames", "150"],
    "matrix_rain": [],
    "sprite": [],
    "matricks_pulse": [],
}


def via_cli(name: str) -> None:
    args = ["preview", str(GALLERY / name / "manifest.json"), "--gif", str(OUT / f"{name}.gif"), "--fps", str(FPS)]
    args += ["--scale", str(SCALE)]
    extra = PREVIEW_ARGS[name]
    if "--size" not in extra:
        args += ["--size", f"{SIZE}x{SIZE}"]
    if "--frames" not in extra:
        args += ["--frames", "60"]
    code = edged([*args, *extra])
    if code != 0:
        raise SystemExit(f"edged preview failed for {name} (exit {code})")


def _frames(plugin: DevicePlugin, n: int, before_each: Callable[[int, float], None]) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        t = i / FPS
        before_each(i, t)
        frame = plugin.frame(Tick(i, round(t * 1e6), round(1e6 / FPS) if i else 0, SIZE, SIZE, i == 0))
        if frame is None:
            break
        frames.append(frame[..., :3].copy())
    return frames


def bar_graph() -> None:
    config = GpioConfig.model_validate(
        {"sensors": {"distance": {"type": "distance", "echo": 23, "trigger": 24, "max_distance": 2.0}}}
    )
    scenario = load_scenario(
        text='[[curves]]\nsensor = "distance"\npoints = [[0, 0.1], [1.5, 1.9], [3, 0.1]]\n', config=config
    )
    values = SharedValues()
    policy = DevicePolicy(sensors=["distance"])
    with GpioBoard(config, emulated=True) as board:
        player = ScenarioPlayer(scenario, board)
        sensor = DevicePlugin(GALLERY / "distance_sensor" / "manifest.json", policy=policy, io=board, values=values)
        display = DevicePlugin(
            GALLERY / "bar_graph" / "manifest.json", values=values, display=DisplayInfo(SIZE, SIZE, FPS)
        )

        def step(i: int, t: float) -> None:
            player.advance(t)
            sensor.tick(Tick(i, round(t * 1e6), 0, 0, 0, i == 0))

        save_gif(_frames(display, 90, step), OUT / "bar_graph.gif", FPS, scale=SCALE)


def button_modes() -> None:
    config = GpioConfig.model_validate({"gpio": {"mode": {"type": "button", "pin": 17}}})
    with GpioBoard(config, emulated=True) as board:
        plugin = DevicePlugin(
            GALLERY / "button_modes" / "manifest.json",
            policy=DevicePolicy(gpio_events=[17]),
            io=board,
            display=DisplayInfo(SIZE, SIZE, FPS),
        )

        def step(i: int, t: float) -> None:
            if i and i % FPS == 0:  # a press every second
                board.press("mode")
                board.release("mode")

        save_gif(_frames(plugin, 4 * FPS, step), OUT / "button_modes.gif", FPS, scale=SCALE)


SPECIAL: dict[str, Callable[[], None]] = {"bar_graph": bar_graph, "button_modes": button_modes}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="only these plugins")
    args = parser.parse_args(argv)
    names = args.names or [*PREVIEW_ARGS, *SPECIAL]
    unknown = [n for n in names if n not in PREVIEW_ARGS and n not in SPECIAL]
    if unknown:
        parser.error(f"no preview for {', '.join(unknown)}")
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        SPECIAL[name]() if name in SPECIAL else via_cli(name)
        log.info("preview written", extra={"plugin": name})
        print(OUT / f"{name}.gif", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
