"""Signed documents and commands are bound to their target (issue 12, point 1): whoever can publish on the broker (a
compromised broker, loose ACLs) replays real, validly signed messages onto another device's topics, and the device
refuses each one as ``wrong_target`` without changing what it runs."""

from __future__ import annotations

import queue
import threading
import time

import paho.mqtt.client as mqtt

from edged.deploy import topics
from edged.deploy.trust import sign_envelope
from tests.support.harness import Harness, wait_for


class Capture:
    """A plain client on the broker that records the raw messages of some topics (retained ones included)."""

    def __init__(self, h: Harness, *topic_list: str) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"capture-{time.monotonic_ns()}")
        self.c.on_message = lambda c, u, m: self.got.put((m.topic, bytes(m.payload)))
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect(h.broker.host, h.broker.port)
        self.c.loop_start()
        self.c.subscribe([(t, 1) for t in topic_list])
        assert subscribed.wait(20), "the capture could not subscribe"

    def next(self, topic: str) -> bytes:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                t, p = self.got.get(timeout=0.1)
            except queue.Empty:
                continue
            if t == topic and p:
                return p
        raise AssertionError(f"nothing captured on {topic}")

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def replay(h: Harness, topic: str, payload: bytes) -> None:
    h.market.client.publish(topic, payload, qos=1).wait_for_publish(20)


def wrong_target(h: Harness, device: str, topic: str) -> str:
    st = wait_for(
        lambda: [s for s in h.events.statuses(device, state="rejected", reason="wrong_target") if s.topic == topic],
        what=f"{device} to refuse a message on {topic} as wrong_target",
    )
    return st[0].detail


def test_a_desired_state_replayed_onto_another_device_is_refused(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("spark", "1.0.0")
    h.agent("dev-1")
    h.agent("dev-2")
    cap = Capture(h, topics.desired("dev-1"))
    try:
        h.market.set_desired("device:dev-1", "glow", "1.0.0")
        h.market.set_desired("device:dev-2", "spark", "1.0.0")
        h.wait_healthy("dev-1", "glow", "1.0.0")
        h.wait_healthy("dev-2", "spark", "1.0.0")
        dev1_doc = cap.next(topics.desired("dev-1"))
    finally:
        cap.stop()
    # the attack: dev-1's retained, validly signed document, published as dev-2's (it would remove spark and
    # install glow there)
    replay(h, topics.desired("dev-2"), dev1_doc)
    detail = wrong_target(h, "dev-2", topics.desired("dev-2"))
    assert "device:dev-1" in detail and "device:dev-2" in detail
    assert h.targets["dev-2"].running() == {"spark": "1.0.0"}
    assert list(h.store("dev-2").installed()) == ["spark"]
    # dev-2 still follows its own documents
    h.publish("spark", "1.1.0")
    h.market.set_desired("device:dev-2", "spark", "1.1.0")
    h.wait_healthy("dev-2", "spark", "1.1.0")


def test_a_group_document_on_a_device_topic_is_refused(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("spark", "1.0.0")
    h.agent("dev-1", groups=("lobby",))
    h.agent("dev-2")
    cap = Capture(h, topics.group_desired("lobby"))
    try:
        h.market.set_desired("device:dev-2", "glow", "1.0.0")
        h.market.set_desired("group:lobby", "spark", "1.0.0")
        h.wait_healthy("dev-1", "spark", "1.0.0")
        h.wait_healthy("dev-2", "glow", "1.0.0")
        group_doc = cap.next(topics.group_desired("lobby"))
    finally:
        cap.stop()
    # taken as dev-2's own document, it would replace glow with spark; as dev-1's it would override its group
    replay(h, topics.desired("dev-2"), group_doc)
    assert "group:lobby" in wrong_target(h, "dev-2", topics.desired("dev-2"))
    replay(h, topics.desired("dev-1"), group_doc)
    wrong_target(h, "dev-1", topics.desired("dev-1"))
    assert h.targets["dev-2"].running() == {"glow": "1.0.0"}
    assert h.targets["dev-1"].running() == {"spark": "1.0.0"}


def test_a_command_signed_for_another_device_is_refused(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.agent("dev-1")
    h.agent("dev-2")
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.market.set_desired("device:dev-2", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-2", "glow", "1.0.0")
    cap = Capture(h, topics.cmd("dev-2"))
    try:
        cid = h.market.command("dev-2", "remove", name="glow")
        signed_for_dev2 = cap.next(topics.cmd("dev-2"))
    finally:
        cap.stop()
    assert wait_for(lambda: h.events.reply(cid), what="dev-2's reply").ok
    # replayed to dev-1 well within its validity (commands are signed for 5 minutes) and with a fresh nonce there
    replay(h, topics.cmd("dev-1"), signed_for_dev2)
    reply = wait_for(
        lambda: [r for r in h.events.replies if r.device == "dev-1" and r.id == cid], what="dev-1's refusal"
    )[0]
    assert not reply.ok and reply.error == "wrong_target" and "device:dev-2" in reply.detail
    wrong_target(h, "dev-1", topics.cmd("dev-1"))
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
    assert list(h.store("dev-1").installed()) == ["glow"]


def test_documents_without_a_target_are_refused(harness: Harness) -> None:
    """Documents signed before targets were bound could be anyone's: refused, not accepted for compatibility."""
    h = harness
    h.publish("glow", "1.0.0")
    h.agent("dev-1")
    unbound = h.market.desired_state("device:dev-1").model_dump(mode="json")
    unbound.pop("target")
    unbound["seq"] = int(time.time() * 1000)
    unbound["plugins"] = [h.market.spec("glow", "1.0.0").model_dump(mode="json")]
    replay(h, topics.desired("dev-1"), sign_envelope(unbound, h.key, 3600).model_dump_json().encode())
    assert "names no target" in wrong_target(h, "dev-1", topics.desired("dev-1"))
    command = {"id": "old-style", "op": "identify"}
    replay(h, topics.cmd("dev-1"), sign_envelope(command, h.key, 60).model_dump_json().encode())
    reply = wait_for(lambda: h.events.reply("old-style"), what="the refusal of an unbound command")
    assert not reply.ok and reply.error == "wrong_target"
    assert h.targets["dev-1"].running() == {}
