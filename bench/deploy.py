#!/usr/bin/env python3
"""Deployment over MQTT, measured on a loopback mosquitto started for the run.

1. One device: a signed 1 MB plugin from ``deploy`` (the desired state published) to running (activated) and to
   healthy (its health check passed). Target: running in <= 0.5 s.
2. A fleet of N in-process agents (each with its own MQTT client, store and emulated display) in one group: from
   ``deploy --group`` to all healthy. Target: <= 10 s for 100.

Each scenario has an anchor measured side by side, on the same broker: the raw time for paho clients to publish and
receive the same bytes in the same chunk sizes (no signing, verifying, storing or running). Ratios against the anchor
say what deployment costs on top of moving the bytes; CPU seconds and bytes on the wire are per device.

Usage: ``.venv/bin/python bench/deploy.py [--devices 100] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edged.deploy.agent import BrokerConfig, DeviceAgent
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.testing import Mosquitto
from edged.deploy.trust import TrustStore, generate_key
from edged.market import Marketplace, Rollout, SQLiteCatalog, publish

MANIFEST = {"edged": {"kind": "animation", "capabilities": {"led": True}}}
CHUNK = 96 * 1024


def plugin(marker: str, size: int) -> bytes:
    """A real animation plugin (black frames) padded with data to about ``size`` bytes."""
    pad = max(0, size - 400)
    pages = 2 + pad // 65536
    data = "".join(f"\\{b:02x}" for b in hashlib.sha256(marker.encode()).digest()) + "\\5a" * pad
    return wasmtime.wat2wasm(
        f"""(module
  (import "extism:host/env" "input_load_u64" (func $in64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") {pages})
  (data (i32.const 65536) "{data}")
  (func (export "frame") (result i32) (local $n i64)
    (local.set $n (i64.mul (i64.mul (i64.and (i64.shr_u (call $in64 (i64.const 16)) (i64.const 32))
      (i64.const 0xffff)) (i64.shr_u (call $in64 (i64.const 16)) (i64.const 48))) (i64.const 3)))
    (call $output_set (call $alloc (local.get $n)) (local.get $n)) (i32.const 0)))"""
    )


def raw_transfer(broker: BrokerConfig, clients: int, payload_sizes: list[int]) -> float:
    """Anchor: ``clients`` subscribers each receive the given payloads (QoS 1), published by one client."""
    got = threading.Semaphore(0)
    subs = []
    for i in range(clients):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"anchor-sub-{i}")
        c.on_message = lambda *_: got.release()
        c.connect(broker.host, broker.port)
        c.loop_start()
        c.subscribe(f"anchor/{i}", qos=1)
        subs.append(c)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anchor-pub")
    pub.max_inflight_messages_set(64)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    time.sleep(0.5)  # subscriptions settle (bench only: outside the timed part)
    blobs = [b"\x5a" * n for n in payload_sizes]
    t0 = time.perf_counter()
    for i in range(clients):
        for b in blobs:
            pub.publish(f"anchor/{i}", b, qos=1)
    for _ in range(clients * len(blobs)):
        got.acquire()
    dt = time.perf_counter() - t0
    for c in [*subs, pub]:
        c.disconnect()
        c.loop_stop()
    return dt


def chunk_sizes(size: int) -> list[int]:
    return [min(CHUNK, size - i) for i in range(0, size, CHUNK)]


def one_device(broker: BrokerConfig, tmp: Path, repeat: int) -> dict[str, float]:
    key = generate_key()
    trust = TrustStore()
    trust.add(key, ["publisher", "marketplace"])
    catalog = SQLiteCatalog(tmp / "one.db")
    market = Marketplace(catalog, key, broker)
    market.start()
    target = EmulatedTarget(width=16, height=16, fps=200)
    agent = DeviceAgent("bench-1", broker, PluginStore(tmp / "one"), trust, target, chunk_size=CHUNK, health_frames=10)
    agent.start()
    while not agent.connected.is_set():
        time.sleep(0.01)
    running, healthy, cpu, wire, anchors = [], [], [], [], []
    size = 0
    for r in range(repeat):
        version = f"1.{r}.0"
        wasm = plugin(version, 1024 * 1024)
        size = len(wasm)
        publish(catalog, wasm, MANIFEST, "big", version, key)
        anchors.append(raw_transfer(broker, 1, chunk_sizes(size)))
        b0 = agent.bytes_in + agent.bytes_out
        c0 = time.process_time()
        t0 = time.perf_counter()
        market.set_desired("device:bench-1", "big", version)
        while target.running().get("big") != version:
            time.sleep(0.001)
        running.append(time.perf_counter() - t0)
        while agent._jobs:
            time.sleep(0.001)
        healthy.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        wire.append(agent.bytes_in + agent.bytes_out - b0)
    agent.stop()
    target.close()
    market.stop()
    catalog.close()
    return {
        "size": size,
        "running": statistics.median(running),
        "healthy": statistics.median(healthy),
        "anchor": statistics.median(anchors),
        "cpu": statistics.median(cpu),
        "wire": statistics.median(wire),
    }


def fleet(broker: BrokerConfig, tmp: Path, n: int, size: int) -> dict[str, float]:
    key = generate_key()
    trust = TrustStore()
    trust.add(key, ["publisher", "marketplace"])
    catalog = SQLiteCatalog(tmp / "fleet.db")
    market = Marketplace(catalog, key, broker)
    market.start()
    agents, targets = [], []
    for i in range(n):
        t = EmulatedTarget(width=8, height=8, fps=30)
        a = DeviceAgent(
            f"fleet-{i:03d}",
            broker,
            PluginStore(tmp / "fleet" / str(i)),
            trust,
            t,
            groups=["fleet"],
            chunk_size=CHUNK,
            health_frames=3,
        )
        a.start()
        agents.append(a)
        targets.append(t)
    while not all(a.connected.is_set() for a in agents):
        time.sleep(0.01)
    catalog.set_members("fleet", add=[f"fleet-{i:03d}" for i in range(n)])  # the operator's membership records
    wasm = plugin("fleet", size)
    publish(catalog, wasm, MANIFEST, "anim", "1.0.0", key)
    market.settle(quiet_s=0.5, timeout=10)
    anchor = raw_transfer(broker, n, chunk_sizes(len(wasm)))
    b0 = sum(a.bytes_in + a.bytes_out for a in agents)
    c0 = time.process_time()
    t0 = time.perf_counter()
    result = Rollout(market, "anim", "1.0.0", group="fleet", timeout_s=120).run()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    wire = sum(a.bytes_in + a.bytes_out for a in agents) - b0
    ok = sum(s == "healthy" for s in result.outcomes.values())
    for a in agents:
        a.stop()
    for t in targets:
        t.close()
    market.stop()
    catalog.close()
    return {"size": len(wasm), "time": dt, "anchor": anchor, "cpu": cpu / n, "wire": wire / n, "ok": ok}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--fleet-plugin-kb", type=int, default=64)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with Mosquitto(tmp / "mosquitto") as m:
            broker = BrokerConfig(host=m.host, port=m.port)
            one = one_device(broker, tmp, args.repeat)
            fl = fleet(broker, tmp, args.devices, args.fleet_plugin_kb * 1024)
    print(f"\n## Deployment over MQTT (loopback mosquitto, chunks of {CHUNK // 1024} KB)\n")
    print("| scenario | time | target | raw publish+receive (anchor) | ratio | CPU per device | bytes per device |")
    print("|---|---|---|---|---|---|---|")
    mb = one["size"] / 1e6
    print(
        f"| 1 device, {mb:.2f} MB plugin: deploy → running | {one['running']:.3f} s | ≤ 0.5 s | "
        f"{one['anchor']:.3f} s | {one['running'] / one['anchor']:.1f}× | {one['cpu']:.3f} s | {one['wire']:,.0f} |"
    )
    print(
        f"| 1 device, {mb:.2f} MB plugin: deploy → healthy (10 frames) | {one['healthy']:.3f} s | | "
        f"{one['anchor']:.3f} s | {one['healthy'] / one['anchor']:.1f}× | | |"
    )
    print(
        f"| {args.devices} devices, {fl['size'] / 1024:.0f} KB plugin: deploy --group → all healthy "
        f"({fl['ok']}/{args.devices}) | {fl['time']:.2f} s | ≤ 10 s | {fl['anchor']:.2f} s | "
        f"{fl['time'] / fl['anchor']:.1f}× | {fl['cpu']:.3f} s | {fl['wire']:,.0f} |"
    )
    print(f"\nmedian of {args.repeat} for one device; CPU is this process's (agents, marketplace, plugins) per device.")
    return 0 if fl["ok"] == args.devices else 1


if __name__ == "__main__":
    sys.exit(main())
