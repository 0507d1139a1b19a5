"""The daemon in-process: displays on emulated LEDs, supervision, reload, playlist control, a clean stop."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from edged.daemon import Daemon, load_config
from edged.daemon.assembly import DisplayAssembler
from edged.daemon.client import request
from edged.daemon.control import ControlServer, handle
from edged.daemon.hardware import DeviceHardware
from edged.engine.clock import FakeClock
from edged.errors import ConfigError
from edged.hardware.profile import list_profiles, load_profile
from tests.engine.anims import MEMORY_BOMB, SPIN, done_after, solid, trap_every

CONFIG = """
[daemon]
hardware = "emulated-16x16"
plugins_dir = ["plugins"]
state_dir = "state"
calibrate_fuel = {calibrate}

[[displays]]
name = "main"
fps = 60
layers = [{{ name = "bg", playlist = "base" }}, {{ name = "right", playlist = "side", x = 8, width = 8 }}]

[playlists.base]
items = [{{ plugin = "red", duration_s = 100 }}]

[playlists.side]
items = [{{ plugin = "{side}", duration_s = 100 }}]

[playlists.alt]
items = [{{ plugin = "green", duration_s = 100 }}]
"""


def write_plugin(root: Path, name: str, wasm: bytes, manifest: dict | None = None) -> Path:
    folder = root / "plugins" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.wasm").write_bytes(wasm)
    if manifest is not None:
        doc = {"wasm": [{"path": f"{name}.wasm"}], "edged": {"name": name, **manifest}}
        (folder / f"{name}.manifest.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write_plugin(tmp_path, "red", solid(255, 0, 0), {"capabilities": {"led": True}})
    write_plugin(tmp_path, "green", solid(0, 255, 0))
    write_plugin(tmp_path, "blue", solid(0, 0, 255))
    write_plugin(tmp_path, "spin", SPIN)
    write_plugin(tmp_path, "trapper", trap_every(2))
    write_plugin(tmp_path, "short", done_after(3, 9, 9, 9))
    write_plugin(tmp_path, "bomb", MEMORY_BOMB)
    write_plugin(tmp_path, "garbage", b"\x00asm\x01\x00\x00\x00garbage")
    return tmp_path


def make(site: Path, side: str = "blue", frames: int | None = None, calibrate: bool = False) -> Daemon:
    path = site / "edged.toml"
    path.write_text(CONFIG.format(side=side, calibrate=str(calibrate).lower()))
    cfg = load_config(path)
    hw = DeviceHardware("emulated-16x16", emulate=True)
    return Daemon(cfg, hw, config_path=path, frames=frames, clock=FakeClock())


def latest(d: Daemon) -> np.ndarray:
    out = d.hardware.outputs["main"]  # type: ignore[attr-defined]
    image = out.pipeline.inverse(out.backend.latest().data)
    assert image is not None
    return image


def run_frames(d: Daemon, n: int) -> None:
    d.frames = n
    d.start()
    d.wait()


def test_layers_render_to_the_emulated_leds_and_stats_count_frames(site: Path) -> None:
    d = make(site)
    run_frames(d, 10)
    img = latest(d)
    assert img[:, :8, 0].min() > 200 and img[:, :8, 2].max() == 0  # red left half
    assert img[:, 8:, 2].min() > 200 and img[:, 8:, 0].max() == 0  # blue right half
    stats = d.stats()
    assert stats["displays"]["main"]["frames"] == 10
    assert stats["displays"]["main"]["dropped"] == 0
    assert set(stats["plugins"]) == {"main/bg/red", "main/right/blue"}
    d.stop()


def test_a_looping_plugin_is_struck_and_quarantined_while_its_neighbour_draws(site: Path) -> None:
    d = make(site, side="spin", calibrate=True)
    run_frames(d, 20)
    stats = d.stats()
    spin = stats["plugins"]["main/right/spin"]
    assert spin["strikes"] >= 3 and spin["quarantines"] >= 1
    assert spin["errors"].keys() <= {"OutOfFuel", "PluginTimeout"}
    assert stats["plugins"]["main/bg/red"]["strikes"] == 0
    assert stats["displays"]["main"]["frames"] == 20
    img = latest(d)
    assert img[:, :8, 0].min() > 200  # the red layer kept drawing
    d.stop()


def test_a_memory_bomb_meets_the_default_memory_cap(site: Path) -> None:
    d = make(site, side="bomb")
    run_frames(d, 3)
    bomb = d.stats()["plugins"]["main/right/bomb"]
    assert bomb["errors"] == {"OutOfMemory": 3} and bomb["quarantines"] == 1
    assert latest(d)[:, :8, 0].min() > 200
    d.stop()


def test_a_trapping_plugin_keeps_its_last_good_frame(site: Path) -> None:
    d = make(site, side="trapper")
    run_frames(d, 6)
    assert d.stats()["plugins"]["main/right/trapper"]["errors"] == {"PluginTrap": 3}
    assert latest(d)[:, 8:, 2].min() > 200  # frames 1, 3, 5 were blue; the traps showed the last good one
    d.stop()


def test_a_plugin_that_does_not_load_is_reported_and_the_rest_runs(site: Path) -> None:
    d = make(site, side="garbage")
    run_frames(d, 3)
    problems = d.stats()["problems"]
    assert len(problems) == 2
    assert "plugin 'garbage' not loaded" in problems[0]["message"]
    assert "layer stays dark" in problems[1]["message"]
    img = latest(d)
    assert img[:, :, 0].min() > 200 and img[:, :, 1:].max() == 0  # the background layer shows through
    d.stop()


def test_stop_blanks_the_leds_and_is_idempotent(site: Path) -> None:
    d = make(site)
    run_frames(d, 3)
    out = d.hardware.outputs["main"]  # type: ignore[attr-defined]
    d.stop()
    d.stop()
    assert out.closed
    assert not out.backend.latest().data.any()


def test_reload_keeps_untouched_displays_and_rebuilds_changed_ones(site: Path) -> None:
    d = make(site)
    d.start()
    thread = d.displays["main"].thread
    assert d.reload() == {"kept": ["main"], "rebuilt": [], "added": [], "removed": []}
    assert d.displays["main"].thread is thread and thread is not None and thread.is_alive()
    (site / "edged.toml").write_text(CONFIG.format(side="green", calibrate="false"))
    report = d.reload()
    assert report["rebuilt"] == ["main"]
    assert d.displays["main"].thread is not thread
    assert "main/right/green" in d.stats()["plugins"]
    d.stop()


def test_reload_notices_a_changed_plugin_file(site: Path) -> None:
    d = make(site)
    d.start()
    write_plugin(site, "blue", solid(0, 0, 128))
    assert d.reload()["rebuilt"] == ["main"]
    d.stop()


def test_a_bad_config_on_reload_changes_nothing(site: Path) -> None:
    d = make(site)
    d.start()
    thread = d.displays["main"].thread
    (site / "edged.toml").write_text("[daemon]\nhardwar = 1\n")
    report = d.reload()
    assert "error" in report and "hardwar" in report["error"][0] and "edged.toml:2:" in report["error"][0]
    assert d.displays["main"].thread is thread
    assert d.config.displays[0].name == "main"
    d.stop()


def test_switch_playlist_and_next_item(site: Path) -> None:
    d = make(site)
    run_frames(d, 2)
    assert d.switch_playlist("main", "alt", layer="right") == "right"
    assert d.stats()["displays"]["main"]["layers"] == {"bg": "red", "right": None}
    with pytest.raises(KeyError, match="unknown playlist 'nope'"):
        d.switch_playlist("main", "nope")
    with pytest.raises(KeyError, match="unknown display 'side'"):
        d.next_item("side")
    assert d.next_item("main", "right") == "green"
    d.stop()


def test_control_socket_round_trip(site: Path, tmp_path: Path) -> None:
    d = make(site)
    d.start()
    sock = Path("/tmp") / f"edged-test-{threading.get_ident()}.sock"
    server = ControlServer(d, sock)
    server.start()
    try:
        listed = request(sock, {"cmd": "list"})
        assert listed["ok"] and {r["plugin"] for r in listed["result"]} == {"red", "blue"}
        assert request(sock, {"cmd": "stats"})["result"]["displays"]["main"]["fps"] == 60
        assert request(sock, {"cmd": "switch", "display": "main", "playlist": "alt"})["ok"]
        bad = request(sock, {"cmd": "explode"})
        assert not bad["ok"] and bad["error"].startswith("bad request: cmd")
        assert request(sock, {"cmd": "switch", "display": "main"}) == {
            "ok": False,
            "error": "'switch' needs a playlist",
        }
        assert request(sock, {"cmd": "reload"})["result"]["rebuilt"] == ["main"]  # switched away from the config
        with pytest.raises(OSError, match="another edged is listening"):
            ControlServer(d, sock)
    finally:
        server.close()
        d.stop()
    assert not sock.exists()


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"cmd": 3}', b'{"cmd": "list", "extra": 1}', b"\xff\xfe"])
def test_malformed_control_requests_get_an_error_reply(site: Path, raw: bytes) -> None:
    d = make(site)
    reply = handle(d, raw)
    assert reply["ok"] is False and reply["error"].startswith("bad request")


def test_done_plugins_advance_the_playlist(site: Path) -> None:
    path = site / "edged.toml"
    path.write_text(
        CONFIG.format(side="blue", calibrate="false").replace(
            'items = [{ plugin = "red", duration_s = 100 }]',
            'items = [{ plugin = "short", duration_s = 100 }, { plugin = "red", duration_s = 100 }]',
        )
    )
    d = Daemon(load_config(path), DeviceHardware("emulated-16x16", emulate=True), frames=8, clock=FakeClock())
    d.start()
    d.wait()
    assert d.stats()["displays"]["main"]["layers"]["bg"] == "red"
    d.stop()


def test_config_errors_name_the_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "edged.toml"
    path.write_text('[daemon]\nhardware = "x"\n\n[[displays]]\nname = "main"\nfps = -3\nlayers = []\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "edged.toml:6: displays.0.fps" in text and "edged.toml:7: displays.0.layers" in text
    path.write_text('[[displays]]\nname = "main"\nlayers = [{ name = "a", playlist = "missing" }]\n')
    with pytest.raises(ConfigError, match="unknown playlist 'missing'"):
        load_config(path)


@pytest.mark.parametrize(
    ("hardware", "file"),
    [("mine.toml", "mine.toml"), ("profiles/mine.toml", "profiles/mine.toml"), ("./profiles/mine", "profiles/mine")],
)
def test_a_hardware_profile_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hardware: str, file: str
) -> None:
    """Under systemd the cwd is /var/lib/edged: a profile beside /etc/edged/edged.toml must still be found."""
    etc = tmp_path / "etc"
    profile = etc / file
    profile.parent.mkdir(parents=True, exist_ok=True)
    profile.write_text(list_profiles()["emulated-16x16"].read_text())
    path = etc / "edged.toml"
    path.write_text(f'[daemon]\nhardware = "{hardware}"\n')
    elsewhere = tmp_path / "var-lib-edged"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    assert cfg.daemon.hardware == str(profile.resolve())
    assert "main" in load_profile(cfg.daemon.hardware).displays


def test_a_hardware_profile_name_stays_a_name(tmp_path: Path) -> None:
    path = tmp_path / "edged.toml"
    path.write_text('[daemon]\nhardware = "emulated-16x16"\n')
    assert load_config(path).daemon.hardware == "emulated-16x16"


def test_a_display_missing_from_the_profile_is_a_clear_error(site: Path) -> None:
    path = site / "edged.toml"
    path.write_text(CONFIG.format(side="blue", calibrate="false").replace('name = "main"', 'name = "wall"'))
    d = Daemon(load_config(path), DeviceHardware("emulated-16x16", emulate=True), frames=1, clock=FakeClock())
    with pytest.raises(ConfigError, match="display 'wall' is not in hardware profile 'emulated-16x16'"):
        d.start()


SENSOR_CONFIG = """
[daemon]
hardware = "pi4-sensor-kit"
plugins_dir = ["{gallery}"]
calibrate_fuel = false

[policy]
sensors = ["distance"]
gpio_events = [17]

[[displays]]
name = "main"
layers = [{{ name = "bar", playlist = "gauge" }}]

[playlists.gauge]
items = [{{ plugin = "bar_graph", duration_s = 1000 }}]

[[sensors]]
plugin = "distance_sensor"
interval_s = 0.1
"""

SCENARIO = """
[[curves]]
sensor = "distance"
points = [[0, 1.8], [2, 1.8], [4, 0.2], [100, 0.2]]
"""


def lit(image: np.ndarray) -> int:
    return int((image.max(axis=2) > 40).sum())


def test_a_sensor_plugin_feeds_a_display_plugin_driven_by_a_scenario(tmp_path: Path) -> None:
    gallery = Path(__file__).resolve().parents[2] / "plugins" / "gallery"
    (tmp_path / "edged.toml").write_text(SENSOR_CONFIG.format(gallery=gallery.as_posix()))
    (tmp_path / "walk-up.toml").write_text(SCENARIO)
    hw = DeviceHardware("pi4-sensor-kit", emulate=True, scenario=tmp_path / "walk-up.toml")
    d = Daemon(load_config(tmp_path / "edged.toml"), hw, frames=150, clock=FakeClock())
    seen: list[tuple[float, int]] = []
    previous: list[float] = []

    def watch(runner: object) -> None:
        # a frame is rendered ahead of its deadline, so it shows the value published before the previous show
        if previous:
            seen.append((previous[-1], lit(latest(d))))
        value = d.values.get("distance_m")
        if value is not None:
            previous.append(float(value.decode()))

    d.on_frame = watch
    d.start()
    d.wait()
    far = [n for v, n in seen if v > 1.5]
    near = [n for v, n in seen if v < 0.5]
    assert far and near, seen
    assert max(near) < min(far)  # the bar shrinks as the visitor comes close
    stats = d.stats()
    assert stats["plugins"]["main/sensor/distance_sensor"]["ticks"] >= 10
    assert stats["plugins"]["main/sensor/distance_sensor"]["strikes"] == 0
    d.stop()


SENSORS_ONLY = """
[daemon]
hardware = "pi4-sensor-kit"
plugins_dir = ["{gallery}"]
calibrate_fuel = false

[policy]
sensors = ["distance"]

[[sensors]]
plugin = "distance_sensor"
interval_s = 0.5
"""


def test_a_device_with_sensors_and_no_display_runs_them_and_stops_at_frames(tmp_path: Path) -> None:
    gallery = Path(__file__).resolve().parents[2] / "plugins" / "gallery"
    (tmp_path / "edged.toml").write_text(SENSORS_ONLY.format(gallery=gallery.as_posix()))
    (tmp_path / "walk-up.toml").write_text(SCENARIO)
    hw = DeviceHardware("pi4-sensor-kit", emulate=True, scenario=tmp_path / "walk-up.toml")
    clock = FakeClock()
    d = Daemon(load_config(tmp_path / "edged.toml"), hw, frames=6, clock=clock)
    d.start()
    d.wait()
    stats = d.stats()
    assert stats["displays"] == {}
    assert stats["plugins"]["sensors/distance_sensor"]["ticks"] == 6
    assert stats["plugins"]["sensors/distance_sensor"]["strikes"] == 0
    assert [r["plugin"] for r in d.list_plugins()] == ["distance_sensor"]
    # the scenario followed the sensor clock: after 2.5 s the visitor is on the way in (1.8 m -> 0.2 m from 2 s)
    value = d.values.get("distance_m")
    assert value is not None and 0.2 < float(value.decode()) < 1.8
    assert clock.slept and all(x == pytest.approx(0.5) for x in clock.slept)  # slept between ticks, on a grid
    d.stop()


@pytest.mark.parametrize(
    ("fallback", "expected"), [("last", [0, 0, 255]), ("#c08060", [192, 128, 96]), ("off", [255, 0, 0])]
)
def test_what_a_failing_layer_shows_is_configurable(site: Path, fallback: str, expected: list[int]) -> None:
    path = site / "edged.toml"
    extra = f'\n[plugins.trapper]\npath = "plugins/trapper/trapper.wasm"\nfallback = "{fallback}"\ndeadline_ms = 7\n'
    path.write_text(CONFIG.format(side="trapper", calibrate="false") + extra)
    d = Daemon(load_config(path), DeviceHardware("emulated-16x16", emulate=True), frames=3, clock=FakeClock())
    d.start()
    d.wait()  # frames 0 and 2 trap (every 2nd), frame 1 draws blue: the last frame shown is a failing one
    shown = latest(d)[0, 12].tolist()  # through the emulated LEDs (gamma 2.8 and back): within a few steps
    assert all(abs(a - b) <= 6 for a, b in zip(shown, expected, strict=True)), shown  # "off": the red layer below
    assert d.stats()["plugins"]["main/right/trapper"]["budget_ms"] > 0
    assert d.displays["main"].runner.layers[1].player.slots["trapper"].budget.deadline_ms == 7
    d.stop()


def test_budget_arithmetic() -> None:
    from edged.engine.supervisor import Budget

    # fuel from the rate; deadline 2× the budget; creating an instance gets 250 ms of its own, likewise
    assert Budget.from_ms(2.5, 1000.0) == Budget(2.5, 2500, 5, 250_000, 500)
    assert Budget.from_ms(2.5, 1000.0, init_ms=10) == Budget(2.5, 2500, 5, 10_000, 20)
    assert Budget.from_ms(2.5, None).fuel is None  # no calibration: only the deadline applies
    assert Budget.from_ms(2.5, 1000.0, deadline_factor=4).deadline_ms == 10
    assert Budget.from_ms(2.5, 1000.0, deadline_ms=7).deadline_ms == 7
    assert Budget.from_ms(0.1, 1000.0).deadline_ms == 2  # never below 2 ms


def test_where_each_plugins_budget_comes_from(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(site, "hinted", solid(1, 2, 3), {"capabilities": {"led": True}, "budget": {"frame_ms": 3}})
    write_plugin(site, "capped", solid(1, 2, 3), {"capabilities": {"led": True}, "budget": {"fuel": 1234}})
    path = site / "edged.toml"
    text = CONFIG.format(side="hinted", calibrate="true").replace(
        'items = [{ plugin = "red", duration_s = 100 }]', 'items = [{ plugin = "capped", duration_s = 100 }]'
    )
    path.write_text(text + '\n[plugins.blue]\npath = "plugins/blue/blue.wasm"\nbudget_ms = 1.5\n')
    monkeypatch.setattr(
        DisplayAssembler, "_rate", lambda self: 1000.0
    )  # 1000 fuel per ms, to make the arithmetic exact
    d = make_from(path)
    d.start()
    slots = {k.split("/")[-1]: v for k, v in d.stats()["plugins"].items()}
    # the display's share: 60 fps → 16.67 ms × 0.6 ÷ 2 layers = 5 ms; the manifest's frame_ms wins over it
    assert (slots["hinted"]["budget_ms"], slots["hinted"]["budget_fuel"]) == (3, 3000)
    # a manifest fuel hint caps the fuel from the share (5 ms → 5000)
    assert (slots["capped"]["budget_ms"], slots["capped"]["budget_fuel"]) == (pytest.approx(5.0), 1234)
    d.stop()
    path.write_text(path.read_text().replace('side = "hinted"', "").replace('plugin = "hinted"', 'plugin = "blue"'))
    d = make_from(path)
    d.start()
    blue = d.stats()["plugins"]["main/right/blue"]
    assert (blue["budget_ms"], blue["budget_fuel"]) == (1.5, 1500)  # the config wins over everything
    d.stop()


def make_from(path: Path) -> Daemon:
    return Daemon(load_config(path), DeviceHardware("emulated-16x16", emulate=True), frames=1, clock=FakeClock())


def test_garbage_is_collected_between_frames_not_during_them(site: Path) -> None:
    import gc

    d = make(site, frames=40)
    assert gc.isenabled()
    d.start()
    assert not gc.isenabled()  # automatic collection is off while frames run...
    d.wait()
    assert d.gc.collections[0] >= 30 and d.gc.collections[1] >= 1  # ...the frame threads collect in their slack
    d.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0  # and it is back to normal once the daemon stops


def test_identify_blinks_a_border_over_whatever_plays(site: Path) -> None:
    d = make(site, frames=1)
    d.start()
    d.wait()  # the frame thread is done: render by hand from here
    runner = d.displays["main"].runner
    clock = d.clock
    assert isinstance(clock, FakeClock)
    d.identify(2.0)
    lit = runner.render(clock.now())  # an "on" phase: white border over the red and blue layers
    frame = lit.copy()
    assert frame[0].min() == 255 and frame[:, 0].min() == 255 and frame[8, 8].tolist() != [255, 255, 255]
    off = runner.render(clock.now() + 0.3).copy()  # the "off" phase of the blink
    assert off[0, 0].tolist() != [255, 255, 255]
    after = runner.render(clock.now() + 3.0).copy()  # over: no border
    assert after[0, 0].tolist() != [255, 255, 255] and runner.identify_until is None
    d.stop()


def test_the_config_reference_in_the_docs_is_a_valid_config() -> None:
    import tomllib

    from edged.daemon.config import DaemonConfig

    text = (Path(__file__).resolve().parents[2] / "docs" / "daemon.md").read_text()
    start = text.index("```toml", text.index("## Config reference")) + len("```toml")
    cfg = DaemonConfig.model_validate(tomllib.loads(text[start : text.index("```", start)]))
    assert cfg.displays and cfg.playlists and cfg.sensors and cfg.mqtt is not None


def test_a_manifest_cannot_grant_itself_more_time_than_the_display_share(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a hostile review: budget.frame_ms = 400 in a manifest gave a plugin 400 ms a frame (5 fps for all)."""
    write_plugin(site, "greedy", solid(1, 2, 3), {"capabilities": {"led": True}, "budget": {"frame_ms": 400}})
    path = site / "edged.toml"
    path.write_text(CONFIG.format(side="greedy", calibrate="true"))
    monkeypatch.setattr(DisplayAssembler, "_rate", lambda self: 1000.0)
    d = make_from(path)
    d.start()
    greedy = d.stats()["plugins"]["main/right/greedy"]
    assert greedy["budget_ms"] == pytest.approx(5.0) and greedy["budget_fuel"] == 5000  # the share, not 400
    d.stop()


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"fuel": -5}, "positive"),
        ({"frame_ms": 1e308}, "positive"),
        ({"frame_ms": float("nan")}, "positive"),
        ({"cpu": 1}, "unknown"),
    ],
)
def test_a_bad_budget_hint_is_a_manifest_error_and_the_daemon_runs_on(
    site: Path, budget: dict[str, float], message: str
) -> None:
    """Found by a hostile review: a negative fuel or a huge frame_ms hint stopped edged run with a traceback."""
    write_plugin(site, "broken", solid(1, 2, 3), {"capabilities": {"led": True}, "budget": budget})
    d = make(site, side="broken")
    run_frames(d, 2)
    problems = " ".join(p["message"] for p in d.stats()["problems"])
    assert "plugin 'broken' not loaded" in problems and message in problems
    assert latest(d)[:, :8, 0].min() > 200  # the other layer still draws
    d.stop()


def test_a_reload_after_stop_starts_no_display(site: Path) -> None:
    """A reload that waited for the daemon's lock while stop() ran (the preview's file watcher racing Ctrl-C) used
    to start display threads after the stop; they are not daemon threads, so the process never exited."""
    d = make(site)
    d.start()
    d.stop()
    changed = site / "changed.toml"
    changed.write_text(CONFIG.format(side="green", calibrate="false"))  # the side layer changes: a rebuild
    assert d.reload(load_config(changed)) == {"error": ["the daemon has stopped"]}
    assert not [t.name for t in threading.enumerate() if t.name.startswith("edged-display-") and t.is_alive()]
    assert not d.displays or all(rd.stop.is_set() for rd in d.displays.values())
