"""What the agent must remember across restarts, in ``agent-state.json``: the seq applied per source, which source
installed each plugin, health checks not finished, failed installs and the downloads the documents want."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ...errors import StoreError
from ...fsutil import atomic_write
from ..store import PluginStore
from .desired import Request, Source

log = logging.getLogger("edged.deploy.agent")


class Attempt(NamedTuple):
    """One install tried: a plugin's version, and whether it could go below the installed one."""

    name: str
    version: str
    allow_downgrade: bool


@dataclass(frozen=True)
class Pending:
    """A version activated whose health check has not finished (re-checked at start)."""

    version: str
    source: Source


class AgentState:
    """The agent's persistent state. A failed write (a full disk) keeps it in memory until the next save."""

    def __init__(self, path: Path, store: PluginStore, device_id: str) -> None:
        self.path = path
        self._store = store
        self._device_id = device_id
        #: the newest seq applied, per document source
        self.applied: dict[Source, int] = {}
        #: which document source installed each plugin (only those it installed may it remove)
        self.origin: dict[str, Source] = {}
        self.pending: dict[str, Pending] = {}
        #: installs that failed -> the request they failed for (not retried for it, once for a newer one)
        self.failed: dict[Attempt, Request] = {}
        #: wasm sha256 each source's last applied document wants (recovery at start keeps only these unfinished
        #: transfers); None until known, so an older state file never makes recovery delete anything
        self.wanted_hashes: dict[Source, list[str]] | None = None

    def request(self, source: Source) -> Request:
        """The request ``source`` stands for now: its applied document, or the command."""
        return Request(source) if not source.is_document else Request(source, self.applied.get(source, -1))

    def apply(self, source: Source, seq: int, wanted_hashes: list[str]) -> None:
        """Record ``source``'s document ``seq`` (and the wasm it wants) durably, BEFORE it is applied: on a failed
        write nothing changes and :class:`StoreError`/:class:`DiskFull` is raised. Otherwise a full disk would keep
        the seq in memory only, and after a restart a broker could hand back an older document the device takes."""
        applied = self.applied.get(source)
        wanted = None if self.wanted_hashes is None else dict(self.wanted_hashes)
        self.applied[source] = seq
        if self.wanted_hashes is None:
            self.wanted_hashes = {}
        self.wanted_hashes[source] = wanted_hashes
        try:
            self.save(required=True)
        except StoreError:
            if applied is None:
                self.applied.pop(source, None)
            else:
                self.applied[source] = applied
            self.wanted_hashes = wanted
            raise

    def load(self) -> None:
        """Read the state file; a missing one is a fresh start, an unreadable one is logged and ignored."""
        try:
            raw = json.loads(self.path.read_text())
            self.applied = {Source.parse(str(k)): int(v) for k, v in raw.get("applied", {}).items()}
            self.origin = {str(k): Source.parse(str(v)) for k, v in raw.get("origin", {}).items()}
            self.pending = {
                str(k): Pending(str(v["version"]), Source.parse(str(v["source"])))
                for k, v in raw.get("pending", {}).items()
            }
            self.failed = {
                Attempt(str(n), str(v), bool(d)): Request.parse(str(r)) for n, v, d, r in raw.get("failed", [])
            }
            if isinstance(raw.get("transfers_wanted"), dict):
                self.wanted_hashes = {
                    Source.parse(str(k)): [str(h) for h in v]
                    for k, v in raw["transfers_wanted"].items()
                    if isinstance(v, list)
                }
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            log.warning("agent state unreadable, starting afresh", extra={"error": str(exc)})

    def save(self, required: bool = False) -> bool:
        """Write the state file (atomically). A failed write (a full disk) is logged and the state stays in memory,
        to be written with the next change; with ``required`` it raises :class:`StoreError`/:class:`DiskFull`
        instead (for a write that must be durable before the next step)."""
        state: dict[str, Any] = {
            "applied": {s.key: seq for s, seq in self.applied.items()},
            "origin": {name: s.key for name, s in self.origin.items()},
            "pending": {name: {"version": p.version, "source": p.source.key} for name, p in self.pending.items()},
            "failed": [[*attempt, req.key] for attempt, req in self.failed.items()],
        }
        if self.wanted_hashes is not None:
            state["transfers_wanted"] = {s.key: hashes for s, hashes in self.wanted_hashes.items()}
        data = json.dumps(state).encode()
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            err = self._store.write_error(f"cannot write the agent state {self.path}", exc, len(data))
            if required:
                raise err from exc
            log.error("agent state not saved", extra={"device": self._device_id, "error": str(err)})
            return False
        return True
