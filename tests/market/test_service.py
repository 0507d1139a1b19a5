"""The marketplace as a service, on a real mosquitto and a real PostgreSQL: rollouts that ``serve`` runs, persists
and resumes (kill -9 of ``serve`` mid-rollout, kill -9 of the CLI during ``deploy --wait``), pause/resume/abort and
revert from the CLI, one writer per target, and chunk serving that is bounded and shared by two ``serve``
processes without duplicates."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edged.deploy import topics
from edged.deploy.agent import DeviceAgent
from edged.deploy.bundle import build_bundle
from edged.deploy.messages import DesiredState
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.trust import TrustStore, generate_key, open_envelope, save_private_key, sign_envelope
from edged.host.capabilities import DevicePolicy
from edged.market import Marketplace, Rollout, open_catalog, publish
from edged.market.catalog import DesiredEntry, RolloutPolicy
from edged.market.rollout import pause, should_halt
from edged.market.testing import Postgres
from tests.conftest import ROOT
from tests.support.harness import ANIM_MANIFEST, Broker, anim_wasm, wait_for

GPIO_MANIFEST = {"edged": {"kind": "animation", "capabilities": {"led": True, "gpio": {"write": [5]}}}}
ALLOW_GPIO = DevicePolicy(gpio_write=[5])


class Fleet:
    """A PostgreSQL catalog, a marketplace key, in-process device agents and ``serve`` subprocesses on one broker."""

    def __init__(self, tmp: Path, broker: Broker, db: str) -> None:
        self.tmp, self.broker, self.db = tmp, broker, db
        self.key = generate_key()
        self.key_path = tmp / "market.key"
        save_private_key(self.key, self.key_path)
        self.trust = TrustStore()
        self.trust.add(self.key, ["publisher", "marketplace"])
        self.catalog = open_catalog(db)
        self.agents: dict[str, DeviceAgent] = {}
        self.targets: dict[str, EmulatedTarget] = {}
        self.serves: list[subprocess.Popen[bytes]] = []
        self.base = ["market", "--db", db, "--key", str(self.key_path), "--broker", f"{broker.host}:{broker.port}"]

    def publish(self, name: str, version: str, manifest: dict[str, Any] | None = None, pad: int = 0) -> Any:
        return publish(
            self.catalog, anim_wasm(f"{name}-{version}", pad=pad), manifest or ANIM_MANIFEST, name, version, self.key
        )

    def agent(self, device: str, group: str = "lobby", **kw: Any) -> DeviceAgent:
        self.catalog.set_members(group, add=[device])
        kw.setdefault("health_frames", 10)
        kw.setdefault("chunk_size", 4096)
        target = EmulatedTarget(width=8, height=8, fps=200, policy=kw.get("policy"))
        a = DeviceAgent(
            device,
            self.broker.config(),
            PluginStore(self.tmp / "dev" / device),
            self.trust,
            target,
            groups=[group],
            **kw,
        )
        a.start()
        wait_for(a.connected.is_set, what=f"{device} to connect")
        self.agents[device], self.targets[device] = a, target
        return a

    def serve(self, *extra: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "edged", *self.base, "serve", *extra],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert p.stdout is not None and b"serving on" in p.stdout.readline()
        self.serves.append(p)
        return p

    def cli(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "edged", *self.base, *args],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def wait_online(self, *devices: str) -> None:
        for d in devices:
            wait_for(lambda d=d: (r := self.catalog.device(d)) and r.presence == "online", what=f"{d} online")

    def running(self, device: str) -> dict[str, str]:
        return self.targets[device].running()

    def close(self) -> None:
        for p in self.serves:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()
        for a in self.agents.values():
            a.stop()
        for t in self.targets.values():
            t.close()
        self.catalog.close()


@pytest.fixture
def fleet(tmp_path: Path, broker: Broker, postgres: Postgres) -> Iterator[Fleet]:
    f = Fleet(tmp_path, broker, postgres.create_database())
    try:
        yield f
    finally:
        f.close()


def _run(args: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "edged", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_kill_9_serve_mid_rollout_and_it_resumes(fleet: Fleet) -> None:
    f = fleet
    members = ["a", "b", "c", "d"]
    f.publish("glow", "1.0.0")
    f.publish("glow", "2.0.0")
    for d in members:
        f.agent(d, health_frames=120)  # ~0.6 s of frames per device: a stage lasts long enough to be killed in
    serve = f.serve()  # it tracks the devices' presence into the catalog
    f.wait_online(*members)
    rc, out, err = _run(
        [*f.base, "deploy", "glow@2.0.0", "--group", "lobby", "--wave", "0.25", "--halt-failure-rate", "1"]
    )
    assert rc == 0 and "rollout 1: glow@2.0.0 to group:lobby (4 devices)" in out, out + err
    # kill -9 once the first device is healthy and later waves have not started
    wait_for(lambda: f.catalog.rollout(1).counts.get("healthy", 0) >= 1, what="a first healthy device")  # type: ignore[union-attr]
    serve.send_signal(signal.SIGKILL)
    serve.wait()
    r = f.catalog.rollout(1)
    assert r is not None and r.state == "running" and r.counts.get("planned", 0) >= 1, r
    time.sleep(1.0)
    assert f.catalog.rollout(1).counts == r.counts  # type: ignore[union-attr]  # nothing moves without serve
    f.serve()  # a new serve takes over once the dead one's lease runs out
    wait_for(lambda: f.catalog.rollout(1).state == "done", timeout=60, what="the rollout to finish")  # type: ignore[union-attr]
    assert f.catalog.rollout(1).counts == {"healthy": 4}  # type: ignore[union-attr]
    for d in members:
        wait_for(lambda d=d: f.running(d) == {"glow": "2.0.0"}, what=f"{d} on 2.0.0")
        assert "glow" not in f.catalog.get_desired(f"device:{d}")[0]  # no device left pinned
    assert f.catalog.get_desired("group:lobby")[0]["glow"].version == "2.0.0"
    # a second deploy's kill -9 of the CLI while it waits: the rollout is the service's, it finishes anyway
    f.publish("glow", "3.0.0")
    cli = f.cli("deploy", "glow@3.0.0", "--group", "lobby", "--wave", "0.5", "--halt-failure-rate", "1", "--wait")
    assert cli.stdout is not None and b"rollout 2:" in cli.stdout.readline()
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    wait_for(lambda: f.catalog.rollout(2).state == "done", timeout=60, what="rollout 2 to finish")  # type: ignore[union-attr]
    for d in members:
        wait_for(lambda d=d: f.running(d) == {"glow": "3.0.0"}, what=f"{d} on 3.0.0")
    rc, out, _ = _run([*f.base, "rollouts"])
    assert rc == 0 and "glow@3.0.0" in out and "healthy=4" in out


def test_kill_9_serve_again_and_again_during_a_rollout(fleet: Fleet) -> None:
    """SIGKILL at random points of a five-stage rollout, restarting `serve` under the same name each time (so it
    resumes at once): the rollout ends done, every device on the new version, none left pinned."""
    f = fleet
    members = ["a", "b", "c", "d", "e"]
    f.publish("glow", "1.0.0")
    f.publish("glow", "2.0.0")
    for d in members:
        f.agent(d, health_frames=60)
    serve = f.serve("--name", "svc-1")
    f.wait_online(*members)
    rc, out, err = _run(
        [*f.base, "deploy", "glow@2.0.0", "--group", "lobby", "--wave", "0.2", "--halt-failure-rate", "1"]
    )
    assert rc == 0, out + err
    rng = random.Random(13)
    kills = 0
    end = time.monotonic() + 150
    while f.catalog.rollout(1).state != "done" and time.monotonic() < end:  # type: ignore[union-attr]
        time.sleep(rng.uniform(0.1, 1.2))
        serve.send_signal(signal.SIGKILL)
        serve.wait()
        kills += 1
        serve = f.serve("--name", "svc-1")
    r = f.catalog.rollout(1)
    assert r is not None and r.state == "done" and r.counts == {"healthy": 5}, r
    assert kills >= 3
    for d in members:
        wait_for(lambda d=d: f.running(d) == {"glow": "2.0.0"}, what=f"{d} on 2.0.0")
        assert "glow" not in f.catalog.get_desired(f"device:{d}")[0]  # no device left pinned
    assert f.catalog.get_desired("group:lobby")[0]["glow"].version == "2.0.0"


def test_pause_resume_abort_revert_and_one_writer(fleet: Fleet) -> None:
    f = fleet
    members = ["a", "b", "c", "d"]
    f.publish("glow", "1.0.0")
    f.publish("glow", "2.0.0")
    for d in members:
        f.agent(d)
    f.serve()
    f.wait_online(*members)
    rc, out, err = _run([*f.base, "deploy", "glow@1.0.0", "--group", "lobby", "--halt-failure-rate", "1", "--wait"])
    assert rc == 0 and "rollout 1 done" in out, out + err
    # one aggregate progress bar, not one per device: every stderr line is a redraw of it (text mode turns its
    # carriage returns into newlines)
    assert "healthy=4" in err and all(ln.startswith("glow@1.0.0:") for ln in err.splitlines() if ln.strip())
    for d in members:
        f.agents[d].settings.health_frames = 200  # ~1 s of frames per device from now on: waves take a while
    # one rollout per target: the second deploy is refused, clearly, while the first is active
    rc, out, err = _run([*f.base, "deploy", "glow@2.0.0", "--group", "lobby", "--wave", "0.25"])
    assert rc == 0, err
    pause(f.catalog, 2)  # at once (the CLI's own pause is below)
    rc, _, err = _run([*f.base, "rollout", "pause", "2"])
    assert rc == 1 and "rollout 2 is paused, not running" in err
    rc, _, err = _run([*f.base, "deploy", "glow@2.0.0", "--group", "lobby"])
    assert rc == 2 and "rollout 2 (glow@2.0.0) is paused on group:lobby" in err and "rollout abort 2" in err
    time.sleep(1.0)  # a step that read "running" just before the pause finishes
    started = {d.device for d in f.catalog.rollout_devices(2) if d.state != "planned"}
    time.sleep(2.0)
    assert {d.device for d in f.catalog.rollout_devices(2) if d.state != "planned"} == started  # paused
    assert len(started) < 4
    rc, out, err = _run([*f.base, "rollout", "resume", "2"])
    assert rc == 0 and "running" in out, err
    rc, out, err = _run([*f.base, "rollout", "pause", "2"])
    assert rc == 0 and "paused" in out, err
    assert _run([*f.base, "rollout", "resume", "2"])[0] == 0
    wait_for(lambda: f.catalog.rollout(2).counts.get("healthy", 0) >= 2, what="two devices on 2.0.0")  # type: ignore[union-attr]
    # held at once, in-process: the next device needs ~1 s of frames to be healthy before the last one may start,
    # while the abort's CLI process can take longer than that to start on a loaded machine (then all 4 were done)
    pause(f.catalog, 2)
    rc, out, err = _run([*f.base, "rollout", "abort", "2"])
    assert rc == 0, err
    wait_for(lambda: f.catalog.rollout(2).state == "aborted", what="the abort to be carried out")  # type: ignore[union-attr]
    devs = {d.device: d.state for d in f.catalog.rollout_devices(2)}
    on_new = sorted(d for d, s in devs.items() if s == "healthy")
    never = sorted(d for d, s in devs.items() if s == "canceled")
    assert on_new and never and len(on_new) + len(never) == 4, devs
    time.sleep(1.0)
    for d in never:  # devices that had not started never get the version
        assert f.running(d) == {"glow": "1.0.0"}
        assert "glow" not in f.catalog.get_desired(f"device:{d}")[0]
    rc, out, _ = _run([*f.base, "rollout", "show", "2"])
    assert rc == 0 and "aborted" in out and "canceled" in out
    rc, out, _ = _run([*f.base, "status"])
    assert "2.0.0 (rollout 2)" in out  # the pins, and the rollout that set them
    # one command reverts the whole target: the pinned devices come back to 1.0.0
    rc, out, err = _run([*f.base, "rollout", "revert", "2"])
    assert rc == 0 and "back to 1.0.0" in out, err
    for d in members:
        wait_for(lambda d=d: f.running(d) == {"glow": "1.0.0"}, what=f"{d} back on 1.0.0")
        assert "glow" not in f.catalog.get_desired(f"device:{d}")[0]
    assert f.catalog.rollout(2).state == "reverted"  # type: ignore[union-attr]


def test_a_halt_never_reaches_a_device_that_was_offline(fleet: Fleet) -> None:
    """An offline member is not started; when the rollout halts it never gets the version, even once back."""
    f = fleet
    f.publish("glow", "1.0.0")
    f.publish("glow", "2.0.0", manifest=GPIO_MANIFEST)
    members = ["a", "b", "c"]
    for d in members:
        f.agent(d)
    m = _market(f)
    f.wait_online(*members)
    assert Rollout(m, "glow", "1.0.0", group="lobby", timeout_s=30).run().state == "done"
    f.agents["c"].stop()
    wait_for(lambda: f.catalog.device("c").presence == "offline", what="c offline")  # type: ignore[union-attr]
    result = Rollout(m, "glow", "2.0.0", group="lobby", halt_failure_rate=0.0, timeout_s=30).run()
    assert result.state == "halted" and result.outcomes["c"] == "offline", result  # policy refuses 2.0.0
    f.targets["c"].close()
    f.agent("c", policy=ALLOW_GPIO)  # back, and would accept 2.0.0
    f.wait_online("c")
    time.sleep(2.0)
    assert f.running("c") == {"glow": "1.0.0"}


_markets: list[Marketplace] = []


def _market(f: Fleet, serve: bool = True) -> Marketplace:
    """An in-process marketplace on the fleet's catalog (stopped after the test)."""
    m = Marketplace(f.catalog, f.key, f.broker.config(), serve=serve)
    m.start()
    _markets.append(m)
    return m


@pytest.fixture(autouse=True)
def _stop_markets() -> Iterator[None]:
    yield
    while _markets:
        _markets.pop().stop()


def test_the_cli_default_does_not_halt_a_big_group_on_one_failure() -> None:
    assert RolloutPolicy().halt_failure_rate == 1.0  # the Python API never halts unless asked
    one_failure = {f"d{i}": "healthy" for i in range(3)} | {"x": "failed"}
    assert not should_halt(one_failure, 0.2, 10)  # the CLI default: 20 % once 10 finished
    many = {f"d{i}": "healthy" for i in range(9)} | {"x": "failed"}
    assert not should_halt(many, 0.2, 10)
    assert should_halt({**many, "y": "failed", "z": "timed_out"}, 0.2, 10)


def test_concurrent_writers_leave_the_newest_document_retained(fleet: Fleet) -> None:
    """Two marketplaces x 60 changes of one target: seqs are unique, and the retained document ends on the
    newest one."""
    f = fleet
    for v in range(6):
        f.publish("glow", f"1.{v}.0")
    writers = [Marketplace(open_catalog(f.db), f.key, f.broker.config(), serve=False) for _ in range(2)]
    for w in writers:
        w.start()
    seqs: list[int] = []
    lock = threading.Lock()

    def write(w: Marketplace, k: int) -> None:
        for i in range(60):
            seq = w.set_desired("group:lobby", "glow", f"1.{(i + k) % 6}.0")
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=write, args=(w, k)) for k, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 121))
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, u, msg: got.append(msg.payload)
    c.connect(f.broker.host, f.broker.port)
    c.loop_start()
    c.subscribe(topics.group_desired("lobby"), qos=1)
    wait_for(lambda: got, what="the retained document")
    c.loop_stop()
    doc = DesiredState.model_validate(open_envelope(got[0], f.trust, role="marketplace"))
    entries, seq = f.catalog.get_desired("group:lobby")
    assert doc.seq == seq == 120 and doc.plugins[0].version == entries["glow"].version
    for w in writers:
        w.stop()
        w.catalog.close()


def test_two_serves_share_chunks_without_duplicates_and_wait_for_late_bundles(fleet: Fleet) -> None:
    f = fleet
    f.publish("big", "1.0.0", pad=200_000)
    devices = [f"d{i}" for i in range(6)]
    for d in devices:
        f.agent(d)
    serves = [
        Marketplace(open_catalog(f.db), f.key, f.broker.config(), chunk_options={"max_inflight_bytes": 64 * 1024})
        for _ in range(2)
    ]
    for s in serves:
        s.start()
    m = _market(f, serve=False)  # this one only publishes documents: the two `serve`s answer chunk requests
    f.wait_online(*devices)
    result = Rollout(m, "big", "1.0.0", group="lobby", timeout_s=60).run()
    assert result.state == "done", result
    served = [s.chunk_server.stats for s in serves]  # type: ignore[union-attr]
    assert all(st.chunks > 0 for st in served)  # both worked
    keys = [set(st.served) for st in served]
    assert not keys[0] & keys[1]  # no chunk of any device served by both
    assert all(n == 1 for st in served for n in st.served.values())  # nor twice by one
    total = -(-f.catalog.bundle_info("big", "1.0.0")[0].wasm_size // 4096)  # type: ignore[index]
    assert sum(len(k) for k in keys) == total * len(devices)
    for st in served:  # never more than the bound in flight (the messages are chunks plus their header line)
        assert 0 < st.peak_inflight_bytes <= 64 * 1024
    # a bundle that is not in the catalog yet when devices ask for it: requests wait, devices do not fail
    b = build_bundle("late", "1.0.0", anim_wasm("late", pad=50_000), ANIM_MANIFEST, f.key)
    spec = {"name": "late", "version": "1.0.0", "meta": b.meta.model_dump(mode="json"), "manifest": b.manifest}
    doc = {"target": "device:d0", "seq": 10**9, "plugins": [spec]}
    env = sign_envelope(doc, f.key, 600).model_dump_json()
    m.client.publish(topics.desired("d0"), env, qos=1, retain=True).wait_for_publish(10)
    wait_for(lambda: any(s.chunk_server.stats.waited_for_bundle for s in serves), what="a held request")  # type: ignore[union-attr]
    time.sleep(1.0)
    f.catalog.add_bundle(b)
    f.catalog.update_desired("device:d0", lambda e: {**e, "late": DesiredEntry(version="1.0.0")})
    wait_for(lambda: f.running("d0").get("late") == "1.0.0", timeout=30, what="the late bundle to install")
    assert not [s for s in f.agents["d0"].reports.report.values() if s.reason == "missing_chunk"]
    for s in serves:
        s.stop()
        s.catalog.close()
