"""The shipped bridge example (deploy/bridge-edge.conf) between two real mosquittos: an edge broker carries its own
devices' documents and chunks, and nothing of another site's devices."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from tests.conftest import ROOT
from tests.support.harness import wait_for


def _client(m: Any, topics: list[str], got: list[tuple[str, bytes]]) -> mqtt.Client:
    lock = threading.Lock()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append((msg.topic, msg.payload))

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = on_message
    c.connect(m.host, m.port)
    c.loop_start()
    for t in topics:
        c.subscribe(t, qos=1)
    time.sleep(0.3)
    return c


def test_edge_broker_carries_only_its_own_devices(start_broker: Callable[..., Any]) -> None:
    central = start_broker()
    lines = []
    for ln in (ROOT / "deploy" / "bridge-edge.conf").read_text().splitlines():
        if ln.startswith(("address ", "bridge_cafile", "remote_username", "remote_password")):
            continue  # the example's remote: here the central broker on loopback, anonymous, no TLS
        lines.append(ln)
    lines.insert(lines.index("connection central") + 1, f"address {central.host}:{central.port}")
    edge = start_broker(extra=lines)
    at_edge: list[tuple[str, bytes]] = []
    at_central: list[tuple[str, bytes]] = []
    probes: list[tuple[str, bytes]] = []
    p = _client(edge, ["edged/v1/devices/+/cmd"], probes)
    e = _client(edge, ["edged/v1/devices/+/chunks", "edged/v1/devices/+/desired"], at_edge)
    c = _client(central, ["edged/v1/market/chunks/req/+", "edged/v1/devices/+/reported"], at_central)

    def bridged() -> bool:  # until the bridge is up, messages published centrally are not carried
        c.publish("edged/v1/devices/pi-kitchen-01/cmd", b"probe", qos=1).wait_for_publish(10)
        time.sleep(0.2)
        return bool(probes)

    wait_for(bridged, what="the bridge to connect")
    # the central marketplace publishes chunks and documents for a device of this site and one of another site
    for dev in ("pi-kitchen-01", "pi-hall-07"):
        c.publish(f"edged/v1/devices/{dev}/chunks", b"x" * 1000, qos=1).wait_for_publish(10)
        c.publish(f"edged/v1/devices/{dev}/desired", b"doc", qos=1).wait_for_publish(10)
    wait_for(lambda: len(at_edge) >= 2, what="this site's device's messages at the edge")
    time.sleep(1.0)
    assert sorted(t for t, _ in at_edge) == [
        "edged/v1/devices/pi-kitchen-01/chunks",
        "edged/v1/devices/pi-kitchen-01/desired",
    ]
    # the site's device talks outwards through the bridge; another id does not get through
    for dev in ("pi-kitchen-01", "pi-hall-07"):
        e.publish(f"edged/v1/market/chunks/req/{dev}", b"req", qos=1).wait_for_publish(10)
        e.publish(f"edged/v1/devices/{dev}/reported", b"rep", qos=1).wait_for_publish(10)
    wait_for(lambda: len(at_central) >= 2, what="the requests at the central broker")
    time.sleep(1.0)
    assert sorted(t for t, _ in at_central) == [
        "edged/v1/devices/pi-kitchen-01/reported",
        "edged/v1/market/chunks/req/pi-kitchen-01",
    ]
    for cl in (e, c, p):
        cl.loop_stop()
        cl.disconnect()
