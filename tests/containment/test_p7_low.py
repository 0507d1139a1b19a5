"""Issue 10.7, the low-severity findings: WASI socket and file calls aborting the process at exit, the kernel's
bounds test wrapping for p >= 2**64-8, ``edged preview`` without a default fuel or timeout, plugin log lines reaching
stderr verbatim, and gpiozero's DistanceSensor thread printing a traceback at daemon stop under load."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.containment.conftest import anchor_run
from tests.containment.harness import (
    FORGED_LINE,
    GALLERY,
    Outcome,
    Run,
    assert_clean_or_refused,
    assert_healthy_kept_rate,
    assert_refused,
    assert_survived,
    edged,
    make_site,
    no_raw_control,
    run_site,
)
from tests.containment.hostile import (
    CONFIG_VALUE,
    FORGED_LOG,
    PluginFiles,
    bounds_wrap,
    busy,
    forge_logs,
    spin_frame,
    wasi_file,
    wasi_socket,
)

REPEATS = 6


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return anchor_run(tmp_path_factory.mktemp("anchor"))


# --- WASI calls at exit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["socket", "file"])
def test_wasi_calls_never_abort_the_process(tmp_path: Path, case: str) -> None:
    """A runtime thread panicked at exit (SIGABRT, exit 134) for 6 of 6 socket-plugin runs."""
    wasm = tmp_path / f"{case}.wasm"
    wasm.write_bytes(wasi_socket() if case == "socket" else wasi_file())
    for _ in range(REPEATS):
        o = edged("call", "--wasi", str(wasm), "run", cwd=tmp_path)
        assert_clean_or_refused(o, "edged call:")
        assert "panicked" not in o.stderr, o.describe()


# --- the kernel's bounds -----------------------------------------------------------------------------------------


def test_wrapped_addresses_leave_the_kernel_intact(tmp_path: Path) -> None:
    """store_u64/load_u64 at 2**64-8 (and -4, -1) are out of bounds: they write nothing and read 0, the call goes
    on, and the control block still finds the config and the vars, twice in a row."""
    o = edged("call", str(bounds_wrap().write(tmp_path)), "wrap", "--loop", "2", cwd=tmp_path)
    assert_survived(o)
    assert o.returncode == 0, o.describe()
    assert o.stdout.split() == [CONFIG_VALUE, CONFIG_VALUE], o.stdout


@pytest.mark.parametrize("command", ["preview", "check"])
def test_wrapped_addresses_in_preview_and_check(tmp_path: Path, command: str) -> None:
    path = str(bounds_wrap().write(tmp_path))
    if command == "preview":
        o = edged("preview", path, "--png", "out.png", "--frames", "5", cwd=tmp_path)
        assert_clean_or_refused(o, "edged preview:")
    else:
        o = edged("plugin", "check", path, "--frames", "5", cwd=tmp_path)
        assert_survived(o)
        assert o.returncode in (0, 1), o.describe()


# --- preview's defaults ------------------------------------------------------------------------------------------


def test_preview_of_a_looping_frame_finishes(tmp_path: Path) -> None:
    """No --fuel, no --timeout-ms: preview's defaults stop it, in one line."""
    o = edged("preview", str(spin_frame().write(tmp_path)), "--png", "out.png", cwd=tmp_path)
    assert_refused(o, "edged preview:", "fuel", "timeout", codes=(1,))


# --- plugin log lines --------------------------------------------------------------------------------------------


def assert_neutralised(o: Outcome) -> None:
    """The plugin's text reached stderr (so it was not simply dropped), every line holding it is attributed to the
    plugin's logger, no line passes for edged's own, and no escape sequence or carriage return got through."""
    assert_survived(o)
    text = o.stderr
    assert "hostile says hi" in text, f"the plugin's log line is missing: {o.describe()}"
    assert no_raw_control(text), f"raw control characters in stderr: {text[-600:]!r}"
    for line in text.splitlines():
        assert not FORGED_LINE.search(line), f"a forged line passes for edged's own: {line!r}"
        if "forged" in line or "hostile says hi" in line:
            assert "edged.plugin." in line, f"plugin text on a line of its own: {line!r}"
    assert FORGED_LOG not in text


@pytest.mark.parametrize("via", ["env", "wasi"])
def test_call_neutralises_plugin_log_lines(tmp_path: Path, via: str) -> None:
    flags = ["--wasi"] if via == "wasi" else []
    o = edged("call", *flags, str(forge_logs(via).write(tmp_path)), "say", cwd=tmp_path)
    assert_neutralised(o)


@pytest.mark.parametrize("via", ["env", "matricks", "wasi"])
def test_preview_and_check_neutralise_plugin_log_lines(tmp_path: Path, via: str) -> None:
    path = str(forge_logs(via).write(tmp_path))
    assert_neutralised(edged("preview", path, "--png", "out.png", "--frames", "2", cwd=tmp_path))
    assert_neutralised(edged("plugin", "check", path, "--frames", "2", cwd=tmp_path))


@pytest.mark.slow
def test_run_neutralises_logs_and_survives_wrapped_addresses(tmp_path: Path, anchor: Run) -> None:
    layers: list[tuple[str, PluginFiles]] = [
        ("h1", bounds_wrap()),
        ("h2", forge_logs("env")),
        ("h3", forge_logs("matricks")),
        ("h4", forge_logs("wasi")),
    ]
    run = run_site(make_site(tmp_path, layers, policy="wasi = true"))
    assert_healthy_kept_rate(anchor, run)
    assert_neutralised(run.outcome)
    wrap = run.plugin("h1", "bounds_wrap")
    assert wrap is not None and wrap["failures"] == 0, wrap


# --- gpiozero's sensor threads at stop ---------------------------------------------------------------------------

SENSOR_SITE = """[daemon]
hardware = "pi4-sensor-kit"
plugins_dir = ["plugins"]
state_dir = "state"

[policy]
sensors = ["distance"]

[[displays]]
name = "main"
layers = [{ name = "bar", playlist = "gauge" }, { name = "busy", playlist = "busy" }]

[playlists.gauge]
items = [{ plugin = "bar_graph", duration_s = 1000 }]

[playlists.busy]
items = [{ plugin = "spin_frame", duration_s = 1000 }]

[[sensors]]
plugin = "distance_sensor"
interval_s = 0.02
"""


@pytest.mark.slow
def test_daemon_stop_under_load_prints_no_sensor_thread_traceback(tmp_path: Path) -> None:
    """The emulated HC-SR04 (gpiozero's DistanceSensor and its echo thread) with a frame thread kept busy by a
    plugin that burns its whole budget every frame: stopping prints no traceback, in several runs."""
    for name in ("distance_sensor", "bar_graph"):
        shutil.copytree(GALLERY / name, tmp_path / "plugins" / name)
    busy().write(tmp_path / "plugins")
    (tmp_path / "edged.toml").write_text(SENSOR_SITE)
    for _ in range(2):
        o = edged(
            "run", "--config", "edged.toml", "--emulate", "--render", "headless", "--no-control", "--frames", "45",
            cwd=tmp_path,
        )  # fmt: skip
        assert_survived(o)
        assert o.returncode == 0, o.describe()


def test_sensor_reads_stop_before_the_trigger_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race made deterministic: load can deschedule the stopping thread right after gpiozero closes the
    HC-SR04's trigger pin, before the reading thread is stopped; a read in that window died with a traceback
    ('NoneType' object has no attribute 'state'). Here the closing thread sleeps at exactly that point."""
    from edged.hardware.gpio import GpioBoard
    from edged.hardware.profile import load_profile

    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    board = GpioBoard(load_profile("pi4-sensor-kit").gpio_config(), emulated=True)
    try:
        board.sensor_read("distance")
        trigger = board.device("distance")._trigger
        close = trigger.close

        def descheduled_close(*args: Any) -> None:
            close(*args)
            time.sleep(0.3)  # several of the reading thread's sampling periods

        trigger.close = descheduled_close
        time.sleep(0.2)  # the reading thread is sampling
    finally:
        board.close()
    time.sleep(0.2)
    assert died == [], f"a sensor thread died at stop: {died!r}"
