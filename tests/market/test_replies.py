"""The marketplace keeps a reply only for a command it sent to that device (found by a hostile review of issue 12:
a device publishing replies with fresh ids grew ``serve``'s memory without limit, and could answer for another
device's command)."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edged.deploy import topics
from edged.deploy.messages import Reply
from tests.support.harness import Harness, wait_for


def _raw_client(h: Harness, device: str) -> mqtt.Client:
    cfg = h.broker_config(device)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{device}")
    c.connect(cfg.host, cfg.port)
    c.loop_start()
    return c


def test_replies_nobody_asked_for_are_dropped_and_a_device_cannot_answer_for_another(harness: Harness) -> None:
    h = harness
    h.agent("dev-1")
    rogue = _raw_client(h, "dev-2")
    try:
        for i in range(300):  # replies with fresh ids and long details, as the review's flood
            rep = Reply(id=f"flood-{i}", device="dev-2", ok=True, detail="x" * 200)
            rogue.publish(topics.reply("dev-2"), rep.model_dump_json(), qos=1).wait_for_publish(10)
        cid = h.market.command("dev-1", "identify")
        # dev-2 answers dev-1's command first, under dev-1's id
        forged = Reply(id=cid, device="dev-2", ok=False, error="wrong_target")
        rogue.publish(topics.reply("dev-2"), forged.model_dump_json(), qos=1).wait_for_publish(10)
        reply = wait_for(lambda: h.market.replies.get(cid), what="dev-1's reply")
        assert reply.device == "dev-1" and reply.ok
        assert len(h.market.replies) == 1 and not h.market._awaiting
    finally:
        rogue.loop_stop()
        rogue.disconnect()
