"""The desired state's playlist: set by the marketplace, applied by the agent through the target's optional
``apply_playlist``, once the plugins it names are installed, and reported back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edged.deploy.target import EmulatedTarget, PluginHealth
from tests.support.harness import Harness, wait_for


def _reported_playlist(h: Harness, device: str, want: list[str] | None) -> None:
    def ok() -> bool:
        with h.events.lock:
            rep = h.events.reported.get(device)
        return rep is not None and rep.playlist == want

    wait_for(ok, what=f"{device} to report playlist {want}")


def test_playlist_applied_after_its_plugins_install_and_reported(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    h.publish("spark", "1.0.0")
    h.agent("dev-1", groups=("lobby",))
    target = h.targets["dev-1"]
    h.market.set_desired("group:lobby", "glow", "1.0.0")
    h.market.set_desired("group:lobby", "spark", "1.0.0")
    h.market.set_playlist("group:lobby", ["spark", "glow"])
    _reported_playlist(h, "dev-1", ["spark", "glow"])
    assert target.playlist == ["spark", "glow"]
    # applied once, after both plugins it names were activated
    assert [e for e in target.history if e[0] == "playlist"] == [("playlist", "spark,glow", None)]
    last_activate = max(i for i, e in enumerate(target.history) if e[0] == "activate")
    assert target.history.index(("playlist", "spark,glow", None)) > last_activate
    # the device's own desired state wins over its group's
    h.market.set_playlist("device:dev-1", ["glow"])
    _reported_playlist(h, "dev-1", ["glow"])
    # dropping it falls back to the group's; dropping that too means the device's own configuration (None)
    h.market.set_playlist("device:dev-1", None)
    _reported_playlist(h, "dev-1", ["spark", "glow"])
    h.market.set_playlist("group:lobby", None)
    _reported_playlist(h, "dev-1", None)
    assert target.playlists == [["spark", "glow"], ["glow"], ["spark", "glow"], None]
    assert target.running() == {"glow": "1.0.0", "spark": "1.0.0"}


class RefusingTarget(EmulatedTarget):
    def apply_playlist(self, items: list[str] | None) -> None:
        raise ValueError(f"no plugin named {items}")


class PlainTarget:
    """A target without apply_playlist (it is optional)."""

    def __init__(self) -> None:
        self.inner = EmulatedTarget(width=8, height=8, fps=200)

    def activate(self, name: str, version: str, wasm_path: Path, manifest: dict[str, Any]) -> None:
        self.inner.activate(name, version, wasm_path, manifest)

    def deactivate(self, name: str) -> None:
        self.inner.deactivate(name)

    def health(self, name: str) -> PluginHealth:
        return self.inner.health(name)

    def close(self) -> None:
        self.inner.close()


def test_refused_playlist_is_reported_and_optional_method_is_optional(harness: Harness) -> None:
    h = harness
    h.publish("glow", "1.0.0")
    for device, target in (("dev-r", RefusingTarget(width=8, height=8, fps=200)), ("dev-p", PlainTarget())):
        agent = h.agent(device, start=False)
        h.targets[device].close()
        agent.target = target
        h.targets[device] = target  # type: ignore[assignment]
        agent.start()
        wait_for(agent.connected.is_set, what=f"{device} to connect")
        h.market.set_desired(f"device:{device}", "glow", "1.0.0")
        h.market.set_playlist(f"device:{device}", ["glow"])
        h.wait_healthy_remote(device, "glow", "1.0.0")
    st = wait_for(lambda: h.events.statuses("dev-r", state="failed", reason="playlist"), what="a playlist failure")
    assert "no plugin named ['glow']" in st[0].detail
    for device in ("dev-r", "dev-p"):  # nothing applied, nothing else disturbed
        cid = h.market.command(device, "identify")
        reply = wait_for(lambda cid=cid: h.events.reply(cid), what="identify")
        assert reply.result["plugins"] == {"glow": "1.0.0"}
        assert h.events.reported[device].playlist is None
