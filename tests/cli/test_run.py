"""``edged run`` and ``edged ctl`` as processes: signals, the control socket, the stats file, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edged.cli import main
from tests.daemon.test_daemon import CONFIG, write_plugin
from tests.engine.anims import solid

PATIENCE = 60.0  # generous: a slow machine makes these tests slower, never red


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write_plugin(tmp_path, "red", solid(255, 0, 0))
    write_plugin(tmp_path, "blue", solid(0, 0, 255))
    write_plugin(tmp_path, "green", solid(0, 255, 0))
    config = CONFIG.format(side="blue", calibrate="false")
    # a short socket path: Unix socket paths are limited to ~100 bytes, pytest's tmp paths can be longer
    sock = Path("/tmp") / f"edged-{os.getpid()}-{tmp_path.name[-12:]}.sock"
    config = config.replace('state_dir = "state"', f'state_dir = "state"\ncontrol_socket = "{sock}"')
    (tmp_path / "edged.toml").write_text(config)
    return tmp_path


def start(site: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "--config", "edged.toml", "--emulate", "--render", "headless", *extra],
        cwd=site,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def socket_of(site: Path) -> str:
    text = (site / "edged.toml").read_text()
    return text.split('control_socket = "')[1].split('"')[0]


def ctl(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", "ctl", "--socket", socket_of(site), *args],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )


def test_frames_and_stats_file(site: Path) -> None:
    proc = start(site, "--frames", "30", "--stats", "stats.json", "--no-control")
    assert proc.wait(timeout=PATIENCE) == 0, proc.stderr.read() if proc.stderr else ""
    stats = json.loads((site / "stats.json").read_text())
    main_display = stats["displays"]["main"]
    assert main_display["frames"] == 30
    assert set(main_display["interval"]) == {"p50_ms", "p99_ms", "max_ms", "count"}
    assert stats["plugins"]["main/bg/red"]["calls"] == 30


def test_sigterm_stops_cleanly_and_flushes_state(site: Path) -> None:
    proc = start(site)
    wait_for(lambda: Path(socket_of(site)).exists(), "the control socket")
    wait_for(lambda: json.loads(ctl(site, "stats").stdout)["displays"]["main"]["frames"] > 5, "frames")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=PATIENCE) == 0
    state = json.loads((site / "state" / "state.json").read_text())
    assert state["stopped"] == "clean" and state["stats"]["displays"]["main"]["frames"] > 5
    assert not Path(socket_of(site)).exists()
    assert "LED output closed" in (proc.stderr.read() if proc.stderr else "")


def test_sighup_reloads_and_ctl_controls(site: Path) -> None:
    proc = start(site)
    try:
        wait_for(lambda: Path(socket_of(site)).exists(), "the control socket")
        listed = ctl(site, "list")
        assert listed.returncode == 0 and "red" in listed.stdout and "blue" in listed.stdout
        text = (site / "edged.toml").read_text().replace('plugin = "blue"', 'plugin = "green"')
        (site / "edged.toml").write_text(text)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: json.loads(ctl(site, "stats").stdout)["reloads"] == 1, "the reload")
        assert "main/right/green" in json.loads(ctl(site, "stats").stdout)["plugins"]
        switched = ctl(site, "switch", "main", "alt", "--layer", "bg")
        assert switched.returncode == 0, switched.stderr
        refused = ctl(site, "switch", "main", "nope")
        assert refused.returncode == 1 and "unknown playlist 'nope'" in refused.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=PATIENCE) == 0


def test_bad_config_exits_2_naming_key_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "edged.toml").write_text('[daemon]\nhardware = "emulated-16x16"\nplugin_dir = ["x"]\n')
    assert main(["run", "--config", str(tmp_path / "edged.toml"), "--emulate", "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "edged.toml:3: daemon.plugin_dir" in err


def test_unknown_profile_exits_2(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--config", str(site / "edged.toml"), "--emulate", "--profile", "nope", "--frames", "1"])
    assert code == 2
    assert "no hardware profile 'nope'" in capsys.readouterr().err


def test_ctl_without_a_daemon_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ctl", "--socket", str(tmp_path / "none.sock"), "list"]) == 2
    assert "cannot reach the daemon" in capsys.readouterr().err


def test_embedded_default_end_to_end_stats_and_emulated_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edged run --emulate` with no config: the bundled gallery on the emulated 16×16, asserted on the stats file
    and on the last emulated frame."""
    from PIL import Image

    monkeypatch.setenv("EDGED_STATE_DIR", str(tmp_path / "state"))
    args = ["run", "--emulate", "--render", "headless", "--no-control", "--no-http", "--frames", "40"]
    code = main([*args, "--stats", str(tmp_path / "s.json"), "--snapshot", str(tmp_path / "last.png")])
    assert code == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["displays"]["main"]["frames"] == 40 and stats["problems"] == []
    assert stats["plugins"]["main/main/rainbow"]["calls"] == 40
    assert stats["plugins"]["main/main/rainbow"]["strikes"] == 0
    image = Image.open(tmp_path / "last.png").convert("RGB")
    assert image.size == (16, 16)
    colours = {image.getpixel((x, y)) for x in range(16) for y in range(16)}
    assert len(colours) >= 8  # a hue gradient, not a blank or solid frame
    assert json.loads((tmp_path / "state" / "state.json").read_text())["stopped"] == "clean"


MISTAKES = [
    ("[daemon]\nhardwre = 'x'\n", "edged.toml:2: daemon.hardwre: unknown key"),
    ("[daemon]\ncalibrate_fuel = 'yes please'\n", "edged.toml:2: daemon.calibrate_fuel"),
    (
        "[[displays]]\nname = 'main'\nfps = 0\nlayers = [{ name = 'a', playlist = 'p' }]\n[playlists.p]\n"
        "items = [{ plugin = 'x' }]\n",
        "edged.toml:3: displays.0.fps",
    ),
    ("[[displays]]\nname = 'main'\nlayers = []\n", "edged.toml:3: displays.0.layers"),
    ("[[displays]]\nname = 'main'\nlayers = [{ name = 'a', playlist = 'nope' }]\n", "unknown playlist 'nope'"),
    ("[playlists.p]\nitems = [{ plugin = 'x', transition = 'wipe' }]\n", "edged.toml:2: playlists.p.items.0"),
    ("[playlists.p]\nitems = [{ plugin = 'x', schedule = '25:00-26:00' }]\n", "schedule must look like"),
    ("[playlists.p]\nitems = [{ plugin = 'x', duration_s = -1 }]\n", "playlists.p.items.0.duration_s"),
    (
        "[[displays]]\nname = 'main'\nlayers = [{ name = 'a', playlist = 'p', opacity = 2 }]\n[playlists.p]\n"
        "items = [{ plugin = 'x' }]\n",
        "displays.0.layers.0.opacity",
    ),
    ("[policy]\ngpio_write = [40]\n", "not BCM GPIO numbers 0-27: [40]"),
    ("[[sensors]]\nplugin = 's'\ninterval_s = 0\n", "edged.toml:3: sensors.0.interval_s"),
    ("[[sensors]]\nplugin = 's'\ndisplay = 'wall'\n", "names unknown display 'wall'"),
    ("[mqtt]\ndevice_id = 'has space'\ntrust = 't.json'\n", "edged.toml:2: mqtt.device_id"),
    ("[logging]\nlevel = 'loud'\n", "edged.toml:2: logging.level"),
    ("[daemon\nhardware = 'x'\n", "invalid TOML"),
    (
        "[[displays]]\nname = 'a'\nlayers = [{ name = 'x', playlist = 'p' }]\n[[displays]]\nname = 'a'\n"
        "layers = [{ name = 'x', playlist = 'p' }]\n[playlists.p]\nitems = [{ plugin = 'x' }]\n",
        "must be unique",
    ),
]


@pytest.mark.parametrize(("text", "message"), MISTAKES, ids=[m for _, m in MISTAKES])
def test_every_kind_of_config_mistake_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (tmp_path / "edged.toml").write_text(text)
    assert main(["run", "--config", str(tmp_path / "edged.toml"), "--emulate", "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "edged.toml").write_bytes(b"[daemon]\nhardware = '\xff\xfe'\n")
    assert main(["run", "--config", str(tmp_path / "edged.toml"), "--emulate", "--frames", "1"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_after_sigkill_the_next_start_reclaims_the_socket_and_runs(site: Path) -> None:
    proc = start(site)
    wait_for(lambda: Path(socket_of(site)).exists(), "the control socket")
    proc.kill()
    proc.wait(timeout=PATIENCE)
    assert Path(socket_of(site)).exists()  # left behind by the killed process
    again = start(site)
    try:
        wait_for(lambda: ctl(site, "stats").returncode == 0, "the restarted daemon to answer")
        assert json.loads(ctl(site, "stats").stdout)["displays"]["main"]["frames"] >= 0
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=PATIENCE) == 0


@pytest.mark.parametrize(
    "profile", sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "hardware").glob("*.toml"))
)
def test_the_embedded_demo_runs_on_every_shipped_profile(
    profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGED_STATE_DIR", str(tmp_path / "state"))
    stats = tmp_path / "s.json"
    args = ["run", "--emulate", "--profile", profile, "--frames", "3", "--render", "headless", "--no-control"]
    assert main([*args, "--no-http", "--stats", str(stats)]) == 0  # the web page's port 8080 may be taken
    doc = json.loads(stats.read_text())
    assert doc["problems"] == []
    (display,) = doc["displays"].values()
    assert display["frames"] == 3


def test_a_layer_outside_its_display_is_a_clear_error(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (site / "edged.toml").read_text().replace("x = 8, width = 8", "x = 20, width = 8")
    (site / "edged.toml").write_text(text)
    assert main(["run", "--config", str(site / "edged.toml"), "--emulate", "--frames", "1", "--no-control"]) == 2
    err = capsys.readouterr().err
    assert "displays.0.layers.1: layer 'right' at x=20, y=0, 8x16 does not fit display 'main' (16x16" in err


def test_an_unknown_plugin_in_a_playlist_is_reported_at_start(site: Path) -> None:
    text = (site / "edged.toml").read_text().replace('plugin = "blue"', 'plugin = "bleu"')
    (site / "edged.toml").write_text(text)
    proc = subprocess.Popen(
        [
            *[sys.executable, "-m", "edged", "--log-level", "error", "run", "--config", "edged.toml", "--emulate"],
            *["--render", "headless", "--no-control"],
        ],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()

        def reported() -> list[str]:
            return [line for line in list(lines) if line.startswith("edged run: ") and "unknown plugin 'bleu'" in line]

        wait_for(lambda: bool(reported()), "the report of the unknown plugin")
        assert proc.poll() is None  # said while the daemon runs: at start, not at exit
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=PATIENCE) == 0
    reader.join(timeout=PATIENCE)
    assert len(reported()) == 1  # and only once


def test_an_unknown_profile_names_the_config_key(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (site / "edged.toml").read_text().replace('hardware = "emulated-16x16"', 'hardware = "pi9"')
    (site / "edged.toml").write_text(text)
    assert main(["run", "--config", str(site / "edged.toml"), "--emulate", "--frames", "1"]) == 2
    assert "daemon.hardware: no hardware profile 'pi9'" in capsys.readouterr().err


def test_sigterm_blanks_the_emulated_leds(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM to `edged run` (in this process, so the emulated backend can be inspected afterwards): the last
    thing the LEDs get is an all-black frame, and the backend is closed."""
    import os
    import threading

    import edged.service as service_mod
    from edged.daemon.hardware import DeviceHardware

    made: list[DeviceHardware] = []

    class Recording(DeviceHardware):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(service_mod, "DeviceHardware", Recording)

    def lit_frames() -> int:
        out = made[0].outputs.get("main") if made else None
        return 0 if out is None else sum(1 for f in out.backend.frames() if f.data.any())

    def terminate() -> None:
        wait_for(lambda: lit_frames() >= 5, "frames on the LEDs")
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate, daemon=True)
    killer.start()
    assert main(["run", "--config", str(site / "edged.toml"), "--emulate", "--render", "headless", "--no-control"]) == 0
    killer.join(timeout=PATIENCE)
    backend = made[0].outputs["main"].backend
    assert backend.closed
    assert not backend.latest().data.any()  # blanked
    assert lit_frames() >= 5


def test_a_config_with_nothing_to_run_stops_at_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGED_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "edged.toml").write_text('[daemon]\nhardware = "emulated-16x16"\n')
    args = ["run", "--config", str(tmp_path / "edged.toml"), "--emulate", "--frames", "3", "--no-control"]
    assert main(args) == 0
