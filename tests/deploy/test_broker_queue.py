"""An offline session cannot make the shipped broker hold unbounded data (review of issue 12, finding 4).

The attack: a device opens a persistent session subscribed to its chunk topic and goes away; chunks keep coming for
it (its own requests, answered by the marketplace). With the old settings (max_queued_messages 10000, no byte bound)
the broker queued up to 10,000 x 127 KB = 1.3 GB per device in RAM and in its persistence file. The shipped config
now bounds every client's queue at 4 MiB (max_queued_bytes) and 1,000 messages.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from edged.deploy import topics
from edged.deploy.messages import MAX_CHUNK_SIZE
from tests.support.acl import tls_files
from tests.support.harness import find_mosquitto, wait_for
from tests.support.shipped_broker import SHIPPED_CONF, ShippedMosquitto

DEVICES = {"dev-b": "b-secret"}
MARKET = {"market": "market-secret"}
QUEUE_BYTES = 4 * 1024 * 1024


def _client(m: ShippedMosquitto, ca: Path, user: str, password: str, port: int, clean: bool) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"q-{user}", clean_session=clean)
    c.username_pw_set(user, password)
    c.tls_set(ca_certs=str(ca))
    return c


def test_the_shipped_config_bounds_an_offline_sessions_queue(tmp_path: Path) -> None:
    text = SHIPPED_CONF.read_text()
    assert re.search(rf"^max_queued_bytes {QUEUE_BYTES}$", text, re.M)
    assert re.search(r"^persistent_client_expiration 1d$", text, re.M)
    assert find_mosquitto() is not None
    ca, crt, key = tls_files(tmp_path / "tls")
    m = ShippedMosquitto(tmp_path / "broker", DEVICES, MARKET, (ca, crt, key))
    m.start()
    try:
        b = _client(m, ca, "dev-b", DEVICES["dev-b"], m.port, clean=False)
        subscribed = threading.Event()
        b.on_subscribe = lambda *a: subscribed.set()
        b.connect(m.host, m.port)
        b.loop_start()
        b.subscribe(topics.chunks("dev-b"), 1)
        assert subscribed.wait(20)
        b.disconnect()  # a persistent session, now offline
        b.loop_stop()

        market = _client(m, ca, "market", MARKET["market"], m.market_port, clean=True)
        market.connect(m.host, m.market_port)
        market.loop_start()
        chunk = b"x" * MAX_CHUNK_SIZE
        n = 64  # 8 MB of chunks for the offline device, twice the bound
        for _ in range(n):
            market.publish(topics.chunks("dev-b"), chunk, qos=1).wait_for_publish(20)
        market.disconnect()
        market.loop_stop()

        got: list[int] = []
        b2 = _client(m, ca, "dev-b", DEVICES["dev-b"], m.port, clean=False)
        b2.on_message = lambda c, u, msg: got.append(len(msg.payload))
        b2.connect(m.host, m.port)
        b2.loop_start()
        wait_for(lambda: got, what="the queued chunks")
        wait_for(lambda: _settled(got), timeout=20, what="the queue to be delivered")
        b2.disconnect()
        b2.loop_stop()
        # the broker kept at most its bound (plus the message in flight that crossed it), not all 8 MB
        assert 0 < sum(got) <= QUEUE_BYTES + MAX_CHUNK_SIZE, (len(got), sum(got))
        assert len(got) < n
    finally:
        m.stop()


def _settled(got: list[int], quiet_s: float = 1.0) -> bool:
    """True once ``got`` has not grown for ``quiet_s`` seconds."""
    before = len(got)
    time.sleep(quiet_s)
    return len(got) == before
