"""The shipped ACL's Home Assistant rules on a real mosquitto: a device announces only under its own node id and
reads only its own commands; Home Assistant's user sees the discovery, the presence and the state, and commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edged.deploy import topics
from tests.support import acl
from tests.support.acl import Client, acl_text

PASSWORDS = {**acl.PASSWORDS, "homeassistant": "ha-secret"}


def test_home_assistant_topics_within_the_acl(start_broker: Callable[..., Any], monkeypatch: Any) -> None:
    monkeypatch.setattr(acl, "PASSWORDS", PASSWORDS)  # Client logs in with these
    m = start_broker(users=PASSWORDS, acl=acl_text())
    ha, a, b = Client(m, "homeassistant"), Client(m, "dev-a"), Client(m, "dev-b")
    try:
        ha.subscribe("homeassistant/#", "edged/v1/devices/+/ha/#", "edged/v1/devices/+/presence")
        a.subscribe("edged/v1/devices/dev-a/ha/+/+/set", "homeassistant/status")
        b.subscribe("edged/v1/devices/dev-a/ha/#")  # B tries to read A's commands
        a.publish("homeassistant/light/dev-a/main/config", b"a's light")
        a.publish("homeassistant/light/dev-b/main/config", b"forged by A")  # as B: dropped
        a.publish("edged/v1/devices/dev-b/ha/main/light/state", b"forged by A")
        a.publish(topics.presence("dev-a"), b"online")
        a.publish("edged/v1/devices/dev-a/ha/main/light/state", b"a's state")
        ha.wait(lambda t, p: p == b"a's state")
        got = {t: p for t, p in ha.seen}
        assert got["homeassistant/light/dev-a/main/config"] == b"a's light"
        assert got[topics.presence("dev-a")] == b"online"
        assert b"forged by A" not in got.values()
        ha.publish("edged/v1/devices/dev-a/ha/main/light/set", b'{"state": "OFF"}')
        ha.publish("homeassistant/status", b"online")
        a.wait(lambda t, p: t == "homeassistant/status")
        assert ("edged/v1/devices/dev-a/ha/main/light/set", b'{"state": "OFF"}') in a.seen
        b.publish(topics.status("dev-b"), b"x")
        assert b.seen == [] and b.got.empty()
    finally:
        for c in (ha, a, b):
            c.stop()
