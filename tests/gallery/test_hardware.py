"""The gallery's hardware plugins on an emulated board (gpiozero MockFactory) driven by scenario files: the distance
sensor feeding the bar graph end to end, and the button plugin cycling modes on scripted presses."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from edged.errors import CapabilityDenied
from edged.hardware.gpio import GpioBoard, GpioConfig
from edged.hardware.scenario import ScenarioPlayer, load_scenario
from edged.host.frames import Tick
from edged.host.functions import SharedValues
from edged.host.plugin import DevicePlugin
from edged.tooling.check import DryRunIO

from .helpers import load, manifest, tick

SCENARIOS = Path(__file__).parent / "scenarios"


def test_distance_sensor_feeds_the_bar_graph_through_a_scenario() -> None:
    config = GpioConfig.model_validate(
        {"sensors": {"distance": {"type": "distance", "echo": 23, "trigger": 24, "max_distance": 2.0}}}
    )
    values = SharedValues()
    with GpioBoard(config, emulated=True) as board:
        sensor = load("distance_sensor", io=board, values=values)
        display = load("bar_graph", 16, values=values)
        player = ScenarioPlayer(load_scenario(SCENARIOS / "distance_sweep.toml", config=board.config), board)
        before = display.frame(tick(0, 16, 16))
        assert before is not None and values.get("distance_m") is None
        heights, published, reds = [], [], []
        for i in range(11):  # every 0.2 s of the sweep
            t = i * 0.2
            player.advance(t)
            sensor.tick(Tick(i, int(t * 1e6), 200_000, 0, 0, i == 0))
            frame = display.frame(tick(i + 1, 16, 16))
            assert frame is not None
            published.append(float(values.get("distance_m") or b"nan"))
            lit_rows = frame.sum(axis=(1, 2)) > 0
            heights.append(int(lit_rows.sum()))
            reds.append(int(frame[15, 8, 0]))
        assert published[0] == 0.2 and published[-1] == 1.8, published
        assert all(a <= b for a, b in pairwise(published)), published
        # 0.2 m of 2 m fills 10% of 16 rows; 1.8 m fills 90%
        assert heights[0] == 2 and heights[-1] == 14, heights
        assert all(a <= b for a, b in pairwise(heights)), heights
        assert reds[0] > reds[-1], "close is red, far is green"
        # the outline shown before any reading is gone once values arrive
        assert not np.array_equal(before, frame)


def mode_of(frame: np.ndarray) -> int:
    """The button plugin's mode indicator: one white dot per mode number on the top row's even columns."""
    return sum(1 for x in range(0, 8, 2) if (frame[0, x] == 255).all())


def test_button_plugin_cycles_modes_on_scripted_presses() -> None:
    config = GpioConfig.model_validate({"gpio": {"mode": {"type": "button", "pin": 17}}})
    with GpioBoard(config, emulated=True) as board:
        plugin = load("button_modes", 16, io=board)
        player = ScenarioPlayer(
            load_scenario(SCENARIOS / "three_presses.toml", config=board.config), board, start=plugin.ctx.started
        )
        modes, centres = [], []
        for i in range(120):  # two seconds at 60 fps
            player.advance(i / 60)
            frame = plugin.frame(tick(i, 16, 16))
            assert frame is not None
            modes.append(mode_of(frame))
            centres.append(frame[8, 8].tolist())
        assert player.finished
    changes = [i for i in range(1, len(modes)) if modes[i] != modes[i - 1]]
    assert [modes[0], *(modes[i] for i in changes)] == [1, 2, 3, 4], modes
    # each press lands on the first frame at or after its scripted time (0.5 s, 1.0 s, 1.5 s at 60 fps)
    assert changes == [30, 60, 90], changes
    # mode 1 is the configured solid colour; the others draw something else
    assert centres[0] == [255, 80, 0]
    assert centres[45] != centres[0] and centres[75] != centres[0]


def test_button_release_edges_do_not_count_as_presses() -> None:
    config = GpioConfig.model_validate({"gpio": {"mode": {"type": "button", "pin": 17}}})
    with GpioBoard(config, emulated=True) as board:
        plugin = load("button_modes", 16, io=board)
        plugin.frame(tick(0, 16, 16))  # subscribes to the pin
        board.press("mode")
        frame = plugin.frame(tick(1, 16, 16))
        assert frame is not None and mode_of(frame) == 2
        board.release("mode")
        frame = plugin.frame(tick(2, 16, 16))
        assert frame is not None and mode_of(frame) == 2, "a release is a rising edge, not a press"


def test_distance_sensor_publishes_nothing_for_an_unavailable_reading() -> None:
    values = SharedValues()
    good = load("distance_sensor", io=DryRunIO(sensor_value=0.75), values=values)
    good.tick(Tick(0, 0, 0, 0, 0, True))
    assert values.get("distance_m") == b"0.750"
    broken = load("distance_sensor", io=DryRunIO(sensor_value=float("nan")), values=values)
    broken.tick(Tick(0, 0, 0, 0, 0, True))
    assert values.get("distance_m") == b"0.750", "a NaN reading keeps the last good value"


def test_distance_sensor_tick_stays_in_its_fuel_budget() -> None:
    budget = manifest("distance_sensor")["edged"]["budget"]["fuel"]
    plugin = load("distance_sensor", io=DryRunIO(sensor_value=1.5), values=SharedValues())
    for i in range(20):
        plugin.tick(Tick(i, i * 100_000, 100_000, 0, 0, i == 0))
        assert plugin.last_fuel_used is not None and plugin.last_fuel_used <= budget


def test_button_plugin_stays_in_budget_in_every_mode_at_the_largest_size() -> None:
    budget = manifest("button_modes")["edged"]["budget"]["fuel"]
    config = GpioConfig.model_validate({"gpio": {"mode": {"type": "button", "pin": 17}}})
    with GpioBoard(config, emulated=True) as board:
        plugin = load("button_modes", 256, io=board)
        seen = set()
        for i in range(40):
            if i and i % 10 == 0:
                board.press("mode")
                board.release("mode")
            frame = plugin.frame(tick(i, 256, 256))
            assert frame is not None
            seen.add(mode_of(frame))
            assert plugin.last_fuel_used is not None and plugin.last_fuel_used <= budget, (i, plugin.last_fuel_used)
        assert seen == {1, 2, 3, 4}


def drawn(plugin: DevicePlugin, i: int) -> np.ndarray:
    frame = plugin.frame(tick(i, 16, 16))
    assert frame is not None
    return frame


def button_board(pin: int = 17) -> GpioBoard:
    return GpioBoard(GpioConfig.model_validate({"gpio": {"mode": {"type": "button", "pin": pin}}}), emulated=True)


def test_button_plugin_colour() -> None:
    with button_board() as board:
        frame = load("button_modes", 16, {"color": "#00ff00"}, io=board).frame(tick(0, 16, 16))
    assert frame is not None and frame[8, 8].tolist() == [0, 255, 0]


def test_button_plugin_press_edge_rising() -> None:
    """Wired to 3V3 with a pull-down, a press is a rising edge: with press_edge "rising" the release does nothing."""
    with button_board() as board:
        plugin = load("button_modes", 16, {"press_edge": "rising"}, io=board)
        modes = [mode_of(drawn(plugin, 0))]
        board.press("mode")  # a falling edge on the emulated pull-up button
        modes.append(mode_of(drawn(plugin, 1)))
        board.release("mode")  # rising
        modes.append(mode_of(drawn(plugin, 2)))
    assert modes == [1, 1, 2], modes


def sparkle(seed: str) -> list[np.ndarray]:
    """Frames of the sparkle mode (the fourth: three presses) with the given seed."""
    with button_board() as board:
        plugin = load("button_modes", 16, {"seed": seed}, io=board)
        plugin.frame(tick(0, 16, 16))
        for _ in range(3):
            board.press("mode")
            board.release("mode")
        frames = [drawn(plugin, i) for i in range(1, 6)]
    assert all(mode_of(f) == 4 for f in frames)
    return frames


def test_button_plugin_seed_drives_the_sparkle() -> None:
    a, again, b = sparkle("1"), sparkle("1"), sparkle("2")
    assert all(np.array_equal(x, y) for x, y in zip(a, again, strict=True)), "the same seed sparkles the same"
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True)), "another seed sparkles differently"


def test_button_plugin_pin_needs_the_manifest_grant() -> None:
    """config pin = 22 while the manifest's gpio.events grants only 17: the first frame fails and says why."""
    with button_board(22) as board:
        plugin = load("button_modes", 16, {"pin": "22"}, io=board)
        with pytest.raises(CapabilityDenied, match=r"pin 22 is not granted for gpio\.events \(granted: \[17\]\)"):
            plugin.frame(tick(0, 16, 16))
