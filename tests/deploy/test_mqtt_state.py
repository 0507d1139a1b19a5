"""Issue 15 point 1: the MQTT connection's state on a real mosquitto with a password file: logged once on every
change (with the broker's reason on a refusal), shown in `edged ctl stats`, used by `edged ctl health`, and a
wrong password on `edged market serve` said once, with the reason."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edged.deploy.agent import DeviceAgent
from edged.deploy.broker import BrokerConfig
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.testing import Mosquitto, free_port
from edged.deploy.trust import TrustStore
from tests.conftest import ROOT
from tests.support.harness import wait_for

USERS = {"market": "market-secret", "dev-1": "dev-secret"}
PATIENCE = 60.0


def edged(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def agent_for(tmp_path: Path) -> Iterator[Callable[[BrokerConfig], DeviceAgent]]:
    agents: list[DeviceAgent] = []

    def make(broker: BrokerConfig) -> DeviceAgent:
        a = DeviceAgent(
            "dev-1",
            broker,
            PluginStore(tmp_path / f"store-{len(agents)}"),
            TrustStore(),
            EmulatedTarget(width=8, height=8, fps=50),
        )
        agents.append(a)
        a.start()
        return a

    yield make
    for a in agents:
        a.stop()


def mqtt_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edged.deploy.agent" and r.getMessage().startswith("MQTT")]


def test_a_device_with_a_wrong_password_says_refused_once_with_the_reason(
    start_broker: Callable[..., Mosquitto], agent_for: Callable[[BrokerConfig], DeviceAgent], caplog
) -> None:
    caplog.set_level(logging.INFO, logger="edged.deploy.agent")
    m = start_broker(users=USERS)
    agent = agent_for(BrokerConfig(host=m.host, port=m.port, username="dev-1", password="wrong"))
    wait_for(lambda: agent.mqtt_state.state == "refused", what="the refusal")
    state = agent.mqtt_state
    assert state.reason is not None and ("Not authorized" in state.reason or "password" in state.reason)
    time.sleep(3)  # paho retries every 0.2-2 s: the broker refuses each time, and that is not news
    refused = [r for r in mqtt_records(caplog) if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].levelno == logging.ERROR and refused[0].reason == state.reason  # type: ignore[attr-defined]
    assert refused[0].device == "dev-1" and refused[0].broker == f"{m.host}:{m.port}"  # type: ignore[attr-defined]


def test_connect_disconnect_unreachable_and_reconnect_are_each_logged(
    start_broker: Callable[..., Mosquitto], agent_for: Callable[[BrokerConfig], DeviceAgent], caplog
) -> None:
    caplog.set_level(logging.INFO, logger="edged.deploy.agent")
    m = start_broker(users=USERS)
    agent = agent_for(BrokerConfig(host=m.host, port=m.port, username="dev-1", password=USERS["dev-1"]))
    wait_for(lambda: agent.mqtt_state.connected, what="the first connection")
    m.stop()
    wait_for(lambda: agent.mqtt_state.state == "unreachable", what="the broker to be missed")
    m.start()
    wait_for(lambda: agent.mqtt_state.connected and agent.mqtt_state.connects == 2, what="the reconnection")
    seen = [(r.getMessage(), getattr(r, "reason", None)) for r in mqtt_records(caplog)]
    assert [s[0] for s in seen] == [
        "MQTT connecting",
        "MQTT connected",
        "MQTT disconnected",
        "MQTT broker unreachable",
        "MQTT connected",
    ]
    assert seen[2][1] is not None and seen[2][1].startswith("connection lost")
    assert seen[3][1] == "Connection refused"


def test_market_serve_with_a_wrong_password_says_why_once(tmp_path: Path, start_broker) -> None:
    m = start_broker(users=USERS)
    base = ["market", "--db", str(tmp_path / "c.db"), "--key", str(tmp_path / "k.key")]
    assert edged(*base, "keygen").returncode == 0
    start = time.monotonic()
    out = edged(*base, "--broker", f"{m.host}:{m.port}", "--username", "market", "--password", "nope", "serve")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"edged market: the MQTT broker at {m.host}:{m.port} refused the connection: ")
    assert "Not authorized" in lines[0] or "Bad user name or password" in lines[0]
    assert "check --username and --password (sent user 'market')" in lines[0]
    assert time.monotonic() - start < PATIENCE  # said at once, not after minutes of retries


DAEMON = """
[daemon]
hardware = "emulated-16x16"
state_dir = "state"
control_socket = "{sock}"
calibrate_fuel = false

[mqtt]
device_id = "dev-1"
trust = "trust.json"

[mqtt.broker]
host = "127.0.0.1"
port = {port}
username = "dev-1"
password = "{password}"
"""


def test_edged_run_shows_the_mqtt_state_in_ctl_stats_and_health(tmp_path: Path, start_broker) -> None:
    m = start_broker(users=USERS)
    TrustStore().to_file(tmp_path / "trust.json")
    sock = Path("/tmp") / f"edged-mq-{os.getpid()}-{tmp_path.name[-10:]}.sock"
    down_port = free_port()
    cases = [("down", down_port, USERS["dev-1"]), ("refused", m.port, "wrong"), ("up", m.port, USERS["dev-1"])]
    for case, port, password in cases:
        (tmp_path / "edged.toml").write_text(DAEMON.format(sock=sock, port=port, password=password))
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "--log-level", "debug", "run", "--config", "edged.toml", "--emulate"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            want = {"down": "unreachable", "refused": "refused", "up": "connected"}[case]

            def stats(want: str = want) -> dict | None:
                out = edged("ctl", "--socket", str(sock), "stats")
                if out.returncode != 0:
                    return None
                import json

                doc = json.loads(out.stdout)
                return doc if doc["mqtt"] and doc["mqtt"]["state"] == want else None

            doc = wait_for(stats, timeout=PATIENCE, what=f"MQTT state {want}")
            assert doc["mqtt"]["broker"] == f"127.0.0.1:{port}"
            health = edged("ctl", "--socket", str(sock), "health")
            if case == "up":
                assert health.returncode == 0 and health.stderr == ""
            else:
                assert health.returncode == 1
                assert health.stderr.startswith(f"edged ctl: not ready: MQTT {want} (127.0.0.1:{port}): ")
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=PATIENCE)
        line = {
            "down": f"WARNING edged.deploy.agent: MQTT broker unreachable device=dev-1 broker=127.0.0.1:{port} "
            'reason="Connection refused"',
            "refused": "ERROR edged.deploy.agent: MQTT connection refused by the broker device=dev-1 "
            f"broker=127.0.0.1:{port} reason=",
            "up": f"INFO edged.deploy.agent: MQTT connected device=dev-1 broker=127.0.0.1:{port}",
        }[case]
        assert line in err, err
        assert "Traceback" not in err
