"""Helpers for the deployment tests: real WAT plugins, waiting on conditions, a marketplace + agents harness.

Imported by the test modules and, lazily, by conftest.py: importing edged.runtime creates a wasmtime engine, which
installs wasmtime's trap handlers; that must happen after pytest enables faulthandler, or faulthandler takes the
SIGILL of an ordinary wasm trap for a crash."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.deploy import topics
from edged.deploy.agent import DeviceAgent
from edged.deploy.broker import BrokerConfig
from edged.deploy.messages import ChunkHeader, ChunkRequest, Reply, Reported, Status, pack_chunk
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.testing import MISSING, Mosquitto, find_mosquitto
from edged.deploy.trust import TrustStore, generate_key, save_private_key
from edged.host.capabilities import DevicePolicy
from edged.market import Marketplace, SQLiteCatalog, publish
from tests.conftest import wat

WAIT_S = 20.0
ANIM_MANIFEST: dict[str, Any] = {"edged": {"kind": "animation", "capabilities": {"led": True}}}


def anim_wasm(marker: str = "v1", *, trap_at: int | None = None, pad: int = 0) -> bytes:
    """A real animation plugin: ``frame`` returns a black RGB frame of the display's size; with ``trap_at`` it traps
    from that frame on. ``marker`` makes versions differ; ``pad`` adds that many bytes of data (for size tests)."""
    pages = 2 + pad // 65536
    trap = (
        f"(if (i64.ge_u (call $in64 (i64.const 0)) (i64.const {trap_at})) (then unreachable))"
        if trap_at is not None
        else ""
    )
    pad_text = "\\5a" * pad
    padding = f'(data (i32.const 65536) "{pad_text}")' if pad else ""
    return wat(
        f"""(module
  (import "extism:host/env" "input_load_u64" (func $in64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") {pages})
  (data (i32.const 0) "{marker}")
  {padding}
  (func $pixels (result i64)
    (i64.mul (i64.and (i64.shr_u (call $in64 (i64.const 16)) (i64.const 32)) (i64.const 0xffff))
             (i64.shr_u (call $in64 (i64.const 16)) (i64.const 48))))
  (func (export "frame") (result i32) (local $n i64)
    {trap}
    (local.set $n (i64.mul (call $pixels) (i64.const 3)))
    (call $output_set (call $alloc (local.get $n)) (local.get $n))
    (i32.const 0)))"""
    )


def wait_for(cond: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test with ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Broker:
    host: str
    port: int
    restart: Callable[[], None]
    mosquitto: Mosquitto

    def config(self, **kw: Any) -> BrokerConfig:
        return BrokerConfig(host=self.host, port=self.port, **kw)


def start_mosquitto(tmp: Path, **kw: Any) -> Mosquitto:
    if find_mosquitto() is None:
        pytest.fail(MISSING)
    m = Mosquitto(tmp, **kw)
    m.start()
    return m


@dataclass
class Events:
    """Everything the marketplace heard from devices, for assertions."""

    status: list[Status] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    reported: dict[str, Reported] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, device: str, kind: str, msg: Any) -> None:
        with self.lock:
            if kind == "status":
                self.status.append(msg)
            elif kind == "reply":
                self.replies.append(msg)
            elif kind == "reported":
                self.reported[device] = msg

    def statuses(self, device: str, **match: Any) -> list[Status]:
        with self.lock:
            return [s for s in self.status if s.device == device and all(getattr(s, k) == v for k, v in match.items())]

    def reply(self, cmd_id: str) -> Reply | None:
        with self.lock:
            return next((r for r in self.replies if r.id == cmd_id), None)

    def plugin(self, device: str, name: str) -> Any:
        with self.lock:
            rep = self.reported.get(device)
        return rep.plugins.get(name) if rep else None


class RecordingMarketplace(Marketplace):
    """The real marketplace, recording which chunks it served, with faults a test can switch on.

    ``limit``: stop serving after that many chunks (requests are dropped, as if the marketplace were unreachable).
    ``hold``: keep requests in ``held`` instead of serving them (``serve_held()`` serves them later).
    ``corrupt``: ``{index: n}`` serves chunk ``index`` with one byte flipped (and its true sha256) ``n`` times.
    ``drop``: indices never served.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.served: list[tuple[str, int]] = []
        self.limit: int | None = None
        self.hold = False
        self.held: list[tuple[str, ChunkRequest]] = []
        self.corrupt: dict[int, int] = {}
        self.corrupted: list[int] = []
        self.drop: set[int] = set()

    def _serve_chunks(self, device: str, req: ChunkRequest) -> list[mqtt.MQTTMessageInfo]:
        if self.limit is not None and len(self.served) >= self.limit:
            return []
        if self.hold:
            self.held.append((device, req))
            return []
        keep: list[int] = []
        infos = []
        for i in req.indices:
            if i in self.drop:
                continue
            if self.corrupt.get(i, 0) > 0:
                self.corrupt[i] -= 1
                self.corrupted.append(i)
                infos.append(self._publish_corrupt(device, req, i))
                continue
            keep.append(i)
        if keep:
            infos += super()._serve_chunks(device, req.model_copy(update={"indices": keep}))
            self.served += [(device, i) for i in keep]
        return infos

    def _publish_corrupt(self, device: str, req: ChunkRequest, i: int) -> mqtt.MQTTMessageInfo:
        bundle = self.catalog.find_bundle(req.name, req.version, req.wasm_sha256)
        assert bundle is not None
        data = bundle.wasm[i * req.chunk_size : (i + 1) * req.chunk_size]
        total = -(-len(bundle.wasm) // req.chunk_size)
        header = ChunkHeader(
            name=req.name,
            version=req.version,
            wasm_sha256=req.wasm_sha256,
            index=i,
            total=total,
            chunk_size=req.chunk_size,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        return self.client.publish(topics.chunks(device), pack_chunk(header, bytes([data[0] ^ 0xFF]) + data[1:]), qos=1)

    def serve_held(self) -> None:
        """Serve every held request now (once per chunk) and wait until the broker has taken each chunk."""
        self.hold = False
        held, self.held = self.held, []
        seen: set[tuple[str, int]] = set()
        for device, req in held:
            fresh = [i for i in req.indices if (device, i) not in seen]
            seen.update((device, i) for i in fresh)
            if fresh:
                for info in self._serve_chunks(device, req.model_copy(update={"indices": fresh})):
                    info.wait_for_publish(WAIT_S)


class Harness:
    """A marketplace (catalog in tmp, serving chunks) and in-process device agents, all on one broker."""

    def __init__(
        self, tmp: Path, broker: Broker, passwords: dict[str, str] | None = None, ca_file: Path | None = None
    ) -> None:
        self.passwords = passwords
        self.ca_file = ca_file
        self.tmp = tmp
        self.broker = broker
        self.key: Ed25519PrivateKey = generate_key()
        self.key_path = tmp / "market.key"
        save_private_key(self.key, self.key_path)
        self.trust = TrustStore()
        self.trust.add(self.key, ["publisher", "marketplace"])
        self.trust_path = tmp / "trust.json"
        self.trust.to_file(self.trust_path)
        self.catalog = SQLiteCatalog(tmp / "market.db")
        self.events = Events()
        self.market = RecordingMarketplace(self.catalog, self.key, self.broker_config("market"))
        self.market.add_listener(self.events)
        self.market.start()
        self.agents: dict[str, DeviceAgent] = {}
        self.targets: dict[str, EmulatedTarget] = {}

    def broker_config(self, user: str) -> BrokerConfig:
        if self.passwords is None:
            return self.broker.config(ca_file=self.ca_file)
        return self.broker.config(username=user, password=self.passwords[user], ca_file=self.ca_file)

    def publish(
        self,
        name: str,
        version: str,
        wasm: bytes | None = None,
        manifest: dict[str, Any] | None = None,
        rollback: bool = False,
    ) -> Any:
        return publish(
            self.catalog,
            wasm if wasm is not None else anim_wasm(f"{name}-{version}"),
            manifest or ANIM_MANIFEST,
            name,
            version,
            self.key,
            rollback,
        )

    def store(self, device: str) -> PluginStore:
        return PluginStore(self.tmp / "devices" / device)

    def agent(
        self,
        device: str,
        groups: tuple[str, ...] = (),
        policy: DevicePolicy | None = None,
        start: bool = True,
        **kw: Any,
    ) -> DeviceAgent:
        target = EmulatedTarget(width=8, height=8, fps=200, policy=policy)
        kw.setdefault("health_frames", 10)
        kw.setdefault("health_timeout_s", 30.0)
        kw.setdefault("chunk_size", 4096)
        for g in groups:  # the operator records the membership (devices' own claims are never trusted)
            self.catalog.set_members(g, add=[device])
        cfg = self.broker_config(device)
        a = DeviceAgent(device, cfg, self.store(device), self.trust, target, policy, groups, **kw)
        self.agents[device] = a
        self.targets[device] = target
        if start:
            a.start()
            wait_for(a.connected.is_set, what=f"{device} to connect")
        return a

    def healthy(self, device: str, name: str, version: str) -> bool:
        p = self.events.plugin(device, name)
        return bool(p and p.version == version and p.state == "healthy")

    def wait_healthy(self, device: str, name: str, version: str) -> None:
        wait_for(lambda: self.healthy(device, name, version), what=f"{device} to run {name}@{version} healthy")
        wait_for(lambda: self.targets[device].running().get(name) == version, what=f"{name}@{version} to run")

    def wait_healthy_remote(self, device: str, name: str, version: str) -> None:
        """For an agent in another process: wait for its reported state only."""
        wait_for(lambda: self.healthy(device, name, version), what=f"{device} to run {name}@{version} healthy")

    def close(self) -> None:
        for a in self.agents.values():
            a.stop()
        for t in self.targets.values():
            t.close()
        self.market.stop()
        self.catalog.close()
