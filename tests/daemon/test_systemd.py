"""Issue 16.4 (service health): `edged run` as a Type=notify service speaks sd_notify over $NOTIFY_SOCKET: READY=1
after the first frame, WATCHDOG=1 pings driven by the frame loop (they stop when it stalls), STATUS= lines (fps,
quarantined plugins, MQTT) and STOPPING=1 on shutdown. A real AF_UNIX datagram socket plays systemd's part."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edged.daemon import Daemon, load_config
from edged.daemon.hardware import DeviceHardware
from edged.daemon.systemd import JournalFormatter, SdNotify, ServiceHealth, watchdog_interval
from tests.daemon.test_daemon import CONFIG, site  # noqa: F401  (fixture)


class NotifySocket:
    """systemd's end: a bound datagram socket collecting (time, message) pairs on a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, msg in self.got for line in msg.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Any:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def test_edged_run_emulate_notifies_ready_watchdog_status_stopping(notify_socket: NotifySocket, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify_socket.path),
        "WATCHDOG_USEC": "600000",  # WatchdogSec=0.6: a ping at least every 0.2 s of frames
        "EDGED_STATE_DIR": str(tmp_path / "state"),
    }
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "run",
            "--emulate",
            "--frames",
            "90",
            "--render",
            "headless",
            "--no-control",
            "--no-http",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 20  # the receiving thread may still be reading on a loaded machine
    while "STATUS=stopping" not in notify_socket.lines() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = notify_socket.lines()
    # status lines may come first ("main starting"); the first other message is READY, before any ping
    assert next(line for line in lines if not line.startswith("STATUS=")) == "READY=1", lines[:3]
    status = [line for line in lines if line.startswith("STATUS=")]
    assert all(x.startswith("STATUS=main ") and "0 quarantined" in x and "no mqtt" in x for x in status[:-1])
    assert any(x.endswith("fps; 0 quarantined; no mqtt") for x in status), status
    assert lines.count("WATCHDOG=1") >= 3, lines
    assert lines.index("READY=1") < lines.index("WATCHDOG=1")
    assert lines[-2:] == ["STOPPING=1", "STATUS=stopping"]


def test_abstract_socket_names_work(tmp_path: Path) -> None:
    name = f"edged-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5)
    try:
        n = SdNotify({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled and n.send("READY=1", "STATUS=x")
        assert server.recv(100) == b"READY=1\nSTATUS=x"
    finally:
        server.close()
    assert not SdNotify({}).enabled and not SdNotify({}).send("READY=1")


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None  # meant for another process
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "x"}) is None


class StallableSink:
    """An LED output whose show() can be made to hang, like a wedged LED driver."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.go = threading.Event()
        self.go.set()

    def show(self, frame: Any) -> None:
        self.go.wait()
        self.inner.show(frame)

    def blank(self) -> None:
        self.inner.blank()

    def close(self) -> None:
        self.inner.close()


def test_watchdog_pings_stop_when_the_frame_loop_stalls(site: Path, notify_socket: NotifySocket) -> None:  # noqa: F811
    path = site / "edged.toml"
    path.write_text(CONFIG.format(side="blue", calibrate="false"))
    hw = DeviceHardware("emulated-16x16", emulate=True)
    sinks: list[StallableSink] = []
    real_open = hw.open_sink

    def open_sink(display: str) -> Any:
        sinks.append(StallableSink(real_open(display)))
        return sinks[-1]

    hw.open_sink = open_sink  # type: ignore[method-assign]
    d = Daemon(load_config(path), hw)
    health = ServiceHealth(d, SdNotify({"NOTIFY_SOCKET": str(notify_socket.path)}), watchdog_s=0.3)
    d.on_frame = health.frame
    stop = threading.Event()
    main = threading.Thread(target=d.wait, args=(stop, health.poll))  # the main loop keeps polling throughout
    d.start()
    health.service_started()
    main.start()
    try:
        deadline = time.monotonic() + 20
        while health.pings < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health.ready and health.pings >= 3
        sinks[0].go.clear()  # the frame loop hangs in show()
        time.sleep(0.3)
        stalled_at = health.pings
        time.sleep(1.5)  # five watchdog periods of a live main loop, and no frame
        assert health.pings == stalled_at, "pinged while no frame was drawn"
        sinks[0].go.set()
        deadline = time.monotonic() + 20
        while health.pings == stalled_at and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health.pings > stalled_at  # frames again, pings again
    finally:
        sinks[0].go.set()
        stop.set()
        main.join()
        d.stop()
    assert notify_socket.lines().count("WATCHDOG=1") == health.pings


def test_status_names_quarantined_plugins_and_mqtt_state(site: Path, notify_socket: NotifySocket) -> None:  # noqa: F811
    path = site / "edged.toml"
    path.write_text(CONFIG.format(side="spin", calibrate="true"))
    d = Daemon(load_config(path), DeviceHardware("emulated-16x16", emulate=True), frames=30)
    connected = threading.Event()
    health = ServiceHealth(d, SdNotify({"NOTIFY_SOCKET": str(notify_socket.path)}), mqtt_connected=connected.is_set)
    d.on_frame = health.frame
    d.start()
    d.wait()
    try:
        line = health.status_line()
        assert line.startswith("main ") and "fps" in line
        assert "1 quarantined (spin)" in line and line.endswith("mqtt disconnected")
        connected.set()
        assert health.status_line().endswith("mqtt connected")
    finally:
        d.stop()


def test_journal_lines_carry_priority_and_context() -> None:
    import logging

    rec = logging.makeLogRecord(
        {"name": "edged.engine", "levelno": logging.WARNING, "levelname": "WARNING", "msg": "quarantined"}
    )
    rec.plugin, rec.version, rec.display, rec.reason = "fire", "1.2.0", "main", "OutOfFuel"
    line = JournalFormatter().format(rec)
    assert line == "<4>edged.engine: quarantined [plugin=fire version=1.2.0 display=main reason=OutOfFuel]"


def test_ready_waits_for_the_whole_service_and_a_failed_start_never_says_ready(
    site: Path,  # noqa: F811
    notify_socket: NotifySocket,
    tmp_path: Path,
) -> None:
    """Review finding: READY=1 went out with the first frame, before the deploy agent, web and control socket
    started; one of them failing after that left systemd believing the service was up. Here the control socket
    cannot be created (its folder is a file): edged exits 2 and systemd never heard READY=1."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = site / "edged.toml"
    config.write_text(
        CONFIG.format(side="blue", calibrate="false").replace(
            'state_dir = "state"', f'state_dir = "state"\ncontrol_socket = "{blocker}/control.sock"'
        )
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "600000"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "run",
            "--config",
            str(config),
            "--emulate",
            "--render",
            "headless",
            "--no-http",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=site,
    )
    assert r.returncode == 2, r.stderr
    assert "control socket" in r.stderr and "Traceback" not in r.stderr
    time.sleep(0.5)  # let the receiving thread read what was sent (absence is what is checked)
    lines = notify_socket.lines()
    assert "READY=1" not in lines and "WATCHDOG=1" not in lines, lines


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeRunner:
    def __init__(self, name: str, fps: float) -> None:
        self.name, self.fps = name, fps


class FakeDaemon:
    def __init__(self, *names: str) -> None:
        self.displays = {n: object() for n in names}
        self.busy: float | None = None

    def list_plugins(self) -> list[dict[str, Any]]:
        return []

    def sensor_loop_busy_s(self) -> float | None:
        return self.busy


class Recorder(SdNotify):
    def __init__(self) -> None:
        super().__init__({})
        self.sent: list[str] = []

    def send(self, *lines: str) -> bool:
        self.sent.extend(lines)
        return True


def test_ready_only_after_service_started_and_first_frames() -> None:
    clock, notify = FakeClock(), Recorder()
    health = ServiceHealth(FakeDaemon("a", "b"), notify, watchdog_s=20, clock=clock)
    health.frame(FakeRunner("a", 30))
    health.frame(FakeRunner("b", 30))
    assert not health.ready, "READY before the rest of the service started"
    health.service_started()
    assert health.ready and notify.sent.count("READY=1") == 1
    # the other order: started first, READY with the frame that completes the set
    clock2, notify2 = FakeClock(), Recorder()
    h2 = ServiceHealth(FakeDaemon("a", "b"), notify2, watchdog_s=20, clock=clock2)
    h2.service_started()
    h2.frame(FakeRunner("a", 30))
    assert not h2.ready
    h2.frame(FakeRunner("b", 30))
    assert h2.ready and notify2.sent == ["READY=1"]


def test_a_slow_display_keeps_the_watchdog_fed_and_a_stalled_fast_one_does_not() -> None:
    """Review finding: pings came only from frames, so a display at 0.05 fps (a frame every 20 s) could not ping
    within WatchdogSec=20 and systemd killed a healthy service. Pings now also come from the main loop, while every
    display is within its own frame interval (plus a third of the watchdog)."""
    clock, notify = FakeClock(), Recorder()
    slow = FakeRunner("clock", 0.05)
    health = ServiceHealth(FakeDaemon("clock"), notify, watchdog_s=20, clock=clock)
    health.service_started()
    health.frame(slow)
    assert health.ready
    last_ping = clock.t
    for second in range(1, 121):  # two minutes of a healthy slow display, the main loop polling each second
        clock.t += 1
        pings = health.pings
        if second % 20 == 0:
            health.frame(slow)
        health.poll()
        if health.pings > pings:
            last_ping = clock.t
        assert clock.t - last_ping <= 20 * 2 / 3 + 1, f"no ping for {clock.t - last_ping} s at {second} s"
    assert health.pings >= 120 // 7

    # a 30 fps display that stops drawing: no pings after its interval plus the grace
    clock, notify = FakeClock(), Recorder()
    fast = FakeRunner("main", 30)
    health = ServiceHealth(FakeDaemon("main"), notify, watchdog_s=3, clock=clock)
    health.service_started()
    for _ in range(300):  # ten seconds of frames
        clock.t += 1 / 30
        health.frame(fast)
        health.poll()
    before = health.pings
    assert before >= 8
    for _ in range(100):  # it stalls; the main loop keeps polling for ten seconds
        clock.t += 0.1
        health.poll()
    # at most the pings within the grace (a third of the watchdog) after the last frame
    assert health.pings - before <= 1
    stalled = health.pings
    clock.t += 1 / 30
    health.frame(fast)
    assert health.pings == stalled + 1  # drawing again: pings again


def test_a_sensor_only_device_pings_only_while_its_sensor_loop_moves() -> None:
    """Review finding: on a device with sensor plugins and no display the main loop pinged whatever the sensor
    thread did. Now a sensor loop stuck in one round (or a dead sensor thread) stops the pings."""
    clock, notify, daemon = FakeClock(), Recorder(), FakeDaemon()
    daemon.busy = 0.0
    health = ServiceHealth(daemon, notify, watchdog_s=3, clock=clock)
    health.poll()
    assert not health.ready  # the service has not finished starting
    health.service_started()
    health.poll()
    assert health.ready
    for _ in range(10):
        clock.t += 1.1
        health.poll()
    moving = health.pings
    assert moving >= 9
    daemon.busy = 5.0  # one round has run for five seconds: stuck
    for _ in range(10):
        clock.t += 1.1
        health.poll()
    assert health.pings == moving
    daemon.busy = float("inf")  # the sensor thread died
    clock.t += 1.1
    health.poll()
    assert health.pings == moving
    daemon.busy = 0.2
    clock.t += 1.1
    health.poll()
    assert health.pings == moving + 1
