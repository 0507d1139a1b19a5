"""The shipped ACL (deploy/acl) on a real mosquitto with password users: device A can neither read B's topics nor
publish as the marketplace or as B, and the whole protocol still works for A within its own topics."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edged.deploy import topics
from tests.support.acl import PASSWORDS, Client, acl_text, tls_files
from tests.support.harness import Broker, Harness, wait_for


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


def test_deploy_over_tls_with_passwords_and_acl(start_broker: Callable[..., Any], tmp_path: Path) -> None:
    ca, crt, key = tls_files(tmp_path / "tls")
    m = start_broker(users=PASSWORDS, acl=acl_text(), tls=(ca, crt, key))
    h = Harness(tmp_path / "h", Broker(m.host, m.port, m.restart, m), passwords=PASSWORDS, ca_file=ca)
    try:
        h.publish("glow", "1.0.0")
        h.agent("dev-a")
        h.market.set_desired("device:dev-a", "glow", "1.0.0")
        h.wait_healthy("dev-a", "glow", "1.0.0")
    finally:
        h.close()
    # a client without the fleet CA cannot even connect
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="no-ca")
    c.tls_set()  # the system's CAs: the broker's certificate is not among them
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect(m.host, m.port)
