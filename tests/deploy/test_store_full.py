"""The store on a small file system (issue 12, points 2 and 3): partial downloads are reclaimed, a full disk is
reported as ``disk_full`` with its numbers and never changes what runs; nothing is left ``activating``.

Each test runs the real agent over a real mosquitto with its store on a 2 MiB tmpfs (see smallfs.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.deploy.agent import DeviceAgent
from tests.deploy.smallfs import fill, small_disk
from tests.support.harness import Harness, anim_wasm, wait_for

MIB = 1024 * 1024


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """dev-1's store directory, on a 2 MiB file system."""
    where = tmp_path / "devices" / "dev-1"
    with small_disk(where, 2 * MIB, monkeypatch):
        yield where


def start(h: Harness, **kw: Any) -> DeviceAgent:
    kw.setdefault("chunk_size", 64 * 1024)
    return h.agent("dev-1", **kw)


def failed(h: Harness, version: str, reason: str = "disk_full") -> Any:
    return wait_for(
        lambda: h.events.statuses("dev-1", state="failed", version=version, reason=reason),
        what=f"glow@{version} to fail with {reason}",
    )[0]


def transfers(disk: Path) -> list[str]:
    return sorted(p.name for p in (disk / "transfers").iterdir())


def test_a_failed_big_install_leaves_room_for_one_that_fits(disk: Path, harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0", anim_wasm("big", pad=2_500_000))
    h.publish("glow", "1.1.0", anim_wasm("fits", pad=900_000))
    start(h)
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    st = failed(h, "1.0.0")
    assert "bytes free" in st.detail and "needed" in st.detail
    assert transfers(disk) == []
    h.market.set_desired("device:dev-1", "glow", "1.1.0")
    h.wait_healthy("dev-1", "glow", "1.1.0")


def test_chunk_writes_on_a_full_disk_fail_as_disk_full_and_are_reclaimed(disk: Path, harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0", anim_wasm("half", pad=1_200_000))
    h.publish("glow", "1.1.0", anim_wasm("fits", pad=700_000))
    start(h)
    h.market.limit = 1  # the first request's chunks arrive, then the marketplace goes quiet
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    wait_for(lambda: h.market.served, what="the first chunks")
    wait_for(
        lambda: len(list((disk / "transfers").glob("*/chunks/*"))) == len(h.market.served), what="them to be stored"
    )
    ballast = fill(disk)  # something else on the device takes the rest of the disk
    h.market.limit = None  # the next chunk write meets ENOSPC
    st = failed(h, "1.0.0")
    assert "hash_mismatch" not in st.detail and "bytes free" in st.detail
    assert not h.events.statuses("dev-1", reason="hash_mismatch")
    assert transfers(disk) == []  # reclaimed: the chunks stored before are gone too
    ballast.unlink()
    h.market.set_desired("device:dev-1", "glow", "1.1.0")
    h.wait_healthy("dev-1", "glow", "1.1.0")


def test_switching_versions_mid_download_reclaims_the_abandoned_one(disk: Path, harness: Harness) -> None:
    h = harness
    b12 = h.publish("glow", "1.2.0", anim_wasm("v12", pad=400_000))
    b13 = h.publish("glow", "1.3.0", anim_wasm("v13", pad=400_000))
    agent = start(h)
    h.market.drop = {6}  # every chunk but the last arrives: both downloads stay unfinished
    h.market.set_desired("device:dev-1", "glow", "1.2.0")
    wait_for(lambda: transfers(disk) == [b12.wasm_sha256], what="the 1.2.0 transfer")
    h.market.set_desired("device:dev-1", "glow", "1.3.0")
    wait_for(lambda: transfers(disk) == [b13.wasm_sha256], what="1.3.0 to replace the 1.2.0 transfer")
    h.market.set_desired("device:dev-1", "glow", "1.2.0")
    wait_for(lambda: transfers(disk) == [b12.wasm_sha256], what="1.2.0 to replace the 1.3.0 transfer")
    # across a restart: the device is off while its desired state moves on; what it downloaded is reclaimed
    agent.stop()
    h.targets["dev-1"].close()
    h.market.set_desired("device:dev-1", "glow", "1.3.0")
    h.market.drop = set()
    start(h)
    h.wait_healthy("dev-1", "glow", "1.3.0")
    assert transfers(disk) == []


def test_recovery_at_start_reclaims_transfers_no_document_names(disk: Path, harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    stray = h.publish("ember", "1.0.0")
    agent = start(h)
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    agent.stop()
    h.targets["dev-1"].close()
    # e.g. an install command's download, cut off by a power loss: no desired state names it
    h.store("dev-1").transfer(stray, 1024, -(-stray.wasm_size // 1024))
    assert transfers(disk) == [stray.wasm_sha256]
    agent = h.agent("dev-1", start=False)
    agent.start()
    assert transfers(disk) == []  # at start, before any message
    h.wait_healthy("dev-1", "glow", "1.0.0")


def test_a_full_disk_at_activation_changes_nothing_that_runs(disk: Path, harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0")
    agent = start(h, health_frames=5)
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    real_activate = agent.store.activate
    ballast: list[Path] = []

    def activate_on_a_full_disk(name: str, version: str) -> Any:
        ballast.append(fill(disk))  # the record write that would make 2.0.0 active meets ENOSPC
        return real_activate(name, version)

    agent.store.activate = activate_on_a_full_disk  # type: ignore[method-assign]
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    st = failed(h, "2.0.0")
    assert "bytes free" in st.detail and "1.0.0 stays" in st.detail
    wait_for(lambda: h.events.plugin("dev-1", "glow").reason == "disk_full", what="the reported failure")
    rep = h.events.plugin("dev-1", "glow")
    assert (rep.version, rep.state, rep.wanted) == ("1.0.0", "failed", "2.0.0")
    assert agent.installer.jobs == {} and agent.wait_idle()  # nothing left activating, with or without a deadline
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
    assert h.store("dev-1").active("glow").version == "1.0.0"  # type: ignore[union-attr]
    assert not h.events.statuses("dev-1", state="healthy", version="2.0.0")
    assert not h.events.statuses("dev-1", state="rolled_back")
    # room again: a new document installs 2.0.0 (already in the store) for real
    ballast[0].unlink()
    agent.store.activate = real_activate  # type: ignore[method-assign]
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    h.wait_healthy("dev-1", "glow", "2.0.0")


def test_a_full_disk_at_the_pending_check_write_changes_nothing(disk: Path, harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0")
    agent = start(h)
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    real_save = agent.state.save

    def save(required: bool = False) -> bool:
        if required:  # the durable note of the pending health check, written before the switch
            fill(disk)
        return real_save(required)

    agent.state.save = save  # type: ignore[method-assign]
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    failed(h, "2.0.0")
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"} and agent.installer.jobs == {}
    assert h.store("dev-1").active("glow").version == "1.0.0"  # type: ignore[union-attr]
    assert not h.events.statuses("dev-1", state="healthy", version="2.0.0")


def test_a_full_disk_when_the_transfer_starts_is_disk_full_not_malformed(disk: Path, harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    agent = start(h)
    real_transfer = agent.store.transfer

    def transfer(*a: Any) -> Any:
        fill(disk)  # the transfer's state file cannot be written
        return real_transfer(*a)

    agent.store.transfer = transfer  # type: ignore[method-assign]
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    failed(h, "1.0.0")
    assert not h.events.statuses("dev-1", reason="malformed")
    assert transfers(disk) == []
