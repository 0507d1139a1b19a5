"""The agent's worker survives a failing first tick and never dies silently (issue 12, point 10); its inbound queue
is bounded in messages and bytes (point 8); its reconnects back off (point 4)."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from edged.deploy import topics
from edged.deploy.agent import DeviceAgent
from edged.deploy.inbox import Inbox, ReconnectBackoff
from tests.deploy.test_target_binding import Capture
from tests.support.harness import Harness, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_a_first_tick_that_raises_before_any_message_does_not_kill_the_worker(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    agent = h.agent("dev-1", start=False)
    calls = {"n": 0}
    real = agent._sync_playlist

    def first_tick_fails() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom in the first tick")
        real()

    agent._sync_playlist = first_tick_fails  # type: ignore[method-assign]
    agent.start()
    wait_for(lambda: calls["n"] >= 2, what="the worker to tick again after the failing tick")
    assert agent.alive and not agent.dead.is_set() and agent.errors == 1
    wait_for(agent.connected.is_set, what="dev-1 to connect")
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")


def test_a_dead_worker_says_so_looks_offline_and_calls_on_fatal(harness: Harness, caplog: Any) -> None:
    h = harness
    died: list[BaseException] = []
    agent = h.agent("dev-1", on_fatal=died.append)
    cap = Capture(h, topics.presence("dev-1"))
    try:
        wait_for(lambda: json.loads(cap.next(topics.presence("dev-1")))["state"] == "online", what="online")

        def broken(*a: Any, **kw: Any) -> None:
            raise RuntimeError("the error handler itself fails")

        agent._tick = broken  # type: ignore[method-assign]
        agent.reports.status = broken  # type: ignore[method-assign]
        wait_for(agent.dead.is_set, what="the worker to die")
        assert not agent.alive and isinstance(died[0], RuntimeError) and agent.fatal is died[0]
        assert any(r.levelname == "CRITICAL" and "agent worker died" in r.getMessage() for r in caplog.records)
        wait_for(lambda: json.loads(cap.next(topics.presence("dev-1")))["state"] == "offline", what="offline")
    finally:
        cap.stop()


CHILD = """
import sys
from edged.deploy.agent import DeviceAgent
from edged.deploy.agent.reporting import Reporter

def broken(self, *args, **kw):
    raise RuntimeError("injected: the worker's error handler fails")

DeviceAgent._tick = broken
Reporter.status = broken
from edged.cli import main
sys.exit(main(["agent", *sys.argv[1:]]))
"""


def test_the_agent_process_exits_non_zero_when_its_worker_dies(harness: Harness, tmp_path: Path) -> None:
    h = harness
    args = ["--device", "dev-9", "--broker", f"{h.broker.host}:{h.broker.port}"]
    args += ["--store", str(tmp_path / "store"), "--trust", str(h.trust_path)]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "agent worker died" in proc.stderr and "exiting" in proc.stderr


def test_the_inbox_drops_what_exceeds_its_bounds() -> None:
    box = Inbox(max_messages=3, max_bytes=1000)
    assert box.put("t/desired", b"x" * 400, "desired") and box.put("t/desired", b"x" * 400, "desired")
    assert not box.put("t/desired", b"x" * 400, "desired")  # bytes
    assert box.put("t/cmd", b"x", "cmd")
    assert not box.put("t/cmd", b"x", "cmd")  # count
    box.put_control("connected")  # control events always get in
    st = box.stats()
    assert (st.messages, st.dropped, st.dropped_by_kind) == (4, 2, {"desired": 1, "cmd": 1})
    assert st.peak_bytes <= 1000 and st.accepted == 3
    assert box.take_dropped_desired() == set()  # still full: subscribing again now would only drop it again
    assert [box.get(0)[0] for _ in range(4)] == ["msg", "msg", "msg", "connected"]  # type: ignore[index]
    assert box.get(0) is None and box.stats().bytes == 0
    assert box.take_dropped_desired() == {"t/desired"} and box.take_dropped_desired() == set()


def test_bursts_of_large_messages_keep_the_queue_bounded(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    agent: DeviceAgent = h.agent("dev-1", inbox_messages=50, inbox_bytes=2 * 1024 * 1024)
    gate = threading.Event()
    real = agent._dispatch

    def held(topic: str, payload: bytes) -> None:
        gate.wait(60)  # the worker is busy: everything that arrives meanwhile waits in the inbox
        real(topic, payload)

    agent._dispatch = held  # type: ignore[method-assign]
    junk = b'{"payload": "' + b"A" * 250_000 + b'"}'
    burst = 300
    for _ in range(burst):  # bounded by bytes: 2 MiB holds 8 of them
        h.market.client.publish(topics.desired("dev-1"), junk, qos=1)
    wait_for(lambda: agent.inbox_stats().accepted + agent.inbox_stats().dropped >= burst, what="the burst to arrive")
    st = agent.inbox_stats()
    assert st.peak_bytes <= 2 * 1024 * 1024 and st.peak_messages <= 50
    assert st.dropped_by_kind.get("desired", 0) >= burst - 9  # (one more may be in dispatch)
    assert st.dropped_bytes >= (burst - 9) * 250_000
    for _ in range(100):  # bounded by count: small ones fill the 50 places
        h.market.client.publish(topics.cmd("dev-1"), b"{}", qos=1)
    wait_for(lambda: agent.inbox_stats().accepted + agent.inbox_stats().dropped >= burst + 100, what="the small ones")
    st = agent.inbox_stats()
    assert st.peak_messages == 50 and st.dropped_by_kind.get("cmd", 0) >= 50
    # a real desired state arrives while the queue is full: dropped, but not lost
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    wait_for(lambda: agent.inbox_stats().dropped_by_kind["desired"] > st.dropped_by_kind["desired"], what="a drop")
    gate.set()
    wait_for(lambda: agent.inbox.empty(), what="the queue to drain")
    assert agent.alive and agent.inbox_stats().peak_messages == 50
    # the agent subscribed to its desired topic again, so the broker sent the retained document once more
    h.wait_healthy("dev-1", "glow", "1.0.0")


def test_reconnects_back_off_while_connections_keep_being_cut() -> None:
    now = [0.0]
    b = ReconnectBackoff(min_s=0.5, max_s=60, stable_s=30, rng=random.Random(1), now=lambda: now[0])
    delays = []
    for _ in range(10):  # connected, then cut after 1 s (a client-id takeover loop)
        b.connected()
        now[0] += 1
        delays.append(b.next_delay())
    assert all(later >= earlier / 2 for earlier, later in itertools.pairwise(delays))
    assert delays[-1] >= 30 and max(delays) <= 60  # grown to the cap, not 0.2 s each time
    b.connected()
    now[0] += 31  # a stable connection resets it
    assert b.next_delay() <= 0.5


def test_refused_connects_back_off_too() -> None:
    b = ReconnectBackoff(min_s=1, max_s=8, rng=random.Random(2), now=lambda: 0.0)
    d = [b.next_delay() for _ in range(6)]
    assert d[0] <= 1 and 2 <= d[2] <= 4 and 4 <= d[5] <= 8


RUN_CHILD = """
import sys
from edged.deploy.agent import DeviceAgent
from edged.deploy.agent.reporting import Reporter

def broken(self, *args, **kw):
    raise RuntimeError("injected: the worker's error handler fails")

DeviceAgent._tick = broken
Reporter.status = broken
from edged.cli import main
sys.exit(main())
"""


def test_edged_run_stops_and_exits_non_zero_when_its_agent_dies(tmp_path: Path, harness: Harness) -> None:
    from tests.deploy.test_daemon_deploy import CONFIG
    from tests.engine.anims import solid

    site = tmp_path / "site"
    (site / "plugins" / "red").mkdir(parents=True)
    (site / "plugins" / "red" / "red.wasm").write_bytes(solid(255, 0, 0))
    broker = harness.broker_config("pi-3")
    mqtt = (
        f'\n[mqtt]\ndevice_id = "pi-3"\ntrust = "{harness.trust_path}"\n'
        f'broker = {{ host = "{broker.host}", port = {broker.port} }}\n'
    )
    (site / "edged.toml").write_text(CONFIG + mqtt)
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CHILD, "run", "--config", "edged.toml", "--emulate", "--render", "headless"],
        cwd=site,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "the deploy agent died" in proc.stderr
