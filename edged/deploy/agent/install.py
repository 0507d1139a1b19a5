"""The install state machine, one :class:`Job` per plugin: verify the signed metadata and the device policy,
download (see :mod:`.download`), verify the bundle, install, activate, then the health check, which makes the new
version healthy or rolls it back. Every outcome is reported and remembered in the agent state."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ...errors import BundleRejected, DeployError, DiskFull, EdgedError, PluginError, StoreError
from ...host.capabilities import Capabilities, DevicePolicy
from .. import topics
from ..bundle import BundleMeta, check_manifest_digest, compare_versions, verify_bundle, verify_meta
from ..messages import ChunkRequest, PluginSpec, ReportedPlugin, State, unpack_chunk
from ..store import InstalledVersion, PluginStore
from ..target import DeployTarget
from ..trust import TrustStore
from .desired import Request, Source, short
from .download import ChunkOutcome, Download, StallOutcome
from .reporting import Reporter
from .state import AgentState, Attempt, Pending

log = logging.getLogger("edged.deploy.agent")

#: a download that has not finished this long after it started fails (``download_timeout``), whatever arrives: a
#: broker re-sending chunks the device has (no progress) or trickling them cannot hold a plugin's slot for ever.
#: 30 minutes: a 10 MB bundle needs 1 KB/s.
DOWNLOAD_TIMEOUT_S = 1800.0


def disk_full(exc: BaseException) -> bool:
    """True for an error that means the file system is full."""
    return isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))


def _reason(exc: BaseException, default: str) -> str:
    """An error's stable reason code: ``disk_full`` for a full disk, else its ``reason``, else ``default``."""
    if disk_full(exc):
        return "disk_full"
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) and reason else default


@dataclass
class InstallSettings:
    """How installs download and judge health (see :class:`~edged.deploy.agent.DeviceAgent`)."""

    chunk_size: int
    window: int = 16
    health_frames: int = 30
    health_timeout_s: float = 10.0
    max_bundle_size: int = 16 * 1024 * 1024
    stall_s: float = 3.0
    max_stalls: int = 10
    chunk_retries: int = 3
    download_timeout_s: float = DOWNLOAD_TIMEOUT_S


@dataclass
class Job:
    """One plugin version being installed, and where it is."""

    spec: PluginSpec
    meta: BundleMeta
    source: Source
    cmd_id: str | None = None
    #: the request this job serves: what a failure is remembered against (None: the source's current one)
    request: Request | None = None
    state: State = "downloading"
    #: the transfer while it downloads (None for a version already in the store)
    download: Download | None = None
    #: the health check's deadline while activating (monotonic)
    deadline: float = 0.0
    #: the target started this version (only then does its health count)
    activated: bool = False


class Installer:
    """Runs the install jobs. Called from the agent's worker thread only."""

    def __init__(
        self,
        device_id: str,
        store: PluginStore,
        trust: TrustStore,
        target: DeployTarget,
        policy: DevicePolicy,
        state: AgentState,
        reports: Reporter,
        settings: InstallSettings,
        connected: Callable[[], bool],
    ) -> None:
        self.device_id = device_id
        self.store = store
        self.trust = trust
        self.target = target
        self.policy = policy
        self.state = state
        self.reports = reports
        self.settings = settings
        self._connected = connected
        self.jobs: dict[str, Job] = {}

    # --- the store and the target ------------------------------------------------------------------------------

    def active_version(self, name: str) -> str | None:
        iv = self.store.active(name)
        return iv.version if iv is not None else None

    def active_names(self) -> list[str]:
        return sorted(self.store.installed())

    def running_versions(self) -> dict[str, str]:
        """The active version of every installed plugin."""
        return {n: v for n in self.active_names() if (v := self.active_version(n)) is not None}

    def in_progress(self) -> dict[str, tuple[State, str]]:
        """Each job's state and the version it installs (for the reported state)."""
        return {name: (job.state, job.meta.version) for name, job in self.jobs.items()}

    def start_active(self, name: str, raise_errors: bool = False) -> None:
        """Start the store's active version of ``name`` on the target; a failure is reported (or raised)."""
        iv = self.store.active(name)
        if iv is None:
            return
        try:
            self.target.activate(name, iv.version, self.store.wasm_path(iv), self.store.runtime_manifest(iv))
            self.reports.report.setdefault(name, ReportedPlugin(version=iv.version, state="healthy"))
        except (PluginError, DeployError, ValueError) as exc:
            if raise_errors:
                raise
            log.error("cannot start stored plugin", extra={"plugin": name, "error": str(exc)})
            self.reports.set(name, iv.version, "failed", "activation_failed")

    def resume(self) -> None:
        """At start: run what the store has active, and re-check the health of versions activated before a crash."""
        for name in self.active_names():
            self.start_active(name)
        for name, p in list(self.state.pending.items()):
            iv = self.store.active(name)
            if iv is None or iv.version != p.version:
                del self.state.pending[name]  # killed before the activation was written: nothing to check
                continue
            spec = PluginSpec(name=name, version=iv.version, meta=iv.meta.model_dump(mode="json"), manifest=iv.manifest)
            job = Job(spec=spec, meta=iv.meta, source=p.source, state="activating", activated=True)
            job.deadline = time.monotonic() + self.settings.health_timeout_s
            self.jobs[name] = job
            log.info("re-checking health after a restart", extra={"plugin": name, "version": iv.version})

    def transfers_wanted(self) -> set[str] | None:
        """The wasm sha256 of every unfinished download still wanted: running jobs and the documents' entries."""
        if self.state.wanted_hashes is None:
            return None
        keep = {h for hashes in self.state.wanted_hashes.values() for h in hashes}
        return keep | {job.meta.wasm_sha256 for job in self.jobs.values()}

    def reclaim_transfers(self) -> None:
        """Delete unfinished downloads that nothing wants any more (a version switched mid-download, a plugin no
        longer asked for), so they cannot fill the store."""
        keep = self.transfers_wanted()
        if keep is None:
            return
        try:
            self.store.reclaim_transfers(keep)
        except OSError as exc:
            log.warning("cannot reclaim transfers", extra={"device": self.device_id, "error": str(exc)})

    def gc(self) -> None:
        """The store's gc (old versions beyond ``keep``, unreferenced blobs, unwanted transfers); never raises."""
        try:
            self.store.gc(keep_transfers=self.transfers_wanted())
        except (StoreError, OSError) as exc:
            log.warning("store gc failed", extra={"device": self.device_id, "error": str(exc)})

    # --- verify and download -----------------------------------------------------------------------------------

    def begin(self, spec: PluginSpec, source: Source, cmd_id: str | None = None) -> None:
        """Start installing ``spec`` for ``source`` (and command ``cmd_id``): checked first, then downloaded."""
        topic = topics.cmd(self.device_id) if cmd_id else topics.desired(self.device_id)
        try:
            # the publisher's signature over name, version, wasm sha256 and size, and the manifest's digest, is
            # checked before the first chunk is asked for: a forged bundle never causes a download
            meta = verify_meta(spec.meta, self.trust)
            check_manifest_digest(meta, spec.manifest)
        except BundleRejected as exc:
            self.fail_early(spec, source, cmd_id, exc.reason, str(exc), topic)
            return
        if meta.name != spec.name or meta.version != spec.version:
            self.fail_early(spec, source, cmd_id, "wrong_schema", "bundle meta names another plugin", topic)
            return
        limit = self.settings.max_bundle_size
        if meta.wasm_size > limit:
            self.fail_early(spec, source, cmd_id, "oversize", f"{meta.wasm_size} bytes > limit {limit}", topic)
            return
        excess = self._policy_excess(spec.manifest)
        if excess:
            self.fail_early(spec, source, cmd_id, "policy_violation", excess, topic)
            return
        stored = next((iv for iv in self.store.versions(spec.name) if iv.version == spec.version), None)
        if stored is not None:  # kept from before: no download, but the same checks as a fresh bundle
            active = self.active_version(spec.name)
            if stored.wasm_sha256 != meta.wasm_sha256:
                self.fail_early(spec, source, cmd_id, "hash_mismatch", "installed with different wasm", topic)
                return
            if active and not spec.allow_downgrade and compare_versions(spec.version, active) < 0:
                self.fail_early(spec, source, cmd_id, "downgrade", f"{spec.version} < installed {active}", topic)
                return
        job = Job(spec=spec, meta=meta, source=source, cmd_id=cmd_id, request=self.state.request(source))
        self.jobs[spec.name] = job
        if stored is not None:
            if (leftover := self.store.get_transfer(meta.wasm_sha256)) is not None:
                leftover.discard()  # killed between install and cleanup
            self.activate_installed(job)
            return
        chunk_size = self.settings.chunk_size
        total = max(1, math.ceil(meta.wasm_size / chunk_size))
        self.reclaim_transfers()  # what an earlier, abandoned download held is free for this one
        if self._space_short(meta) is not None:  # then even failed downloads kept for a retry make room
            with contextlib.suppress(OSError):
                self.store.reclaim_transfers({j.meta.wasm_sha256 for j in self.jobs.values()})
            self.gc()
        if (why := self._space_short(meta)) is not None:
            self.fail(job, "disk_full", why)
            return
        try:
            transfer = self.store.transfer(meta, chunk_size, total)
        except DeployError as exc:
            self.fail(job, _reason(exc, "install_failed"), str(exc))
            return
        dl = job.download = Download(transfer, total, chunk_size, time.monotonic() + self.settings.download_timeout_s)
        self._progress(job, dl, force=True)
        if not transfer.missing():
            self.finish_download(job, dl)
        else:
            self.request_more(job, dl)

    def _space_short(self, meta: BundleMeta) -> str | None:
        """Why the store cannot hold this download (its chunks still missing), or None if it can."""
        free = self.store.free_bytes()
        have = self.store.get_transfer(meta.wasm_sha256)
        got = len(have.received()) * self.settings.chunk_size if have is not None else 0
        needed = max(0, meta.wasm_size - got)
        if free < 0 or free >= needed:
            return None
        return f"{meta.ref}: the disk is full ({free} bytes free, {needed} needed for the download)"

    def _policy_excess(self, manifest: dict[str, Any]) -> str:
        block = manifest.get("edged") if isinstance(manifest, dict) else None
        if not isinstance(block, dict):
            return ""
        try:
            caps = Capabilities.from_manifest_block(block.get("capabilities"))
        except EdgedError:
            return ""  # verify_bundle reports an invalid manifest with its own reason
        excess = self.policy.excess(caps)
        return "the device policy does not allow: " + ", ".join(excess) if excess else ""

    def request_more(self, job: Job, dl: Download) -> None:
        """Ask the marketplace for the missing chunks that fit in the window."""
        want = dl.next_indices(self.settings.window)
        if not want:
            return
        req = ChunkRequest(
            device=self.device_id,
            name=job.meta.name,
            version=job.meta.version,
            wasm_sha256=job.meta.wasm_sha256,
            chunk_size=dl.chunk_size,
            indices=want,
        )
        self.reports.publish(topics.chunk_request(self.device_id), req.model_dump_json())

    def ask_again(self) -> None:
        """After a (re)connect: ask again for everything every download still misses."""
        for job in self.jobs.values():
            if job.state == "downloading" and job.download is not None:
                job.download.requested.clear()
                self.request_more(job, job.download)

    def on_chunk(self, payload: bytes) -> None:
        """One chunk message from the marketplace."""
        try:
            header, data = unpack_chunk(payload)
        except (ValueError, ValidationError) as exc:
            self.reports.reject(topics.chunks(self.device_id), "malformed", short(exc))
            return
        job = self.jobs.get(header.name)
        if job is None or job.state != "downloading" or job.meta.wasm_sha256 != header.wasm_sha256:
            return  # a late duplicate of a finished or abandoned transfer
        dl = job.download
        if dl is None:
            return
        if header.error:  # the header is not signed: anyone could send it, so it is no progress and no failure
            dl.last_error = f"marketplace: {header.error} (chunk {header.index})"
            return  # the stall logic asks again, and fails as missing_chunk (with this error) after max_stalls
        got = dl.put(header, data, self.settings.chunk_retries)
        if got.outcome is ChunkOutcome.MISFIT:
            self.reports.reject(topics.chunks(self.device_id), got.reason, got.detail)
            return
        if got.outcome is ChunkOutcome.FAILED:
            self.fail(job, got.reason, got.detail)
            return
        if got.outcome is ChunkOutcome.DUPLICATE:
            return
        if got.outcome is ChunkOutcome.RETRY:
            self.reports.status(
                "downloading", name=job.meta.name, version=job.meta.version, reason=got.reason, detail=got.detail
            )
        self._progress(job, dl)
        if not dl.transfer.missing():
            self.finish_download(job, dl)
        elif len(dl.requested) <= self.settings.window // 2:
            self.request_more(job, dl)

    def _progress(self, job: Job, dl: Download, force: bool = False) -> None:
        if (pct := dl.percent_to_report(force)) is not None:
            self.reports.status("downloading", name=job.meta.name, version=job.meta.version, percent=pct)

    # --- verify, install, activate -----------------------------------------------------------------------------

    def finish_download(self, job: Job, dl: Download) -> None:
        """Assemble and verify the downloaded bundle, install it, and activate it."""
        name, version = job.meta.name, job.meta.version
        job.state = "verifying"
        self.reports.status("verifying", name=name, version=version, percent=100)
        try:
            wasm = dl.transfer.assemble()
        except DeployError as exc:
            missing = dl.transfer.missing()
            if 0 < len(missing) < dl.total:  # some stored chunks rotted on disk: fetch just those again
                log.warning("refetching corrupt chunks", extra={"plugin": name, "chunks": missing})
                job.state = "downloading"
                dl.requested.clear()
                self.request_more(job, dl)
                return
            dl.transfer.discard()
            self.fail(job, _reason(exc, "hash_mismatch"), str(exc))
            return
        installed = None if job.spec.allow_downgrade else self.active_version(name)
        try:
            verify_bundle(job.meta, job.spec.manifest, wasm, self.trust, self.policy, installed)
        except BundleRejected as exc:
            dl.transfer.discard()
            self.fail(job, exc.reason, str(exc))
            return
        job.state = "installing"
        self.reports.status("installing", name=name, version=version, percent=100)
        try:
            try:
                self.store.install(job.meta, job.spec.manifest, wasm)
            except DiskFull:
                # the verified wasm is in memory: its chunks can go to make room for the blob, then try once more
                dl.transfer.discard()
                self.store.install(job.meta, job.spec.manifest, wasm)
        except (DeployError, OSError) as exc:  # e.g. this version is installed with other wasm, or the disk is full
            self.fail(job, _reason(exc, "install_failed"), str(exc))
            return
        dl.transfer.discard()
        self.activate_installed(job)

    def activate_installed(self, job: Job) -> None:
        """Make the installed version active in the store, then start it; the health check follows in :meth:`tick`.

        The pending health check is written first and the store's record next; if either write fails (a full
        disk) nothing changed: the old version stays active and running, and the job fails with the reason."""
        name, version = job.meta.name, job.meta.version
        self.state.pending[name] = Pending(version, job.source)
        try:
            self.state.save(required=True)
            self.store.activate(name, version)
        except (StoreError, OSError) as exc:
            self.state.pending.pop(name, None)
            self.state.save()
            detail = f"cannot make {version} active, {self.active_version(name)} stays: {exc}"
            self.fail(job, _reason(exc, "install_failed"), detail)
            return
        job.state = "activating"
        job.deadline = time.monotonic() + self.settings.health_timeout_s  # never activating without a deadline
        self.reports.status("activating", name=name, version=version, percent=100)
        try:
            self.start_active(name, raise_errors=True)
        except (PluginError, DeployError, ValueError, OSError) as exc:
            self.rollback(job, "disk_full" if disk_full(exc) else "activation_failed", str(exc))
            return
        job.activated = True
        job.deadline = time.monotonic() + self.settings.health_timeout_s

    # --- the periodic check ------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Downloads that stall or time out, and the health of versions just activated."""
        s = self.settings
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.state == "downloading" and job.download is not None:
                dl = job.download
                check = dl.check(now, s.stall_s, s.max_stalls, self._connected(), s.download_timeout_s)
                if check.outcome is StallOutcome.TIMED_OUT:
                    self.fail(job, "download_timeout", check.detail)
                elif check.outcome is StallOutcome.GIVE_UP:
                    self.fail(job, "missing_chunk", check.detail)
                elif check.outcome is StallOutcome.ASK_AGAIN:
                    self.request_more(job, dl)
            elif job.state == "activating":
                self._check_health(job, now)

    def _check_health(self, job: Job, now: float) -> None:
        s = self.settings
        h = self.target.health(job.meta.name)
        if not job.activated or (h.version is not None and h.version != job.meta.version):
            # what the target measures is not this version: it must never count as its health
            if now > job.deadline:
                self.rollback(job, "activation_failed", f"{job.meta.ref} is not running (runs {h.version})")
        elif h.strikes > 0 or not h.running:
            self.rollback(job, "health_check", f"{h.strikes} strike(s): {h.last_error}")
        elif h.frames >= s.health_frames:
            self.healthy(job)
        elif now > job.deadline:
            self.rollback(job, "health_check", f"only {h.frames}/{s.health_frames} frames in {s.health_timeout_s}s")

    # --- outcomes ----------------------------------------------------------------------------------------------

    def healthy(self, job: Job) -> None:
        name, version = job.meta.name, job.meta.version
        del self.jobs[name]
        if job.source.is_document:
            self.state.origin[name] = job.source
        self.state.pending.pop(name, None)
        self.state.save()
        self.gc()
        self.reports.set(name, version, "healthy", None)
        self.reports.status("healthy", name=name, version=version, percent=100)
        if job.cmd_id:
            self.reports.reply(job.cmd_id, True, result={"version": version, "state": "healthy"})
        self.reports.publish_reported()
        log.info("plugin healthy", extra={"device": self.device_id, "plugin": name, "version": version})

    def _remember_failure(self, job: Job) -> None:
        attempt = Attempt(job.meta.name, job.meta.version, job.spec.allow_downgrade)
        self.state.failed[attempt] = job.request or self.state.request(job.source)

    def rollback(self, job: Job, reason: str, detail: str) -> None:
        """Go back to the version before ``job``'s (or to none) after it failed to start or its health check."""
        name, version = job.meta.name, job.meta.version
        recorded = True
        if self.active_version(name) != version:
            # the store never made this version active: going back would roll the running version back instead
            self.fail(job, reason, detail)
            return
        try:
            self.store.rollback(name)
        except DiskFull as exc:
            recorded = False
            detail = f"{detail}; the store cannot record the rollback ({exc}), so it is checked again at start"
        except StoreError:
            self.store.remove(name)  # nothing to go back to
        if recorded:
            prev = self.active_version(name)
            if prev is None:
                self.target.deactivate(name)
            else:
                try:
                    self.start_active(name, raise_errors=True)
                except (PluginError, DeployError, ValueError, OSError):
                    log.exception("previous version failed to start", extra={"plugin": name, "version": prev})
        else:
            prev = self._run_previous(name)
        self.jobs.pop(name, None)
        if recorded:  # else the pending check stays on disk: the next start re-checks (and rolls back) again
            self.state.pending.pop(name, None)
        self.state.save()
        self._remember_failure(job)
        self.state.save()
        self.reports.set(name, prev, "rolled_back" if prev else "failed", reason, wanted=version)
        self.reports.status(
            "rolled_back" if prev else "failed", name=name, version=version, reason=reason, detail=detail
        )
        if job.cmd_id:
            self.reports.reply(job.cmd_id, False, reason, detail)
        self.reports.publish_reported()
        log.warning("rolled back", extra={"plugin": name, "version": version, "reason": reason, "detail": detail})

    def _run_previous(self, name: str) -> str | None:
        """Run the version before the active one on the target without writing the store (which is full)."""
        record = self.store.record(name)
        previous: InstalledVersion | None = (
            record.versions.get(record.previous) if record is not None and record.previous else None
        )
        if previous is None:
            self.target.deactivate(name)
            return None
        try:
            self.target.activate(
                name, previous.version, self.store.wasm_path(previous), self.store.runtime_manifest(previous)
            )
        except (PluginError, DeployError, ValueError, OSError):
            log.exception("previous version failed to start", extra={"plugin": name, "version": previous.version})
        return previous.version

    def fail(self, job: Job, reason: str, detail: str) -> None:
        """``job`` failed: its download is reclaimed (unless only chunks were missing), the failure reported."""
        name, version = job.meta.name, job.meta.version
        self.jobs.pop(name, None)
        if job.download is not None and reason != "missing_chunk":
            # a failed download is reclaimed: it must not hold the disk. One that only lacked chunks the network
            # did not deliver keeps them while a document still names it, so a re-deploy fetches only the rest;
            # it goes as soon as none does, or when another download needs the room (see begin)
            with contextlib.suppress(OSError):
                job.download.transfer.discard()
        if reason == "disk_full":
            self.gc()
        self._remember_failure(job)
        self.state.save()
        self.reports.set(name, self.active_version(name), "failed", reason, wanted=version)
        self.reports.status("failed", name=name, version=version, reason=reason, detail=detail)
        if job.cmd_id:
            self.reports.reply(job.cmd_id, False, reason, detail)
        self.reports.publish_reported()

    def fail_early(
        self, spec: PluginSpec, source: Source, cmd_id: str | None, reason: str, detail: str, topic: str
    ) -> None:
        """``spec`` is refused before any job started (bad metadata, policy, size, a stored version's checks)."""
        self.state.failed[Attempt(spec.name, spec.version, spec.allow_downgrade)] = self.state.request(source)
        self.state.save()
        self.reports.set(spec.name, self.active_version(spec.name), "failed", reason, wanted=spec.version)
        self.reports.status("failed", name=spec.name, version=spec.version, reason=reason, detail=detail, topic=topic)
        if cmd_id:
            self.reports.reply(cmd_id, False, reason, detail)
        self.reports.errors += 1

    def abandon(self, job: Job) -> None:
        """Drop ``job`` for another version of its plugin."""
        self.jobs.pop(job.meta.name, None)
        if job.state == "activating":
            return  # the new version runs already; the reconcile that replaces it decides what next
        if job.download is not None:  # switched to another version mid-download: reclaim this one's chunks
            with contextlib.suppress(OSError):
                job.download.transfer.discard()

    def remove(self, name: str) -> None:
        """Stop and uninstall ``name`` (and its job)."""
        job = self.jobs.pop(name, None)
        if job is not None and job.download is not None and job.state == "downloading":
            job.download.transfer.discard()
        self.target.deactivate(name)
        with contextlib.suppress(StoreError):
            self.store.remove(name)
        self.state.origin.pop(name, None)
        self.reports.report.pop(name, None)
        self.reports.status("removed", name=name)
        self.state.save()
