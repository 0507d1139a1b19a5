"""Client-id takeover on the shipped broker configuration (issue 12, point 4): device B, logged in as itself with
device A's client id, can neither kick A off nor wipe A's persistent session (and the command queued in it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edged.deploy.agent import DeviceAgent
from edged.deploy.broker import BrokerConfig
from edged.deploy.messages import Reply
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.trust import TrustStore, generate_key
from edged.market import Marketplace, SQLiteCatalog
from tests.support.acl import tls_files
from tests.support.harness import find_mosquitto, wait_for
from tests.support.shipped_broker import ShippedMosquitto

DEVICES = {"dev-a": "a-secret", "dev-b": "b-secret"}
MARKET = {"market": "market-secret"}


class Fleet:
    """The shipped broker, device A's real agent and a real marketplace on the marketplace listener."""

    def __init__(self, tmp: Path, drop: str | None = None) -> None:
        assert find_mosquitto() is not None
        self.ca, crt, key = tls_files(tmp / "tls")
        self.m = ShippedMosquitto(tmp / "broker", DEVICES, MARKET, (self.ca, crt, key), drop=drop)
        self.m.start()
        self.key = generate_key()
        trust = TrustStore()
        trust.add(self.key, ["publisher", "marketplace"])
        self.replies: list[Reply] = []
        self.catalog = SQLiteCatalog(tmp / "market.db")
        cfg = BrokerConfig(host=self.m.host, port=self.m.market_port, ca_file=self.ca, **_login("market", MARKET))
        self.market = Marketplace(self.catalog, self.key, cfg, serve=False)
        self.market.add_listener(lambda dev, kind, msg: self.replies.append(msg) if kind == "reply" else None)
        self.market.start()
        self.target = EmulatedTarget(width=4, height=4, fps=50)
        self.a = DeviceAgent(
            "dev-a", self.device_config("dev-a"), PluginStore(tmp / "store-a"), trust, self.target, health_frames=1
        )
        self.a.start()
        wait_for(self.a.connected.is_set, what="dev-a to connect")

    def device_config(self, user: str) -> BrokerConfig:
        return BrokerConfig(host=self.m.host, port=self.m.port, ca_file=self.ca, **_login(user, DEVICES))

    def intruder(self, client_id: str, user: str = "dev-b", port: int | None = None) -> tuple[mqtt.Client, Any]:
        """``user`` connects with ``client_id`` (clean session, as an attacker would); returns it and its CONNACK."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        c.username_pw_set(user, {**DEVICES, **MARKET}[user])
        c.tls_set(ca_certs=str(self.ca))
        got: list[Any] = []
        done = threading.Event()

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            got.append(reason)
            done.set()

        c.on_connect = on_connect
        c.connect(self.m.host, port or self.m.port)
        c.loop_start()
        assert done.wait(20), "no CONNACK"
        return c, got[0]

    def close(self) -> None:
        self.a.stop()
        self.target.close()
        self.market.stop()
        self.catalog.close()
        self.m.stop()


def _login(user: str, table: dict[str, str]) -> dict[str, str]:
    return {"username": user, "password": table[user]}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()


def takeover_attempts(f: Fleet, n: int) -> None:
    for _ in range(n):  # B logs in with A's client id again and again
        c, reason = f.intruder("edged-dev-a")
        assert not reason.is_failure  # B's own credentials are valid: the broker lets B in as B
        c.disconnect()
        c.loop_stop()


def test_b_with_a_client_id_cannot_kick_a_or_wipe_its_session(fleet: Fleet) -> None:
    f = fleet
    drops = f.a.backoff.failures
    takeover_attempts(f, 5)
    cid = f.market.command("dev-a", "identify")
    assert wait_for(lambda: next((r for r in f.replies if r.id == cid), None), what="A's reply").ok
    assert f.a.connected.is_set() and f.a.backoff.failures == drops  # A was never disconnected
    # a command queued while A is away waits in A's session; B's clean-session login with A's id must not wipe it
    f.a.client.disconnect()
    f.a.client.loop_stop()
    wait_for(lambda: not f.a.connected.is_set(), what="A to go away")
    queued = f.market.command("dev-a", "identify")
    takeover_attempts(f, 2)
    f.a.client.reconnect()
    f.a.client.loop_start()
    assert wait_for(lambda: next((r for r in f.replies if r.id == queued), None), what="the queued command").ok


def test_a_device_cannot_log_in_on_the_marketplace_listener(fleet: Fleet) -> None:
    c, reason = fleet.intruder("edged-market-x", user="dev-b", port=fleet.m.market_port)
    try:
        assert reason.is_failure  # only passwd-market's users log in there, with their own client ids
    finally:
        c.loop_stop()


def test_without_use_username_as_clientid_the_takeover_works(tmp_path: Path) -> None:
    """The control experiment: the shipped file minus that one line lets B kick A (so the line is what holds)."""
    f = Fleet(tmp_path, drop="use_username_as_clientid")
    try:
        drops = f.a.backoff.failures
        c, reason = f.intruder("edged-dev-a")
        assert not reason.is_failure
        wait_for(lambda: f.a.backoff.failures > drops, what="A to be kicked off")
        c.disconnect()
        c.loop_stop()
    finally:
        f.close()
