"""The marketplace: catalog, publishing, the rollout planner, and staged rollouts against real agents."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.deploy.trust import generate_key
from edged.errors import BundleRejected
from edged.market import CatalogError, Rollout, SQLiteCatalog, failure_rate, pick_canaries, publish, should_halt
from edged.market.catalog import DesiredEntry
from tests.deploy.harness import ANIM_MANIFEST, Harness, anim_wasm, wait_for


def test_catalog_publish_list_and_refusals(tmp_path: Path) -> None:
    key = generate_key()
    cat = SQLiteCatalog(tmp_path / "c.db")
    publish(cat, anim_wasm("a1"), ANIM_MANIFEST, "glow", "1.0.0", key)
    publish(cat, anim_wasm("a2"), ANIM_MANIFEST, "glow", "1.10.0", key)
    publish(cat, anim_wasm("a3"), ANIM_MANIFEST, "glow", "1.9.0", key)
    assert [m.version for m in cat.bundles("glow")] == ["1.0.0", "1.9.0", "1.10.0"]  # semver order
    with pytest.raises(CatalogError, match="already published"):
        publish(cat, anim_wasm("other"), ANIM_MANIFEST, "glow", "1.0.0", key)
    with pytest.raises(BundleRejected) as exc:
        publish(cat, b"\0asm garbage", ANIM_MANIFEST, "bad", "1.0.0", key)
    assert exc.value.reason == "invalid_wasm"
    with pytest.raises(BundleRejected) as exc:
        publish(cat, anim_wasm("x"), {"edged": {"capabilities": {"lasers": True}}}, "bad", "1.0.0", key)
    assert exc.value.reason == "invalid_manifest"
    assert [m.name for m in cat.bundles()] == ["glow"] * 3  # nothing half-published
    # the catalog survives reopening (another process: serve and the CLI share it)
    cat.set_desired("group:lobby", {"glow": DesiredEntry(version="1.9.0")}, 7)
    cat.close()
    again = SQLiteCatalog(tmp_path / "c.db")
    assert again.get_desired("group:lobby") == ({"glow": DesiredEntry(version="1.9.0")}, 7)
    assert again.get_bundle("glow", "1.10.0").wasm == anim_wasm("a2")
    again.close()


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
