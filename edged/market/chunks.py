"""Bounded chunk serving for ``edged market serve``.

Requests are not answered on the network thread: :class:`ChunkServer` keeps, per device, the set of chunk indices it
still owes (a repeat of an index already owed adds nothing), and one worker publishes them round-robin across
devices while

- at most ``max_inflight_bytes`` of chunk messages are published and not yet acknowledged by the broker
  (back-pressure: requests wait, they are never buffered as payloads),
- each device stays within its token bucket (``device_rate`` bytes per second, bursts of ``device_burst``),
- each device owes at most ``max_pending`` chunks (more is dropped; a device asks again after its stall timer),
- a device gets only the wasm of a bundle that its desired state (its own document or one of a group the
  marketplace records it in) names, or that an install command granted it.

A request for a bundle this ``serve`` cannot see yet (a catalog that lags, a desired state not committed yet) is
kept and looked up again for ``bundle_wait_s`` seconds before it is dropped; it is never answered with an error, so
the device does not fail (it asks again after its stall timer). Several ``serve`` processes share requests through
an MQTT shared subscription, so each request reaches one of them.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from ..deploy import topics
from ..deploy.messages import CHUNK_OVERHEAD, MAX_CHUNK_SIZE, ChunkHeader, ChunkRequest, pack_chunk
from .catalog import Catalog

log = logging.getLogger("edged.market.chunks")

#: how long the set of bundles a device may fetch is cached
ALLOWED_TTL_S = 2.0


@dataclass
class _Owed:
    """What one device is owed: per (name, version, sha, chunk_size), a set of indices."""

    indices: dict[tuple[str, str, str, int], set[int]] = field(default_factory=dict)
    tokens: float = 0.0
    refilled: float = 0.0
    #: a bundle not visible yet, or not in the device's desired state: look again until then
    wait_until: dict[tuple[str, str, str, int], float] = field(default_factory=dict)
    first_wait: dict[tuple[str, str, str, int], float] = field(default_factory=dict)

    def count(self) -> int:
        return sum(len(s) for s in self.indices.values())


@dataclass
class ChunkStats:
    """Counters a test or benchmark reads."""

    chunks: int = 0
    bytes: int = 0
    duplicates_dropped: int = 0
    refused: int = 0
    dropped_over_limit: int = 0
    waited_for_bundle: int = 0
    peak_inflight_bytes: int = 0
    served: collections.Counter[tuple[str, str, int]] = field(default_factory=collections.Counter)


class ChunkServer:
    """Serves chunk requests on ``client`` from ``catalog`` within the bounds above. ``start()`` runs the worker."""

    def __init__(
        self,
        catalog: Catalog,
        client: mqtt.Client,
        *,
        max_inflight_bytes: int = 8 * 1024 * 1024,
        device_rate: float = 2 * 1024 * 1024,
        device_burst: float = 4 * 1024 * 1024,
        max_pending: int = 1024,
        bundle_wait_s: float = 30.0,
        cache_bytes: int = 64 * 1024 * 1024,
        allowed: Callable[[str], set[str]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.client = client
        self.max_inflight_bytes = max_inflight_bytes
        self.device_rate = device_rate
        self.device_burst = max(device_burst, 2.0 * MAX_CHUNK_SIZE)
        self.max_pending = max_pending
        self.bundle_wait_s = bundle_wait_s
        self.cache_bytes = cache_bytes
        self._allowed_fn = allowed or self._allowed_from_catalog
        self._owed: dict[str, _Owed] = {}
        self._order: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._inflight: dict[int, int] = {}
        self._acked_early: dict[int, float] = {}
        self._inflight_bytes = 0
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cache_size = 0
        self._allowed_cache: dict[str, tuple[float, set[str]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = ChunkStats()

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edged-chunks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def inflight_bytes(self) -> int:
        return self._inflight_bytes

    def pending(self) -> int:
        with self._cond:
            return sum(o.count() for o in self._owed.values())

    # --- inbound -----------------------------------------------------------------------------------------------

    def submit(self, device: str, req: ChunkRequest) -> None:
        """Take a request (on the network thread: no database access here)."""
        key = (req.name, req.version, req.wasm_sha256, req.chunk_size)
        with self._cond:
            owed = self._owed.get(device)
            if owed is None:
                owed = self._owed[device] = _Owed(tokens=self.device_burst, refilled=time.monotonic())
                self._order.append(device)
            have = owed.indices.setdefault(key, set())
            room = self.max_pending - owed.count()
            fresh = [i for i in dict.fromkeys(req.indices) if i not in have]
            self.stats.duplicates_dropped += len(req.indices) - len(fresh)
            if len(fresh) > room:
                self.stats.dropped_over_limit += len(fresh) - max(0, room)
                fresh = fresh[: max(0, room)]
            have.update(fresh)
            if not have:
                del owed.indices[key]
            self._cond.notify_all()

    def on_published(self, mid: int) -> None:
        """The broker acknowledged message ``mid`` (paho's on_publish)."""
        with self._cond:
            size = self._inflight.pop(mid, None)
            if size is None:
                # publish() of a chunk may not have returned yet in the worker (or this is another message:
                # forgotten after a few seconds; message ids only repeat after 65,535 publishes)
                now = time.monotonic()
                self._acked_early[mid] = now
                if len(self._acked_early) > 1024:
                    self._acked_early = {m: t for m, t in self._acked_early.items() if now - t < 5.0}
                return
            self._inflight_bytes -= size
            self._cond.notify_all()

    # --- worker ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                work = self._next()
            except Exception:
                log.exception("chunk scheduling failed")
                time.sleep(0.5)
                continue
            if work is None:
                continue
            device, key, index = work
            try:
                self._send(device, key, index)
            except Exception:
                log.exception("chunk serving failed", extra={"device": device, "bundle": f"{key[0]}@{key[1]}"})

    def _next(self) -> tuple[str, tuple[str, str, str, int], int] | None:
        """The next chunk to send (round-robin over devices), waiting while nothing can be sent."""
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                soonest = 1.0
                for _ in range(len(self._order)):
                    device = self._order[0]
                    self._order.rotate(-1)
                    owed = self._owed.get(device)
                    if owed is None or not owed.indices:
                        self._owed.pop(device, None)
                        self._order.remove(device)
                        continue
                    owed.tokens = min(self.device_burst, owed.tokens + (now - owed.refilled) * self.device_rate)
                    owed.refilled = now
                    for key, idx in owed.indices.items():
                        if owed.wait_until.get(key, 0) > now:
                            soonest = min(soonest, owed.wait_until[key] - now)
                            continue
                        cost = key[3]
                        if owed.tokens < cost:
                            soonest = min(soonest, (cost - owed.tokens) / self.device_rate)
                            break
                        # the message is the chunk plus its header line: at most CHUNK_OVERHEAD more
                        size = cost + CHUNK_OVERHEAD
                        if self._inflight_bytes + size > self.max_inflight_bytes and self._inflight_bytes > 0:
                            break  # back-pressure: wait for acknowledgements
                        index = min(idx)
                        idx.discard(index)
                        if not idx:
                            del owed.indices[key]
                            owed.wait_until.pop(key, None)
                        owed.tokens -= cost
                        return device, key, index
                    if self._inflight_bytes + 1024 > self.max_inflight_bytes:
                        break
                self._cond.wait(timeout=max(0.01, soonest))
            return None

    def _hold(self, device: str, key: tuple[str, str, str, int], index: int) -> None:
        """Put ``index`` back and look again in a second: the bundle is not visible or not assigned (yet). After
        ``bundle_wait_s`` the device's requests for it are dropped (it asks again after its stall timer)."""
        with self._cond:
            owed = self._owed.get(device)
            if owed is None:
                owed = self._owed[device] = _Owed(tokens=self.device_burst, refilled=time.monotonic())
                self._order.append(device)
            now = time.monotonic()
            since = owed.first_wait.setdefault(key, now)
            owed.tokens += key[3]  # nothing sent: give the tokens back
            if now - since > self.bundle_wait_s:
                owed.indices.pop(key, None)
                owed.wait_until.pop(key, None)
                owed.first_wait.pop(key, None)
                log.warning("chunk requests dropped", extra={"device": device, "bundle": f"{key[0]}@{key[1]}"})
                return
            owed.indices.setdefault(key, set()).add(index)
            owed.wait_until[key] = now + 1.0
            self.stats.waited_for_bundle += 1

    def _send(self, device: str, key: tuple[str, str, str, int], index: int) -> None:
        name, version, sha, chunk_size = key
        if sha not in self.allowed(device):
            self._allowed_cache.pop(device, None)
            if sha not in self.allowed(device):
                self.stats.refused += 1
                if self.catalog.blob_size(sha) is not None:
                    log.warning(
                        "chunk request refused: not in the device's desired state",
                        extra={"device": device, "bundle": f"{name}@{version}"},
                    )
                self._hold(device, key, index)
                return
        cached = self._cache.get(sha)
        size = len(cached) if cached is not None else self.catalog.blob_size(sha)
        if size is None:
            self._hold(device, key, index)
            return
        total = max(1, -(-size // chunk_size))
        if index >= total:
            return  # a device that asks for a chunk past the end gets nothing
        data = self._chunk(sha, size, index * chunk_size, chunk_size)
        if data is None:
            self._hold(device, key, index)
            return
        header = ChunkHeader(
            name=name,
            version=version,
            wasm_sha256=sha,
            index=index,
            total=total,
            chunk_size=chunk_size,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        payload = pack_chunk(header, data)
        with self._cond:  # counted before publishing: its acknowledgement may come before publish() returns
            self._inflight_bytes += len(payload)
            self.stats.peak_inflight_bytes = max(self.stats.peak_inflight_bytes, self._inflight_bytes)
        # never under self._cond: paho may hold its own locks while calling on_published, which takes self._cond
        info = self.client.publish(topics.chunks(device), payload, qos=1)
        with self._cond:
            if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) and info.mid not in self._acked_early:
                self._inflight[info.mid] = len(payload)
            else:
                self._acked_early.pop(info.mid, None)
                self._inflight_bytes -= len(payload)
            self.stats.chunks += 1
            self.stats.bytes += len(payload)
            self.stats.served[(device, sha, index)] += 1
            owed = self._owed.get(device)
            if owed is not None:
                owed.first_wait.pop(key, None)

    def _chunk(self, sha: str, size: int, offset: int, length: int) -> bytes | None:
        cached = self._cache.get(sha)
        if cached is None and size <= self.cache_bytes // 4:
            cached = self.catalog.read_wasm(sha)
            if cached is not None:
                self._cache[sha] = cached
                self._cache_size += len(cached)
                while self._cache_size > self.cache_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_size -= len(old)
        if cached is not None:
            self._cache.move_to_end(sha)
            return cached[offset : offset + length]
        return self.catalog.read_chunk(sha, offset, length)

    # --- what a device may fetch -------------------------------------------------------------------------------

    def allowed(self, device: str) -> set[str]:
        hit = self._allowed_cache.get(device)
        now = time.monotonic()
        if hit is not None and now - hit[0] < ALLOWED_TTL_S:
            return hit[1]
        shas = self._allowed_fn(device)
        self._allowed_cache[device] = (now, shas)
        return shas

    def _allowed_from_catalog(self, device: str) -> set[str]:
        return allowed_wasm(self.catalog, device)

    def reset_client(self) -> None:
        """The connection was lost: unacknowledged publishes will not be acknowledged by message id any more."""
        with self._cond:
            self._inflight.clear()
            self._acked_early.clear()
            self._inflight_bytes = 0
            self._cond.notify_all()


def allowed_wasm(catalog: Catalog, device: str) -> set[str]:
    """The wasm hashes ``device`` may fetch: those its own desired state and its recorded groups' desired states
    name (rollback targets included), and those an install command granted it."""
    shas: set[str] = set()
    for target in [f"device:{device}", *(f"group:{g}" for g in catalog.groups_of(device))]:
        entries, _ = catalog.get_desired(target)
        for name, entry in entries.items():
            info = catalog.bundle_info(name, entry.version)
            if info is not None:
                shas.add(info[0].wasm_sha256)
    return shas | catalog.granted(device)
