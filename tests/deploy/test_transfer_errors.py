"""Chunk errors over a real mosquitto: a chunk with a wrong hash is asked for again, and the install fails with a
clear reason when it stays bad or never arrives; the running version keeps running."""

from __future__ import annotations

from edged.deploy.messages import Status
from tests.support.harness import Harness, anim_wasm, wait_for


def _start(h: Harness, **kw: float) -> int:
    """dev-1 runs glow@1.0.0; glow@2.0.0 (several 4 KB chunks) is published. Returns its chunk count."""
    h.publish("glow", "1.0.0")
    meta = h.publish("glow", "2.0.0", anim_wasm("glow-2", pad=20_000))
    h.agent("dev-1", **kw)
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    return -(-meta.wasm_size // 4096)


def _failed(h: Harness, reason: str) -> Status:
    found = wait_for(
        lambda: [s for s in h.events.statuses("dev-1", state="failed", version="2.0.0") if s.reason == reason],
        what=f"glow@2.0.0 to fail with {reason}",
    )
    return found[0]


def _still_on_1(h: Harness) -> None:
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
    assert h.store("dev-1").active("glow").version == "1.0.0"
    p = wait_for(lambda: (p := h.events.plugin("dev-1", "glow")) and p.state == "failed" and p, what="reported")
    assert (p.version, p.wanted) == ("1.0.0", "2.0.0")


def test_chunk_with_wrong_hash_is_fetched_again(harness: Harness) -> None:
    h = harness
    total = _start(h)
    assert total > 3
    h.market.corrupt = {2: 2}  # bad twice, then good
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    h.wait_healthy("dev-1", "glow", "2.0.0")
    assert h.market.corrupted == [2, 2]
    retried = h.events.statuses("dev-1", state="downloading", reason="hash_mismatch")
    assert len(retried) == 2
    wasm = h.store("dev-1").wasm_path(h.store("dev-1").active("glow")).read_bytes()
    assert wasm == h.catalog.get_bundle("glow", "2.0.0").wasm


def test_chunk_that_stays_bad_fails_the_install(harness: Harness) -> None:
    h = harness
    _start(h, chunk_retries=2)
    h.market.corrupt = {1: 1000}
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    st = _failed(h, "hash_mismatch")
    assert "chunk 1 still bad after 2 retries" in st.detail
    assert h.market.corrupted == [1, 1, 1]
    _still_on_1(h)


def test_chunk_that_never_arrives_fails_after_bounded_requests(harness: Harness) -> None:
    h = harness
    _start(h, stall_s=0.3, max_stalls=3)
    h.market.drop = {3}
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    st = _failed(h, "missing_chunk")
    assert "chunks [3] never arrived: asked 3 times" in st.detail
    _still_on_1(h)
    # the chunks it has stay in the store: a fresh deploy (a newly signed document) fetches only chunk 3
    served_before = len(h.market.served)
    h.market.drop = set()
    h.market.set_desired("device:dev-1", "glow", "2.0.0")
    h.wait_healthy("dev-1", "glow", "2.0.0")
    assert {i for _, i in h.market.served[served_before:]} == {3}
