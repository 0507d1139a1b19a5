"""A device provisioned under a marketplace user's name gets no marketplace rights (review of issue 12, finding 3).

The attack, on the shipped deploy/mosquitto.conf: a device whose id (and so its user name in ``passwd``) is
``market`` logs in on the DEVICE listener. Before the fix both listeners shared one ACL file whose ``user market``
block gave it ``readwrite edged/v1/#``: it read every device's commands and overwrote another device's retained
desired state. Now the device listener's ACL (deploy/acl) has no marketplace block (the marketplace's rights are in
deploy/acl-market, read only by its own listener), and ``market`` cannot be a device id at all.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edged.deploy import topics
from edged.deploy.agent import DeviceAgent
from edged.deploy.broker import BrokerConfig
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.trust import TrustStore
from tests.support.acl import tls_files
from tests.support.harness import find_mosquitto, wait_for
from tests.support.shipped_broker import ShippedMosquitto

DEVICES = {"dev-a": "a-secret", "market": "device-secret"}  # "market" provisioned as a device (passwd)
MARKET = {"market": "market-secret"}  # the real marketplace (passwd-market)


class Tls:
    def __init__(self, m: ShippedMosquitto, ca: Path, user: str, password: str, port: int) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{port}", clean_session=True)
        self.c.username_pw_set(user, password)
        self.c.tls_set(ca_certs=str(ca))
        self.c.on_message = lambda c, u, msg: self.got.put((msg.topic, bytes(msg.payload)))
        ready = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: ready.set() if not rc.is_failure else None
        self.c.connect(m.host, port)
        self.c.loop_start()
        assert ready.wait(20), f"{user} could not log in on {port}"

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, 1)
        assert done.wait(20)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(20)

    def drain(self, seconds: float = 0.5) -> list[tuple[str, bytes]]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(queue.Empty):
                out.append(self.got.get(timeout=0.05))
        return out

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[tuple[ShippedMosquitto, Path]]:
    assert find_mosquitto() is not None
    ca, crt, key = tls_files(tmp_path / "tls")
    m = ShippedMosquitto(tmp_path / "broker", DEVICES, MARKET, (ca, crt, key))
    m.start()
    try:
        yield m, ca
    finally:
        m.stop()


def test_a_device_named_market_gets_no_marketplace_rights(shipped: tuple[ShippedMosquitto, Path]) -> None:
    m, ca = shipped
    rogue = Tls(m, ca, "market", DEVICES["market"], m.port)  # the device listener
    a = Tls(m, ca, "dev-a", DEVICES["dev-a"], m.port)
    market = Tls(m, ca, "market", MARKET["market"], m.market_port)  # the real marketplace, on its listener
    try:
        rogue.subscribe("edged/v1/#")
        a.subscribe(topics.desired("dev-a"))
        market.subscribe(topics.status("market"))
        a.publish(topics.status("dev-a"), b"dev-a status")
        market.publish(topics.cmd("dev-a"), b"a command for dev-a")
        rogue.publish(topics.desired("dev-a"), b'{"evil": 1}', retain=True)
        rogue.publish(topics.status("market"), b"own topic")  # positive control: its own device topics work
        assert wait_for(lambda: [t for t, _ in market.drain(0.1) if t == topics.status("market")])
        market.publish(topics.desired("dev-a"), b"from the marketplace", retain=True)  # positive control for dev-a
        got_a = []
        wait_for(lambda: got_a.extend(a.drain(0.1)) or any(p == b"from the marketplace" for _, p in got_a))
        assert not any(p == b'{"evil": 1}' for _, p in got_a)
        seen = rogue.drain(0.5)
        assert not [t for t, _ in seen if "/dev-a/" in t], seen  # neither dev-a's status nor its command
    finally:
        for c in (rogue, a, market):
            c.stop()


@pytest.mark.parametrize("name", ["market", "Market", "homeassistant"])
def test_reserved_names_are_not_device_ids(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        topics.check_id(name)
    with pytest.raises(ValueError, match="reserved"):
        target = EmulatedTarget(width=4, height=4)
        try:
            DeviceAgent(name, BrokerConfig(), PluginStore(tmp_path / "s"), TrustStore(), target)
        finally:
            target.close()
    assert topics.check_id(name, "group id") == name  # a group may be called so: it is no MQTT user
    assert topics.check_id("market-01") == "market-01"
