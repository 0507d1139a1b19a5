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
from ..deploy.messages import Reported, Status
from ..deploy.trust import TrustStore
from .catalog import Catalog
from .service import Marketplace

log = logging.getLogger("edged.market.rollout")

DONE, FAILED = "healthy", "failed"


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
    ranked = sorted(devices, key=lambda d: hashlib.sha256(f"{salt}/{d}".encode()).digest())
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
    state: str  # done, halted, failed, timeout
    outcomes: dict[str, str] = field(default_factory=dict)
    canaries: list[str] = field(default_factory=list)
    failure_rate: float = 0.0


class Rollout:
    """Deploy ``name@version`` to one device or a group, with an optional canary stage.

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
        timeout_s: float = 300.0,
        on_progress: Callable[[str, DeviceProgress], None] | None = None,
    ) -> None:
        if (device is None) == (group is None):
            raise ValueError("deploy to exactly one of a device or a group")
        if not 0 <= canary <= 1 or not 0 <= halt_failure_rate <= 1:
            raise ValueError("canary and halt failure rate are fractions between 0 and 1")
        self.market = market
        self.name, self.version = name, version
        self.device, self.group = device, group
        self.canary, self.halt = canary, halt_failure_rate
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

    def _wait(self, devices: Sequence[str], deadline: float, stop_on_halt: bool) -> dict[str, str]:
        with self._cond:
            while True:
                outcomes = {d: self.progress[d].state for d in devices}
                finished = all(s in (DONE, FAILED) for s in outcomes.values())
                if finished or time.monotonic() > deadline or (stop_on_halt and should_halt(outcomes, self.halt)):
                    return outcomes
                self._cond.wait(timeout=0.2)

    def run(self) -> RolloutResult:
        """Run the rollout to the end; returns how it went (recorded in the catalog too)."""
        catalog = self.market.catalog
        target = f"device:{self.device}" if self.device else f"group:{self.group}"
        rid = catalog.add_rollout(self.name, self.version, target, self.canary, self.halt)
        deadline = time.monotonic() + self.timeout_s
        if self.device:
            self._watch([self.device])
            self.market.set_desired(target, self.name, self.version)
            outcomes = self._wait([self.device], deadline, stop_on_halt=False)
            result = RolloutResult(_final(outcomes, self.halt), outcomes, [], failure_rate(outcomes))
        else:
            assert self.group is not None
            self.market.settle()
            members = self.market.group_members(self.group)
            canaries = pick_canaries(members, self.canary, f"{self.name}@{self.version}")
            result = RolloutResult("done", {}, canaries)
            if canaries:
                self._watch(canaries)
                for d in canaries:
                    self.market.set_desired(f"device:{d}", self.name, self.version)
                outcomes = self._wait(canaries, deadline, stop_on_halt=True)
                result.outcomes = outcomes
                result.failure_rate = failure_rate(outcomes)
                if should_halt(outcomes, self.halt) or not all(s in (DONE, FAILED) for s in outcomes.values()):
                    result.state = "halted" if should_halt(outcomes, self.halt) else "timeout"
                    self._release(canaries)  # canaries follow their group (the old version) again
                    catalog.update_rollout(rid, result.state, _detail(result))
                    return result
            self._watch(members)
            self.market.set_desired(target, self.name, self.version)
            self._release(canaries)  # the group now wants the same; later group changes must reach them
            outcomes = self._wait(members, deadline, stop_on_halt=False)
            result.outcomes = outcomes
            result.failure_rate = failure_rate(outcomes)
            result.state = _final(outcomes, self.halt)
        catalog.update_rollout(rid, result.state, _detail(result))
        return result

    def _release(self, devices: Sequence[str]) -> None:
        for d in devices:
            self.market.set_desired(f"device:{d}", self.name, None)


def _final(outcomes: dict[str, str], halt: float) -> str:
    if not all(s in (DONE, FAILED) for s in outcomes.values()):
        return "timeout"
    if should_halt(outcomes, halt):
        return "halted"
    return "done" if all(s == DONE for s in outcomes.values()) else "failed"


def _detail(r: RolloutResult) -> dict[str, Any]:
    return {"outcomes": r.outcomes, "canaries": r.canaries, "failure_rate": r.failure_rate}


def _advance(p: DeviceProgress, kind: str, msg: Any, name: str, version: str) -> DeviceProgress | None:
    """The device's progress after ``msg``, or None if it says nothing new about ``name@version``."""
    if p.state in (DONE, FAILED):
        return None
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
