"""The frame engine's behaviour with a fake clock: deadlines, drops, quarantine, playlists, transitions, layers."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest

from edged.engine.clock import FakeClock
from edged.engine.compose import Canvas, crossfade
from edged.engine.display import DisplayRunner, Layer
from edged.engine.playlist import PlaylistItem, PlaylistPlayer, in_window
from edged.engine.supervisor import DONE, Budget, StrikePolicy, Supervised
from edged.engine.timing import FrameGrid
from edged.errors import (
    CapabilityDenied,
    FrameError,
    HostFunctionError,
    OutOfFuel,
    OutOfMemory,
    PluginError,
    PluginTimeout,
    PluginTrap,
)
from edged.host.frames import Tick
from edged.host.functions import DisplayInfo
from edged.host.plugin import DevicePlugin
from tests.engine import anims

W, H = 4, 2


def slot(wasm: bytes, clock: FakeClock, name: str = "p", budget: Budget | None = None, **kw) -> Supervised:
    manifest = {
        "wasm": [{"data": wasm}],
        "memory": {"max_pages": 16},
        "edged": {"name": name, "capabilities": {"led": True}},
    }
    dp = DevicePlugin(manifest, display=DisplayInfo(W, H, fps=60))
    return Supervised(dp, budget or Budget(ms=5, fuel=2_000_000, deadline_ms=200), clock, **kw)


def tick(n: int = 0) -> Tick:
    return Tick(n, n * 16_667, 16_667, W, H, n == 0)


class Sink:
    def __init__(self, clock: FakeClock | None = None, slow: dict[int, float] | None = None) -> None:
        self.frames: list[np.ndarray] = []
        self.clock, self.slow = clock, slow or {}

    def show(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())
        if self.clock is not None and len(self.frames) - 1 in self.slow:
            self.clock.advance(self.slow[len(self.frames) - 1])


# --- timing ----------------------------------------------------------------------------------------------------


def test_deadlines_are_on_a_grid_without_drift() -> None:
    g = FrameGrid.at_fps(50, start=10.0)
    assert g.deadline() == 10.0
    times = [g.next_after(10.0 + k * 0.02 + 0.001) for k in range(1000)]
    assert times[-1] == pytest.approx(10.0 + 1000 * 0.02, abs=1e-9)
    assert g.dropped == 0


def test_late_frames_are_dropped_not_queued() -> None:
    g = FrameGrid(period=0.010, start=0.0)
    assert g.next_after(0.003) == pytest.approx(0.010)
    # frame 1 ran 35 ms late: frames 2, 3 and 4 are dropped; the next deadline is back on the grid
    assert g.next_after(0.045) == pytest.approx(0.050)
    assert (g.index, g.dropped) == (5, 3)
    assert g.next_after(0.050) == pytest.approx(0.060)  # exactly on a deadline counts as passed
    assert g.dropped == 3


def test_runner_drops_after_an_injected_slow_frame_and_sleeps_otherwise() -> None:
    clock = FakeClock(start=0.0)
    s = slot(anims.solid(9, 9, 9), clock)
    player = PlaylistPlayer([PlaylistItem(plugin="p", duration_s=None)], {"p": s})
    sink = Sink(clock, slow={3: 0.050})  # the 4th frame takes 50 ms to show
    runner = DisplayRunner("d", W, H, 100, [Layer("main", player, 0, 0, W, H)], sink, clock)
    runner.run(threading.Event(), frames=10)
    assert runner.stats.frames == 10
    assert runner.stats.dropped == 5  # 50 ms at 10 ms per frame: this deadline and the next four are gone
    # every frame after the first waited for its deadline by sleeping (the fake clock only moves when slept or
    # when a slow show moves it), and frames were shown on their deadlines: one period apart, except the slow one
    assert len(clock.slept) == runner.stats.frames - 1
    assert sorted(round(x, 6) for x in runner.stats.intervals.intervals) == [0.01] * 8 + [0.06]


class SlowPlayer:
    """A layer whose rendering takes ``cost`` seconds of the fake clock."""

    def __init__(self, clock: FakeClock, cost: float) -> None:
        self.clock, self.cost, self.slots = clock, cost, {}
        self.calls = 0

    def render(self, tick: Tick, now: float) -> np.ndarray:
        self.calls += 1
        self.clock.advance(self.cost)
        return np.full((H, W, 3), self.calls % 256, np.uint8)


def test_frames_rendered_ahead_are_shown_exactly_on_their_deadlines() -> None:
    clock = FakeClock(start=0.0)
    sink = Sink(clock)
    player = SlowPlayer(clock, cost=0.008)  # 8 ms of a 10 ms period
    runner = DisplayRunner("d", W, H, 100, [Layer("main", player, 0, 0, W, H)], sink, clock)  # type: ignore[arg-type]
    runner.run(threading.Event(), frames=20)
    assert runner.stats.frames == 20 and runner.stats.dropped == 0
    assert all(x == pytest.approx(0.010) for x in runner.stats.intervals.intervals)


def test_a_display_slower_than_its_period_still_shows_frames_and_stops() -> None:
    clock = FakeClock(start=0.0)
    sink = Sink(clock)
    player = SlowPlayer(clock, cost=0.025)  # every frame takes 2.5 periods
    runner = DisplayRunner("d", W, H, 100, [Layer("main", player, 0, 0, W, H)], sink, clock)  # type: ignore[arg-type]
    runner.run(threading.Event(), frames=10)
    assert runner.stats.frames == 10 and len(sink.frames) == 10
    assert runner.stats.dropped > 10  # every missed deadline counted


# --- supervision -----------------------------------------------------------------------------------------------


def test_budget_blowers_and_trappers_keep_their_last_good_frame() -> None:
    clock = FakeClock()
    s = slot(anims.trap_every(3), clock)
    frames = [s.frame(tick(n)) for n in range(1, 7)]
    blue = frames[0]
    assert blue is not None and blue[0, 0].tolist() == [0, 0, 255]
    assert frames[2] is frames[1]  # frame 3 trapped: the last good frame is shown again
    assert s.stats.strikes == 2 and s.stats.errors == {"PluginTrap": 2}
    assert isinstance(s.stats.last_error, str) and "unreachable" in s.stats.last_error


def test_fuel_budget_stops_an_infinite_loop_every_frame() -> None:
    clock = FakeClock()
    s = slot(anims.SPIN, clock, fallback=np.full((H, W, 3), 7, np.uint8))
    out = s.frame(tick())
    assert out is not None and out[0, 0].tolist() == [7, 7, 7]  # the fallback
    assert s.stats.errors == {"OutOfFuel": 1}
    assert s.stats.fuel_used_max == 2_000_000


def test_memory_bomb_is_contained() -> None:
    clock = FakeClock()
    s = slot(anims.MEMORY_BOMB, clock)
    assert s.frame(tick()) is None
    assert s.stats.errors == {"OutOfMemory": 1}


def test_quarantine_with_exponential_backoff_and_fresh_restarts() -> None:
    clock = FakeClock()
    s = slot(anims.trap_every(1), clock, policy=StrikePolicy(strikes=2, window_s=5, backoff_s=1, backoff_max_s=4))
    s.frame(tick(1))
    s.frame(tick(2))
    assert s.quarantined and s.quarantined_until == pytest.approx(clock.now() + 1)
    calls = s.stats.calls
    s.frame(tick(3))
    assert s.stats.calls == calls  # not called while quarantined
    for expected_backoff in (2, 4, 4):
        clock.advance(10)  # past the quarantine: restarted with a fresh instance
        s.frame(tick(4))
        s.frame(tick(5))
        assert s.quarantined_until == pytest.approx(clock.now() + expected_backoff)
    assert s.stats.quarantines == 4 and s.stats.restarts == 3


def test_strikes_outside_the_window_do_not_count() -> None:
    clock = FakeClock()
    s = slot(anims.trap_every(2), clock, policy=StrikePolicy(strikes=2, window_s=1))
    for n in range(10):
        s.frame(tick(n))
        clock.advance(2)  # one strike every 4 s
    assert not s.quarantined and s.stats.strikes == 5


def test_done_signal() -> None:
    s = slot(anims.done_after(2), FakeClock())
    assert s.frame(tick(0)) is not None
    assert s.frame(tick(1)) is not None
    assert s.frame(tick(2)) is DONE


# --- playlists -------------------------------------------------------------------------------------------------


def test_playlist_advances_on_duration_and_on_done_and_loops() -> None:
    clock = FakeClock(0.0)
    slots = {
        "red": slot(anims.solid(255, 0, 0), clock, "red"),
        "short": slot(anims.done_after(2, 0, 255, 0), clock, "short"),
    }
    player = PlaylistPlayer(
        [PlaylistItem(plugin="red", duration_s=1.0), PlaylistItem(plugin="short", duration_s=None)], slots
    )
    colours = []
    for n in range(12):
        f = player.render(tick(n), clock.now())
        colours.append(None if f is None else tuple(f[0, 0].tolist()))
        clock.advance(0.25)
    red, green = (255, 0, 0), (0, 255, 0)
    # red for 1 s (4 frames), green for its 2 frames, then green's done: its last frame holds for that frame while
    # red restarts at t=1.5, plays 1 s (t=1.75..2.25 shown), and at t=2.5 green starts again
    assert colours == [red] * 4 + [green] * 3 + [red] * 3 + [green] * 2
    assert player.advances == 4


def test_non_looping_playlist_ends_blank() -> None:
    clock = FakeClock(0.0)
    player = PlaylistPlayer(
        [PlaylistItem(plugin="a", duration_s=0.5)], {"a": slot(anims.solid(1, 2, 3), clock)}, loop=False
    )
    assert player.render(tick(0), 0.0) is not None
    assert player.render(tick(1), 0.6) is None and player.finished


def test_crossfade_blends_outgoing_into_incoming() -> None:
    clock = FakeClock(0.0)
    slots = {
        "black": slot(anims.solid(0, 0, 0), clock, "black"),
        "white": slot(anims.solid(200, 200, 200), clock, "white"),
    }
    player = PlaylistPlayer(
        [
            PlaylistItem(plugin="black", duration_s=1.0),
            PlaylistItem(plugin="white", duration_s=10, transition="crossfade", transition_s=1.0),
        ],
        slots,
    )
    player.render(tick(0), 0.0)
    assert player.render(tick(1), 1.0)[0, 0].tolist() == [0, 0, 0]  # transition starts: progress 0
    assert player.render(tick(2), 1.5)[0, 0].tolist() == [100, 100, 100]
    assert player.render(tick(3), 2.0)[0, 0].tolist() == [200, 200, 200]


def test_a_one_item_loop_with_crossfade_restarts_with_a_cut() -> None:
    clock = FakeClock(0.0)
    only = slot(anims.solid(50, 50, 50), clock, "only")
    player = PlaylistPlayer([PlaylistItem(plugin="only", duration_s=1.0, transition="crossfade")], {"only": only})
    player.render(tick(0), 0.0)
    calls = only.stats.calls
    assert player.render(tick(1), 1.5)[0, 0].tolist() == [50, 50, 50]
    assert only.stats.calls == calls + 1  # one call per frame, not two (no fade from itself into itself)


def test_schedule_windows_skip_items() -> None:
    assert in_window("08:00-22:00", dt.time(12, 0)) and not in_window("08:00-22:00", dt.time(23, 0))
    assert in_window("22:00-06:00", dt.time(23, 30)) and in_window("22:00-06:00", dt.time(5, 0))
    clock = FakeClock(0.0)
    slots = {"day": slot(anims.solid(9, 9, 0), clock, "day"), "night": slot(anims.solid(0, 0, 9), clock, "night")}
    player = PlaylistPlayer(
        [PlaylistItem(plugin="day", schedule="08:00-20:00"), PlaylistItem(plugin="night", schedule="20:00-08:00")],
        slots,
        time_of_day=lambda: dt.time(23, 0),
    )
    assert player.render(tick(0), 0.0)[0, 0].tolist() == [0, 0, 9]
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        PlaylistItem(plugin="x", schedule="noon")


def test_a_looping_schedule_goes_dark_outside_its_windows_and_comes_back() -> None:
    clock = FakeClock(0.0)
    now = [dt.time(21, 0)]
    player = PlaylistPlayer(
        [PlaylistItem(plugin="day", schedule="08:00-20:00", duration_s=60)],
        {"day": slot(anims.solid(9, 9, 0), clock, "day")},
        time_of_day=lambda: now[0],
    )
    assert player.render(tick(0), 0.0) is None  # started outside every window: dark, not finished
    now[0] = dt.time(8, 30)
    assert player.render(tick(1), 1.0)[0, 0].tolist() == [9, 9, 0]  # the window opened: it plays
    now[0] = dt.time(20, 30)
    assert player.render(tick(2), 70.0) is None  # its time is up and the window closed: dark again
    now[0] = dt.time(8, 0)
    assert player.render(tick(3), 80.0)[0, 0].tolist() == [9, 9, 0]  # next morning it is back
    assert not player.finished


def test_a_playlist_that_does_not_loop_ends() -> None:
    clock = FakeClock(0.0)
    player = PlaylistPlayer(
        [PlaylistItem(plugin="a", duration_s=1)], {"a": slot(anims.solid(1, 1, 1), clock, "a")}, loop=False
    )
    assert player.render(tick(0), 0.0) is not None
    assert player.render(tick(1), 2.0) is None and player.finished


# --- composition -----------------------------------------------------------------------------------------------


def test_layer_alpha_compositing_and_regions() -> None:
    c = Canvas(4, 2)
    c.draw(np.full((2, 4, 3), 100, np.uint8))
    c.draw(np.array([[[255, 0, 0, 128]] * 2] * 2, np.uint8), x=2, y=0)  # half-transparent red, right half
    assert c.rgb[0, 0].tolist() == [100, 100, 100]
    assert c.rgb[0, 3].tolist() == [178, 50, 50]  # (255*128 + 100*127 + 127) // 255, (100*127 + 127) // 255
    c.draw(np.full((1, 1, 3), 9, np.uint8), x=3, y=1, opacity=0.5)
    assert c.rgb[1, 3].tolist() == [93, 29, 29]  # (9*128 + 178*127 + 127) // 255, (9*128 + 50*127 + 127) // 255
    c.draw(np.full((5, 5, 3), 1, np.uint8), x=-3, y=-4)  # clipped
    assert c.rgb[0, 1].tolist() == [1, 1, 1] and c.rgb[1, 1].tolist() == [100, 100, 100]


def test_crossfade_function() -> None:
    a, b = np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 255, np.uint8)
    assert crossfade(a, b, 0)[0, 0, 0] == 0 and crossfade(a, b, 1)[0, 0, 0] == 255
    assert crossfade(a, b, 0.5)[0, 0, 0] == 127


def test_faulty_layers_do_not_disturb_the_healthy_one() -> None:
    clock = FakeClock(0.0)

    def single(name: str, wasm: bytes) -> PlaylistPlayer:
        return PlaylistPlayer([PlaylistItem(plugin=name, duration_s=None)], {name: slot(wasm, clock, name)})

    layers = [
        Layer("good", single("good", anims.solid(0, 255, 0)), 0, 0, W, H),
        Layer("spin", single("spin", anims.SPIN), 0, 0, W, H),
        Layer("bomb", single("bomb", anims.MEMORY_BOMB), 0, 0, W, H),
        Layer("traps", single("traps", anims.trap_every(10)), 0, 0, W, H),
    ]
    sink = Sink()
    runner = DisplayRunner("d", W, H, 60, layers, sink, clock)
    runner.run(threading.Event(), frames=30)
    assert runner.stats.frames == 30 and runner.stats.dropped == 0
    # the trapping layer draws blue over green when it works, and holds its last frame when it traps
    assert all(f[0, 0].tolist() == [0, 0, 255] for f in sink.frames[1:])
    spin = layers[1].player.slots["spin"]
    assert spin.stats.errors.get("OutOfFuel", 0) + spin.stats.quarantines > 0
    assert layers[2].player.slots["bomb"].stats.errors.get("OutOfMemory", 0) > 0


def test_blank_shows_black() -> None:
    clock = FakeClock(0.0)
    player = PlaylistPlayer([PlaylistItem(plugin="p")], {"p": slot(anims.solid(255, 255, 255), clock)})
    sink = Sink()
    runner = DisplayRunner("d", W, H, 30, [Layer("l", player, 0, 0, W, H)], sink, clock)
    runner.step()
    runner.blank()
    assert sink.frames[0].max() == 255 and sink.frames[-1].max() == 0


def test_errors_used_by_the_engine_are_plugin_errors() -> None:
    # the supervisor catches PluginError: everything a plugin can cause must be one
    for kind in (OutOfFuel, PluginTrap, PluginTimeout, OutOfMemory, FrameError, HostFunctionError, CapabilityDenied):
        assert issubclass(kind, PluginError), kind


def test_a_malformed_frame_is_a_strike_and_the_last_good_frame_stays() -> None:
    clock = FakeClock()
    good = slot(anims.solid(1, 2, 3), clock)
    frame = good.frame(tick(1))
    bad = slot(anims.WRONG_SIZE, clock, fallback=frame)
    assert bad.frame(tick(1)) is frame
    assert bad.stats.strikes == 1 and bad.stats.errors == {"FrameError": 1}
    assert "frame has 7 bytes" in (bad.stats.last_error or "")


# --- creating instances is contained too (issue 10, point 2) --------------------------------------------------


def test_a_spinning_initialisation_is_struck_and_never_blocks_the_frame_path() -> None:
    clock = FakeClock()
    s = slot(anims.init_spin(), clock, budget=Budget(5, 200_000, 20, 10**15, 3000), background_init=True)
    frames = [s.frame(tick(n)) for n in range(5)]
    # the quick try within one frame budget failed; the frames go on while the background thread spins
    assert all(f is None for f in frames)
    assert s._preparing is not None and not s._preparing.done()
    s._settle()
    s.frame(tick(5))
    assert s.stats.strikes == 1 and s.stats.errors == {"PluginTimeout": 1}
    assert "initialisation" in (s.stats.last_error or "")
    s.close()


def test_a_slow_initialisation_runs_in_the_background_then_the_plugin_draws() -> None:
    clock = FakeClock()
    s = slot(anims.init_spin(300_000), clock, budget=Budget(5, 100_000, 20, 50_000_000, 5000), background_init=True)
    assert s._preparing is not None  # did not fit one frame budget: handed to the background at once
    s._settle()
    frame = s.frame(tick(0))
    assert frame is not None and frame[0, 0].tolist() == [255, 255, 255]
    assert s.stats.strikes == 0 and s.stats.inits == 2  # the quick try, then the background one
    s.close()


def test_the_init_budget_is_separate_from_the_frame_budget_inline_too() -> None:
    clock = FakeClock()
    s = slot(anims.init_spin(300_000), clock, budget=Budget(5, 100_000, 20, 50_000_000, 5000))
    frame = s.frame(tick(0))
    assert frame is not None and s.stats.strikes == 0
    tight = slot(anims.init_spin(300_000), clock, budget=Budget(5, 100_000, 20, 100_000, 5000))
    assert tight.frame(tick(0)) is None
    assert tight.stats.errors == {"OutOfFuel": 1} and "initialisation" in (tight.stats.last_error or "")


def test_a_plugin_done_at_once_is_not_reinitialised_every_frame() -> None:
    clock = FakeClock()
    s = slot(anims.SLOW_INIT_DONE_AT_ONCE, clock, budget=Budget(5, 20_000_000, 200, 50_000_000, 5000))
    player = PlaylistPlayer([PlaylistItem(plugin="p", duration_s=None)], {"p": s})
    for n in range(120):  # two seconds at 60 fps
        player.render(tick(n), clock.now())
        clock.advance(1 / 60)
    # a replay waits until a second after the previous start: 2 or 3 instances in two seconds, not 120
    assert 1 <= s.stats.inits <= 3
    s.close()


def test_any_exception_from_a_frame_is_a_strike_not_a_dead_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    s = slot(anims.solid(1, 2, 3), clock)

    def explode(_tick: Tick) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(s.plugin, "frame", explode)
    assert s.frame(tick(0)) is None
    assert s.stats.strikes == 1 and s.stats.errors == {"InternalFailure": 1}
    assert "recursion" in (s.stats.last_error or "")


def test_a_matricks_setup_that_traps_is_a_strike_and_never_initialises_on_the_frame_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a hostile review: a trap in setup dropped the instance but left setup marked done, so the next
    update created the instance again on the display thread under the full init budget."""
    from edged.runtime import Plugin
    from tests.conftest import wat

    wasm = wat(
        """(module (memory (export "memory") 1)
      (func (export "_initialize") (local $i i64)
        (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))
          (br_if $l (i64.lt_u (local.get $i) (i64.const 300000)))))
      (func (export "setup") (result i32) unreachable)
      (func (export "update") (result i32) (i32.const 0)))"""
    )
    made: list[tuple[str, int | None]] = []
    real = Plugin._instantiate

    def recording(self: Plugin):  # type: ignore[no-untyped-def]
        made.append((threading.current_thread().name, self.init_fuel))
        return real(self)

    monkeypatch.setattr(Plugin, "_instantiate", recording)
    manifest = {"wasm": [{"data": wasm}], "edged": {"name": "m", "kind": "matricks", "capabilities": {"led": True}}}
    dp = DevicePlugin(manifest, display=DisplayInfo(W, H, fps=60))
    clock = FakeClock()
    s = Supervised(dp, Budget(5, 100_000, 20, 50_000_000, 5000), clock, background_init=True)
    for n in range(6):
        s.frame(tick(n))
        s._settle()
    assert s.stats.strikes >= 2 and "unreachable" in (s.stats.last_error or "")
    on_frame_thread = [fuel for name, fuel in made if not name.startswith("edged-plugin-init")]
    assert on_frame_thread and all(fuel == 100_000 for fuel in on_frame_thread)  # only the quick try
    s.close()
