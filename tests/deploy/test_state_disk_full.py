"""A full disk while a desired state arrives cannot let an older document in after a restart (review of issue 12,
finding 5).

The attack: the disk is full when desired document B (spark removed) arrives. Before the fix the agent applied B
with its seq in memory only; after a restart a compromised broker handed back the older document A and the device
took it (spark back), although older documents are refused as ``stale``. Now the seq is written and fsynced
BEFORE the document is applied: with a full disk B is refused as ``disk_full`` and nothing changes, and once there
is room the agent subscribes again, the broker resends B, and B applies for good.
"""

from __future__ import annotations

import queue

import pytest

from edged.deploy import topics
from tests.deploy.smallfs import fill, small_disk
from tests.deploy.test_target_binding import Capture
from tests.support.harness import Harness, wait_for


def test_a_full_disk_refuses_a_desired_state_until_its_seq_is_on_disk(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("spark", "1.0.0")
    where = h.tmp / "devices" / "dev-1"
    with small_disk(where, 2 * 1024 * 1024, monkeypatch):
        cap = Capture(h, topics.desired("dev-1"))
        h.agent("dev-1")
        h.market.set_desired("device:dev-1", "glow", "1.0.0")
        h.market.set_desired("device:dev-1", "spark", "1.0.0")  # document A: glow and spark
        h.wait_healthy("dev-1", "glow", "1.0.0")
        h.wait_healthy("dev-1", "spark", "1.0.0")
        doc_a = cap.next(topics.desired("dev-1"))
        while (nxt := _maybe_next(cap)) is not None:
            doc_a = nxt  # the last document published: the one with both plugins
        ballast = fill(where)
        h.market.set_desired("device:dev-1", "spark", None)  # document B: spark removed
        st = wait_for(
            lambda: h.events.statuses("dev-1", state="rejected", reason="disk_full"), what="B refused as disk_full"
        )
        assert "not applied" in st[0].detail and "bytes free" in st[0].detail
        assert h.targets["dev-1"].running() == {"glow": "1.0.0", "spark": "1.0.0"}  # nothing changed
        ballast.unlink()
        # the agent subscribes again (within RESUBSCRIBE_S); the retained B arrives and applies
        wait_for(lambda: "spark" not in h.targets["dev-1"].running(), timeout=30, what="B applied once there is room")
        h.agents.pop("dev-1").stop()  # a restart
        h.targets.pop("dev-1").close()
        replay_retained(h, doc_a)  # the broker hands back the older document A
        h.agent("dev-1")
        wait_for(lambda: h.events.statuses("dev-1", state="rejected", reason="stale"), what="A refused as stale")
        assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
        cap.stop()
        h.agents.pop("dev-1").stop()  # before the small disk goes away
        h.targets.pop("dev-1").close()


def _maybe_next(cap: Capture) -> bytes | None:
    try:
        t, p = cap.got.get(timeout=0.5)
    except queue.Empty:
        return None
    return p if t == topics.desired("dev-1") and p else _maybe_next(cap)


def replay_retained(h: Harness, payload: bytes) -> None:
    h.market.client.publish(topics.desired("dev-1"), payload, qos=1, retain=True).wait_for_publish(20)
