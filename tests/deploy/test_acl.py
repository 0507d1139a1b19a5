"""The shipped ACL (deploy/acl) on a real mosquitto with password users: device A can neither read B's topics nor
publish as the marketplace or as B, and the whole protocol still works for A within its own topics."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edged.deploy import topics
from edged.deploy.testing import Mosquitto
from tests.conftest import ROOT
from tests.deploy.harness import Broker, Harness, wait_for

PASSWORDS = {"market": "market-secret", "dev-a": "a-secret", "dev-b": "b-secret"}


def acl_text() -> str:
    shipped = (ROOT / "deploy" / "acl").read_text()
    # provisioning appends each device's group memberships (see deploy/README.md)
    return shipped + "\nuser dev-a\ntopic read edged/v1/groups/lobby/desired\n"


class Client:
    """A plain paho client logged in as ``user`` that records what it receives."""

    def __init__(self, m: Mosquitto, user: str) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.seen: list[tuple[str, bytes]] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-test-{user}")
        self.c.username_pw_set(user, PASSWORDS[user])
        self.c.on_message = lambda c, u, msg: self.got.put((msg.topic, bytes(msg.payload)))
        ready = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: ready.set() if not rc.is_failure else None
        self.c.connect(m.host, m.port)
        self.c.loop_start()
        assert ready.wait(20), f"{user} could not connect"

    def subscribe(self, *topic_list: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe([(t, 1) for t in topic_list])
        assert done.wait(20)

    def publish(self, topic: str, payload: bytes = b"x") -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(20)

    def wait(self, pred: Callable[[str, bytes], bool]) -> None:
        """Collect messages until one matches ``pred`` (the positive control); the rest stay in ``seen``."""

        def poll() -> bool:
            while True:
                try:
                    t, p = self.got.get(timeout=0.05)
                except queue.Empty:
                    return False
                self.seen.append((t, p))
                if pred(t, p):
                    return True

        wait_for(poll, what="the control message")

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_device_cannot_read_other_devices_or_publish_as_marketplace(start_broker: Callable[..., Any]) -> None:
    m = start_broker(users=PASSWORDS, acl=acl_text())
    market, a = Client(m, "market"), Client(m, "dev-a")
    try:
        market.subscribe("edged/v1/#")
        # A tries to read B's topics (and everything)
        a.subscribe(topics.desired("dev-b"), topics.cmd("dev-b"), topics.chunks("dev-b"), "edged/v1/#")
        for t in (topics.desired("dev-b"), topics.cmd("dev-b"), topics.chunks("dev-b"), topics.group_desired("other")):
            market.publish(t, b"for B only")
        market.publish(topics.desired("dev-a"), b"control for A")
        a.wait(lambda t, p: p == b"control for A")
        assert all(p != b"for B only" for _, p in a.seen), a.seen
        # A tries to publish as the marketplace and as B
        forged = [
            topics.desired("dev-a"),
            topics.cmd("dev-a"),
            topics.desired("dev-b"),
            topics.cmd("dev-b"),
            topics.chunks("dev-a"),
            topics.chunks("dev-b"),
            topics.group_desired("lobby"),
            topics.reported("dev-b"),
            topics.status("dev-b"),
            topics.presence("dev-b"),
            topics.chunk_request("dev-b"),
        ]
        for t in forged:
            a.publish(t, b"forged by A")
        a.publish(topics.status("dev-a"), b"control from A")
        market.wait(lambda t, p: p == b"control from A")
        assert [t for t, p in market.seen if p == b"forged by A"] == []
        # and A may write everything that is its own
        own = [topics.reported("dev-a"), topics.presence("dev-a"), topics.reply("dev-a"), topics.chunk_request("dev-a")]
        for t in own:
            a.publish(t, b"own")
        a.publish(topics.status("dev-a"), b"control 2")
        market.wait(lambda t, p: p == b"control 2")
        assert sorted(t for t, p in market.seen if p == b"own") == sorted(own)
    finally:
        market.stop()
        a.stop()


def test_protocol_works_within_the_acl(start_broker: Callable[..., Any], tmp_path: Path) -> None:
    m = start_broker(users=PASSWORDS, acl=acl_text())
    h = Harness(tmp_path / "h", Broker(m.host, m.port, m.restart, m), passwords=PASSWORDS)
    try:
        h.publish("glow", "1.0.0")
        h.publish("spark", "1.0.0")
        h.agent("dev-a", groups=("lobby",))
        h.market.set_desired("device:dev-a", "glow", "1.0.0")
        h.market.set_desired("group:lobby", "spark", "1.0.0")
        h.wait_healthy("dev-a", "glow", "1.0.0")
        h.wait_healthy("dev-a", "spark", "1.0.0")
        cid = h.market.command("dev-a", "identify")
        assert wait_for(lambda: h.events.reply(cid), what="reply").ok
    finally:
        h.close()
