"""The on-device plugin store: content-addressed wasm blobs, one JSON record per plugin, resumable transfers.

Layout under ``root`` (see docs/deploy-store.md)::

    blobs/sha256/<hex>              wasm, named by its sha256, read-only
    plugins/<name>.json             installed versions (meta, manifest, blob hash), the active one, history
    transfers/<wasm_sha256>/        state.json and chunks/<index>.<chunk_sha256> of an unfinished download
    tmp/                            temp files; anything here is garbage after a crash

Every write goes to ``tmp/``, is fsynced, renamed into place and the directory fsynced. A record is written only
after the blob it points at is durable, so after ``kill -9`` at any point the store holds either the old or the new
state of a plugin, never a mix; :meth:`PluginStore.recover` cleans up temp files and drops any version whose blob is
missing or does not hash right.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import math
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BundleRejected, DiskFull, StoreError
from ..fsutil import atomic_write, fsync_dir
from .bundle import NAME_RE, WASM_ENTRY, BundleMeta, SemVer, manifest_digest, parse_meta

log = logging.getLogger("edged.deploy.store")

#: names of the points where :class:`PluginStore` calls its ``checkpoint`` hook (crash-safety tests kill there)
CHECKPOINTS = (
    "after_temp_write",
    "after_blob_rename",
    "after_record_temp_write",
    "after_record_rename",
    "after_chunk_temp_write",
    "after_chunk_rename",
    "after_state_temp_write",
    "after_state_rename",
    "after_transfer_detach",
)

#: errno values that mean the file system is full (reported as ``disk_full``)
_FULL = (errno.ENOSPC, errno.EDQUOT)

_STRICT = ConfigDict(extra="forbid", frozen=True)


class InstalledVersion(BaseModel):
    """One installed version of a plugin: its signed meta, its manifest and where its wasm is."""

    model_config = _STRICT
    name: str
    version: str
    wasm_sha256: str
    wasm_size: int
    manifest: dict[str, Any]
    meta: BundleMeta
    installed_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class PluginRecord(BaseModel):
    """What ``plugins/<name>.json`` holds."""

    model_config = _STRICT
    name: str
    active: str | None = None
    #: versions that were active before, most recent last (what :meth:`PluginStore.rollback` goes back to)
    history: list[str] = Field(default_factory=list)
    versions: dict[str, InstalledVersion] = Field(default_factory=dict)

    @property
    def previous(self) -> str | None:
        """The version a rollback would activate."""
        for v in reversed(self.history):
            if v in self.versions and v != self.active:
                return v
        return None


class RecoveryReport(BaseModel):
    """What :meth:`PluginStore.recover` found and did."""

    model_config = ConfigDict(extra="forbid")
    temp_files_removed: list[str] = Field(default_factory=list)
    #: ``name@version: why`` for each version dropped because its blob was missing or corrupt
    dropped_versions: list[str] = Field(default_factory=list)
    #: record files that could not be read, renamed to ``<name>.json.corrupt`` (kept for inspection)
    corrupt_records: list[str] = Field(default_factory=list)
    #: blobs deleted because they did not hash to their name
    corrupt_blobs: list[str] = Field(default_factory=list)
    #: wasm sha256 of unfinished transfers, which can resume
    transfers: list[str] = Field(default_factory=list)
    #: wasm sha256 of unfinished transfers deleted because nothing wants them any more (``keep_transfers``)
    reclaimed_transfers: list[str] = Field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True if there was nothing to repair."""
        return not (self.temp_files_removed or self.dropped_versions or self.corrupt_records or self.corrupt_blobs)


class TransferState(BaseModel):
    """``transfers/<sha>/state.json``."""

    model_config = _STRICT
    meta: BundleMeta
    chunk_size: int = Field(ge=1)
    total_chunks: int = Field(ge=1)
    started_at: float


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expected_chunks(size: int, chunk_size: int) -> int:
    """How many chunks of ``chunk_size`` carry ``size`` bytes (at least one)."""
    return max(1, math.ceil(size / chunk_size))


class PluginStore:
    """The plugin store under ``root``; keeps the active version and ``keep`` previous ones per plugin.

    ``checkpoint``, if given, is called with each name in :data:`CHECKPOINTS` as a write passes it (tests use it to
    kill the process there). Reads never lock; writes hold a lock file, so two processes cannot interleave writes.
    """

    def __init__(self, root: str | Path, keep: int = 3, *, checkpoint: Callable[[str], None] | None = None) -> None:
        if keep < 0:
            raise ValueError("keep must be >= 0")
        self.root = Path(root)
        self.keep = keep
        self._checkpoint = checkpoint
        self.blobs = self.root / "blobs" / "sha256"
        self.plugins = self.root / "plugins"
        self.tmp = self.root / "tmp"
        self.transfers_dir = self.root / "transfers"
        for d in (self.blobs, self.plugins, self.tmp, self.transfers_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None

    # --- plumbing ------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            if self._depth == 0:
                fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    os.close(self._lock_fd)  # closing releases the flock
                    self._lock_fd = None

    def _point(self, name: str) -> None:
        if self._checkpoint is not None:
            self._checkpoint(name)

    def _write(self, final: Path, data: bytes, kind: str, mode: int = 0o644) -> None:
        """:func:`~edged.fsutil.atomic_write` through ``tmp/``; ``kind`` names the checkpoints passed.

        An OS error (disk full, I/O error) raises :class:`StoreError` and leaves the previous file in place.
        """
        written = f"after_{kind}_temp_write" if kind != "blob" else "after_temp_write"
        try:
            atomic_write(
                final,
                data,
                mode,
                tmp_dir=self.tmp,
                before_replace=lambda: self._point(written),
                sync_dir=False,
                parents=False,
            )
        except OSError as exc:
            raise self.write_error(f"cannot write {final.relative_to(self.root)}", exc, len(data)) from exc
        try:
            fsync_dir(final.parent)
        except OSError as exc:
            # the rename happened; only its durability is in doubt, and recover() re-checks everything
            log.warning("cannot fsync directory", extra={"path": str(final.parent), "error": str(exc)})
        self._point(f"after_{kind}_rename")

    def free_bytes(self) -> int:
        """Bytes free for an unprivileged writer on the store's file system (-1 if it cannot be read)."""
        try:
            st = os.statvfs(self.root)
        except OSError:
            return -1
        return st.f_bavail * st.f_frsize

    def write_error(self, what: str, exc: OSError, needed: int) -> StoreError:
        """The error to raise for a failed write: :class:`DiskFull` (with free and needed bytes) for ENOSPC/EDQUOT,
        else :class:`StoreError`."""
        if exc.errno in _FULL:
            free = self.free_bytes()
            return DiskFull(f"{what}: the disk is full ({free} bytes free, {needed} needed)", free, needed)
        return StoreError(f"{what}: {exc.strerror or exc}")

    def _record_path(self, name: str) -> Path:
        # names arrive in commands too: never let one walk out of plugins/
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise StoreError(f"{name!r} is not a plugin name")
        return self.plugins / f"{name}.json"

    def _load(self, name: str) -> PluginRecord | None:
        path = self._record_path(name)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = PluginRecord.model_validate_json(text)
        except ValidationError as exc:
            raise StoreError(
                f"the store record {path} is unreadable; run recover(): {exc.error_count()} errors"
            ) from None
        if record.name != name:
            raise StoreError(f"the store record {path} is for {record.name!r}")
        return record

    def _require(self, name: str) -> PluginRecord:
        record = self._load(name)
        if record is None:
            raise StoreError(f"plugin {name!r} is not installed")
        return record

    def _save(self, record: PluginRecord) -> None:
        self._write(self._record_path(record.name), record.model_dump_json(indent=2).encode(), "record")

    def _put_blob(self, wasm: bytes, digest: str) -> None:
        path = self.blobs / digest
        if path.exists():
            if _sha256_file(path) == digest:
                return
            log.warning("replacing a corrupt blob", extra={"blob": digest})
            path.unlink()
        self._write(path, wasm, "blob", mode=0o444)

    # --- reading -------------------------------------------------------------------------------------------------

    def record(self, name: str) -> PluginRecord | None:
        """The full record of ``name`` (all versions, active, history), or None."""
        return self._load(name)

    def names(self) -> list[str]:
        """Names of all plugins with a record."""
        return sorted(p.stem for p in self.plugins.glob("*.json") if NAME_RE.fullmatch(p.stem))

    def active(self, name: str) -> InstalledVersion | None:
        """The active version of ``name``, or None if it is not installed or none is active."""
        record = self._load(name)
        if record is None or record.active is None:
            return None
        return record.versions.get(record.active)

    def installed(self) -> dict[str, InstalledVersion]:
        """The active version of every plugin that has one, by name."""
        out: dict[str, InstalledVersion] = {}
        for name in self.names():
            iv = self.active(name)
            if iv is not None:
                out[name] = iv
        return out

    def versions(self, name: str) -> list[InstalledVersion]:
        """All installed versions of ``name``, lowest first (empty if not installed)."""
        record = self._load(name)
        if record is None:
            return []
        return sorted(record.versions.values(), key=lambda iv: SemVer(iv.version))

    def wasm_path(self, installed: InstalledVersion) -> Path:
        """Where the wasm of ``installed`` is (content-addressed, read-only)."""
        return self.blobs / installed.wasm_sha256

    def runtime_manifest(self, installed: InstalledVersion) -> dict[str, Any]:
        """The version's manifest with its wasm entry pointing at the blob, ready for ``edged.runtime``/
        ``DevicePlugin``; the hash stays, so the loader re-checks it."""
        manifest = dict(installed.manifest)
        entries = []
        for entry in manifest.get("wasm", []):
            e = dict(entry)
            if e.get("path") == WASM_ENTRY:
                e["path"] = str(self.wasm_path(installed))
            entries.append(e)
        manifest["wasm"] = entries
        return manifest

    # --- writing -------------------------------------------------------------------------------------------------

    def install(
        self, meta: BundleMeta, manifest: dict[str, Any], wasm: bytes, *, activate: bool = False
    ) -> InstalledVersion:
        """Add a version (already verified by :func:`~edged.deploy.bundle.verify_bundle`) to the store.

        The blob is written before the record that points at it, both atomically; with ``activate`` the new
        version becomes active in the same record write. Installing the same version with the same wasm again is
        harmless; the same version with different wasm raises :class:`StoreError` (versions are immutable).
        A wasm or manifest that does not match ``meta`` raises :class:`BundleRejected` ``hash_mismatch`` or
        ``manifest_mismatch``.
        """
        meta = parse_meta(meta)
        digest = hashlib.sha256(wasm).hexdigest()
        if digest != meta.wasm_sha256 or len(wasm) != meta.wasm_size:
            raise BundleRejected("hash_mismatch", f"{meta.ref}: the wasm does not match the meta's sha256 and size")
        try:
            same_manifest = manifest_digest(manifest) == meta.manifest_digest
        except (ValueError, TypeError, RecursionError):
            same_manifest = False
        if not same_manifest:
            raise BundleRejected("manifest_mismatch", f"{meta.ref}: the manifest does not match the meta's digest")
        with self._locked():
            record = self._load(meta.name) or PluginRecord(name=meta.name)
            existing = record.versions.get(meta.version)
            if existing is not None and existing.wasm_sha256 != digest:
                raise StoreError(f"{meta.ref} is already installed with different wasm ({existing.wasm_sha256[:12]})")
            self._put_blob(wasm, digest)
            iv = existing or InstalledVersion(
                name=meta.name,
                version=meta.version,
                wasm_sha256=digest,
                wasm_size=len(wasm),
                manifest=manifest,
                meta=meta,
                installed_at=time.time(),
            )
            versions = {**record.versions, meta.version: iv}
            record = record.model_copy(update={"versions": versions})
            if activate:
                record = _activated(record, meta.version)
            if existing is None or activate:
                self._save(record)
            log.info("plugin installed", extra={"plugin": meta.ref, "blob": digest, "activated": activate})
            return iv

    def activate(self, name: str, version: str) -> InstalledVersion:
        """Make ``version`` the active one; the previously active version goes on the rollback history."""
        with self._locked():
            record = self._require(name)
            if version not in record.versions:
                raise StoreError(f"{name}@{version} is not installed (installed: {sorted(record.versions)})")
            if record.active != version:
                self._save(_activated(record, version))
                log.info("plugin activated", extra={"plugin": f"{name}@{version}", "previous": record.active})
            return record.versions[version]

    def rollback(self, name: str) -> InstalledVersion:
        """Activate the version that was active before the current one. The version rolled back from stays
        installed (until :meth:`gc`) but is not on the history any more. Raises :class:`StoreError` if there is
        nothing to go back to."""
        with self._locked():
            record = self._require(name)
            target = record.previous
            if target is None:
                raise StoreError(f"{name}: no previous version to roll back to")
            history = list(record.history)
            while history and history[-1] != target:
                history.pop()
            history.pop()
            self._save(record.model_copy(update={"active": target, "history": history}))
            log.warning("plugin rolled back", extra={"plugin": name, "from": record.active, "to": target})
            return record.versions[target]

    def remove(self, name: str, version: str | None = None) -> None:
        """Remove a plugin (or one inactive version of it); blobs go at the next :meth:`gc`."""
        with self._locked():
            record = self._require(name)
            if version is None:
                self._record_path(name).unlink()
                fsync_dir(self.plugins)
                log.info("plugin removed", extra={"plugin": name})
                return
            if version not in record.versions:
                raise StoreError(f"{name}@{version} is not installed")
            if version == record.active:
                raise StoreError(f"{name}@{version} is active; activate another version or remove the plugin")
            versions = {v: iv for v, iv in record.versions.items() if v != version}
            history = [v for v in record.history if v != version]
            self._save(record.model_copy(update={"versions": versions, "history": history}))

    def gc(self, keep_transfers: Collection[str] | None = None, transfer_idle_s: float = 7 * 86400.0) -> int:
        """Drop versions beyond the active one and ``keep`` others per plugin, then delete every blob no record
        points at, and every unfinished transfer that is not in ``keep_transfers`` (when given) or has not
        received anything for ``transfer_idle_s`` seconds. Returns the number of blobs deleted.

        Kept first: versions installed after the active one and never active (staged upgrades), then the rollback
        history (most recent first), then the most recently installed.
        """
        with self._locked():
            now = time.time()
            for d in sorted(self.transfers_dir.iterdir()):
                idle = now - _last_write(d)
                if (keep_transfers is not None and d.name not in keep_transfers) or idle > transfer_idle_s:
                    log.info("gc deletes an unfinished transfer", extra={"transfer": d.name, "idle_s": round(idle)})
                    self._delete_transfer_dir(d)
            referenced: set[str] = set()
            for name in self.names():
                try:
                    record = self._load(name)
                except StoreError:
                    continue  # recover() deals with unreadable records; never delete what they may point at
                if record is None:
                    continue
                kept = _kept_versions(record, self.keep)
                if kept != set(record.versions):
                    versions = {v: iv for v, iv in record.versions.items() if v in kept}
                    history = [v for v in record.history if v in kept]
                    record = record.model_copy(update={"versions": versions, "history": history})
                    self._save(record)
                referenced |= {iv.wasm_sha256 for iv in record.versions.values()}
            if any(p.suffix == ".corrupt" for p in self.plugins.iterdir()):
                log.warning("gc skips blob deletion while corrupt records exist")
                return 0
            removed = 0
            for blob in self.blobs.iterdir():
                if blob.name not in referenced:
                    blob.unlink()
                    removed += 1
            if removed:
                fsync_dir(self.blobs)
            log.info("store gc", extra={"blobs_removed": removed})
            return removed

    def recover(self, keep_transfers: Collection[str] | None = None) -> RecoveryReport:
        """Repair the store after a crash: delete temp files, quarantine unreadable records, drop versions whose
        blob is missing or does not hash right (the active one falls back along the history), list unfinished
        transfers. With ``keep_transfers`` (wasm sha256s still wanted), every other unfinished transfer is deleted
        (an abandoned download must not hold the disk). Safe to run at every start-up."""
        report = RecoveryReport()
        with self._locked():
            for p in sorted(self.tmp.iterdir()):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                report.temp_files_removed.append(p.name)
            good_blobs: dict[str, bool] = {}

            def blob_ok(digest: str, size: int) -> bool:
                if digest not in good_blobs:
                    path = self.blobs / digest
                    ok = path.is_file() and path.stat().st_size == size and _sha256_file(path) == digest
                    if path.exists() and not ok:
                        path.unlink()
                        report.corrupt_blobs.append(digest)
                    good_blobs[digest] = ok
                return good_blobs[digest]

            for path in sorted(self.plugins.glob("*.json")):
                try:
                    record = self._load(path.stem)
                except StoreError as exc:
                    os.replace(path, path.with_name(path.name + ".corrupt"))
                    fsync_dir(self.plugins)
                    report.corrupt_records.append(f"{path.name}: {exc}")
                    continue
                if record is None:
                    continue
                bad = {
                    v: "blob missing or corrupt"
                    for v, iv in record.versions.items()
                    if iv.name != record.name or not blob_ok(iv.wasm_sha256, iv.wasm_size)
                }
                if not bad:
                    continue
                versions = {v: iv for v, iv in record.versions.items() if v not in bad}
                history = [v for v in record.history if v in versions]
                active = record.active if record.active in versions else None
                if active is None and record.active is not None and history:
                    active = history.pop()
                self._save(record.model_copy(update={"versions": versions, "history": history, "active": active}))
                report.dropped_versions += [f"{record.name}@{v}: {why}" for v, why in bad.items()]
            for d in sorted(self.transfers_dir.iterdir()):
                transfer = self._open_transfer(d)
                if transfer is None:
                    self._delete_transfer_dir(d)
                elif keep_transfers is not None and d.name not in keep_transfers:
                    self._delete_transfer_dir(d)
                    report.reclaimed_transfers.append(d.name)
                else:
                    report.transfers.append(d.name)
        if not report.clean or report.reclaimed_transfers:
            log.warning("store recovered", extra={"report": report.model_dump()})
        return report

    # --- transfers -----------------------------------------------------------------------------------------------

    def _delete_transfer_dir(self, directory: Path) -> None:
        """Detach a transfer directory into ``tmp/`` (one rename: it is gone from ``transfers/`` at once, and a
        crash after it leaves only garbage that :meth:`recover` deletes), then delete it."""
        with self._locked():
            graveyard = self.tmp / f"transfer-{directory.name[:16]}.{secrets.token_hex(6)}.gone"
            try:
                os.replace(directory, graveyard)
            except FileNotFoundError:
                return
            except OSError:
                shutil.rmtree(directory, ignore_errors=True)  # e.g. tmp/ on another file system
                return
            with contextlib.suppress(OSError):
                fsync_dir(self.transfers_dir)
            self._point("after_transfer_detach")
            shutil.rmtree(graveyard, ignore_errors=True)

    def reclaim_transfers(self, keep: Collection[str]) -> list[str]:
        """Delete every unfinished transfer whose wasm sha256 is not in ``keep``; returns the ones deleted."""
        gone = []
        with self._locked():
            for d in sorted(self.transfers_dir.iterdir()):
                if d.name not in keep:
                    self._delete_transfer_dir(d)
                    gone.append(d.name)
        if gone:
            log.info("transfers reclaimed", extra={"transfers": gone})
        return gone

    def transfer(self, meta: BundleMeta, chunk_size: int, total_chunks: int) -> Transfer:
        """Start, or resume, the download of ``meta``'s wasm in ``total_chunks`` chunks of ``chunk_size`` bytes.

        A transfer lives in files only, so a new store object (after a restart) resumes where the last one
        stopped. Chunking that does not fit the signed size raises :class:`BundleRejected` ``malformed``.
        """
        meta = parse_meta(meta)
        if chunk_size < 1 or total_chunks != expected_chunks(meta.wasm_size, chunk_size):
            raise BundleRejected(
                "malformed",
                f"{meta.ref}: {total_chunks} chunks of {chunk_size} bytes cannot carry {meta.wasm_size} bytes",
            )
        with self._locked():
            directory = self.transfers_dir / meta.wasm_sha256
            existing = self._open_transfer(directory)
            if existing is not None:
                state = existing.state
                if (state.chunk_size, state.total_chunks) == (chunk_size, total_chunks):
                    if state.meta != meta:
                        existing._save_state(state.model_copy(update={"meta": meta}))
                    return existing
                log.info("transfer restarted with new chunking", extra={"plugin": meta.ref})
                self._delete_transfer_dir(directory)
            try:
                (directory / "chunks").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self.write_error(f"cannot start the transfer of {meta.ref}", exc, 4096) from exc
            transfer = Transfer(self, directory, None)
            try:
                transfer._save_state(
                    TransferState(meta=meta, chunk_size=chunk_size, total_chunks=total_chunks, started_at=time.time())
                )
            except StoreError:
                self._delete_transfer_dir(directory)  # no half-made transfer stays behind
                raise
            return transfer

    def get_transfer(self, wasm_sha256: str) -> Transfer | None:
        """The unfinished transfer of this wasm, if any."""
        if len(wasm_sha256) != 64 or not all(c in "0123456789abcdef" for c in wasm_sha256):
            return None
        return self._open_transfer(self.transfers_dir / wasm_sha256)

    def transfers(self) -> list[Transfer]:
        """All unfinished transfers (to resume after a restart)."""
        out = []
        for d in sorted(self.transfers_dir.iterdir()):
            t = self._open_transfer(d)
            if t is not None:
                out.append(t)
        return out

    def _open_transfer(self, directory: Path) -> Transfer | None:
        try:
            state = TransferState.model_validate_json((directory / "state.json").read_bytes())
        except (OSError, ValidationError):
            return None
        if state.meta.wasm_sha256 != directory.name:
            return None
        (directory / "chunks").mkdir(exist_ok=True)
        return Transfer(self, directory, state)


def _last_write(directory: Path) -> float:
    """The latest modification time of a transfer directory, its state and its chunks."""
    latest = 0.0
    for p in (directory, directory / "state.json", directory / "chunks"):
        with contextlib.suppress(OSError):
            latest = max(latest, p.stat().st_mtime)
    return latest


def _activated(record: PluginRecord, version: str) -> PluginRecord:
    history = [v for v in record.history if v != version]
    if record.active is not None and record.active != version:
        history.append(record.active)
    return record.model_copy(update={"active": version, "history": history})


def _kept_versions(record: PluginRecord, keep: int) -> set[str]:
    active = record.versions.get(record.active) if record.active else None
    others = [iv for v, iv in record.versions.items() if v != record.active]
    by_recency = sorted(others, key=lambda iv: iv.installed_at, reverse=True)
    ordered: list[str] = []
    if active is not None:
        ordered += [
            iv.version
            for iv in by_recency
            if iv.installed_at > active.installed_at and iv.version not in record.history
        ]
    ordered += [v for v in reversed(record.history) if v in record.versions and v != record.active]
    ordered += [iv.version for iv in by_recency]
    kept: list[str] = []
    for v in ordered:
        if v not in kept:
            kept.append(v)
    budget = keep if active is not None else keep + 1
    out = set(kept[:budget])
    if active is not None:
        out.add(active.version)
    return out


class Transfer:
    """A resumable download of one wasm, chunk by chunk, persisted under ``transfers/<wasm_sha256>/``."""

    def __init__(self, store: PluginStore, directory: Path, state: TransferState | None) -> None:
        self.store = store
        self.directory = directory
        self._state = state

    @property
    def state(self) -> TransferState:
        assert self._state is not None
        return self._state

    @property
    def meta(self) -> BundleMeta:
        return self.state.meta

    @property
    def chunk_size(self) -> int:
        return self.state.chunk_size

    @property
    def total_chunks(self) -> int:
        return self.state.total_chunks

    def _save_state(self, state: TransferState) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.store.write_error("cannot write the transfer state", exc, 4096) from exc
        self.store._write(self.directory / "state.json", state.model_dump_json().encode(), "state")
        self._state = state

    def _chunks(self) -> dict[int, Path]:
        out: dict[int, Path] = {}
        try:
            entries = list((self.directory / "chunks").iterdir())
        except FileNotFoundError:
            return out
        for p in entries:
            index, _, _ = p.name.partition(".")
            if index.isdigit() and int(index) < self.total_chunks:
                out[int(index)] = p
        return out

    def chunk_length(self, index: int) -> int:
        """How many bytes chunk ``index`` must hold."""
        if index < self.total_chunks - 1:
            return self.chunk_size
        return self.meta.wasm_size - self.chunk_size * (self.total_chunks - 1)

    def put_chunk(self, index: int, data: bytes, sha256: str) -> bool:
        """Store chunk ``index`` after checking it against its ``sha256``; True if it was new. Putting a chunk
        that is already there does nothing. Raises :class:`BundleRejected` (``hash_mismatch``, ``oversize``,
        ``malformed``) for a bad chunk; what was received before is kept."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.total_chunks:
            raise BundleRejected("malformed", f"chunk index {index!r} is not in 0..{self.total_chunks - 1}")
        if not isinstance(data, bytes | bytearray | memoryview) or not isinstance(sha256, str):
            raise BundleRejected("malformed", f"chunk {index}: data must be bytes and sha256 hex text")
        data = bytes(data)
        if len(data) > self.chunk_size:
            raise BundleRejected("oversize", f"chunk {index} is {len(data)} bytes, the chunk size is {self.chunk_size}")
        if len(data) != self.chunk_length(index):
            raise BundleRejected(
                "malformed", f"chunk {index} is {len(data)} bytes, expected {self.chunk_length(index)}"
            )
        found = hashlib.sha256(data).hexdigest()
        if found != sha256.lower():
            raise BundleRejected("hash_mismatch", f"chunk {index}: sha256 is {found}, the sender said {sha256}")
        with self.store._locked():
            if index in self._chunks():
                return False
            self.store._write(self.directory / "chunks" / f"{index}.{found}", data, "chunk")
            return True

    def received(self) -> list[int]:
        """Indexes of the chunks stored so far."""
        return sorted(self._chunks())

    def missing(self) -> list[int]:
        """Indexes of the chunks still to fetch, in order."""
        have = self._chunks()
        return [i for i in range(self.total_chunks) if i not in have]

    def progress(self) -> float:
        """Fraction of the chunks received, 0.0 to 1.0."""
        return len(self._chunks()) / self.total_chunks

    @property
    def complete(self) -> bool:
        return not self.missing()

    def assemble(self) -> bytes:
        """The whole wasm, checked against the signed sha256.

        A chunk whose file no longer matches its hash is deleted (it shows up in :meth:`missing` again); if every
        chunk is sound but the whole does not match, all chunks are discarded. Both raise :class:`BundleRejected`
        ``hash_mismatch``; missing chunks raise ``malformed``.
        """
        chunks = self._chunks()
        missing = [i for i in range(self.total_chunks) if i not in chunks]
        if missing:
            raise BundleRejected("malformed", f"{self.meta.ref}: {len(missing)} chunks missing, first {missing[0]}")
        parts: list[bytes] = []
        corrupt: list[int] = []
        for i in range(self.total_chunks):
            data = chunks[i].read_bytes()
            if hashlib.sha256(data).hexdigest() != chunks[i].name.partition(".")[2]:
                corrupt.append(i)
            parts.append(data)
        if corrupt:
            for i in corrupt:
                chunks[i].unlink(missing_ok=True)
            raise BundleRejected("hash_mismatch", f"{self.meta.ref}: chunks {corrupt} were corrupt on disk")
        whole = b"".join(parts)
        found = hashlib.sha256(whole).hexdigest()
        if found != self.meta.wasm_sha256 or len(whole) != self.meta.wasm_size:
            with self.store._locked():
                for p in chunks.values():
                    p.unlink(missing_ok=True)
            raise BundleRejected(
                "hash_mismatch", f"{self.meta.ref}: assembled wasm hashes to {found}, signed as {self.meta.wasm_sha256}"
            )
        return whole

    def discard(self) -> None:
        """Delete the transfer and its chunks."""
        self.store._delete_transfer_dir(self.directory)
