"""One bad entry of a signed document is refused alone (issue 12, point 9); names and versions are full matches; a
forged bundle meta is refused before any chunk is asked for (point 11)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from edged.deploy import topics
from edged.deploy.bundle import NAME_RE, SemVer
from edged.deploy.messages import Command, DesiredState, check_plugin_name
from edged.deploy.store import PluginStore
from edged.deploy.trust import sign_envelope
from edged.errors import StoreError
from edged.market.catalog import DesiredEntry
from tests.deploy.test_target_binding import Capture
from tests.support.harness import Harness, wait_for


def send(h: Harness, doc: dict[str, Any], device: str = "dev-1") -> None:
    env = sign_envelope(doc, h.key, 3600).model_dump_json()
    h.market.client.publish(topics.desired(device), env, qos=1).wait_for_publish(20)


def spec(h: Harness, plugin: str, release: str, **change: Any) -> dict[str, Any]:
    s = h.market.spec(plugin, release).model_dump(mode="json")
    s.update(change)
    return s


@pytest.mark.parametrize("bad", ["glow\n", "glow\r\n", "Glow", "../glow", "", "g" * 65, 7, None])
def test_names_are_full_matches(bad: Any, tmp_path) -> None:
    with pytest.raises(ValueError):
        check_plugin_name(bad)
    if isinstance(bad, str):
        assert not NAME_RE.fullmatch(bad)
        with pytest.raises(StoreError):
            PluginStore(tmp_path).record(bad)
    for version in ("1.0.0\n", "1.0.0\r\n", "1.0.0 ", "01.0.0"):
        with pytest.raises(ValueError):
            SemVer(version)


def test_playlist_and_command_names_are_validated() -> None:
    with pytest.raises(ValueError, match="not a plugin name"):
        DesiredState(target="device:d", seq=1, playlist=["glow", "glow\n"])
    with pytest.raises(ValueError, match="not a plugin name"):
        Command(target="device:d", id="c", op="remove", name="glow\n")
    assert DesiredState(target="group:g", seq=1, playlist=["glow"]).playlist == ["glow"]


def test_a_bad_entry_is_refused_and_the_rest_applies(harness: Harness) -> None:
    h = harness
    for name in ("glow", "spark", "ember"):
        h.publish(name, "1.0.0")
    agent = h.agent("dev-1")
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    doc = {
        "target": "device:dev-1",
        "seq": int(time.time() * 1000),
        "plugins": [
            spec(h, "glow", "1.0.0", version="1.0.0\n"),  # a version with a trailing newline: glow must keep running
            spec(h, "glow", "1.0.0", name="glow\n"),  # would be a second plugin beside glow
            spec(h, "spark", "1.0.0"),
            spec(h, "glow", "1.0.0", name="Not A Name"),
            {"name": "broken", "version": "1.0.0", "meta": "not an object", "manifest": {}},
            spec(h, "ember", "1.0.0"),
        ],
        "playlist": ["spark", "glow\n", "ember"],
    }
    # serve hands a device only the wasm its desired state in the catalog names (issue 12, point 6): record what
    # this hand-signed document asks for, as the marketplace does when it signs one
    wanted = {"spark": DesiredEntry(version="1.0.0"), "ember": DesiredEntry(version="1.0.0")}
    h.catalog.update_desired("device:dev-1", lambda e: {**e, **wanted})
    send(h, doc)
    h.wait_healthy("dev-1", "spark", "1.0.0")
    h.wait_healthy("dev-1", "ember", "1.0.0")
    kinds = ("invalid_name", "wrong_schema")
    refused = wait_for(
        lambda: (
            [s for s in h.events.statuses("dev-1", state="rejected") if s.reason in kinds]
            if len(h.events.statuses("dev-1", state="rejected")) >= 5
            else None
        ),
        what="five refusals",
    )
    details = " | ".join(s.detail for s in refused)
    for fragment in ("plugins[0]", "plugins[1]", "plugins[3]", "plugins[4]", "playlist[1]"):
        assert fragment in details, details
    assert not h.events.statuses("dev-1", reason="internal_error")
    assert h.targets["dev-1"].running() == {"glow": "1.0.0", "spark": "1.0.0", "ember": "1.0.0"}
    assert sorted(h.store("dev-1").names()) == ["ember", "glow", "spark"]
    wait_for(lambda: h.targets["dev-1"].playlist == ["spark", "ember"], what="the valid rest of the playlist")
    assert agent.alive and agent.errors >= 5


def test_a_forged_meta_causes_no_chunk_request(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("glow", "2.0.0")
    h.agent("dev-1")
    h.market.set_desired("device:dev-1", "glow", "1.0.0")
    h.wait_healthy("dev-1", "glow", "1.0.0")
    served = len(h.market.served)
    cap = Capture(h, topics.chunk_request("dev-1"), topics.status("dev-1"))
    try:
        good = spec(h, "glow", "2.0.0")
        forged_size = dict(good, meta={**good["meta"], "wasm_size": good["meta"]["wasm_size"] + 1})
        forged_hash = dict(good, meta={**good["meta"], "wasm_sha256": "0" * 64})
        unsigned = dict(good, meta={**good["meta"], "signature": ""})
        other_manifest = dict(good, manifest={**good["manifest"], "config": {"evil": "1"}})
        cases = [(forged_size, "bad_signature"), (forged_hash, "bad_signature"), (unsigned, "bad_signature")]
        cases.append((other_manifest, "manifest_mismatch"))
        for n, (entry, _reason) in enumerate(cases):
            send(h, {"target": "device:dev-1", "seq": int(time.time() * 1000) + n, "plugins": [entry]})
            wait_for(
                lambda n=n: (
                    len(
                        [
                            p
                            for t, p in list(cap.got.queue)
                            if t == topics.status("dev-1") and json.loads(p).get("state") == "failed"
                        ]
                    )
                    > n
                ),
                what=f"the refusal of case {n}",
            )
        reasons = [
            json.loads(p)["reason"]
            for t, p in list(cap.got.queue)
            if t == topics.status("dev-1") and json.loads(p).get("state") == "failed"
        ]
        assert reasons == [r for _, r in cases]
        requests = [t for t, _ in list(cap.got.queue) if t == topics.chunk_request("dev-1")]
    finally:
        cap.stop()
    assert requests == []  # the status came after anything the agent published before it: nothing was asked for
    assert len(h.market.served) == served
    assert h.targets["dev-1"].running() == {"glow": "1.0.0"}
