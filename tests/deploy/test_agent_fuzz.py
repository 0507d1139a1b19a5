"""Hypothesis-generated malformed messages on every topic the device subscribes to: each is refused with an error
status, the agent keeps running and answering, and what it runs does not change."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.deploy import topics
from edged.deploy.trust import generate_key, sign_envelope
from tests.support.harness import Harness, wait_for

TOPICS = [topics.desired("dev-1"), topics.group_desired("lobby"), topics.cmd("dev-1"), topics.chunks("dev-1")]


def _json_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[object]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | floats | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


# unsigned JSON may hold anything Python's json writes (Infinity included); what gets signed must be canonical JSON
_json = _json_values(st.floats(allow_nan=False))
_finite_json = _json_values(st.floats(allow_nan=False, allow_infinity=False))
# keys that can never make a valid desired state or command
_junk_dict = st.dictionaries(st.text(alphabet="xyzXYZ_", min_size=1, max_size=6), _finite_json, max_size=4)
_ROGUE = generate_key()


def _payloads(h_key: Any) -> st.SearchStrategy[bytes]:
    envelope_like = st.fixed_dictionaries(
        {
            "payload": _junk_dict,
            "key_id": st.text(max_size=20),
            "issued_at": st.floats(allow_nan=False),
            "expires_at": st.floats(allow_nan=False),
            "nonce": st.text(max_size=20),
            "signature": st.text(max_size=90),
        }
    ).map(lambda d: json.dumps(d).encode())
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        _json.map(lambda v: json.dumps(v).encode()),
        envelope_like,
        # correctly signed by the trusted key, but not a desired state or a command (with and without this target)
        _junk_dict.map(lambda d: sign_envelope(d, h_key, 60).model_dump_json().encode()),
        _junk_dict.map(lambda d: sign_envelope({**d, "target": "device:dev-1"}, h_key, 60).model_dump_json().encode()),
        # well formed, signed by a key the device does not trust
        _junk_dict.map(lambda d: sign_envelope(d, _ROGUE, 60).model_dump_json().encode()),
        # a chunk-like message: a header line of junk, then bytes
        st.tuples(_json, st.binary(max_size=64)).map(lambda t: json.dumps(t[0]).encode() + b"\n" + t[1]),
    )


def test_malformed_messages_on_every_topic(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    agent = h.agent("dev-1", groups=("lobby",))
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    sent: list[tuple[str, bytes]] = []

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(topic=st.sampled_from(TOPICS), payload=_payloads(h.key))
    def one(topic: str, payload: bytes) -> None:
        errors = agent.errors
        h.market.client.publish(topic, payload, qos=1).wait_for_publish(20)
        sent.append((topic, payload))
        wait_for(lambda: agent.errors > errors, what=f"an error report for {payload[:80]!r} on {topic}")
        assert agent._worker is not None and agent._worker.is_alive()

    one()
    assert len(sent) >= 20
    # every topic got its share, and each refusal was reported on the status topic
    assert {t for t, _ in sent} == set(TOPICS)
    # (a burst of refusals is coalesced into one status per reason that carries their count)
    wait_for(
        lambda: sum(s.count for s in h.events.statuses("dev-1", state="rejected")) >= len(sent),
        what="a status per message",
    )
    assert h.store("dev-1").installed()["glow"].version == "1.0.0"
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
    cid = h.market.command("dev-1", "identify")
    assert wait_for(lambda: h.events.reply(cid), what="identify reply").ok


def _hostile(rng: random.Random, h: Harness, replays: list[bytes]) -> tuple[str, bytes]:
    """One hostile message for dev-1: every one of them must be refused with exactly one error report."""
    topic = rng.choice(TOPICS)
    kind = rng.randrange(8)
    if kind == 0:
        return topic, rng.randbytes(rng.randrange(0, 300))
    if kind == 1:
        return topic, json.dumps({"x" * rng.randrange(1, 5): [rng.random(), None, "y"]}).encode()
    if kind == 2:  # envelope-shaped, with a garbage signature
        env = {"payload": {"seq": 1}, "key_id": "0" * 16, "issued_at": 1.0, "expires_at": 2e9, "nonce": "n" * 16}
        return topic, json.dumps({**env, "signature": "A" * 88}).encode()
    if kind == 3:  # signed by the trusted key, for a random target, payload junk
        target = rng.choice(["device:dev-1", "device:dev-2", "group:lobby", "group:other", None])
        payload: dict[str, Any] = {"zz": rng.random()}
        if target is not None:
            payload["target"] = target
        return topic, sign_envelope(payload, h.key, 60).model_dump_json().encode()
    if kind == 4:  # signed by a key the device does not trust
        return topic, sign_envelope({"target": "device:dev-1", "seq": 1}, _ROGUE, 60).model_dump_json().encode()
    if kind == 5:  # a real document of another device or group, replayed here
        return rng.choice(TOPICS[:3]), rng.choice(replays)
    if kind == 6:  # a chunk-like message without a header line, anywhere
        return topic, b"no header" + rng.randbytes(8)
    return topic, b""  # empty


@pytest.mark.slow
def test_ten_thousand_hostile_messages(harness: Harness) -> None:
    """10,000 hostile messages (junk, forged, untrusted, replayed from other targets, empty) on every topic the
    device reads: each is refused and reported once, nothing is dropped, nothing changes, the agent keeps working."""
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("spark", "1.0.0")
    agent = h.agent("dev-1", groups=("lobby",))
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    # real, validly signed documents and commands for other targets (dev-1's own topics must refuse them)
    replays = []
    for target in ("device:dev-2", "group:other"):
        doc = h.market.desired_state(target).model_dump(mode="json")
        doc["plugins"] = [h.market.spec("spark", "1.0.0").model_dump(mode="json")]
        replays.append(sign_envelope(doc, h.key, 3600).model_dump_json().encode())
    lobby = h.market.desired_state("group:lobby").model_dump(mode="json")
    replays.append(sign_envelope(lobby, h.key, 3600).model_dump_json().encode())  # a group's, on a device topic
    command = {"target": "device:dev-2", "id": "c", "op": "remove", "name": "glow"}
    replays.append(sign_envelope(command, h.key, 300).model_dump_json().encode())
    rng = random.Random(12)
    errors0 = agent.errors
    total, batch = 10_000, 500
    for start in range(0, total, batch):
        infos = []
        for _ in range(batch):
            topic, payload = _hostile(rng, h, replays)
            if topic == topics.group_desired("lobby") and payload in replays[2:3]:
                topic = topics.desired("dev-1")  # the lobby's own document on the lobby topic would be valid
            infos.append(h.market.client.publish(topic, payload, qos=1))
        for info in infos:
            info.wait_for_publish(20)
        done = start + batch
        wait_for(lambda done=done: agent.errors - errors0 >= done, timeout=120, what=f"{done} refusals")
    assert agent.errors - errors0 == total
    st_ = agent.inbox_stats()
    assert st_.dropped == 0 and st_.peak_bytes <= agent.inbox.max_bytes
    assert agent.alive and not agent.dead.is_set()
    assert {n: iv.version for n, iv in h.store("dev-1").installed().items()} == {"glow": "1.0.0"}
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
    assert not h.events.statuses("dev-1", reason="internal_error")
    cid = h.market.command("dev-1", "identify")
    assert wait_for(lambda: h.events.reply(cid), what="identify reply").ok
