#!/usr/bin/env python3
"""Deployment over MQTT, measured on a loopback mosquitto started for the run.

1. One device: a signed 1 MB plugin from ``deploy`` (the desired state published) to running (activated) and to
   healthy (its health check passed). Target: running in <= 0.5 s.
2. A fleet of N in-process agents (each with its own MQTT client, store, verification and emulated display running
   the plugin) in one group: from ``deploy --group`` to all healthy. Target: <= 10 s for 100.
3. The service: 1,000 protocol-level simulated devices (bench/simdevices.py: the real protocol and signature checks,
   no store, no plugin run) and a 1 MB plugin, through ``edged market serve`` (a subprocess, SQLite catalog) and the
   CLI's default rollout (``deploy --group --wait``: waves of a quarter, halting past 20 % after 10 finished): time
   to all healthy, the broker's and serve's CPU and peak RSS, bytes per device. Goals: all healthy <= 30 s, serve
   <= 300 MB peak, <= 1.1 MB per device.
4. Two ``serve`` processes against one (on one PostgreSQL catalog, started for the run with initdb + pg_ctl, sharing
   chunk requests): chunk bytes the devices received against the bytes they needed (duplicates).

Each scenario has an anchor measured side by side, on the same broker: the raw time for paho clients to publish and
receive the same bytes in the same chunk sizes (no signing, verifying, storing or running). Ratios against the anchor
say what deployment costs on top of moving the bytes; CPU seconds and bytes on the wire are per device.

Usage: ``.venv/bin/python bench/deploy.py [--devices 100] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edged.deploy.agent import DeviceAgent
from edged.deploy.broker import BrokerConfig
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.testing import Mosquitto
from edged.deploy.trust import TrustStore, generate_key, save_private_key
from edged.market import Marketplace, Rollout, SQLiteCatalog, open_catalog, publish
from edged.market.testing import Postgres

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
        while agent.installer.jobs:
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


def _proc(pid: int) -> tuple[float, int]:
    """A process's CPU seconds so far and its peak RSS in bytes (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmHWM"))
    return cpu, int(hwm.split()[1]) * 1024


def service(tmp: Path, n: int, size: int, serves: int, tag: str, db: str | None = None) -> dict[str, float]:
    """Scenario 3/4: ``n`` simulated devices, ``serves`` serve processes on one catalog (``db``: a PostgreSQL URL,
    else a SQLite file), the CLI's default rollout."""
    from simdevices import SimFleet  # bench/ is on sys.path: this script runs from there

    work = tmp / tag
    work.mkdir()
    with Mosquitto(work / "mosquitto", max_queued_messages=100_000) as m:
        key = generate_key()
        save_private_key(key, work / "market.key")
        trust = TrustStore()
        trust.add(key, ["publisher", "marketplace"])
        db = db or str(work / "catalog.db")
        catalog = open_catalog(db)
        wasm = plugin(tag, size)
        publish(catalog, wasm, MANIFEST, "big", "1.0.0", key)
        ids = [f"{tag}-{i:04d}" for i in range(n)]
        catalog.set_members("fleet", add=ids)
        base = [sys.executable, "-m", "edged", "market", "--db", db, "--key", str(work / "market.key")]
        base += ["--broker", f"{m.host}:{m.port}"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        procs = []
        for _ in range(serves):
            p = subprocess.Popen(
                [*base, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            assert p.stdout is not None and "serving on" in p.stdout.readline()
            procs.append(p)
        sim = SimFleet(m.host, m.port, trust, n, "fleet", prefix=tag, chunk_size=CHUNK)
        end = time.monotonic() + 60
        while sum(d.presence == "online" for d in catalog.devices()) < n and time.monotonic() < end:
            time.sleep(0.2)
        assert m.proc is not None
        bpid = m.proc.pid
        before = {p.pid: _proc(p.pid)[0] for p in procs} | {bpid: _proc(bpid)[0]}
        t0 = time.perf_counter()
        deploy = subprocess.Popen([*base, "deploy", "big@1.0.0", "--group", "fleet", "--wait", "--no-progress"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        all_healthy = None
        while deploy.poll() is None or all_healthy is None:
            if all_healthy is None and sim.healthy("big", "1.0.0") == n:
                all_healthy = time.perf_counter() - t0
            if deploy.poll() is not None and time.perf_counter() - t0 > 300:
                break
            time.sleep(0.05)
        out, err = deploy.communicate()
        cli_done = time.perf_counter() - t0
        usage = {p.pid: _proc(p.pid) for p in procs} | {bpid: _proc(bpid)}
        stats = sim.stats()
        sim.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=60)
        state = out.strip().splitlines()[-1] if out.strip() else err.strip()[-300:]
        catalog.close()
    return {
        "n": n,
        "size": len(wasm),
        "healthy": all_healthy or float("nan"),
        "cli": cli_done,
        "ok": sim.healthy("big", "1.0.0"),
        "state": state,  # type: ignore[dict-item]
        "broker_cpu": usage[bpid][0] - before[bpid],
        "broker_rss": usage[bpid][1],
        "serve_cpu": sum(usage[p.pid][0] - before[p.pid] for p in procs),
        "serve_rss": max(usage[p.pid][1] for p in procs),
        "per_device": stats["bytes_per_device"],
        "dup": stats["chunk_bytes"] / (n * len(wasm)) - 1,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--fleet-plugin-kb", type=int, default=64)
    p.add_argument("--service-devices", type=int, default=1000)
    p.add_argument("--service-plugin-kb", type=int, default=1024)
    p.add_argument("--only-service", action="store_true", help="scenarios 3 and 4 only")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.only_service:
            with Mosquitto(tmp / "mosquitto") as m:
                broker = BrokerConfig(host=m.host, port=m.port)
                one = one_device(broker, tmp, args.repeat)
                fl = fleet(broker, tmp, args.devices, args.fleet_plugin_kb * 1024)
        size = args.service_plugin_kb * 1024
        svc = service(tmp, args.service_devices, size, 1, "svc")
        pair_n = max(1, args.service_devices // 5)
        # the scale-out setup: serves on one PostgreSQL catalog (a throwaway server, as in the tests)
        with Postgres() as pg:
            single = service(tmp, pair_n, size, 1, "svc-one", pg.create_database())
            double = service(tmp, pair_n, size, 2, "svc-two", pg.create_database())
    if not args.only_service:
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
            f"| {args.devices} device agents, {fl['size'] / 1024:.0f} KB plugin: deploy --group → all healthy "
            f"({fl['ok']}/{args.devices}) | {fl['time']:.2f} s | ≤ 10 s | {fl['anchor']:.2f} s | "
            f"{fl['time'] / fl['anchor']:.1f}× | {fl['cpu']:.3f} s | {fl['wire']:,.0f} |"
        )
        print(
            f"\nmedian of {args.repeat} for one device; "
            "CPU is this process's (agents, marketplace, plugins) per device."
        )
    print("\nThe marketplace service: simulated protocol-level devices (no store, no plugin run), `edged market serve`")
    print("subprocesses on one catalog (SQLite for the 1,000, PostgreSQL for one serve against two), the CLI default")
    print("rollout (`deploy --group --wait`).\n")
    print("| scenario | all healthy | CLI returned | broker CPU | broker peak RSS | serve CPU | serve peak RSS |"
          " bytes per device | duplicate chunk bytes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in (
        (f"{svc['n']} devices, 1 serve (goals: ≤ 30 s, ≤ 300 MB, ≤ 1.1 MB)", svc),
        (f"{single['n']} devices, 1 serve on PostgreSQL", single),
        (f"{double['n']} devices, 2 serves on PostgreSQL", double),
    ):
        print(
            f"| {label}, {r['size'] / 1e6:.2f} MB plugin ({r['ok']}/{r['n']} healthy) | {r['healthy']:.1f} s | "
            f"{r['cli']:.1f} s | {r['broker_cpu']:.1f} s | {r['broker_rss'] / 1e6:.0f} MB | {r['serve_cpu']:.1f} s | "
            f"{r['serve_rss'] / 1e6:.0f} MB | {r['per_device'] / 1e6:.3f} MB | {r['dup']:.1%} |"
        )
    print(f"\nrollout: {svc['state']}")
    ok = svc["ok"] == svc["n"] and double["ok"] == double["n"]
    return 0 if ok and (args.only_service or fl["ok"] == args.devices) else 1


if __name__ == "__main__":
    sys.exit(main())
