"""Commands cannot be replayed by flooding the nonce cache (review of issue 12, finding 1).

The attack: a compromised broker captures a device's rollback command, then sends the device 4,100 validly signed
commands meant for OTHER devices (captured fleet traffic). Before the fix the agent recorded every nonce before it
checked the target, the 4,096-entry cache dropped the rollback's nonce, and the replayed rollback took the device
back once more (3.0.0 -> 2.0.0 -> 1.0.0). Now only commands for this device are remembered, a full cache refuses
instead of forgetting, commands valid for more than 10 minutes are refused, and a rollback names the version it
rolls back from, so it can run only once.
"""

from __future__ import annotations

import json
import secrets

import pytest

import edged.deploy.agent.commands as agent_mod
from edged.deploy import topics
from edged.deploy.messages import Command
from edged.deploy.trust import sign_envelope
from tests.deploy.smallfs import fill, small_disk
from tests.deploy.test_target_binding import Capture, replay
from tests.support.harness import Harness, wait_for


def _three_versions(h: Harness) -> None:
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        h.publish("glow", v)
    h.agent("dev-1")
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        h.market.set_desired("device:dev-1", "glow", v)
        h.wait_healthy("dev-1", "glow", v)


def _signed(h: Harness, target: str, op: str = "identify", ttl: float = 300.0, **kw: object) -> bytes:
    cmd = Command(target=target, id=secrets.token_hex(8), op=op, **kw)  # type: ignore[arg-type]
    return sign_envelope(cmd.model_dump(mode="json"), h.key, ttl).model_dump_json().encode()


def test_foreign_commands_cannot_evict_a_nonce_and_a_rollback_runs_once(harness: Harness) -> None:
    h = harness
    _three_versions(h)
    agent = h.agents["dev-1"]
    cap = Capture(h, topics.cmd("dev-1"))
    cid = h.market.command("dev-1", "rollback", "glow")
    rollback = cap.next(topics.cmd("dev-1"))
    reply = wait_for(lambda: h.events.reply(cid), what="the rollback's reply")
    assert reply.ok and reply.result == {"version": "2.0.0"}
    assert h.targets["dev-1"].running()["glow"] == "2.0.0"

    # 4,100 commands signed for other devices (more than the 4,096 nonces the cache holds), paced for the inbox
    n = 4100
    base = agent.inbox_stats().accepted
    foreign = [_signed(h, f"device:pi-{i}") for i in range(n)]
    for start in range(0, n, 400):
        for payload in foreign[start : start + 400]:
            h.market.client.publish(topics.cmd("dev-1"), payload, qos=1)
        wait_for(
            lambda s=start: agent.inbox_stats().accepted >= base + min(n, s + 400) and agent.inbox.empty(), timeout=120
        )
    assert agent.inbox_stats().dropped == 0
    # none of them was remembered: the nonce file holds the rollback's nonce only
    lines = (h.tmp / "devices" / "dev-1" / "agent-nonces.jsonl").read_text().splitlines()
    assert [json.loads(line)[0] for line in lines] == [json.loads(rollback)["nonce"]]

    replay(h, topics.cmd("dev-1"), rollback)
    wait_for(lambda: h.events.statuses("dev-1", state="rejected", reason="replayed"), what="the replay refused")
    assert h.targets["dev-1"].running()["glow"] == "2.0.0"
    assert h.store("dev-1").record("glow").active == "2.0.0"  # type: ignore[union-attr]
    cap.stop()


def test_a_rollback_from_a_version_that_is_not_active_is_refused(harness: Harness) -> None:
    # the same rollback sent twice (a retry, or a replay whose nonce was lost) must not go back a second step
    h = harness
    _three_versions(h)
    first = h.market.command("dev-1", "rollback", "glow", from_version="3.0.0")
    assert wait_for(lambda: h.events.reply(first)).ok
    again = h.market.command("dev-1", "rollback", "glow", from_version="3.0.0")
    r = wait_for(lambda: h.events.reply(again), what="the second rollback's reply")
    assert not r.ok and r.error == "not_active" and "runs 2.0.0" in r.detail
    missing = h.market.command("dev-1", "rollback", "glow", from_version=None)
    # the marketplace filled in what the device reported (2.0.0): that one is executed
    assert wait_for(lambda: h.events.reply(missing)).result == {"version": "1.0.0"}
    # a rollback command without from_version (an older marketplace) is refused
    raw = _signed(h, "device:dev-1", op="rollback", name="glow")
    replay(h, topics.cmd("dev-1"), raw)
    cid = json.loads(raw)["payload"]["id"]
    r = wait_for(lambda: h.events.reply(cid), what="the reply to a rollback without from_version")
    assert not r.ok and r.error == "wrong_schema" and "from_version" in r.detail
    assert h.targets["dev-1"].running()["glow"] == "1.0.0"


def test_a_command_valid_for_longer_than_ten_minutes_is_refused(harness: Harness) -> None:
    h = harness
    h.agent("dev-1")
    raw = _signed(h, "device:dev-1", ttl=agent_mod.MAX_COMMAND_VALIDITY_S + 60)
    replay(h, topics.cmd("dev-1"), raw)
    cid = json.loads(raw)["payload"]["id"]
    r = wait_for(lambda: h.events.reply(cid), what="the reply")
    assert not r.ok and r.error == "validity_too_long" and "600 s" in r.detail
    assert not (h.tmp / "devices" / "dev-1" / "agent-nonces.jsonl").exists()  # not remembered
    ok = _signed(h, "device:dev-1", ttl=agent_mod.MAX_COMMAND_VALIDITY_S)
    replay(h, topics.cmd("dev-1"), ok)
    assert wait_for(lambda: h.events.reply(json.loads(ok)["payload"]["id"])).ok


def test_a_full_nonce_cache_refuses_new_commands(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    monkeypatch.setattr(agent_mod, "NONCE_CAPACITY", 3)
    h.agent("dev-1")
    ids = []
    for _ in range(4):
        raw = _signed(h, "device:dev-1")
        ids.append(json.loads(raw)["payload"]["id"])
        replay(h, topics.cmd("dev-1"), raw)
    replies = [wait_for(lambda i=i: h.events.reply(i), what="a reply") for i in ids]
    assert [r.ok for r in replies] == [True, True, True, False]
    assert replies[3].error == "busy" and "frees in" in replies[3].detail


def test_a_full_disk_at_the_nonce_write_is_disk_full(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    where = h.tmp / "devices" / "dev-1"
    with small_disk(where, 1024 * 1024, monkeypatch):
        h.agent("dev-1")
        wait_for(lambda: h.events.plugin("dev-1", "x") is None and "dev-1" in h.events.reported)
        ballast = fill(where)
        raw = _signed(h, "device:dev-1")
        replay(h, topics.cmd("dev-1"), raw)
        r = wait_for(lambda: h.events.reply(json.loads(raw)["payload"]["id"]), what="the reply")
        assert not r.ok and r.error == "disk_full" and "not executed" in r.detail and "bytes free" in r.detail
        ballast.unlink()
        replay(h, topics.cmd("dev-1"), raw)  # not remembered, so the same command runs once there is room
        wait_for(lambda: [x for x in h.events.replies if x.id == json.loads(raw)["payload"]["id"] and x.ok])
        h.agents.pop("dev-1").stop()  # before the small disk goes away
        h.targets.pop("dev-1").close()
