"""Health checks with automatic rollback, commands, offline devices converging, and group deploys."""

from __future__ import annotations

from edged.deploy.store import PluginStore
from tests.support.harness import Harness, anim_wasm, wait_for


def test_failed_health_check_rolls_back_by_itself(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0", anim_wasm("glow-2", trap_at=5))  # runs 5 frames, then traps on every frame
    agent = h.agent("dev-1", health_frames=50)
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    st = wait_for(lambda: h.events.statuses("dev-1", state="rolled_back", version="2.0.0"), what="rollback status")
    assert st[0].reason == "health_check" and "strike" in st[0].detail
    wait_for(lambda: (p := h.events.plugin("dev-1", "glow")) and p.state == "rolled_back", what="reported rollback")
    p = h.events.plugin("dev-1", "glow")
    assert (p.version, p.wanted, p.reason) == ("1.0.0", "2.0.0", "health_check")
    assert h.store("dev-1").active("glow").version == "1.0.0"
    wait_for(lambda: h.targets["dev-1"].running() == {"glow": "1.0.0"}, what="1.0.0 running again")
    assert ("activate", "glow", "2.0.0") in h.targets["dev-1"].history
    assert agent._worker is not None and agent._worker.is_alive()


def test_first_install_failing_health_check_leaves_nothing(harness: Harness) -> None:
    h = harness
    h.publish("crash", "1.0.0", anim_wasm("crash", trap_at=0))
    h.agent("dev-1")
    h.market.set_desired("device:dev-1", "crash", "1.0.0")
    st = wait_for(lambda: h.events.statuses("dev-1", state="failed", name="crash"), what="failure status")
    assert st[0].reason == "health_check"
    assert h.store("dev-1").installed() == {}
    assert h.targets["dev-1"].running() == {}


def test_commands_install_restart_rollback_remove(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "1.1.0")
    h.agent("dev-1")
    cid = h.market.command("dev-1", "install", plugin=h.market.spec("glow", "1.0.0"))
    assert wait_for(lambda: h.events.reply(cid), what="install reply").ok
    cid = h.market.command("dev-1", "install", plugin=h.market.spec("glow", "1.1.0"))
    assert wait_for(lambda: h.events.reply(cid), what="install reply").result["version"] == "1.1.0"
    n = len(h.targets["dev-1"].history)
    cid = h.market.command("dev-1", "restart", name="glow")
    assert wait_for(lambda: h.events.reply(cid), what="restart reply").ok
    assert h.targets["dev-1"].history[n:] == [("activate", "glow", "1.1.0")]
    cid = h.market.command("dev-1", "rollback", name="glow")
    assert wait_for(lambda: h.events.reply(cid), what="rollback reply").result == {"version": "1.0.0"}
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
    cid = h.market.command("dev-1", "remove", name="glow")
    assert wait_for(lambda: h.events.reply(cid), what="remove reply").ok
    assert h.targets["dev-1"].running() == {} and h.store("dev-1").installed() == {}


def test_offline_device_converges_when_it_comes_back(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "1.1.0")
    agent = h.agent("dev-1")
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    agent.stop()
    h.targets["dev-1"].close()
    wait_for(lambda: h.catalog.device("dev-1").presence == "offline", what="offline")
    h.market.set_desired("device:dev-1", "glow", "1.1.0")  # while it is away
    # it comes back (a new process: new agent, new target, same store)
    h.agent("dev-1")
    h.wait_healthy("dev-1", "glow", "1.1.0")
    assert PluginStore(h.tmp / "devices" / "dev-1").active("glow").version == "1.1.0"


def test_group_deploy_reaches_every_member_and_device_state_wins(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("spark", "1.0.0")
    h.publish("spark", "2.0.0")
    for d in ("a", "b", "c"):
        h.agent(d, groups=("lobby",))
    h.agent("d", groups=("garage",))
    h.market.set_desired("group:lobby", "glow", "1.0.0")
    h.market.set_desired("group:lobby", "spark", "1.0.0")
    h.market.set_desired("device:b", "spark", "2.0.0")  # a device's own desired state wins over its group's
    for d in ("a", "b", "c"):
        h.wait_healthy(d, "glow", "1.0.0")
    h.wait_healthy("a", "spark", "1.0.0")
    h.wait_healthy("b", "spark", "2.0.0")
    assert h.targets["d"].running() == {}
    # the group drops a plugin: members remove it
    h.market.set_desired("group:lobby", "spark", None)
    wait_for(lambda: "spark" not in h.targets["a"].running(), what="spark removed from a")
    assert h.targets["b"].running()["spark"] == "2.0.0"
