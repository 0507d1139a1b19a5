"""The marketplace: catalog, publishing, the rollout planner, and staged rollouts against real agents."""

from __future__ import annotations

from typing import Any

import pytest

from edged.deploy.messages import ChunkRequest
from edged.host.capabilities import DevicePolicy
from edged.market import CatalogError, Rollout, failure_rate, pause, pick_canaries, revert, should_halt
from tests.support.harness import Harness, anim_wasm, wait_for


def test_planner() -> None:
    devices = [f"d{i:02d}" for i in range(20)]
    c = pick_canaries(devices, 0.1, "glow@2")
    assert len(c) == 2 and set(c) <= set(devices)
    assert pick_canaries(devices, 0.1, "glow@2") == c  # deterministic
    assert pick_canaries(devices, 0.01, "x") and len(pick_canaries(devices, 0.01, "x")) == 1  # at least one
    assert pick_canaries(devices, 0.0) == [] and pick_canaries([], 0.5) == []
    assert pick_canaries(devices, 1.0) == devices
    outcomes = {"a": "healthy", "b": "failed", "c": "downloading", "d": "healthy"}
    assert failure_rate(outcomes) == pytest.approx(1 / 3)
    assert should_halt(outcomes, 0.2) and not should_halt(outcomes, 0.5)
    assert failure_rate({}) == 0.0


def test_canary_rollout_reaches_the_group(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    members = ("a", "b", "c", "d")
    for d in members:
        h.agent(d, groups=("lobby",))
    result = Rollout(h.market, "glow", "1.0.0", group="lobby", canary=0.25, halt_failure_rate=0.0, timeout_s=30).run()
    assert result.state == "done", result
    assert len(result.canaries) == 1
    assert result.outcomes == dict.fromkeys(members, "healthy")
    for d in members:
        h.wait_healthy(d, "glow", "1.0.0")
    assert h.catalog.rollouts()[-1].state == "done"


def test_canary_failure_halts_the_rollout(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0", anim_wasm("broken", trap_at=3))
    members = ("a", "b", "c", "d")
    for d in members:
        h.agent(d, groups=("lobby",))
    assert Rollout(h.market, "glow", "1.0.0", group="lobby", timeout_s=30).run().state == "done"
    result = Rollout(h.market, "glow", "2.0.0", group="lobby", canary=0.5, halt_failure_rate=0.25, timeout_s=30).run()
    assert result.state == "halted"
    assert len(result.canaries) == 2 and result.failure_rate == 1.0
    for d in members:  # canaries rolled back by themselves; the others never saw 2.0.0
        assert h.targets[d].running() == {"glow": "1.0.0"}
        tried = ("activate", "glow", "2.0.0") in h.targets[d].history
        assert tried == (d in result.canaries)
        want = "rolled_back" if tried else "healthy"
        wait_for(
            lambda d=d, want=want: (p := h.events.plugin(d, "glow")) and (p.version, p.state) == ("1.0.0", want),
            what=f"{d} to report glow 1.0.0 {want}",
        )
    entries, _ = h.catalog.get_desired("group:lobby")
    assert entries["glow"].version == "1.0.0"  # the group's desired state was never moved
    assert h.catalog.rollouts()[-1].state == "halted"


GPIO_MANIFEST = {"edged": {"kind": "animation", "capabilities": {"led": True, "gpio": {"write": [5]}}}}
ALLOW_GPIO = DevicePolicy(gpio_write=[5])


def _no_downgrade(h: Harness, devices: list[str]) -> None:
    for d in devices:  # every earlier message is handled once a later command is answered
        cid = h.market.command(d, "identify")
        wait_for(lambda cid=cid: h.events.reply(cid), what=f"{d} to answer identify")
        assert not h.events.statuses(d, reason="downgrade"), f"{d} was asked for a downgrade"


def test_offline_member_does_not_block_and_converges_later(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    for d in ("a", "b", "c"):
        h.agent(d, groups=("lobby",))
    h.agents["c"].stop()
    wait_for(lambda: (r := h.catalog.device("c")) and r.presence == "offline", what="c's offline presence")
    result = Rollout(h.market, "glow", "1.0.0", group="lobby", canary=0.5, halt_failure_rate=0.0, timeout_s=60).run()
    assert result.state == "done", result
    assert result.offline == ["c"]
    assert result.outcomes == {"a": "healthy", "b": "healthy", "c": "offline"}
    assert "c" not in result.canaries and result.canaries
    assert h.catalog.rollouts()[-1].state == "done"
    alone = Rollout(h.market, "glow", "1.0.0", device="c", timeout_s=60).run()
    assert (alone.state, alone.offline) == ("offline", ["c"])  # published, nothing verified yet
    h.targets["c"].close()
    h.agent("c", groups=("lobby",))  # back online: converges from the group's retained desired state
    h.wait_healthy("c", "glow", "1.0.0")


def test_halted_canaries_stay_healthy_on_their_version(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0", manifest=GPIO_MANIFEST)
    members = ["a", "b", "c", "d"]
    canaries = pick_canaries(members, 0.5, "glow@2.0.0")
    good = canaries[0]  # only this canary's policy allows 2.0.0; the other refuses it
    for d in members:
        h.agent(d, groups=("lobby",), policy=ALLOW_GPIO if d == good else None)
    assert Rollout(h.market, "glow", "1.0.0", group="lobby", timeout_s=30).run().state == "done"
    result = Rollout(h.market, "glow", "2.0.0", group="lobby", canary=0.5, halt_failure_rate=0.25, timeout_s=30).run()
    assert result.state == "halted", result
    # it halts as soon as the failure rate passes 0.25, maybe while the good canary is still installing
    assert result.canaries == canaries and result.failure_rate > 0.25
    assert result.outcomes[canaries[1]] == "failed" and result.pinned == [good]
    assert all(result.outcomes[d] == "canceled" for d in members if d not in canaries)  # never started
    h.wait_healthy(good, "glow", "2.0.0")
    assert h.catalog.get_desired("group:lobby")[0]["glow"].version == "1.0.0"
    assert h.catalog.get_desired(f"device:{good}")[0]["glow"].version == "2.0.0"  # kept where it runs
    _no_downgrade(h, members)
    for d in members:
        want = "2.0.0" if d == good else "1.0.0"
        assert h.targets[d].running() == {"glow": want}
        assert h.healthy(d, "glow", want) or d == canaries[1]


def test_halt_between_waves_without_canaries(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0", manifest=GPIO_MANIFEST)
    members = ["a", "b", "c", "d"]
    first = pick_canaries(members, 0.01, "glow@2.0.0")[0]  # the wave order is the canary ranking
    second = pick_canaries([m for m in members if m != first], 0.01, "glow@2.0.0")[0]
    for d in members:
        h.agent(d, groups=("lobby",), policy=None if d == second else ALLOW_GPIO)
    assert Rollout(h.market, "glow", "1.0.0", group="lobby", timeout_s=30).run().state == "done"
    result = Rollout(h.market, "glow", "2.0.0", group="lobby", halt_failure_rate=0.0, timeout_s=30).run()
    assert result.state == "halted", result
    assert result.waves[:2] == [[first], [second]] and len(result.waves) == 4
    assert result.outcomes[first] == "healthy" and result.outcomes[second] == "failed"
    assert result.pinned == [first]
    assert h.catalog.get_desired("group:lobby")[0]["glow"].version == "1.0.0"
    _no_downgrade(h, members)
    for d in members:  # the later waves never saw 2.0.0
        assert h.targets[d].running() == {"glow": "2.0.0" if d == first else "1.0.0"}
        assert (("activate", "glow", "2.0.0") in h.targets[d].history) == (d == first)
    assert h.catalog.rollouts()[-1].state == "halted"


def _halt_with_a_pin(h: Harness, members: list[str]) -> str:
    """Roll glow 1.0.0 out to ``members``, then halt a 2.0.0 rollout after its first wave: returns the device left
    pinned on 2.0.0 through its own desired state (the second wave's device refuses 2.0.0 by policy)."""
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0", manifest=GPIO_MANIFEST)
    first = pick_canaries(members, 0.01, "glow@2.0.0")[0]
    second = pick_canaries([m for m in members if m != first], 0.01, "glow@2.0.0")[0]
    for d in members:
        h.agent(d, groups=("lobby",), policy=None if d == second else ALLOW_GPIO)
    assert Rollout(h.market, "glow", "1.0.0", group="lobby", timeout_s=30).run().state == "done"
    halted = Rollout(h.market, "glow", "2.0.0", group="lobby", halt_failure_rate=0.0, timeout_s=30).run()
    assert (halted.state, halted.pinned) == ("halted", [first]), halted
    h.wait_healthy(first, "glow", "2.0.0")
    assert h.catalog.get_desired(f"device:{first}")[0]["glow"].version == "2.0.0"
    return first


def test_one_wave_group_rollout_after_a_halt_moves_the_pinned_device(harness: Harness) -> None:
    h = harness
    members = ["a", "b", "c"]
    pinned = _halt_with_a_pin(h, members)
    h.publish("glow", "3.0.0")
    # the Python API's defaults: no canaries, halt_failure_rate=1, so one wave that moves the group's document
    result = Rollout(h.market, "glow", "3.0.0", group="lobby", timeout_s=60).run()
    assert result.state == "done", result
    assert result.waves == [sorted(members)] and result.unpinned == [pinned]
    assert result.outcomes == dict.fromkeys(members, "healthy")
    for d in members:
        h.wait_healthy(d, "glow", "3.0.0")
    assert "glow" not in h.catalog.get_desired(f"device:{pinned}")[0]  # it follows its group again
    assert h.catalog.get_desired("group:lobby")[0]["glow"].version == "3.0.0"
    _no_downgrade(h, members)


def test_pinned_device_offline_during_the_next_rollout_converges_when_back(harness: Harness) -> None:
    h = harness
    members = ["a", "b", "c"]
    pinned = _halt_with_a_pin(h, members)
    h.agents[pinned].stop()
    wait_for(lambda: (r := h.catalog.device(pinned)) and r.presence == "offline", what="the pinned device offline")
    h.publish("glow", "3.0.0")
    result = Rollout(h.market, "glow", "3.0.0", group="lobby", timeout_s=60).run()
    assert result.state == "done", result
    assert result.offline == [pinned] and result.outcomes[pinned] == "offline" and result.unpinned == [pinned]
    # replaced, not dropped, while it is away: its retained documents may arrive in either order when it is back
    assert h.catalog.get_desired(f"device:{pinned}")[0]["glow"].version == "3.0.0"
    h.targets[pinned].close()
    h.agent(pinned, groups=("lobby",), policy=ALLOW_GPIO)
    h.wait_healthy(pinned, "glow", "3.0.0")
    assert ("deactivate", "glow", None) not in h.targets[pinned].history  # never dropped the plugin on the way
    assert not h.events.statuses(pinned, state="removed")
    _no_downgrade(h, members)
    # its entry now equals the group's: the next group-wide change ends it like any other pin
    h.market.rollback("glow", "group:lobby")
    assert "glow" not in h.catalog.get_desired(f"device:{pinned}")[0]
    wait_for(lambda: h.targets[pinned].running() == {"glow": "2.0.0"}, what="the device to follow the group rollback")


def test_a_rollout_that_times_out_keeps_healthy_devices_on_the_new_version(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0")
    members = ["a", "b"]
    first = pick_canaries(members, 0.01, "glow@2.0.0")[0]  # the first wave (one device: a quarter of two)
    stuck = next(d for d in members if d != first)
    for d in members:  # the stuck device keeps asking for chunks for far longer than the rollout waits
        h.agent(d, groups=("lobby",), max_stalls=10_000 if d == stuck else 10)
    assert Rollout(h.market, "glow", "1.0.0", group="lobby", timeout_s=30).run().state == "done"
    serve = h.market._serve_chunks

    def serve_all_but_stuck(device: str, req: ChunkRequest) -> list[Any]:
        return [] if device == stuck else serve(device, req)

    h.market._serve_chunks = serve_all_but_stuck  # type: ignore[method-assign]
    # a device with no outcome after timeout_s is timed_out, which counts as a failure: 1 of 2 > 0.4 halts
    result = Rollout(h.market, "glow", "2.0.0", group="lobby", halt_failure_rate=0.4, timeout_s=10).run()
    assert result.state == "halted", result
    assert result.waves == [[first], [stuck]]
    assert first in result.pinned and result.outcomes[stuck] == "timed_out"
    h.wait_healthy(first, "glow", "2.0.0")
    assert h.catalog.get_desired(f"device:{first}")[0]["glow"].version == "2.0.0"  # kept where it runs
    assert h.catalog.get_desired("group:lobby")[0]["glow"].version == "1.0.0"  # the group never moved
    assert h.catalog.rollouts()[-1].state == "halted"
    assert "glow" not in h.catalog.get_desired(f"device:{stuck}")[0]  # it follows its group again
    assert h.targets[stuck].running() == {"glow": "1.0.0"}
    _no_downgrade(h, [first])


def test_unpinning_an_offline_device_activates_its_stored_version_at_boot(harness: Harness) -> None:
    """Issue 13, point 5: unpin of an offline device never removes the version it keeps: at boot it activates
    the group's version from its store, with nothing removed in between and nothing downloaded."""
    h = harness
    members = ["a", "b", "c"]
    pinned = _halt_with_a_pin(h, members)
    rid = h.catalog.rollouts()[-1].id
    assert h.catalog.get_desired(f"device:{pinned}")[0]["glow"].rollout == rid  # the pin names its rollout
    h.agents[pinned].stop()
    wait_for(lambda: (r := h.catalog.device(pinned)) and r.presence == "offline", what="the pinned device offline")
    served = sum(d == pinned for d, _ in h.market.served)
    assert h.market.unpin(pinned, "glow") == "1.0.0"
    own = h.catalog.get_desired(f"device:{pinned}")[0]["glow"]
    assert (own.version, own.allow_downgrade, own.rollout) == ("1.0.0", True, None)  # follows the group's version
    h.targets[pinned].close()
    h.agent(pinned, groups=("lobby",), policy=ALLOW_GPIO)
    h.wait_healthy(pinned, "glow", "1.0.0")
    assert ("deactivate", "glow", None) not in h.targets[pinned].history
    assert not h.events.statuses(pinned, state="removed")
    assert sum(d == pinned for d, _ in h.market.served) == served  # activated from its store: no download
    _no_downgrade(h, members)  # (allowed here: the entry says so)
    # the next group-wide change ends the replaced entry like any other pin
    h.publish("glow", "3.0.0")
    assert Rollout(h.market, "glow", "3.0.0", group="lobby", timeout_s=60).run().state == "done"
    assert "glow" not in h.catalog.get_desired(f"device:{pinned}")[0]


def test_a_halt_with_on_abort_rollback_moves_started_devices_back(harness: Harness) -> None:
    """Abort criteria with ``on_abort="rollback"``: devices that took the new version go back to the group's,
    through an allowed downgrade; devices that had not started never get it; no pin is left."""
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0", manifest=GPIO_MANIFEST)
    members = ["a", "b", "c", "d"]
    first = pick_canaries(members, 0.01, "glow@2.0.0")[0]
    second = pick_canaries([m for m in members if m != first], 0.01, "glow@2.0.0")[0]
    for d in members:
        h.agent(d, groups=("lobby",), policy=None if d == second else ALLOW_GPIO)
    assert Rollout(h.market, "glow", "1.0.0", group="lobby", timeout_s=30).run().state == "done"
    result = Rollout(
        h.market, "glow", "2.0.0", group="lobby", halt_failure_rate=0.0, timeout_s=30, on_abort="rollback"
    ).run()
    assert result.state == "halted", result
    assert result.outcomes[first] == "rolled_back" and result.outcomes[second] == "failed"
    assert sorted(d for d, s in result.outcomes.items() if s == "canceled") == sorted(set(members) - {first, second})
    assert result.pinned == []
    wait_for(lambda: h.targets[first].running() == {"glow": "1.0.0"}, what="the first wave back on 1.0.0")
    own = h.catalog.get_desired(f"device:{first}")[0]["glow"]
    assert (own.version, own.allow_downgrade) == ("1.0.0", True)  # the group's version, allowed as a downgrade
    for d in members:
        assert h.targets[d].running() == {"glow": "1.0.0"}
        assert (("activate", "glow", "2.0.0") in h.targets[d].history) == (d == first)


def test_revert_a_finished_rollout_across_the_group(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0")
    members = ["a", "b", "c"]
    for d in members:
        h.agent(d, groups=("lobby",))
    assert Rollout(h.market, "glow", "1.0.0", group="lobby", timeout_s=30).run().state == "done"
    done = Rollout(h.market, "glow", "2.0.0", group="lobby", halt_failure_rate=0.5, timeout_s=30).run()
    assert done.state == "done"
    for d in members:
        h.wait_healthy(d, "glow", "2.0.0")
    with pytest.raises(CatalogError, match="no rollout 99"):
        revert(h.market, 99)
    assert revert(h.market, done.id) == "1.0.0"
    entry = h.catalog.get_desired("group:lobby")[0]["glow"]
    assert (entry.version, entry.allow_downgrade) == ("1.0.0", True)
    for d in members:
        wait_for(lambda d=d: h.targets[d].running() == {"glow": "1.0.0"}, what=f"{d} back on 1.0.0")
    assert h.catalog.rollout(done.id).state == "reverted"  # type: ignore[union-attr]
    with pytest.raises(CatalogError, match="reverted"):
        pause(h.catalog, done.id)
