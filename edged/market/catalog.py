"""The marketplace's storage: bundles and their wasm blobs, desired state per device/group, group membership, device
state, and rollouts with per-device state.

:class:`Catalog` is the interface the rest of the marketplace uses. :class:`SQLiteCatalog` (one file, the embedded
default) and :class:`PostgresCatalog` (a PostgreSQL database that several ``serve`` processes and CLIs share) fill
it with the same SQL over the same tables. The schema is built by ordered migrations
(``edged/market/migrations/<backend>/NNNN_*.sql``) recorded in a ``schema_migrations`` table; :func:`open_catalog`
picks the backend from a path or a ``postgresql://`` URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..deploy.bundle import Bundle, BundleMeta, compare_versions, parse_meta
from ..errors import CatalogError, CatalogUnavailable, RolloutConflict

log = logging.getLogger("edged.market.catalog")

_STRICT = ConfigDict(extra="forbid")

#: rollout states during which the rollout holds its target (one at a time per target)
ACTIVE_ROLLOUT_STATES = ("running", "paused", "aborting")
#: most plugin-status rows one device may have (a device's desired state names at most 64 plugins)
MAX_STATUS_ROWS = 64


class DesiredEntry(BaseModel):
    """One plugin of a target's desired state, as the catalog stores it."""

    model_config = _STRICT
    version: str
    allow_downgrade: bool = False
    #: the rollout that set this entry (a pin it left on a device), if any; never sent to devices
    rollout: int | None = None


class DeviceRecord(BaseModel):
    """What the marketplace knows about one device.

    ``groups`` are the groups the marketplace records it in (``edged market group``); ``claimed_groups`` what the
    device itself says in its presence and reported state (shown, never trusted).
    """

    model_config = _STRICT
    id: str
    groups: list[str] = Field(default_factory=list)
    claimed_groups: list[str] = Field(default_factory=list)
    presence: str = "unknown"
    last_seen: float | None = None
    #: the device's last reported state (``edged.deploy.messages.Reported`` as JSON)
    reported: dict[str, Any] = Field(default_factory=dict)
    #: last status event per plugin: ``{name: {version, state, percent, reason, ts}}``
    status: dict[str, dict[str, Any]] = Field(default_factory=dict)


#: what started devices do when a rollout halts or is aborted
OnAbort = Literal["finish", "rollback"]


class RolloutPolicy(BaseModel):
    """How a rollout proceeds and when it stops (abort criteria as in AWS IoT Jobs: a failure threshold over at
    least ``min_finished`` finished devices)."""

    model_config = _STRICT
    canary: float = Field(default=0.0, ge=0, le=1)
    #: fraction of the target's devices per wave (1: everyone at once)
    wave: float = Field(default=1.0, gt=0, le=1)
    #: halt when failed / finished goes past this, once ``min_finished`` devices finished (1: never)
    halt_failure_rate: float = Field(default=1.0, ge=0, le=1)
    min_finished: int = Field(default=1, ge=1)
    #: a started device that is neither healthy nor failed after this long is ``timed_out`` (counts as a failure)
    device_timeout_s: float = Field(default=600.0, gt=0)
    #: on a halt or abort: started devices ``finish`` (keep the new version, pinned) or ``rollback``
    on_abort: OnAbort = "finish"
    allow_downgrade: bool = False


class RolloutRecord(BaseModel):
    """A rollout: what, where, how (``policy``), and where it is (``state``, ``detail``, per-state ``counts``)."""

    model_config = _STRICT
    id: int
    name: str
    version: str
    target: str
    state: str
    created_at: float
    updated_at: float = 0.0
    policy: RolloutPolicy = Field(default_factory=RolloutPolicy)
    detail: dict[str, Any] = Field(default_factory=dict)
    owner: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)

    @property
    def canary(self) -> float:
        return self.policy.canary

    @property
    def halt_failure_rate(self) -> float:
        return self.policy.halt_failure_rate


class RolloutDevice(BaseModel):
    """One device of a rollout: its stage, its state in this rollout and the desired-state ``seq`` (of ``source``)
    that asked it for the version, so only answers to that request count."""

    model_config = _STRICT
    device: str
    stage: int
    state: str
    reason: str | None = None
    percent: float = 0.0
    seq: int | None = None
    source: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


class Catalog(Protocol):
    """Storage the marketplace needs. Targets are ``device:<id>`` or ``group:<g>``."""

    def add_bundle(self, bundle: Bundle) -> None: ...
    def get_bundle(self, name: str, version: str) -> Bundle | None: ...
    def find_bundle(self, name: str, version: str, wasm_sha256: str) -> Bundle | None: ...
    def bundle_info(self, name: str, version: str) -> tuple[BundleMeta, dict[str, Any]] | None: ...
    def bundles(self, name: str | None = None) -> list[BundleMeta]: ...
    def manifests(self, name: str) -> list[tuple[BundleMeta, dict[str, Any]]]: ...
    def plugin_names(self) -> set[str]: ...
    def read_wasm(self, wasm_sha256: str) -> bytes | None: ...
    def read_chunk(self, wasm_sha256: str, offset: int, size: int) -> bytes | None: ...
    def blob_size(self, wasm_sha256: str) -> int | None: ...
    def get_desired(self, target: str) -> tuple[dict[str, DesiredEntry], int]: ...
    def set_desired(self, target: str, plugins: dict[str, DesiredEntry], seq: int) -> None: ...
    def update_desired(
        self, target: str, change: Callable[[dict[str, DesiredEntry]], dict[str, DesiredEntry] | None]
    ) -> tuple[dict[str, DesiredEntry], int]: ...
    def desired_targets(self) -> list[str]: ...
    def get_playlist(self, target: str) -> list[str] | None: ...
    def set_playlist(self, target: str, items: list[str] | None) -> None: ...
    def set_members(self, group: str, add: Iterable[str] = ..., remove: Iterable[str] = ...) -> None: ...
    def group_members(self, group: str) -> list[str]: ...
    def groups(self) -> dict[str, list[str]]: ...
    def update_device(self, device_id: str, **fields: Any) -> None: ...
    def set_plugin_status(self, device_id: str, name: str, status: dict[str, Any]) -> bool: ...
    def status_rows(self, device_id: str) -> int: ...
    def devices(self) -> list[DeviceRecord]: ...
    def device(self, device_id: str) -> DeviceRecord | None: ...
    def grant_chunks(self, device: str, wasm_sha256: str, ttl_s: float) -> None: ...
    def has_grant(self, device: str, wasm_sha256: str) -> bool: ...
    def granted(self, device: str) -> set[str]: ...
    def groups_of(self, device: str) -> list[str]: ...
    def create_rollout(
        self,
        name: str,
        version: str,
        target: str,
        policy: RolloutPolicy,
        plan: list[tuple[str, int, str]],
        detail: dict[str, Any],
    ) -> int: ...
    def rollout(self, rollout_id: int) -> RolloutRecord | None: ...
    def rollouts(self, active: bool = False) -> list[RolloutRecord]: ...
    def rollout_devices(self, rollout_id: int) -> list[RolloutDevice]: ...
    def set_rollout(
        self,
        rollout_id: int,
        *,
        state: str | None = None,
        detail: dict[str, Any] | None = None,
        expect: tuple[str, ...] = (),
    ) -> bool: ...
    def update_rollout_device(self, rollout_id: int, device: str, **fields: Any) -> None: ...
    def claim_rollouts(self, owner: str, lease_s: float, rollout_id: int | None = None) -> list[int]: ...
    def release_rollouts(self, owner: str) -> None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------------------------


class _SQLCatalog:
    """The SQL both backends share; a subclass provides the connection, the transaction and the dialect bits."""

    backend = ""
    _placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._in_tx = 0

    # --- plumbing ----------------------------------------------------------------------------------------------

    def _execute(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _tx(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _integrity_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._placeholder != "?":
            sql = sql.replace("?", self._placeholder)
        with self._lock:
            return self._execute(sql, args)

    def _migrate(self) -> None:
        """Apply every migration not recorded in ``schema_migrations``, in order, each in its own transaction."""
        folder = resources.files("edged.market") / "migrations" / self.backend
        files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
        with self._tx():
            self._lock_migrations()
            self._q(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at REAL NOT NULL)"
            )
            done = {int(r[0]) for r in self._q("SELECT version FROM schema_migrations")}
            for f in files:
                version = int(f.name.split("_", 1)[0])
                if version in done:
                    continue
                for statement in _statements(f.read_text()):
                    self._q(statement)
                self._q("INSERT INTO schema_migrations VALUES (?,?,?)", (version, f.name, time.time()))
                log.info("catalog migrated", extra={"backend": self.backend, "migration": f.name})

    def _lock_migrations(self) -> None:
        """Serialise migrations of concurrent processes (SQLite's write transaction does this already)."""

    def schema_version(self) -> int:
        rows = self._q("SELECT max(version) FROM schema_migrations")
        return int(rows[0][0] or 0)

    # --- bundles -----------------------------------------------------------------------------------------------

    def add_bundle(self, bundle: Bundle) -> None:
        m = bundle.meta
        with self._tx():
            if self._q("SELECT 1 FROM bundles WHERE name=? AND version=?", (m.name, m.version)):
                raise CatalogError(f"{m.ref} is already published; publish a new version")
            self._q(
                "INSERT INTO blobs (sha256, size, data) VALUES (?,?,?) ON CONFLICT (sha256) DO NOTHING",
                (m.wasm_sha256, len(bundle.wasm), bundle.wasm),
            )
            self._q(
                "INSERT INTO bundles (name, version, wasm_sha256, meta, manifest, created_at, wasm_size) "
                "VALUES (?,?,?,?,?,?,?)",
                (m.name, m.version, m.wasm_sha256, m.model_dump_json(), json.dumps(bundle.manifest), m.created_at,
                 len(bundle.wasm)),
            )  # fmt: skip

    def bundle_info(self, name: str, version: str) -> tuple[BundleMeta, dict[str, Any]] | None:
        """A bundle's metadata and manifest, without its wasm."""
        rows = self._q("SELECT meta, manifest FROM bundles WHERE name=? AND version=?", (name, version))
        return (parse_meta(rows[0][0]), json.loads(rows[0][1])) if rows else None

    def get_bundle(self, name: str, version: str) -> Bundle | None:
        """The whole bundle, wasm included (publishing checks, tests): the service uses :meth:`bundle_info`."""
        info = self.bundle_info(name, version)
        if info is None:
            return None
        wasm = self.read_wasm(info[0].wasm_sha256)
        return Bundle(meta=info[0], manifest=info[1], wasm=wasm) if wasm is not None else None

    def find_bundle(self, name: str, version: str, wasm_sha256: str) -> Bundle | None:
        b = self.get_bundle(name, version)
        return b if b is not None and b.meta.wasm_sha256 == wasm_sha256 else None

    def bundles(self, name: str | None = None) -> list[BundleMeta]:
        """Published bundles' metadata, by name then version (semver order)."""
        rows = (
            self._q("SELECT meta FROM bundles WHERE name=?", (name,)) if name else self._q("SELECT meta FROM bundles")
        )
        metas = [parse_meta(r[0]) for r in rows]
        return sorted(metas, key=lambda m: (m.name, m.semver))

    def manifests(self, name: str) -> list[tuple[BundleMeta, dict[str, Any]]]:
        """Every version of ``name`` with its manifest, in semver order (no wasm is read)."""
        rows = self._q("SELECT meta, manifest FROM bundles WHERE name=?", (name,))
        out = [(parse_meta(m), json.loads(man)) for m, man in rows]
        return sorted(out, key=lambda p: p[0].semver)

    def plugin_names(self) -> set[str]:
        return {str(r[0]) for r in self._q("SELECT DISTINCT name FROM bundles")}

    def read_wasm(self, wasm_sha256: str) -> bytes | None:
        rows = self._q("SELECT data FROM blobs WHERE sha256=?", (wasm_sha256,))
        return bytes(rows[0][0]) if rows else None

    def read_chunk(self, wasm_sha256: str, offset: int, size: int) -> bytes | None:
        """``size`` bytes of a blob from ``offset`` (fewer at its end), read without loading the whole blob."""
        rows = self._q("SELECT substr(data, ?, ?) FROM blobs WHERE sha256=?", (offset + 1, size, wasm_sha256))
        return bytes(rows[0][0]) if rows else None

    def blob_size(self, wasm_sha256: str) -> int | None:
        rows = self._q("SELECT size FROM blobs WHERE sha256=?", (wasm_sha256,))
        return int(rows[0][0]) if rows else None

    # --- desired state -----------------------------------------------------------------------------------------

    def get_desired(self, target: str) -> tuple[dict[str, DesiredEntry], int]:
        rows = self._q("SELECT plugins, seq FROM desired WHERE target=?", (target,))
        if not rows:
            return {}, 0
        return _entries(rows[0][0]), int(rows[0][1])

    def set_desired(self, target: str, plugins: dict[str, DesiredEntry], seq: int) -> None:
        """Write ``target``'s document with this ``seq`` as is (imports, tests); changes use :meth:`update_desired`."""
        doc = json.dumps({k: v.model_dump(exclude_defaults=True) for k, v in plugins.items()})
        self._q(
            "INSERT INTO desired (target, plugins, seq) VALUES (?,?,?) "
            "ON CONFLICT (target) DO UPDATE SET plugins=excluded.plugins, seq=excluded.seq",
            (target, doc, seq),
        )

    def update_desired(
        self, target: str, change: Callable[[dict[str, DesiredEntry]], dict[str, DesiredEntry] | None]
    ) -> tuple[dict[str, DesiredEntry], int]:
        """Change ``target``'s document under its row lock and give it the next ``seq`` (previous + 1).

        ``change`` gets the current entries and returns the new ones, or None to change nothing (then the current
        entries and seq are returned). Concurrent writers of one target are serialised, so every seq is unique and
        names exactly one content."""
        with self._tx():
            self._q(
                "INSERT INTO desired (target, plugins, seq) VALUES (?, '{}', 0) ON CONFLICT (target) DO NOTHING",
                (target,),
            )
            plugins, seq = self._q(f"SELECT plugins, seq FROM desired WHERE target=?{self._for_update}", (target,))[0]
            current = _entries(plugins)
            new = change(dict(current))
            if new is None:
                return current, int(seq)
            seq = int(seq) + 1
            doc = json.dumps({k: v.model_dump(exclude_defaults=True) for k, v in new.items()})
            self._q("UPDATE desired SET plugins=?, seq=? WHERE target=?", (doc, seq, target))
            return new, seq

    _for_update = ""

    def desired_targets(self) -> list[str]:
        return [r[0] for r in self._q("SELECT target FROM desired WHERE seq > 0 ORDER BY target")]

    def get_playlist(self, target: str) -> list[str] | None:
        """The playlist ``target``'s desired state asks for, or None (the device keeps its own)."""
        rows = self._q("SELECT items FROM playlists WHERE target=?", (target,))
        return [str(i) for i in json.loads(rows[0][0])] if rows else None

    def set_playlist(self, target: str, items: list[str] | None) -> None:
        """Set ``target``'s playlist (plugin names in play order), or with None drop it."""
        if items is None:
            self._q("DELETE FROM playlists WHERE target=?", (target,))
        else:
            self._q(
                "INSERT INTO playlists (target, items) VALUES (?,?) "
                "ON CONFLICT (target) DO UPDATE SET items=excluded.items",
                (target, json.dumps(items)),
            )

    # --- groups ------------------------------------------------------------------------------------------------

    def set_members(self, group: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Record devices as members of ``group`` (and drop others): the marketplace's own membership records."""
        with self._tx():
            for d in add:
                self._q("INSERT INTO group_members (grp, device) VALUES (?,?) ON CONFLICT DO NOTHING", (group, d))
            for d in remove:
                self._q("DELETE FROM group_members WHERE grp=? AND device=?", (group, d))

    def group_members(self, group: str) -> list[str]:
        return [r[0] for r in self._q("SELECT device FROM group_members WHERE grp=? ORDER BY device", (group,))]

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for g, d in self._q("SELECT grp, device FROM group_members ORDER BY grp, device"):
            out.setdefault(g, []).append(d)
        return out

    def groups_of(self, device: str) -> list[str]:
        return [r[0] for r in self._q("SELECT grp FROM group_members WHERE device=? ORDER BY grp", (device,))]

    # --- devices -----------------------------------------------------------------------------------------------

    def update_device(self, device_id: str, **fields: Any) -> None:
        """Create or update a device: ``groups`` (as claimed by the device), ``presence``, ``last_seen``,
        ``reported``."""
        allowed = {"groups", "presence", "last_seen", "reported"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown device fields {sorted(bad)}")
        with self._tx():
            self._q("INSERT INTO devices (id) VALUES (?) ON CONFLICT (id) DO NOTHING", (device_id,))
            for key, value in fields.items():
                v = json.dumps(value) if key in ("groups", "reported") else value
                self._q(f"UPDATE devices SET {key}=? WHERE id=?", (v, device_id))  # key is from `allowed`

    def set_plugin_status(self, device_id: str, name: str, status: dict[str, Any]) -> bool:
        """Keep the last status event of ``device_id``'s plugin ``name``. A device has at most
        :data:`MAX_STATUS_ROWS` rows: a new name past that is refused (returns False)."""
        with self._tx():
            self._q("INSERT INTO devices (id) VALUES (?) ON CONFLICT (id) DO NOTHING", (device_id,))
            exists = self._q("SELECT 1 FROM plugin_status WHERE device=? AND name=?", (device_id, name))
            if not exists and self.status_rows(device_id) >= MAX_STATUS_ROWS:
                return False
            self._q(
                "INSERT INTO plugin_status (device, name, status) VALUES (?,?,?) "
                "ON CONFLICT (device, name) DO UPDATE SET status=excluded.status",
                (device_id, name, json.dumps(status)),
            )
            return True

    def status_rows(self, device_id: str) -> int:
        return int(self._q("SELECT count(*) FROM plugin_status WHERE device=?", (device_id,))[0][0])

    def _records(self, rows: list[tuple[Any, ...]]) -> list[DeviceRecord]:
        ids = [r[0] for r in rows]
        if not ids:
            return []
        status: dict[str, dict[str, Any]] = {}
        groups: dict[str, list[str]] = {}
        if len(ids) == 1:
            srows = self._q("SELECT device, name, status FROM plugin_status WHERE device=?", (ids[0],))
            grows = self._q("SELECT device, grp FROM group_members WHERE device=? ORDER BY grp", (ids[0],))
        else:
            srows = self._q("SELECT device, name, status FROM plugin_status")
            grows = self._q("SELECT device, grp FROM group_members ORDER BY grp")
        for did, n, s in srows:
            status.setdefault(did, {})[n] = json.loads(s)
        for did, g in grows:
            groups.setdefault(did, []).append(g)
        return [
            DeviceRecord(
                id=did,
                groups=groups.get(did, []),
                claimed_groups=json.loads(claimed),
                presence=presence,
                last_seen=last_seen,
                reported=json.loads(reported),
                status=status.get(did, {}),
            )
            for did, claimed, presence, last_seen, reported in rows
        ]

    def devices(self) -> list[DeviceRecord]:
        return self._records(self._q("SELECT id, groups, presence, last_seen, reported FROM devices ORDER BY id"))

    def device(self, device_id: str) -> DeviceRecord | None:
        rows = self._q("SELECT id, groups, presence, last_seen, reported FROM devices WHERE id=?", (device_id,))
        recs = self._records(rows)
        return recs[0] if recs else None

    # --- chunk grants (one-off install commands) ---------------------------------------------------------------

    def grant_chunks(self, device: str, wasm_sha256: str, ttl_s: float) -> None:
        """Let ``device`` fetch this wasm for ``ttl_s`` although no desired state names it (an install command)."""
        self._q(
            "INSERT INTO chunk_grants (device, wasm_sha256, expires) VALUES (?,?,?) "
            "ON CONFLICT (device, wasm_sha256) DO UPDATE SET expires=excluded.expires",
            (device, wasm_sha256, time.time() + ttl_s),
        )

    def granted(self, device: str) -> set[str]:
        """The wasm hashes install commands let ``device`` fetch now."""
        rows = self._q("SELECT wasm_sha256 FROM chunk_grants WHERE device=? AND expires > ?", (device, time.time()))
        return {str(r[0]) for r in rows}

    def has_grant(self, device: str, wasm_sha256: str) -> bool:
        rows = self._q(
            "SELECT 1 FROM chunk_grants WHERE device=? AND wasm_sha256=? AND expires > ?",
            (device, wasm_sha256, time.time()),
        )
        return bool(rows)

    # --- rollouts ----------------------------------------------------------------------------------------------

    def create_rollout(
        self,
        name: str,
        version: str,
        target: str,
        policy: RolloutPolicy,
        plan: list[tuple[str, int, str]],
        detail: dict[str, Any],
    ) -> int:
        """Record a rollout (``running``) and its devices ``(device, stage, state)``; returns its id. Raises
        :class:`RolloutConflict` while another rollout is active on ``target``."""
        now = time.time()
        try:
            with self._tx():
                active = self._q(
                    "SELECT id, name, version, state FROM rollouts WHERE target=? AND state IN (?,?,?)",
                    (target, *ACTIVE_ROLLOUT_STATES),
                )
                if active:
                    raise _conflict(target, active[0])
                rid = int(
                    self._q(
                        "INSERT INTO rollouts (name, version, target, canary, halt, state, created_at, detail, policy, "
                        "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id",
                        (name, version, target, policy.canary, policy.halt_failure_rate, "running", now,
                         json.dumps(detail), policy.model_dump_json(), now),
                    )[0][0]
                )  # fmt: skip
                for device, stage, state in plan:
                    self._q(
                        "INSERT INTO rollout_devices (rollout, device, stage, state) VALUES (?,?,?,?)",
                        (rid, device, stage, state),
                    )
                return rid
        except self._integrity_errors() as exc:  # a concurrent create won the unique index
            active = self._q(
                "SELECT id, name, version, state FROM rollouts WHERE target=? AND state IN (?,?,?)",
                (target, *ACTIVE_ROLLOUT_STATES),
            )
            if active:
                raise _conflict(target, active[0]) from exc
            raise

    _ROLLOUT_COLS = "id, name, version, target, state, created_at, updated_at, policy, detail, owner"

    def _rollout(self, row: tuple[Any, ...], counts: dict[str, int]) -> RolloutRecord:
        rid, name, version, target, state, created, updated, policy, detail, owner = row
        return RolloutRecord(
            id=int(rid),
            name=name,
            version=version,
            target=target,
            state=state,
            created_at=created,
            updated_at=updated or created,
            policy=RolloutPolicy.model_validate_json(policy) if policy and policy != "{}" else RolloutPolicy(),
            detail=json.loads(detail),
            owner=owner,
            counts=counts,
        )

    def _counts(self, rollout_id: int | None = None) -> dict[int, dict[str, int]]:
        sql = "SELECT rollout, state, count(*) FROM rollout_devices"
        rows = (
            self._q(sql + " WHERE rollout=? GROUP BY rollout, state", (rollout_id,))
            if rollout_id is not None
            else self._q(sql + " GROUP BY rollout, state")
        )
        out: dict[int, dict[str, int]] = {}
        for rid, state, n in rows:
            out.setdefault(int(rid), {})[state] = int(n)
        return out

    def rollout(self, rollout_id: int) -> RolloutRecord | None:
        rows = self._q(f"SELECT {self._ROLLOUT_COLS} FROM rollouts WHERE id=?", (rollout_id,))
        return self._rollout(rows[0], self._counts(rollout_id).get(rollout_id, {})) if rows else None

    def rollouts(self, active: bool = False) -> list[RolloutRecord]:
        if active:
            rows = self._q(
                f"SELECT {self._ROLLOUT_COLS} FROM rollouts WHERE state IN (?,?,?) ORDER BY id", ACTIVE_ROLLOUT_STATES
            )
        else:
            rows = self._q(f"SELECT {self._ROLLOUT_COLS} FROM rollouts ORDER BY id")
        counts = self._counts()
        return [self._rollout(r, counts.get(int(r[0]), {})) for r in rows]

    def rollout_devices(self, rollout_id: int) -> list[RolloutDevice]:
        rows = self._q(
            "SELECT device, stage, state, reason, percent, seq, source, started_at, finished_at FROM rollout_devices "
            "WHERE rollout=? ORDER BY stage, device",
            (rollout_id,),
        )
        keys = ("device", "stage", "state", "reason", "percent", "seq", "source", "started_at", "finished_at")
        return [RolloutDevice.model_validate(dict(zip(keys, r, strict=True))) for r in rows]

    def set_rollout(
        self,
        rollout_id: int,
        *,
        state: str | None = None,
        detail: dict[str, Any] | None = None,
        expect: tuple[str, ...] = (),
    ) -> bool:
        """Change a rollout's state and/or detail; with ``expect``, only from one of those states (returns whether
        it changed)."""
        sets = ["updated_at=?"]
        args: list[Any] = [time.time()]
        if state is not None:
            sets.append("state=?")
            args.append(state)
        if detail is not None:
            sets.append("detail=?")
            args.append(json.dumps(detail))
        where = "id=?"
        wargs: list[Any] = [rollout_id]
        if expect:
            where += " AND state IN (" + ",".join("?" * len(expect)) + ")"
            wargs += list(expect)
        rows = self._q(f"UPDATE rollouts SET {', '.join(sets)} WHERE {where} RETURNING id", (*args, *wargs))
        return bool(rows)

    def update_rollout_device(self, rollout_id: int, device: str, **fields: Any) -> None:
        allowed = {"state", "reason", "percent", "seq", "source", "started_at", "finished_at", "stage"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown rollout device fields {sorted(bad)}")
        if not fields:
            return
        sets = ", ".join(f"{k}=?" for k in fields)  # keys are from `allowed`
        sql = f"UPDATE rollout_devices SET {sets} WHERE rollout=? AND device=?"
        self._q(sql, (*fields.values(), rollout_id, device))

    def claim_rollouts(self, owner: str, lease_s: float, rollout_id: int | None = None) -> list[int]:
        """Take (or keep) the lease on every active rollout (or just ``rollout_id``) that no other live ``serve``
        holds; returns their ids."""
        now = time.time()
        only, args = ("", ()) if rollout_id is None else (" AND id=?", (rollout_id,))
        rows = self._q(
            "UPDATE rollouts SET owner=?, lease_until=? WHERE state IN (?,?,?) "
            f"AND (owner IS NULL OR owner=? OR lease_until < ?){only} RETURNING id",
            (owner, now + lease_s, *ACTIVE_ROLLOUT_STATES, owner, now, *args),
        )
        return sorted(int(r[0]) for r in rows)

    def release_rollouts(self, owner: str) -> None:
        """Give up ``owner``'s leases (a clean stop), so another ``serve`` takes over at once."""
        self._q("UPDATE rollouts SET owner=NULL, lease_until=0 WHERE owner=?", (owner,))


def _conflict(target: str, row: tuple[Any, ...]) -> RolloutConflict:
    rid, name, version, state = row
    return RolloutConflict(
        f"rollout {rid} ({name}@{version}) is {state} on {target}: one rollout per target at a time; wait for it, "
        f"or `edged market rollout abort {rid}`"
    )


def _entries(doc: str) -> dict[str, DesiredEntry]:
    return {k: DesiredEntry.model_validate(v) for k, v in json.loads(doc).items()}


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (``;`` at a line end; ``--`` comment lines dropped)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    out, cur = [], []
    for ln in lines:
        cur.append(ln)
        if ln.rstrip().endswith(";"):
            out.append("\n".join(cur).strip().rstrip(";"))
            cur = []
    if "".join(cur).strip():
        out.append("\n".join(cur).strip())
    return [s for s in out if s]


class SQLiteCatalog(_SQLCatalog):
    """:class:`Catalog` in one SQLite file (WAL mode, so ``serve`` and the CLI can share it). Thread-safe."""

    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise CatalogUnavailable(f"cannot open the catalog {path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, args).fetchall()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock:
            if self._in_tx:  # nested: part of the outer transaction
                self._in_tx += 1
                try:
                    yield
                finally:
                    self._in_tx -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")  # the write lock now: read-modify-write is serialised
            self._in_tx = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._in_tx = 0

    def _integrity_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.IntegrityError,)


class PostgresCatalog(_SQLCatalog):
    """:class:`Catalog` in a PostgreSQL database (psycopg 3), shared by several ``serve`` processes and CLIs.

    ``url`` is a libpq connection string or ``postgresql://`` URL. Row locks (``SELECT … FOR UPDATE``) serialise
    writers of one target's desired state; a lost connection is re-opened once per statement outside a
    transaction."""

    backend = "postgres"
    _placeholder = "%s"
    _for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        super().__init__()
        import psycopg

        self._psycopg = psycopg
        self.url = url
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise CatalogUnavailable(f"cannot open the catalog {_redact(url)}: {str(exc).strip()}") from None
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            cur = self._conn.execute(sql, args)
        except self._psycopg.OperationalError:
            if self._in_tx or (not self._conn.closed and not self._conn.broken):
                raise
            self._conn = self._psycopg.connect(self.url, autocommit=True)
            cur = self._conn.execute(sql, args)
        return cur.fetchall() if cur.description is not None else []

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock:
            if self._conn.closed or self._conn.broken:
                self._conn = self._psycopg.connect(self.url, autocommit=True)
            self._in_tx += 1
            try:
                with self._conn.transaction():
                    yield
            finally:
                self._in_tx -= 1

    def _lock_migrations(self) -> None:
        self._q("SELECT pg_advisory_xact_lock(4242013)")

    def _integrity_errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.IntegrityError,)

    def read_chunk(self, wasm_sha256: str, offset: int, size: int) -> bytes | None:
        rows = self._q("SELECT substring(data from ? for ?) FROM blobs WHERE sha256=?", (offset + 1, size, wasm_sha256))
        return bytes(rows[0][0]) if rows else None


def _redact(url: str) -> str:
    """A connection URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, userinfo = head.partition("//")
    return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{tail}"


def open_catalog(spec: str | Path) -> SQLiteCatalog | PostgresCatalog:
    """A catalog from a ``postgresql://`` (or ``postgres://``) URL, else a SQLite file path."""
    s = str(spec)
    if s.startswith(("postgresql://", "postgres://")):
        return PostgresCatalog(s)
    return SQLiteCatalog(spec)


def latest_before(metas: list[BundleMeta], version: str) -> BundleMeta | None:
    """The highest published version lower than ``version`` (what a rollback goes back to)."""
    lower = [m for m in metas if compare_versions(m.version, version) < 0]
    return max(lower, key=lambda m: m.semver) if lower else None
