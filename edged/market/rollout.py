"""Publishing bundles, and rollouts that the marketplace service runs, persists and resumes.

A rollout is a row in the catalog with one row per device (:class:`~edged.market.catalog.RolloutDevice`).
:func:`create_rollout` plans it (canaries, then waves of the online members; offline members are never started and
converge from the group's document once the rollout completes). :class:`RolloutRunner` executes it one idempotent
:meth:`~RolloutRunner.step` at a time: it starts the next stage, reads each started device's outcome from its
reported state (only an answer to the very ``seq`` the rollout published counts), times devices out, halts past
the failure threshold, and finally moves the group's document and ends the members' pins. Every decision is
written to the catalog before the next, so a ``serve`` killed at any point resumes where it was (another ``serve``
takes over once its lease runs out). :func:`pause`, :func:`resume`, :func:`abort` and :func:`revert` are what the
CLI's ``rollout`` commands call. :class:`Rollout` runs one rollout to its end in-process (the Python API and
``deploy --serve-chunks``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..deploy.bundle import BundleMeta, build_bundle
from ..deploy.trust import TrustStore
from ..errors import CatalogError, RolloutConflict
from .catalog import (
    ACTIVE_ROLLOUT_STATES,
    Catalog,
    DesiredEntry,
    DeviceRecord,
    OnAbort,
    RolloutDevice,
    RolloutPolicy,
    RolloutRecord,
)
from .service import Marketplace

log = logging.getLogger("edged.market.rollout")

DONE, FAILED, OFFLINE, TIMED_OUT = "healthy", "failed", "offline", "timed_out"
#: per-device states of a started device that has not finished
STARTED = ("started", "downloading", "installing", "activating")
#: finished devices: what the failure threshold counts
FINISHED = (DONE, FAILED, TIMED_OUT)
#: states a stage does not wait past
SETTLED = (*FINISHED, OFFLINE, "canceled", "rolled_back")
#: a rollout in one of these states is over
FINAL_STATES = ("done", "failed", "halted", "aborted", "offline", "reverted", "interrupted")
#: the fraction of a group per wave when a halt threshold is set and no wave size is given
DEFAULT_WAVE = 0.25
#: how long a device rollout waits for a device the catalog has never heard from before counting it offline
UNKNOWN_GRACE_S = 5.0
#: how long a ``serve`` holds a rollout without renewing its lease before another may take it over
LEASE_S = 10.0


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
    """Failed (or timed-out) devices over finished devices (0.0 when none finished)."""
    finished = [s for s in outcomes.values() if s in FINISHED]
    return sum(s != DONE for s in finished) / len(finished) if finished else 0.0


def should_halt(outcomes: dict[str, str], halt_failure_rate: float, min_finished: int = 1) -> bool:
    """Halt when at least ``min_finished`` devices finished and the failure rate goes past the threshold."""
    finished = sum(s in FINISHED for s in outcomes.values())
    return finished >= min_finished and failure_rate(outcomes) > halt_failure_rate


def _rank(device: str, salt: str) -> bytes:
    return hashlib.sha256(f"{salt}/{device}".encode()).digest()


def _target(device: str | None, group: str | None) -> str:
    if (device is None) == (group is None):
        raise ValueError("deploy to exactly one of a device or a group")
    return f"device:{device}" if device else f"group:{group}"


# --- planning ----------------------------------------------------------------------------------------------------


def create_rollout(
    market: Marketplace,
    name: str,
    version: str,
    *,
    device: str | None = None,
    group: str | None = None,
    policy: RolloutPolicy | None = None,
) -> int:
    """Plan a rollout of ``name@version`` and record it (``running``); ``serve`` executes it. Returns its id.

    Raises ``CatalogError`` for a version that is not published and :class:`RolloutConflict` while another rollout
    is active on the same target."""
    target = _target(device, group)
    policy = policy or RolloutPolicy()
    market.bundle_info(name, version)  # published?
    catalog = market.catalog
    members = market.group_members(group) if group else [str(device)]
    if device and catalog.device(device) is None:
        _await_known(market, device)
    records = {d.id: d for d in catalog.devices()}
    offline = sorted(d for d in members if d not in records or records[d].presence != "online")
    online = [d for d in members if d not in offline]
    salt = f"{name}@{version}"
    if device:
        stages = [[device]]
        offline_rows: list[str] = []
        canaries: list[str] = []
    else:
        canaries = pick_canaries(online, policy.canary, salt)
        rest = [d for d in sorted(online, key=lambda d: _rank(d, salt)) if d not in canaries]
        size = max(1, math.ceil(policy.wave * len(members))) if members else 1
        stages = ([canaries] if canaries else []) + [sorted(rest[i : i + size]) for i in range(0, len(rest), size)]
        offline_rows = offline
    plan = [(d, i, "planned") for i, stage in enumerate(stages) for d in stage]
    plan += [(d, -1, OFFLINE) for d in offline_rows]
    previous = catalog.get_desired(target)[0].get(name)
    detail: dict[str, Any] = {
        "canaries": canaries,
        "waves": stages,
        "offline": offline,
        # one wave for a whole group: the group's document moves at once
        "single_wave": bool(group) and len(stages) <= 1 and not canaries,
        "previous": previous.model_dump() if previous is not None else None,
        "pinned": [],
        "unpinned": [],
    }
    rid = catalog.create_rollout(name, version, target, policy, plan, detail)
    log.info("rollout created", extra={"rollout": rid, "target": target, "bundle": salt, "devices": len(members)})
    return rid


def _await_known(market: Marketplace, device: str) -> None:
    """Give a device the catalog has not heard from a moment to show up (its presence may be on the way)."""
    market.settle()
    end = time.monotonic() + UNKNOWN_GRACE_S
    while market.catalog.device(device) is None and time.monotonic() < end:
        time.sleep(0.05)


# --- execution ---------------------------------------------------------------------------------------------------


class RolloutRunner:
    """Executes rollouts from the catalog, one idempotent :meth:`step` at a time.

    ``serve`` runs :meth:`run` in a thread: every ``interval`` seconds it takes (or renews) the lease on each active
    rollout no other live ``serve`` holds, and steps them."""

    def __init__(self, market: Marketplace, owner: str | None = None, interval: float = 0.5) -> None:
        self.market = market
        self.catalog = market.catalog
        self.owner = owner or f"{market.client_id}-{secrets.token_hex(3)}"
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- serve's loop ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="edged-rollouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        try:
            self.catalog.release_rollouts(self.owner)
        except Exception:
            log.exception("could not release rollout leases")

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                for rid in self.catalog.claim_rollouts(self.owner, LEASE_S):
                    if self._stop.is_set():
                        break
                    self.step(rid)
            except Exception:
                log.exception("rollout step failed")
            self._stop.wait(self.interval)

    # --- one step ----------------------------------------------------------------------------------------------

    def step(self, rid: int) -> RolloutRecord:
        """Advance rollout ``rid`` as far as it can go now; returns its record."""
        r = self.catalog.rollout(rid)
        if r is None:
            raise CatalogError(f"no rollout {rid}")
        if r.state not in ACTIVE_ROLLOUT_STATES:
            return r
        devs = self.catalog.rollout_devices(rid)
        self._track(r, devs)
        devs = self.catalog.rollout_devices(rid)
        states = {d.device: d.state for d in devs}
        if r.state == "running" and should_halt(states, r.policy.halt_failure_rate, r.policy.min_finished):
            rate = failure_rate(states)
            reason = f"failure rate {rate:.0%} > {r.policy.halt_failure_rate:.0%}"
            abort(self.catalog, rid, reason=reason, final="halted")
            r = self.catalog.rollout(rid) or r
        if r.state == "aborting":
            self._abort_step(r, devs)
        elif r.state == "running":
            self._advance(r, devs)
        return self.catalog.rollout(rid) or r

    def _track(self, r: RolloutRecord, devs: list[RolloutDevice]) -> None:
        """Read each started device's outcome from what it reported, and time out the ones past the deadline."""
        watched = [d for d in devs if d.state in STARTED or (d.state == OFFLINE and d.seq is not None)]
        if not watched:
            return
        records = {rec.id: rec for rec in self.catalog.devices()} if len(watched) > 8 else {}
        now = time.time()
        for d in watched:
            rec = records.get(d.device) if records else self.catalog.device(d.device)
            got = outcome(d, rec, r.name, r.version)
            if got is not None and got[0] in FINISHED:
                self.catalog.update_rollout_device(
                    r.id, d.device, state=got[0], percent=got[1], reason=got[2], finished_at=now
                )
            elif d.state in STARTED and d.started_at is not None and now - d.started_at > r.policy.device_timeout_s:
                self.catalog.update_rollout_device(
                    r.id,
                    d.device,
                    state=TIMED_OUT,
                    reason=f"no outcome within {r.policy.device_timeout_s:g} s",
                    finished_at=now,
                )
            elif got is not None and d.state in STARTED and (got[0], got[1]) != (d.state, d.percent):
                self.catalog.update_rollout_device(r.id, d.device, state=got[0], percent=got[1])

    def _advance(self, r: RolloutRecord, devs: list[RolloutDevice]) -> None:
        planned = [d for d in devs if d.state == "planned"]
        if planned:
            stage = min(d.stage for d in planned)
            if any(d.state not in SETTLED for d in devs if 0 <= d.stage < stage):
                return  # the stage before is still going
            self._start_stage(r, [d for d in planned if d.stage == stage])
            return
        if any(d.state in STARTED for d in devs):
            return
        self._complete(r, devs)

    def _start_stage(self, r: RolloutRecord, stage: list[RolloutDevice]) -> None:
        kind, _, ident = r.target.partition(":")
        now = time.time()
        if kind == "group" and r.detail.get("single_wave"):
            seq = self.market.set_desired(r.target, r.name, r.version, r.policy.allow_downgrade, rollout=r.id)
            dropped, replaced = self.market.end_pins(ident, r.name)
            self.catalog.set_rollout(r.id, detail={**r.detail, "unpinned": sorted(dropped + replaced)})
            for d in stage:
                self.catalog.update_rollout_device(
                    r.id, d.device, state="started", seq=seq, source=r.target, started_at=now
                )
            log.info("rollout moved the group", extra={"rollout": r.id, "target": r.target, "seq": seq})
            return
        online = {rec.id for rec in self.catalog.devices() if rec.presence == "online"}
        for d in stage:
            target = f"device:{d.device}"
            if kind == "group" and d.device not in online:
                self.catalog.update_rollout_device(r.id, d.device, state=OFFLINE, finished_at=now)
                continue
            seq = self.market.set_desired(target, r.name, r.version, r.policy.allow_downgrade, rollout=r.id)
            state = "started" if d.device in online else OFFLINE
            self.catalog.update_rollout_device(r.id, d.device, state=state, seq=seq, source=target, started_at=now)
        log.info("rollout stage started", extra={"rollout": r.id, "devices": [d.device for d in stage]})

    def _complete(self, r: RolloutRecord, devs: list[RolloutDevice]) -> None:
        kind, _, ident = r.target.partition(":")
        detail = dict(r.detail)
        if kind == "group" and not detail.get("single_wave"):
            # every stage is through: the group's document moves (offline members converge from it when back) and
            # the members' own entries for the plugin end, this rollout's and older pins alike
            self.market.set_desired(r.target, r.name, r.version, r.policy.allow_downgrade, rollout=r.id)
            dropped, replaced = self.market.end_pins(ident, r.name)
            moved = {d.device for d in devs if d.seq is not None}
            detail["unpinned"] = sorted(set(dropped + replaced) - moved)
        states = {d.device: d.state for d in devs}
        if states and all(s == OFFLINE for s in states.values()):
            final = "offline"
        elif any(s in (FAILED, TIMED_OUT) for s in states.values()):
            final = "failed"
        elif not states:
            final = "offline"
        else:
            final = "done"
        detail["failure_rate"] = failure_rate(states)
        self.catalog.set_rollout(r.id, state=final, detail=detail, expect=("running",))
        log.info("rollout finished", extra={"rollout": r.id, "target": r.target, "state": final})

    def _abort_step(self, r: RolloutRecord, devs: list[RolloutDevice]) -> None:
        """A halted or aborted rollout: devices that had not started never get the version; started ones finish
        (and keep it, pinned) or roll back, as the policy says; failed ones follow their group again."""
        kind, _, ident = r.target.partition(":")
        detail = dict(r.detail)
        on_abort = detail.get("abort", {}).get("on_abort", r.policy.on_abort)
        now = time.time()
        for d in devs:
            if d.state == "planned":
                self.catalog.update_rollout_device(r.id, d.device, state="canceled", finished_at=now)
                self._drop_own_pin(r, d.device)  # published just before a crash, never marked: take it back
        if kind == "group" and detail.get("single_wave"):
            if on_abort == "rollback":
                self._restore_previous(r)
                self.market.end_pins(ident, r.name)
                for d in devs:
                    if d.state in (*STARTED, DONE):
                        self.catalog.update_rollout_device(r.id, d.device, state="rolled_back", finished_at=now)
            elif any(d.state in STARTED for d in devs):
                return  # they finish on the group's document
        else:
            if on_abort == "rollback":
                for d in devs:
                    if d.state in (*STARTED, DONE):
                        self._roll_back_device(r, d.device)
                        self.catalog.update_rollout_device(r.id, d.device, state="rolled_back", finished_at=now)
            elif any(d.state in STARTED for d in devs):
                return  # let them finish; the next step looks again
            if kind == "group":
                for d in devs:
                    if d.state in (FAILED, TIMED_OUT):
                        self._drop_own_pin(r, d.device)
        devs = self.catalog.rollout_devices(r.id)
        pinned = []
        if not (kind == "group" and detail.get("single_wave")):
            pinned = [d.device for d in devs if d.state == DONE and kind == "group"]
        detail["pinned"] = pinned
        detail["failure_rate"] = failure_rate({d.device: d.state for d in devs})
        final = detail.get("abort", {}).get("final", "aborted")
        self.catalog.set_rollout(r.id, state=final, detail=detail, expect=("aborting",))
        log.info("rollout stopped", extra={"rollout": r.id, "state": final, "pinned": pinned})

    def _drop_own_pin(self, r: RolloutRecord, device: str) -> None:
        own = self.catalog.get_desired(f"device:{device}")[0].get(r.name)
        if own is not None and own.rollout == r.id and r.target != f"device:{device}":
            self.market.set_desired(f"device:{device}", r.name, None)

    def _roll_back_device(self, r: RolloutRecord, device: str) -> None:
        if r.target.startswith("device:"):
            self._restore_previous(r)
            return
        group_entry = self.catalog.get_desired(r.target)[0].get(r.name)
        if group_entry is None:
            self.market.set_desired(f"device:{device}", r.name, None)
        else:
            back = DesiredEntry(version=group_entry.version, allow_downgrade=True)
            self.market.change_desired(f"device:{device}", lambda e: {**e, r.name: back})

    def _restore_previous(self, r: RolloutRecord) -> None:
        prev = r.detail.get("previous")
        if prev is None:
            self.market.set_desired(r.target, r.name, None)
        else:
            self.market.set_desired(r.target, r.name, prev["version"], allow_downgrade=True)


def outcome(
    d: RolloutDevice, rec: DeviceRecord | None, name: str, version: str
) -> tuple[str, float, str | None] | None:
    """What ``rec``'s reported state says about this rollout's request to device ``d``: ``(state, percent,
    reason)``, or None when it says nothing about it yet.

    Only a reported state that has applied the very document (``source`` at ``seq`` or later) that asked for the
    version counts, so a failure reported for an earlier attempt never fails a fresh one."""
    if rec is None or not rec.reported or d.seq is None or d.source is None:
        return None
    applied = rec.reported.get("applied", {})
    key = "device" if d.source.startswith("device:") else d.source
    if int(applied.get(key, -1)) < d.seq:
        return None
    p = rec.reported.get("plugins", {}).get(name)
    if p is None:
        return None
    if p.get("version") == version and p.get("state") == "healthy":
        return DONE, 100.0, None
    if p.get("wanted") == version:
        state = p.get("state")
        if state in ("failed", "rolled_back", "rejected"):
            return FAILED, d.percent, p.get("reason")
        if state in ("downloading", "verifying", "installing", "activating"):
            st = rec.status.get(name, {})
            pct = float(st.get("percent", 0)) if st.get("version") == version and state == "downloading" else 100.0
            return ("installing" if state == "verifying" else state), pct, None
    return None


# --- operator actions ----------------------------------------------------------------------------------------------


def pause(catalog: Catalog, rid: int) -> None:
    """Stop starting new devices (started ones carry on and are still tracked)."""
    if not catalog.set_rollout(rid, state="paused", expect=("running",)):
        raise CatalogError(_not_in(catalog, rid, "running"))


def resume(catalog: Catalog, rid: int) -> None:
    if not catalog.set_rollout(rid, state="running", expect=("paused",)):
        raise CatalogError(_not_in(catalog, rid, "paused"))


def abort(
    catalog: Catalog, rid: int, *, on_abort: OnAbort | None = None, reason: str = "operator", final: str = "aborted"
) -> None:
    """Stop a running or paused rollout: devices that had not started never get the version; started ones finish
    or roll back (``on_abort``, else the rollout's policy). ``serve`` carries it out at its next step."""
    r = catalog.rollout(rid)
    if r is None:
        raise CatalogError(f"no rollout {rid}")
    detail = {**r.detail, "abort": {"reason": reason, "final": final, "on_abort": on_abort or r.policy.on_abort}}
    if not catalog.set_rollout(rid, state="aborting", detail=detail, expect=("running", "paused")):
        raise CatalogError(_not_in(catalog, rid, "running or paused"))
    log.warning("rollout stopping", extra={"rollout": rid, "reason": reason, "state": final})


def revert(market: Marketplace, rid: int) -> str | None:
    """Undo a finished, halted or aborted rollout across its whole target: the target's entry goes back to what it
    was before (signed as an allowed downgrade) and every member's own entry for the plugin ends, so pinned
    devices come back too. Returns the version the target runs now (None: the plugin is removed)."""
    catalog = market.catalog
    r = catalog.rollout(rid)
    if r is None:
        raise CatalogError(f"no rollout {rid}")
    if r.state in ACTIVE_ROLLOUT_STATES:
        raise CatalogError(f"rollout {rid} is {r.state}: abort it first (`edged market rollout abort {rid}`)")
    for other in catalog.rollouts(active=True):
        if other.target == r.target:
            raise RolloutConflict(f"rollout {other.id} is {other.state} on {r.target}: wait for it or abort it")
    prev = r.detail.get("previous")
    kind, _, ident = r.target.partition(":")
    if prev is None:
        market.set_desired(r.target, r.name, None)
    else:
        market.set_desired(r.target, r.name, prev["version"], allow_downgrade=True)
    if kind == "group":
        market.end_pins(ident, r.name)
    catalog.set_rollout(rid, state="reverted", detail={**r.detail, "reverted_to": prev["version"] if prev else None})
    log.info("rollout reverted", extra={"rollout": rid, "target": r.target})
    return prev["version"] if prev else None


def _not_in(catalog: Catalog, rid: int, wanted: str) -> str:
    r = catalog.rollout(rid)
    return f"no rollout {rid}" if r is None else f"rollout {rid} is {r.state}, not {wanted}"


# --- the in-process API --------------------------------------------------------------------------------------------


@dataclass
class RolloutResult:
    """How a rollout went. ``state`` is ``done``, ``failed`` (finished with failures under the threshold),
    ``halted``, ``aborted`` or ``offline`` (every target device offline: the desired state is published, nothing is
    verified yet).

    ``outcomes`` maps every member to its state in the rollout (``healthy``, ``failed``, ``timed_out``, ``offline``:
    not reached, it converges later from the group's document; ``canceled``: never started because the rollout
    stopped). ``pinned`` lists devices left on the new version through their own desired state after a halt;
    ``unpinned`` lists members whose own entry for the plugin (a pin from an earlier halt or device deploy) this
    rollout ended when it moved the group (see :meth:`Marketplace.end_pins`)."""

    state: str
    id: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    canaries: list[str] = field(default_factory=list)
    failure_rate: float = 0.0
    offline: list[str] = field(default_factory=list)
    waves: list[list[str]] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)


def result_of(catalog: Catalog, rid: int) -> RolloutResult:
    r = catalog.rollout(rid)
    if r is None:
        raise CatalogError(f"no rollout {rid}")
    devs = catalog.rollout_devices(rid)
    outcomes = {d.device: d.state for d in devs}
    return RolloutResult(
        state=r.state,
        id=rid,
        outcomes=outcomes,
        reasons={d.device: d.reason for d in devs if d.reason},
        canaries=list(r.detail.get("canaries", [])),
        failure_rate=failure_rate(outcomes),
        offline=sorted(d for d, s in outcomes.items() if s == OFFLINE),
        waves=[list(w) for w in r.detail.get("waves", [])],
        pinned=list(r.detail.get("pinned", [])),
        unpinned=list(r.detail.get("unpinned", [])),
    )


class Rollout:
    """Deploy ``name@version`` to one device or a group and run it to the end in this process.

    Planned as by :func:`create_rollout`: the canaries (``canary`` of the online members), then waves of ``wave`` of
    the group each (by default a quarter when a halt threshold below 1 is set, else everyone at once, which moves
    the group's document at once). It halts when, over at least ``min_finished`` finished devices, the failure rate
    (failed and timed out) passes ``halt_failure_rate``; devices that had not started then never get the version,
    and started ones finish (keeping the new version through their own desired state) or roll back
    (``on_abort``). A started device with no outcome after ``timeout_s`` is ``timed_out``. ``on_progress`` gets the
    rollout's record after every step."""

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
        min_finished: int = 1,
        wave: float | None = None,
        timeout_s: float = 300.0,
        on_abort: OnAbort = "finish",
        allow_downgrade: bool = False,
        on_progress: Callable[[RolloutRecord], None] | None = None,
        interval: float = 0.1,
    ) -> None:
        _target(device, group)
        if not 0 <= canary <= 1 or not 0 <= halt_failure_rate <= 1:
            raise ValueError("canary and halt failure rate are fractions between 0 and 1")
        if wave is not None and not 0 < wave <= 1:
            raise ValueError("a wave is a fraction of the group above 0 and at most 1")
        self.market = market
        self.name, self.version = name, version
        self.device, self.group = device, group
        self.policy = RolloutPolicy(
            canary=canary,
            wave=wave if wave is not None else (DEFAULT_WAVE if halt_failure_rate < 1 else 1.0),
            halt_failure_rate=halt_failure_rate,
            min_finished=min_finished,
            device_timeout_s=timeout_s,
            on_abort=on_abort,
            allow_downgrade=allow_downgrade,
        )
        self.on_progress = on_progress
        self.interval = interval
        self.id: int | None = None

    def run(self) -> RolloutResult:
        """Create the rollout and step it until it is over; returns how it went (recorded in the catalog too)."""
        self.id = create_rollout(
            self.market, self.name, self.version, device=self.device, group=self.group, policy=self.policy
        )
        return follow(self.market, self.id, run_here=True, interval=self.interval, on_progress=self.on_progress)


def follow(
    market: Marketplace,
    rid: int,
    *,
    run_here: bool,
    interval: float = 0.5,
    on_progress: Callable[[RolloutRecord], None] | None = None,
    deadline: float | None = None,
) -> RolloutResult:
    """Wait until rollout ``rid`` is over; with ``run_here`` this process executes it (taking the lease), else a
    ``serve`` does. Returns how it went (the state so far when ``deadline``, a monotonic time, passes first)."""
    runner = RolloutRunner(market) if run_here else None
    catalog = market.catalog
    try:
        while True:
            r: RolloutRecord | None
            if runner is not None and catalog.claim_rollouts(runner.owner, LEASE_S, rid):
                r = runner.step(rid)
            else:
                r = catalog.rollout(rid)
                if r is None:
                    raise CatalogError(f"no rollout {rid}")
            if on_progress is not None:
                on_progress(r)
            if r.state in FINAL_STATES or (deadline is not None and time.monotonic() > deadline):
                return result_of(catalog, rid)
            time.sleep(interval)
    finally:
        if runner is not None:
            catalog.release_rollouts(runner.owner)
