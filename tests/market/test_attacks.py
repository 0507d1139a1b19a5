"""Attacks on the marketplace from a device's seat (issue 12, points 5, 6, 7 and 11a), each performed on a real
mosquitto: a device claiming a group, chunk-request amplification, a stale failure, and a status flood."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt

from edged.deploy import topics
from edged.deploy.messages import MAX_INDICES, ChunkRequest, Presence, Reported, ReportedPlugin, Status, unpack_chunk
from edged.market import Rollout
from edged.market.catalog import MAX_STATUS_ROWS
from tests.support.harness import Harness, anim_wasm, wait_for


class RawDevice:
    """A hostile client on the broker speaking as device ``device_id`` on its own topics (what the ACL allows it)."""

    def __init__(self, h: Harness, device_id: str) -> None:
        self.id = device_id
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{device_id}")
        self.client.on_message = self._on_message
        self.client.connect(h.broker.host, h.broker.port)
        self.client.loop_start()
        self.client.subscribe(topics.chunks(device_id), qos=1)[1]
        time.sleep(0.2)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append(msg.payload)

    def send(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def bytes_in(self) -> int:
        with self.lock:
            return sum(len(p) for p in self.received)

    def indices(self) -> list[int]:
        with self.lock:
            return [unpack_chunk(p)[0].index for p in self.received]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_device_claiming_a_group_is_not_a_member(harness: Harness) -> None:
    """Point 5: a device publishing its own presence with ``groups: ["lobby"]`` and a failure report is neither
    counted nor able to halt ``deploy --group lobby``: membership comes from the marketplace's records."""
    h = harness
    h.publish("glow", "1.0.0")
    for d in ("a", "b"):
        h.agent(d, groups=("lobby",))
    intruder = RawDevice(h, "mallory")
    intruder.send(
        topics.presence("mallory"), Presence(device="mallory", state="online", groups=["lobby"]).model_dump_json(), True
    )
    fake = Reported(
        device="mallory",
        groups=["lobby"],
        plugins={"glow": ReportedPlugin(version=None, state="failed", reason="hash_mismatch", wanted="1.0.0")},
        applied={"group:lobby": 10**12, "device": 10**12},
    )
    intruder.send(topics.reported("mallory"), fake.model_dump_json(), True)
    wait_for(lambda: h.catalog.device("mallory"), what="the intruder's presence to be recorded")
    rec = h.catalog.device("mallory")
    assert rec is not None and rec.claimed_groups == ["lobby"] and rec.groups == []
    assert h.market.group_members("lobby") == ["a", "b"]
    result = Rollout(h.market, "glow", "1.0.0", group="lobby", halt_failure_rate=0.0, timeout_s=30).run()
    assert result.state == "done", result
    assert result.outcomes == {"a": "healthy", "b": "healthy"}  # mallory is not in it
    intruder.close()


def _served_to(h: Harness, device: str) -> int:
    assert h.market.chunk_server is not None
    return sum(n for (d, _, _), n in h.market.chunk_server.stats.served.items() if d == device)


def test_chunk_request_amplification_is_bounded(harness: Harness) -> None:
    """Point 6: requests for a bundle not in the device's desired state get nothing; repeated indices are served
    once; a flood is held to the device's rate."""
    h = harness
    assert h.market.chunk_server is not None
    h.market.chunk_server.bundle_wait_s = 1.0
    h.market.chunk_server.device_rate = 64 * 1024
    h.market.chunk_server.device_burst = 256 * 1024
    big = h.publish("big", "1.0.0", anim_wasm("big", pad=600_000))
    other = h.publish("other", "1.0.0", anim_wasm("other", pad=300_000))
    attacker = RawDevice(h, "eve")
    h.catalog.update_device("eve", presence="online")
    chunk = 4096

    def request(meta: object, indices: list[int]) -> None:
        req = ChunkRequest(
            device="eve",
            name=meta.name,  # type: ignore[attr-defined]
            version=meta.version,  # type: ignore[attr-defined]
            wasm_sha256=meta.wasm_sha256,  # type: ignore[attr-defined]
            chunk_size=chunk,
            indices=indices,
        )
        attacker.send(topics.chunk_request("eve"), req.model_dump_json())

    # (a) a bundle no desired state of eve names: nothing at all
    request(other, list(range(MAX_INDICES)))
    time.sleep(2.0)
    assert attacker.bytes_in() == 0 and _served_to(h, "eve") == 0
    assert h.market.chunk_server.stats.refused > 0
    # (b) eve's own bundle, index 0 repeated 256 times: one chunk
    h.market.set_desired("device:eve", "big", "1.0.0")
    t0 = time.monotonic()
    request(big, [0] * MAX_INDICES)
    wait_for(lambda: attacker.indices() == [0], what="chunk 0 once")
    time.sleep(0.5)
    assert attacker.indices() == [0]
    # (c) a flood of requests for everything, again and again: held to burst + rate x time (a token bucket)
    total = -(-big.wasm_size // chunk)
    for _ in range(20):
        request(big, list(range(min(total, MAX_INDICES))))
    time.sleep(3.0)
    elapsed = time.monotonic() - t0
    served = _served_to(h, "eve") * chunk
    bound = h.market.chunk_server.device_burst + h.market.chunk_server.device_rate * elapsed + chunk
    assert served <= bound, (served, bound)
    # 20 requests of 147 chunks asked for ~12 MB: an index still owed is owed once, never queued 20 times
    assert h.market.chunk_server.stats.duplicates_dropped > 0
    assert h.market.chunk_server.pending() <= total
    attacker.close()


def test_a_stale_failure_does_not_fail_a_fresh_deploy(harness: Harness) -> None:
    """Point 7: after one failed attempt, a fresh deploy of the same version is judged on its own request only."""
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0", anim_wasm("glow-2", pad=20_000))
    h.agent("dev1", groups=("lobby",), stall_s=0.3, max_stalls=2)
    assert Rollout(h.market, "glow", "1.0.0", device="dev1", timeout_s=30).run().state == "done"
    h.market.drop = {1}  # chunk 1 never arrives: the attempt fails with missing_chunk
    first = Rollout(h.market, "glow", "2.0.0", device="dev1", timeout_s=30).run()
    assert first.state == "failed" and first.reasons["dev1"] == "missing_chunk", first
    rec = h.catalog.device("dev1")
    assert rec is not None and rec.reported["plugins"]["glow"]["wanted"] == "2.0.0"  # the stale failure, retained
    h.market.drop = set()
    second = Rollout(h.market, "glow", "2.0.0", device="dev1", timeout_s=30).run()
    assert second.state == "done", second
    assert second.outcomes == {"dev1": "healthy"}
    h.wait_healthy("dev1", "glow", "2.0.0")


def test_a_status_flood_adds_no_rows(harness: Harness) -> None:
    """Point 11a: statuses for made-up plugin names add no rows; a device has at most MAX_STATUS_ROWS."""
    h = harness
    h.publish("glow", "1.0.0")
    flooder = RawDevice(h, "flood")
    for i in range(300):
        st = Status(device="flood", state="downloading", name=f"junk{i:04d}", version="1.0.0")
        flooder.client.publish(topics.status("flood"), st.model_dump_json(), qos=1)
    last = Status(device="flood", state="failed", name="glow", version="1.0.0", reason="x")
    flooder.send(topics.status("flood"), last.model_dump_json())
    wait_for(lambda: (r := h.catalog.device("flood")) and "glow" in r.status, what="the last status")
    assert h.catalog.status_rows("flood") == 1  # only the published plugin's row
    for i in range(MAX_STATUS_ROWS + 20):  # even for names the catalog knows, the table is bounded per device
        h.catalog.set_plugin_status("flood", f"known{i}", {"state": "healthy"})
    assert h.catalog.status_rows("flood") == MAX_STATUS_ROWS
    assert json.loads(json.dumps(h.catalog.device("flood").status["glow"]))["reason"] == "x"  # type: ignore[union-attr]
    flooder.close()
