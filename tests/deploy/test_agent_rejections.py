"""Every bad input gets an error status or reply; the installed set and the running plugins do not change."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from edged.deploy import topics
from edged.deploy.agent import DeviceAgent
from edged.deploy.bundle import build_bundle
from edged.deploy.messages import ChunkHeader, Command, DesiredState, pack_chunk
from edged.deploy.trust import generate_key, sign_envelope
from edged.host.capabilities import DevicePolicy
from tests.support.harness import ANIM_MANIFEST, Harness, anim_wasm, wait_for


def baseline(h: Harness, **kw: Any) -> DeviceAgent:
    """dev-1 runs glow@1.0.0, healthy."""
    h.publish("glow", "1.0.0")
    agent = h.agent("dev-1", **kw)
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    return agent


def unchanged(h: Harness, agent: DeviceAgent) -> None:
    """The store and the target still hold exactly glow@1.0.0, running, and the agent still answers."""
    store = h.store("dev-1")
    assert {n: iv.version for n, iv in store.installed().items()} == {"glow": "1.0.0"}
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
    assert agent._worker is not None and agent._worker.is_alive()
    cid = h.market.command("dev-1", "identify")
    reply = wait_for(lambda: h.events.reply(cid), what="identify reply")
    assert reply.ok and reply.result["plugins"] == {"glow": "1.0.0"}


def raw(h: Harness, topic: str, payload: bytes | str) -> None:
    h.market.client.publish(topic, payload, qos=1).wait_for_publish(20)


def rejected(h: Harness, reason: str, **match: Any) -> Any:
    return wait_for(
        lambda: [s for s in h.events.statuses("dev-1", **match) if s.reason == reason],
        what=f"a status with reason {reason!r}",
    )


def signed(h: Harness, payload: dict[str, Any], ttl: float = 60, key: Any = None, now: float | None = None) -> str:
    return sign_envelope(payload, key or h.key, ttl, now=now).model_dump_json()


def desired_doc(h: Harness, name: str, version: str, seq: int | None = None, **spec: Any) -> dict[str, Any]:
    s = h.market.spec(name, version).model_dump(mode="json")
    s.update(spec)
    return {"target": "device:dev-1", "seq": seq if seq is not None else int(time.time() * 1000), "plugins": [s]}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed"),
        (b"", "malformed"),
        (b"\xff\xfe\x00binary", "malformed"),
        (b'{"payload": {}, "key_id": "x"}', "malformed"),
    ],
)
def test_malformed_desired_state(harness: Harness, payload: bytes, reason: str) -> None:
    agent = baseline(harness)
    raw(harness, topics.desired("dev-1"), payload)
    st = rejected(harness, reason, state="rejected")
    assert st[0].topic == topics.desired("dev-1")
    unchanged(harness, agent)


def test_wrong_schema(harness: Harness) -> None:
    agent = baseline(harness)
    doc = {"target": "device:dev-1", "seq": 1, "plugins": "all of them"}
    raw(harness, topics.desired("dev-1"), signed(harness, doc))
    rejected(harness, "wrong_schema")
    raw(harness, topics.cmd("dev-1"), signed(harness, {"target": "device:dev-1", "id": "c1", "op": "format-disk"}))
    reply = wait_for(lambda: harness.events.reply("c1"), what="reply to c1")
    assert not reply.ok and reply.error == "wrong_schema"
    unchanged(harness, agent)


def test_bad_signature_and_untrusted_key(harness: Harness) -> None:
    h = harness
    agent = baseline(h)
    h.publish("glow", "2.0.0")
    env = json.loads(signed(h, desired_doc(h, "glow", "2.0.0")))
    env["payload"]["seq"] += 1  # tampered after signing
    raw(h, topics.desired("dev-1"), json.dumps(env))
    rejected(h, "bad_signature")
    raw(h, topics.desired("dev-1"), signed(h, desired_doc(h, "glow", "2.0.0"), key=generate_key()))
    rejected(h, "untrusted_key")
    unchanged(h, agent)


def test_bundle_signed_by_an_untrusted_publisher(harness: Harness) -> None:
    h = harness
    agent = baseline(h)
    rogue = build_bundle("glow", "2.0.0", anim_wasm("rogue"), ANIM_MANIFEST, generate_key())
    h.catalog.add_bundle(rogue)  # the marketplace would serve it; the device must refuse it
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    rejected(h, "untrusted_key", state="failed", version="2.0.0")
    unchanged(h, agent)


def test_expired_and_replayed_commands(harness: Harness) -> None:
    h = harness
    agent = baseline(h)
    old = Command(target="device:dev-1", id="old", op="remove", name="glow").model_dump(mode="json")
    raw(h, topics.cmd("dev-1"), signed(h, old, ttl=60, now=time.time() - 3600))
    reply = wait_for(lambda: [r for r in h.events.replies if r.error == "expired"], what="expired reply")
    assert not reply[0].ok
    once = signed(h, Command(target="device:dev-1", id="once", op="identify").model_dump(mode="json"))
    raw(h, topics.cmd("dev-1"), once)
    wait_for(lambda: h.events.reply("once"), what="first reply")
    raw(h, topics.cmd("dev-1"), once)
    wait_for(lambda: [r for r in h.events.replies if r.error == "replayed"], what="replayed reply")
    # an older desired state (a replay of a superseded document) is refused as stale
    older = h.catalog.get_desired("device:dev-1")[1] - 1  # seqs count up per target from 1
    raw(h, topics.desired("dev-1"), signed(h, desired_doc(h, "glow", "1.0.0", seq=older)))
    rejected(h, "stale")
    unchanged(h, agent)


def test_hash_mismatch(harness: Harness) -> None:
    h = harness
    agent = baseline(h)
    h.publish("glow", "2.0.0")
    # the marketplace's copy of the wasm got corrupted: every chunk matches its own hash, the whole does not
    b = h.catalog.get_bundle("glow", "2.0.0")
    bad = bytearray(b.wasm)
    bad[-1] ^= 0xFF
    h.catalog._q("UPDATE blobs SET data=? WHERE sha256=?", (bytes(bad), b.meta.wasm_sha256))
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    rejected(h, "hash_mismatch", state="failed", version="2.0.0")
    unchanged(h, agent)
    assert h.store("dev-1").get_transfer(b.meta.wasm_sha256) is None  # nothing half-done left behind


def test_bad_chunks_are_refused_and_unservable_chunks_fail(harness: Harness) -> None:
    h = harness
    agent = baseline(h, stall_s=0.5, max_stalls=3)
    # a stray, malformed chunk message
    raw(h, topics.chunks("dev-1"), b"no header line")
    rejected(h, "malformed", topic=topics.chunks("dev-1"))
    # a bundle the marketplace cannot serve: signed and valid, but not in its catalog
    ghost = build_bundle("ghost", "1.0.0", anim_wasm("ghost"), ANIM_MANIFEST, h.key)
    doc = {
        "target": "device:dev-1",
        "seq": int(time.time() * 1000),
        "plugins": [
            h.market.spec("glow", "1.0.0").model_dump(mode="json"),
            {
                "name": "ghost",
                "version": "1.0.0",
                "meta": ghost.meta.model_dump(mode="json"),
                "manifest": ghost.manifest,
            },
        ],
    }
    DesiredState.model_validate(doc)
    raw(h, topics.desired("dev-1"), signed(h, doc, ttl=3600))
    # serve never answers it with an error (a catalog that lags must not fail devices): the device gives up by
    # its own stall timer
    rejected(h, "missing_chunk", state="failed", name="ghost")
    # a stray chunk of a bundle no transfer is fetching is ignored (wrong hashes within a transfer, retried and then
    # failing, are tested over MQTT in test_transfer_errors.py)
    h.publish("glow", "2.0.0")
    spec = h.market.spec("glow", "2.0.0")
    header = ChunkHeader(
        name="glow", version="2.0.0", wasm_sha256=spec.meta["wasm_sha256"], index=0, total=1, chunk_size=4096
    )
    raw(h, topics.chunks("dev-1"), pack_chunk(header, b"x"))  # not for a running transfer: ignored
    unchanged(h, agent)


def test_oversize(harness: Harness) -> None:
    h = harness
    agent = baseline(h, max_bundle_size=20_000)
    h.publish("glow", "2.0.0", anim_wasm("big", pad=30_000))
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    rejected(h, "oversize", state="failed", version="2.0.0")
    unchanged(h, agent)


def test_policy_violation(harness: Harness) -> None:
    h = harness
    agent = baseline(h, policy=DevicePolicy(gpio_write=[17]))
    manifest = {"edged": {"capabilities": {"led": True, "gpio": {"write": [5]}}}}
    h.publish("glow", "2.0.0", manifest=manifest)
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    st = rejected(h, "policy_violation", state="failed", version="2.0.0")
    assert "gpio.write pin 5" in st[0].detail
    unchanged(h, agent)


def test_downgrade_refused_unless_rollback_allowed(harness: Harness) -> None:
    h = harness
    agent = baseline(h)
    h.publish("glow", "0.9.0")
    h.market.set_desired("device:dev-1", "glow", "0.9.0")
    rejected(h, "downgrade", state="failed", version="0.9.0")
    unchanged(h, agent)
    # a downgrade the marketplace signs as allowed goes through
    h.market.set_desired("device:dev-1", "glow", "0.9.0", allow_downgrade=True)
    h.wait_healthy("dev-1", "glow", "0.9.0")
    # and `market rollback` goes back from 1.1.0 to the version before it, kept in the device's store
    h.publish("glow", "1.1.0")
    h.market.set_desired("device:dev-1", "glow", "1.1.0")
    h.wait_healthy("dev-1", "glow", "1.1.0")
    assert h.market.rollback("glow", "device:dev-1") == "1.0.0"
    h.wait_healthy("dev-1", "glow", "1.0.0")


def test_unknown_plugin_commands(harness: Harness) -> None:
    h = harness
    agent = baseline(h)
    for op in ("remove", "rollback", "restart"):
        cid = h.market.command("dev-1", op, name="nope")
        reply = wait_for(lambda cid=cid: h.events.reply(cid), what=f"{op} reply")
        assert not reply.ok and reply.error == "unknown_plugin"
    cid = h.market.command("dev-1", "rollback", name="glow")  # nothing to roll back to
    reply = wait_for(lambda: h.events.reply(cid), what="rollback reply")
    assert not reply.ok and reply.error == "nothing_to_rollback"
    unchanged(h, agent)


def test_failed_version_retried_for_a_new_document_not_for_a_replay(harness: Harness) -> None:
    h = harness
    agent = baseline(h)
    manifest = {"edged": {"kind": "animation", "capabilities": {"led": True, "gpio": {"write": [5]}}}}
    h.publish("glow", "2.0.0", manifest=manifest)
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    rejected(h, "policy_violation", state="failed", version="2.0.0")
    # the device is now allowed what 2.0.0 needs; the document it failed for is sent again (same seq, new nonce)
    allowed = DevicePolicy(gpio_write=[5])
    agent.policy = h.targets["dev-1"].policy = allowed
    doc = h.market.desired_state("device:dev-1").model_dump(mode="json")
    raw(h, topics.desired("dev-1"), signed(h, doc, ttl=3600))
    unchanged(h, agent)  # not retried: same document
    assert len(h.events.statuses("dev-1", state="failed", version="2.0.0")) == 1
    # nor after a restart, when the broker hands the retained document to the device again
    agent.stop()
    h.targets["dev-1"].close()
    agent = h.agent("dev-1", policy=allowed)
    unchanged(h, agent)
    assert len(h.events.statuses("dev-1", state="failed", version="2.0.0")) == 1
    # a fresh deploy of the same version is a newly signed document: tried once more, and it works now
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    h.wait_healthy("dev-1", "glow", "2.0.0")
