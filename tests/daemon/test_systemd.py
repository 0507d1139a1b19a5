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
