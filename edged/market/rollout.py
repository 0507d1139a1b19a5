"""Publishing bundles and running staged rollouts: a canary fraction first, halted past a failure rate.

The planner (:func:`pick_canaries`, :func:`failure_rate`, :func:`should_halt`) is pure; :class:`Rollout` drives it
over a connected :class:`~edged.market.service.Marketplace`, following each device's status and reported state.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..deploy.bundle import BundleMeta, build_bundle
from ..deploy.messages import Presence, Reported, Status
from ..deploy.trust import TrustStore
from .catalog import Catalog
from .service import Marketplace

log = logging.getLogger("edged.market.rollout")

DONE, FAILED, OFFLINE = "healthy", "failed", "offline"
#: states a stage does not wait past (an offline device converges later from the retained desired state)
_SETTLED = (DONE, FAILED, OFFLINE)
#: the fraction of a group per wave when a halt threshold is set and no wave size is given
DEFAULT_WAVE = 0.25
#: how long a single-device rollout waits for a device the catalog has never heard from before counting it offline
UNKNOWN_GRACE_S = 5.0


def publish(
    catalog: Catalog,
    wasm: bytes,
    manifest: dict[str, Any],
    name: str,
    version: str,
    key: Ed25519PrivateKey,
    rollback: bool = False,
) -> BundleMeta:
    """Validate and sign ``wasm`` + ``manifest`` as a bundle and store it.

    Raises ``BundleRejected`` for a bad plugin or manifest and ``CatalogError`` for a version already published.
    """
    bundle = build_bundle(name, version, wasm, manifest, key, rollback=rollback)
    trust = TrustStore()
    trust.add(key, ["publisher"])
    bundle.verify(trust)  # what a device will check first, minus its policy
    catalog.add_bundle(bundle)
    log.info("published", extra={"bundle": bundle.meta.ref, "size": len(wasm)})
    return bundle.meta


def pick_canaries(devices: Sequence[str], fraction: float, salt: str = "") -> list[str]:
    """A deterministic, spread-out ``fraction`` of ``devices`` (at least one when ``fraction > 0``)."""
    if fraction <= 0 or not devices:
        return []
    n = min(len(devices), max(1, math.ceil(fraction * len(devices))))
    ranked = sorted(devices, key=lambda d: _rank(d, salt))
    return sorted(ranked[:n])


def failure_rate(outcomes: dict[str, str]) -> float:
    """Failed devices over finished devices (0.0 when none finished)."""
    finished = [s for s in outcomes.values() if s in (DONE, FAILED)]
    return sum(s == FAILED for s in finished) / len(finished) if finished else 0.0


def should_halt(outcomes: dict[str, str], halt_failure_rate: float) -> bool:
    """Halt when the failure rate so far goes past the threshold."""
    return failure_rate(outcomes) > halt_failure_rate


@dataclass
class DeviceProgress:
    state: str = "pending"
    percent: float = 0.0
    reason: str | None = None


@dataclass
class RolloutResult:
    """How a rollout went. ``state`` is ``done``, ``failed``, ``halted``, ``timeout`` or ``offline`` (every target
    device offline: the desired state is published, nothing is verified yet).

    ``outcomes`` maps every member to ``healthy``, ``failed``, ``offline`` (not reached: it converges later from
    the retained desired state) or the state it was still in; ``pinned`` lists devices left on the new version
    through their own desired state after a halt or timeout (they run it, or were still installing it);
    ``unpinned`` lists members whose own entry for the plugin (a pin from an earlier halt or device deploy) this
    rollout ended when it moved the group (see :meth:`Marketplace.end_pins`). A device the catalog has never heard
    from counts as ``offline``; a group with no known member ends ``offline`` too.
    """

    state: str
    outcomes: dict[str, str] = field(default_factory=dict)
    canaries: list[str] = field(default_factory=list)
    failure_rate: float = 0.0
    offline: list[str] = field(default_factory=list)
    waves: list[list[str]] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)


class Rollout:
    """Deploy ``name@version`` to one device or a group, in stages.

    A group rollout moves its online members first through their own desired state, stage by stage: the canaries
    (``canary`` of the online members), then waves of ``wave`` of the group each (by default a quarter when a halt
    threshold below 1 is set, else everyone at once). After each stage, and as soon as it passes the threshold
    during one, it halts if the failure rate over every finished device passes ``halt_failure_rate``. When every
    stage is through, the group's desired state moves to the new version (so offline members converge when they come
    back) and every member's own entry for the plugin is ended (:meth:`Marketplace.end_pins`: the overrides of
    this rollout and pins left by earlier ones; the single-wave path does the same). On a halt or timeout the
    group's desired state is never moved; devices that failed (and rolled back by themselves) follow their group
    again, and the others keep the new version through their own desired state (``pinned``), so no device is asked
    for a downgrade it would refuse. Those pins end at the next group-wide change of the plugin (a rollout that
    moves the group, or a group rollback) or with :meth:`Marketplace.unpin`.

    ``on_progress(device, DeviceProgress)`` is called on every change (for progress bars).
    """

    def __init__(
        self,
        market: Marketplace,
        name: str,
        version: str,
        *,
        device: str | None = None,
        group: str | None = None,
        canary: float = 0.0,
        halt_failure_rate: float = 1.0,
        wave: float | None = None,
        timeout_s: float = 300.0,
        on_progress: Callable[[str, DeviceProgress], None] | None = None,
    ) -> None:
        if (device is None) == (group is None):
            raise ValueError("deploy to exactly one of a device or a group")
        if not 0 <= canary <= 1 or not 0 <= halt_failure_rate <= 1:
            raise ValueError("canary and halt failure rate are fractions between 0 and 1")
        if wave is not None and not 0 < wave <= 1:
            raise ValueError("a wave is a fraction of the group above 0 and at most 1")
        self.market = market
        self.name, self.version = name, version
        self.device, self.group = device, group
        self.canary, self.halt = canary, halt_failure_rate
        self.wave = wave if wave is not None else (DEFAULT_WAVE if halt_failure_rate < 1 else 1.0)
        self.timeout_s = timeout_s
        self.on_progress = on_progress
        self.progress: dict[str, DeviceProgress] = {}
        self._cond = threading.Condition()
        market.add_listener(self._listen)

    def _listen(self, device: str, kind: str, msg: Any) -> None:
        with self._cond:
            p = self.progress.get(device)
            if p is None:
                return
            new = _advance(p, kind, msg, self.name, self.version)
            if new is not None:
                self.progress[device] = new
                self._cond.notify_all()
                if self.on_progress:
                    self.on_progress(device, new)

    def _watch(self, devices: Sequence[str]) -> None:
        with self._cond:
            for d in devices:
                self.progress.setdefault(d, DeviceProgress())
        for d in devices:  # the retained reported state may already say it runs this version
            rec = self.market.catalog.device(d)
            if rec and rec.reported:
                with contextlib.suppress(ValueError):
                    self._listen(d, "reported", Reported.model_validate(rec.reported))

    def _outcomes(self) -> dict[str, str]:
        return {d: p.state for d, p in self.progress.items()}

    def _wait(self, devices: Sequence[str], deadline: float, stop_on_halt: bool) -> dict[str, str]:
        """Wait until every one of ``devices`` is healthy, failed or offline (or the deadline, or a halt)."""
        with self._cond:
            while True:
                outcomes = {d: self.progress[d].state for d in devices}
                finished = all(s in _SETTLED for s in outcomes.values())
                halted = stop_on_halt and should_halt(self._outcomes(), self.halt)
                if finished or halted or time.monotonic() > deadline:
                    return outcomes
                self._cond.wait(timeout=0.2)

    def run(self) -> RolloutResult:
        """Run the rollout to the end; returns how it went (recorded in the catalog too)."""
        catalog = self.market.catalog
        target = f"device:{self.device}" if self.device else f"group:{self.group}"
        rid = catalog.add_rollout(self.name, self.version, target, self.canary, self.halt)
        deadline = time.monotonic() + self.timeout_s
        if self.device:
            self._await_known(self.device)
            self._watch([self.device])
            with self._cond:
                unreachable = catalog.device(self.device) is None or self.market.offline_devices([self.device])
                if unreachable and self.progress[self.device].state != DONE:
                    self.progress[self.device] = DeviceProgress(OFFLINE)
            self.market.set_desired(target, self.name, self.version)
            outcomes = self._wait([self.device], deadline, stop_on_halt=False)
            result = RolloutResult(_final(outcomes, self.halt), outcomes, [], failure_rate(outcomes))
            result.offline = [d for d, s in outcomes.items() if s == OFFLINE]
        else:
            result = self._run_group(target, deadline)
        catalog.update_rollout(rid, result.state, _detail(result))
        return result

    def _await_known(self, device: str) -> None:
        """Give a device the catalog has not heard from a moment to show up (its presence may be on the way)."""
        catalog = self.market.catalog
        if catalog.device(device) is not None:
            return
        self.market.settle()
        end = time.monotonic() + UNKNOWN_GRACE_S
        while catalog.device(device) is None and time.monotonic() < end:
            time.sleep(0.05)

    def _run_group(self, target: str, deadline: float) -> RolloutResult:
        assert self.group is not None
        self.market.settle()
        members = self.market.group_members(self.group)
        offline = set(self.market.offline_devices(members))
        online = [d for d in members if d not in offline]
        salt = f"{self.name}@{self.version}"
        canaries = pick_canaries(online, self.canary, salt)
        rest = [d for d in sorted(online, key=lambda d: _rank(d, salt)) if d not in canaries]
        size = max(1, math.ceil(self.wave * len(members))) if members else 1
        stages = ([canaries] if canaries else []) + [sorted(rest[i : i + size]) for i in range(0, len(rest), size)]
        result = RolloutResult("done", {}, canaries, offline=sorted(offline), waves=stages)
        self._watch(members)
        with self._cond:
            for d in offline:
                if self.progress[d].state != DONE:
                    self.progress[d] = DeviceProgress(OFFLINE)
        moved: list[str] = []
        if len(stages) <= 1 and not canaries:
            # one wave for everyone: the group's desired state moves at once, there is nothing to halt between
            self.market.set_desired(target, self.name, self.version)
            result.unpinned = self._end_pins()
            moved = online
            self._wait(online, deadline, stop_on_halt=False)
        else:
            for stage in stages:
                for d in stage:
                    self.market.set_desired(f"device:{d}", self.name, self.version)
                moved += stage
                self._wait(stage, deadline, stop_on_halt=True)
                outcomes = self._outcomes()
                if should_halt(outcomes, self.halt) or not all(outcomes[d] in _SETTLED for d in stage):
                    result.state = "halted" if should_halt(outcomes, self.halt) else "timeout"
                    result.pinned = self._settle_overrides(moved)
                    break
            else:
                self.market.set_desired(target, self.name, self.version)
                # the group now wants the same: this rollout's overrides and older pins end, so that later group
                # changes reach every member
                result.unpinned = sorted(set(self._end_pins()) - set(moved))
        # offline at the start and never moved: reported offline unless it already said how it went; an online
        # member never moved (after a halt) stays "pending"
        result.outcomes = {
            d: OFFLINE if d in offline and d not in moved and s not in (DONE, FAILED) else s
            for d, s in self._outcomes().items()
        }
        result.failure_rate = failure_rate(result.outcomes)
        if result.state == "done":
            result.state = _final(result.outcomes, self.halt) if members else OFFLINE
        log.info("rollout finished", extra={"target": target, "state": result.state, "offline": result.offline})
        return result

    def _settle_overrides(self, moved: Sequence[str]) -> list[str]:
        """After a halt or timeout: failed devices (rolled back by themselves) follow their group again; the others
        keep the new version through their own desired state. Returns those."""
        outcomes = self._outcomes()
        self._release([d for d in moved if outcomes[d] == FAILED])
        return [d for d in moved if outcomes[d] != FAILED]

    def _end_pins(self) -> list[str]:
        assert self.group is not None
        dropped, replaced = self.market.end_pins(self.group, self.name)
        return sorted(dropped + replaced)

    def _release(self, devices: Sequence[str]) -> None:
        for d in devices:
            self.market.set_desired(f"device:{d}", self.name, None)


def _rank(device: str, salt: str) -> bytes:
    return hashlib.sha256(f"{salt}/{device}".encode()).digest()


def _final(outcomes: dict[str, str], halt: float) -> str:
    if not all(s in _SETTLED for s in outcomes.values()):
        return "timeout"
    if outcomes and all(s == OFFLINE for s in outcomes.values()):
        return OFFLINE  # nothing reached yet: they converge from the retained desired state
    if should_halt(outcomes, halt):
        return "halted"
    return "done" if all(s in (DONE, OFFLINE) for s in outcomes.values()) else "failed"


def _detail(r: RolloutResult) -> dict[str, Any]:
    return {
        "outcomes": r.outcomes,
        "canaries": r.canaries,
        "failure_rate": r.failure_rate,
        "offline": r.offline,
        "waves": r.waves,
        "pinned": r.pinned,
        "unpinned": r.unpinned,
    }


def _advance(p: DeviceProgress, kind: str, msg: Any, name: str, version: str) -> DeviceProgress | None:
    """The device's progress after ``msg``, or None if it says nothing new about ``name@version``."""
    if p.state in (DONE, FAILED):
        return None
    if kind == "presence" and isinstance(msg, Presence):
        if msg.state == "offline":
            return DeviceProgress(OFFLINE, p.percent)
        return DeviceProgress("pending", p.percent) if p.state == OFFLINE else None
    if kind == "status" and isinstance(msg, Status) and msg.name == name and msg.version == version:
        if msg.state == "healthy":
            return DeviceProgress(DONE, 100.0)
        if msg.state in ("failed", "rolled_back", "rejected"):
            return DeviceProgress(FAILED, p.percent, msg.reason)
        return DeviceProgress(msg.state, msg.percent if msg.state == "downloading" else 100.0)
    if kind == "reported" and isinstance(msg, Reported) and name in msg.plugins:
        rp = msg.plugins[name]
        if rp.version == version and rp.state == "healthy":
            return DeviceProgress(DONE, 100.0)
        if rp.wanted == version and rp.state in ("failed", "rolled_back"):
            return DeviceProgress(FAILED, p.percent, rp.reason)
    return None
