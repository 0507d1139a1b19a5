"""The agent's outgoing queue is bounded (review of issue 12, finding 2).

The attack: a compromised broker floods the agent with junk on a topic it never subscribed to (20 kB long) and
never acknowledges the agent's QoS-1 publishes. Before the fix every junk message became one QoS-1 ``rejected``
status carrying the whole topic, held by paho until acknowledged: the agent grew to 700 MB. Now paho's queue holds
at most ``MAX_QUEUED_OUT`` messages, a status's topic and detail are cut to 256 characters, and a burst of
rejections is coalesced into one status per reason with a count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import edged.deploy.agent.device_agent as agent_mod
import edged.deploy.agent.reporting as reporting
from edged.deploy import topics
from edged.deploy.agent import DeviceAgent
from edged.deploy.broker import BrokerConfig
from edged.deploy.messages import MAX_DETAIL, Status
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.trust import TrustStore, generate_key
from tests.deploy.fakebroker import NonAckingBroker
from tests.support.harness import wait_for


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[NonAckingBroker, DeviceAgent]]:
    fb = NonAckingBroker()
    trust = TrustStore()
    trust.add(generate_key(), ["publisher", "marketplace"])
    target = EmulatedTarget(width=8, height=8, fps=50)
    agent = DeviceAgent("dev-1", BrokerConfig(host=fb.host, port=fb.port), PluginStore(tmp_path / "s"), trust, target)
    agent.start()
    try:
        assert fb.ready.wait(20), "the agent never subscribed"
        yield fb, agent
    finally:
        agent.stop()
        target.close()
        fb.close()


def test_a_broker_that_withholds_pubacks_cannot_grow_the_agent(hostile: tuple[NonAckingBroker, DeviceAgent]) -> None:
    fb, agent = hostile
    topic = "edged/v1/x/" + "A" * 20_000
    sent = 0
    for _ in range(25):  # 5,000 junk messages in bursts, as fast as the agent takes them
        for _ in range(200):
            fb.publish(topic, b"junk")
        sent += 200
        wait_for(lambda n=sent: agent.inbox.empty() and agent.errors + agent.inbox_stats().dropped >= n, timeout=60)
    time.sleep(reporting.REJECT_WINDOW_S * 1.5)  # the last window's coalesced statuses
    wait_for(lambda: not agent.reports.held)
    assert agent.alive
    queued = agent.client._out_messages  # paho's outgoing QoS-1 queue: what the broker never acknowledged
    assert len(queued) <= agent_mod.MAX_QUEUED_OUT
    assert sum(len(m.payload) + len(m.topic) for m in queued.values()) < agent_mod.MAX_QUEUED_OUT * 2048
    statuses = [Status.model_validate(json.loads(p)) for p in fb.payloads if b'"state":"rejected"' in p]
    assert statuses and all(len(s.topic or "") <= MAX_DETAIL and len(s.detail) <= MAX_DETAIL for s in statuses)
    # coalesced: far fewer statuses than messages, and their counts add up to every refusal
    assert len(statuses) < sent / 10
    assert sum(s.count for s in statuses) == agent.errors


def test_a_full_outgoing_queue_drops_and_counts(
    hostile: tuple[NonAckingBroker, DeviceAgent], monkeypatch: pytest.MonkeyPatch
) -> None:
    fb, agent = hostile
    monkeypatch.setattr(reporting, "REJECT_BURST", 10_000)  # no coalescing: every rejection is one publish
    before = fb.received[topics.status("dev-1")]
    for i in range(agent_mod.MAX_QUEUED_OUT + 300):
        fb.publish(f"edged/v1/junk/{i}", b"x")
    wait_for(lambda: agent.out_dropped > 0 and agent.inbox.empty(), timeout=60)
    assert len(agent.client._out_messages) <= agent_mod.MAX_QUEUED_OUT
    assert fb.received[topics.status("dev-1")] - before <= agent_mod.MAX_QUEUED_OUT
    assert agent.alive
