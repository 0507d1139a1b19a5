"""End to end over a real mosquitto: publish → deploy → download → verify → install → activate → healthy."""

from __future__ import annotations

from edged.deploy import topics
from edged.market import Rollout
from tests.support.harness import Harness, anim_wasm, wait_for


def test_publish_deploy_download_verify_install_activate_healthy(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0", anim_wasm("glow-1", pad=20000))
    agent = h.agent("dev-1")
    result = Rollout(h.market, "glow", "1.0.0", device="dev-1", timeout_s=20).run()
    assert result.state == "done", result
    h.wait_healthy("dev-1", "glow", "1.0.0")
    # it went through every stage, with progress up to 100 %
    states = [s.state for s in h.events.statuses("dev-1", name="glow", version="1.0.0")]
    for stage in ("downloading", "verifying", "installing", "activating", "healthy"):
        assert stage in states
    pcts = [s.percent for s in h.events.statuses("dev-1", state="downloading")]
    assert pcts == sorted(pcts) and pcts[-1] == 100.0
    # the store holds it, active, and the target runs real frames
    assert h.store("dev-1").active("glow").version == "1.0.0"
    assert h.targets["dev-1"].health("glow").frames >= 10
    assert agent.errors == 0
    # the catalog tracked it
    rec = h.catalog.device("dev-1")
    assert rec is not None and rec.presence == "online"
    assert rec.reported["plugins"]["glow"]["version"] == "1.0.0"
    assert h.catalog.rollouts()[-1].state == "done"


def test_upgrade_then_repeat_is_harmless(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "1.1.0")
    h.agent("dev-1")
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    h.market.set_desired("device:dev-1", "glow", "1.1.0")
    h.wait_healthy("dev-1", "glow", "1.1.0")
    activations = list(h.targets["dev-1"].history)
    h.market.publish_desired("device:dev-1")  # the same document again
    h.market.command("dev-1", "identify")
    wait_for(lambda: h.events.replies, what="identify reply")
    assert h.targets["dev-1"].history == activations
    assert [iv.version for iv in h.store("dev-1").versions("glow")] == ["1.0.0", "1.1.0"]


def test_presence_online_then_offline(harness: Harness) -> None:
    h = harness
    agent = h.agent("dev-1", groups=("lobby",))
    wait_for(lambda: (d := h.catalog.device("dev-1")) and d.presence == "online", what="online")
    assert h.catalog.device("dev-1").groups == ["lobby"]
    agent.stop()
    wait_for(lambda: h.catalog.device("dev-1").presence == "offline", what="offline")
    assert topics.presence("dev-1") == "edged/v1/devices/dev-1/presence"
