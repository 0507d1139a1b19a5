"""Protocol-level simulated devices for the deployment benchmark (not a device agent).

Each simulated device follows edged's deployment protocol on its own topics: it announces itself online, reads its
own and its group's signed desired state (the envelope's signature is checked), asks for the chunks of a new
version in a window of 16, checks each chunk's sha256, asks again after a 3 s stall, and then reports the version
healthy with the ``seq`` it applied. What it does not do: store the wasm, verify the whole bundle, compile or run
the plugin. Devices share MQTT connections (``devices_per_connection`` each), so the broker sees fewer
connections than devices; every message is still per device, on per-device topics.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from edged.deploy import topics
from edged.deploy.messages import ChunkRequest, DesiredState, Presence, Reported, ReportedPlugin, unpack_chunk
from edged.deploy.trust import TrustStore, open_envelope

WINDOW = 16
STALL_S = 3.0


@dataclass
class _Dev:
    id: str
    docs: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # source -> (seq, {name: spec})
    running: dict[str, str] = field(default_factory=dict)
    job: dict[str, Any] | None = None
    bytes: int = 0
    chunk_bytes: int = 0
    chunks: int = 0
    healthy_at: float | None = None


class SimFleet:
    """``n`` simulated devices named ``prefix-0000``… in ``group``, over ``n / devices_per_connection`` clients."""

    def __init__(
        self,
        host: str,
        port: int,
        trust: TrustStore,
        n: int,
        group: str,
        prefix: str = "sim",
        devices_per_connection: int = 50,
        chunk_size: int = 96 * 1024,
    ) -> None:
        self.trust = trust
        self.group = group
        self.chunk_size = chunk_size
        self.devices = {f"{prefix}-{i:04d}": _Dev(f"{prefix}-{i:04d}") for i in range(n)}
        self.lock = threading.Lock()
        self.clients: list[tuple[mqtt.Client, list[str]]] = []
        ids = sorted(self.devices)
        for k in range(0, n, devices_per_connection):
            mine = ids[k : k + devices_per_connection]
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-conn-{k}")
            c.max_inflight_messages_set(0)
            c.on_message = lambda cl, u, msg, mine=mine: self._on_message(cl, msg, mine)
            c.connect(host, port)
            c.loop_start()
            subs = [(topics.group_desired(group), 1)]
            for d in mine:
                subs += [(topics.desired(d), 1), (topics.chunks(d), 1)]
            c.subscribe(subs)
            for d in mine:
                online = Presence(device=d, state="online", groups=[group]).model_dump_json()
                c.publish(topics.presence(d), online, qos=1, retain=True)
            self.clients.append((c, mine))
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _client(self, device: str) -> mqtt.Client:
        return next(c for c, mine in self.clients if device in mine)

    def _on_message(self, client: mqtt.Client, msg: mqtt.MQTTMessage, mine: list[str]) -> None:
        if msg.topic == topics.group_desired(self.group):
            doc = self._open(msg.payload)  # one signature check for the devices of this connection
            for d in mine:
                self._on_desired(client, self.devices[d], f"group:{self.group}", msg.payload, doc)
            return
        device = topics.device_of(msg.topic)
        if device not in self.devices:
            return
        dev = self.devices[device]
        if msg.topic.endswith("/desired"):
            self._on_desired(client, dev, "device", msg.payload)
        elif msg.topic.endswith("/chunks"):
            self._on_chunk(client, dev, msg.payload)

    def _open(self, payload: bytes) -> DesiredState | None:
        if not payload:
            return None
        return DesiredState.model_validate(open_envelope(payload, self.trust, role="marketplace"))

    def _on_desired(
        self, client: mqtt.Client, dev: _Dev, source: str, payload: bytes, doc: DesiredState | None = None
    ) -> None:
        doc = doc or self._open(payload)
        if doc is None:
            return
        with self.lock:
            dev.bytes += len(payload)
            if doc.seq <= dev.docs.get(source, (-1, {}))[0]:
                return
            dev.docs[source] = (doc.seq, {p.name: p.meta for p in doc.plugins})
            self._reconcile(client, dev)

    def _wanted(self, dev: _Dev) -> dict[str, dict[str, Any]]:
        out = dict(dev.docs.get(f"group:{self.group}", (0, {}))[1])
        out.update(dev.docs.get("device", (0, {}))[1])
        return out

    def _reconcile(self, client: mqtt.Client, dev: _Dev) -> None:
        for name, meta in self._wanted(dev).items():
            if dev.running.get(name) == meta["version"] or (dev.job and dev.job["meta"] == meta):
                if dev.running.get(name) == meta["version"]:
                    self._report(client, dev)
                continue
            total = -(-int(meta["wasm_size"]) // self.chunk_size)
            dev.job = {"meta": meta, "missing": set(range(total)), "asked": set(), "last": time.monotonic()}
            self._ask(client, dev)

    def _ask(self, client: mqtt.Client, dev: _Dev) -> None:
        job = dev.job
        assert job is not None
        want = sorted(job["missing"] - job["asked"])[: max(0, WINDOW - len(job["asked"]))]
        if not want:
            return
        job["asked"].update(want)
        m = job["meta"]
        req = ChunkRequest(
            device=dev.id,
            name=m["name"],
            version=m["version"],
            wasm_sha256=m["wasm_sha256"],
            chunk_size=self.chunk_size,
            indices=want,
        ).model_dump_json()
        dev.bytes += len(req)
        client.publish(topics.chunk_request(dev.id), req, qos=1)

    def _on_chunk(self, client: mqtt.Client, dev: _Dev, payload: bytes) -> None:
        header, data = unpack_chunk(payload)
        ok = hashlib.sha256(data).hexdigest() == header.sha256
        with self.lock:
            dev.bytes += len(payload)
            dev.chunk_bytes += len(data)
            dev.chunks += 1
            job = dev.job
            if job is None or job["meta"]["wasm_sha256"] != header.wasm_sha256 or not ok:
                return
            job["asked"].discard(header.index)
            job["missing"].discard(header.index)
            job["last"] = time.monotonic()
            if job["missing"]:
                if len(job["asked"]) <= WINDOW // 2:
                    self._ask(client, dev)
                return
            dev.running[job["meta"]["name"]] = job["meta"]["version"]
            dev.job = None
            dev.healthy_at = time.monotonic()
            self._report(client, dev)

    def _report(self, client: mqtt.Client, dev: _Dev) -> None:
        rep = Reported(
            device=dev.id,
            groups=[self.group],
            plugins={n: ReportedPlugin(version=v, state="healthy") for n, v in dev.running.items()},
            applied={s: seq for s, (seq, _) in dev.docs.items()},
        ).model_dump_json()
        dev.bytes += len(rep)
        client.publish(topics.reported(dev.id), rep, qos=1, retain=True)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            with self.lock:
                for dev in self.devices.values():
                    if dev.job and now - dev.job["last"] > STALL_S:
                        dev.job["asked"].clear()
                        dev.job["last"] = now
                        self._ask(self._client(dev.id), dev)

    def healthy(self, name: str, version: str) -> int:
        with self.lock:
            return sum(d.running.get(name) == version for d in self.devices.values())

    def stats(self) -> dict[str, float]:
        with self.lock:
            n = len(self.devices)
            return {
                "bytes_per_device": sum(d.bytes for d in self.devices.values()) / n,
                "chunk_bytes": float(sum(d.chunk_bytes for d in self.devices.values())),
                "chunks": float(sum(d.chunks for d in self.devices.values())),
            }

    def close(self) -> None:
        self._stop.set()
        for c, mine in self.clients:
            for d in mine:
                c.publish(topics.presence(d), json.dumps({"device": d, "state": "offline"}), qos=1, retain=True)
            c.disconnect()
            c.loop_stop()
