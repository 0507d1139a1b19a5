"""The marketplace's storage: bundles, desired state per device/group, device state, rollouts.

:class:`Catalog` is the small interface the rest of the marketplace uses; :class:`SQLiteCatalog` fills it with one
SQLite file. A PostgreSQL backend would implement the same methods over the same six tables (see ``_SCHEMA``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..deploy.bundle import Bundle, BundleMeta, compare_versions, parse_meta
from ..errors import DeployError

_STRICT = ConfigDict(extra="forbid")


class CatalogError(DeployError, LookupError):
    """A bundle, device or rollout the catalog does not know."""


class DesiredEntry(BaseModel):
    """One plugin of a target's desired state, as the catalog stores it."""

    model_config = _STRICT
    version: str
    allow_downgrade: bool = False


class DeviceRecord(BaseModel):
    """What the marketplace knows about one device (from its presence, reported state and status)."""

    model_config = _STRICT
    id: str
    groups: list[str] = Field(default_factory=list)
    presence: str = "unknown"
    last_seen: float | None = None
    #: the device's last reported state (``edged.deploy.messages.Reported`` as JSON)
    reported: dict[str, Any] = Field(default_factory=dict)
    #: last status event per plugin: ``{name: {version, state, percent, reason, ts}}``
    status: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RolloutRecord(BaseModel):
    """A staged rollout and how it went."""

    model_config = _STRICT
    id: int
    name: str
    version: str
    target: str
    canary: float
    halt_failure_rate: float
    state: str
    created_at: float
    detail: dict[str, Any] = Field(default_factory=dict)


class Catalog(Protocol):
    """Storage the marketplace needs. Targets are ``device:<id>`` or ``group:<g>``."""

    def add_bundle(self, bundle: Bundle) -> None: ...
    def get_bundle(self, name: str, version: str) -> Bundle | None: ...
    def find_bundle(self, name: str, version: str, wasm_sha256: str) -> Bundle | None: ...
    def bundles(self, name: str | None = None) -> list[BundleMeta]: ...
    def get_desired(self, target: str) -> tuple[dict[str, DesiredEntry], int]: ...
    def set_desired(self, target: str, plugins: dict[str, DesiredEntry], seq: int) -> None: ...
    def desired_targets(self) -> list[str]: ...
    def get_playlist(self, target: str) -> list[str] | None: ...
    def set_playlist(self, target: str, items: list[str] | None) -> None: ...
    def update_device(self, device_id: str, **fields: Any) -> None: ...
    def set_plugin_status(self, device_id: str, name: str, status: dict[str, Any]) -> None: ...
    def devices(self) -> list[DeviceRecord]: ...
    def device(self, device_id: str) -> DeviceRecord | None: ...
    def add_rollout(self, name: str, version: str, target: str, canary: float, halt: float) -> int: ...
    def update_rollout(self, rollout_id: int, state: str, detail: dict[str, Any]) -> None: ...
    def rollouts(self) -> list[RolloutRecord]: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    name TEXT NOT NULL, version TEXT NOT NULL, wasm_sha256 TEXT NOT NULL,
    meta TEXT NOT NULL, manifest TEXT NOT NULL, wasm BLOB NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS desired (
    target TEXT PRIMARY KEY, plugins TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS playlists (
    target TEXT PRIMARY KEY, items TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, groups TEXT NOT NULL DEFAULT '[]', presence TEXT NOT NULL DEFAULT 'unknown',
    last_seen REAL, reported TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS plugin_status (
    device TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, PRIMARY KEY (device, name)
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version TEXT NOT NULL, target TEXT NOT NULL,
    canary REAL NOT NULL, halt REAL NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""


class SQLiteCatalog:
    """:class:`Catalog` in one SQLite file (WAL mode, so ``serve`` and the CLI can share it). Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- bundles -----------------------------------------------------------------------------------------------

    def add_bundle(self, bundle: Bundle) -> None:
        m = bundle.meta
        if self._q("SELECT 1 FROM bundles WHERE name=? AND version=?", (m.name, m.version)):
            raise CatalogError(f"{m.ref} is already published; publish a new version")
        self._q(
            "INSERT INTO bundles VALUES (?,?,?,?,?,?,?)",
            (
                m.name,
                m.version,
                m.wasm_sha256,
                m.model_dump_json(),
                json.dumps(bundle.manifest),
                bundle.wasm,
                m.created_at,
            ),
        )

    def _bundle(self, rows: list[tuple[Any, ...]]) -> Bundle | None:
        if not rows:
            return None
        meta, manifest, wasm = rows[0]
        return Bundle(meta=parse_meta(meta), manifest=json.loads(manifest), wasm=bytes(wasm))

    def get_bundle(self, name: str, version: str) -> Bundle | None:
        return self._bundle(
            self._q("SELECT meta, manifest, wasm FROM bundles WHERE name=? AND version=?", (name, version))
        )

    def find_bundle(self, name: str, version: str, wasm_sha256: str) -> Bundle | None:
        return self._bundle(
            self._q(
                "SELECT meta, manifest, wasm FROM bundles WHERE name=? AND version=? AND wasm_sha256=?",
                (name, version, wasm_sha256),
            )
        )

    def bundles(self, name: str | None = None) -> list[BundleMeta]:
        """Published bundles' metadata, by name then version (semver order)."""
        rows = (
            self._q("SELECT meta FROM bundles WHERE name=?", (name,)) if name else self._q("SELECT meta FROM bundles")
        )
        metas = [parse_meta(r[0]) for r in rows]
        return sorted(metas, key=lambda m: (m.name, m.semver))

    # --- desired state -----------------------------------------------------------------------------------------

    def get_desired(self, target: str) -> tuple[dict[str, DesiredEntry], int]:
        rows = self._q("SELECT plugins, seq FROM desired WHERE target=?", (target,))
        if not rows:
            return {}, 0
        return {k: DesiredEntry.model_validate(v) for k, v in json.loads(rows[0][0]).items()}, int(rows[0][1])

    def set_desired(self, target: str, plugins: dict[str, DesiredEntry], seq: int) -> None:
        doc = json.dumps({k: v.model_dump() for k, v in plugins.items()})
        self._q("INSERT OR REPLACE INTO desired VALUES (?,?,?)", (target, doc, seq))

    def desired_targets(self) -> list[str]:
        return [r[0] for r in self._q("SELECT target FROM desired ORDER BY target")]

    def get_playlist(self, target: str) -> list[str] | None:
        """The playlist ``target``'s desired state asks for, or None (the device keeps its own)."""
        rows = self._q("SELECT items FROM playlists WHERE target=?", (target,))
        return [str(i) for i in json.loads(rows[0][0])] if rows else None

    def set_playlist(self, target: str, items: list[str] | None) -> None:
        """Set ``target``'s playlist (plugin names in play order), or with None drop it."""
        if items is None:
            self._q("DELETE FROM playlists WHERE target=?", (target,))
        else:
            self._q("INSERT OR REPLACE INTO playlists VALUES (?,?)", (target, json.dumps(items)))

    # --- devices -----------------------------------------------------------------------------------------------

    def update_device(self, device_id: str, **fields: Any) -> None:
        """Create or update a device: ``groups``, ``presence``, ``last_seen``, ``reported``."""
        allowed = {"groups", "presence", "last_seen", "reported"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown device fields {sorted(bad)}")
        with self._lock:
            self._q("INSERT OR IGNORE INTO devices (id) VALUES (?)", (device_id,))
            for key, value in fields.items():
                v = json.dumps(value) if key in ("groups", "reported") else value
                self._q(f"UPDATE devices SET {key}=? WHERE id=?", (v, device_id))  # key is from `allowed`

    def set_plugin_status(self, device_id: str, name: str, status: dict[str, Any]) -> None:
        with self._lock:
            self._q("INSERT OR IGNORE INTO devices (id) VALUES (?)", (device_id,))
            self._q("INSERT OR REPLACE INTO plugin_status VALUES (?,?,?)", (device_id, name, json.dumps(status)))

    def _record(self, row: tuple[Any, ...]) -> DeviceRecord:
        did, groups, presence, last_seen, reported = row
        status = {n: json.loads(s) for n, s in self._q("SELECT name, status FROM plugin_status WHERE device=?", (did,))}
        return DeviceRecord(
            id=did,
            groups=json.loads(groups),
            presence=presence,
            last_seen=last_seen,
            reported=json.loads(reported),
            status=status,
        )

    def devices(self) -> list[DeviceRecord]:
        return [self._record(r) for r in self._q("SELECT * FROM devices ORDER BY id")]

    def device(self, device_id: str) -> DeviceRecord | None:
        rows = self._q("SELECT * FROM devices WHERE id=?", (device_id,))
        return self._record(rows[0]) if rows else None

    # --- rollouts ----------------------------------------------------------------------------------------------

    def add_rollout(self, name: str, version: str, target: str, canary: float, halt: float) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO rollouts (name, version, target, canary, halt, state, created_at) VALUES (?,?,?,?,?,?,?)",
                (name, version, target, canary, halt, "started", time.time()),
            )
            return int(cur.lastrowid or 0)

    def update_rollout(self, rollout_id: int, state: str, detail: dict[str, Any]) -> None:
        self._q("UPDATE rollouts SET state=?, detail=? WHERE id=?", (state, json.dumps(detail), rollout_id))

    def rollouts(self) -> list[RolloutRecord]:
        return [
            RolloutRecord(
                id=r[0],
                name=r[1],
                version=r[2],
                target=r[3],
                canary=r[4],
                halt_failure_rate=r[5],
                state=r[6],
                created_at=r[7],
                detail=json.loads(r[8]),
            )
            for r in self._q("SELECT * FROM rollouts ORDER BY id")
        ]


def latest_before(metas: list[BundleMeta], version: str) -> BundleMeta | None:
    """The highest published version lower than ``version`` (what a rollback goes back to)."""
    lower = [m for m in metas if compare_versions(m.version, version) < 0]
    return max(lower, key=lambda m: m.semver) if lower else None
