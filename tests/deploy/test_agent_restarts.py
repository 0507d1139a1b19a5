"""Transfers resume after a broker restart and after the device process is SIGKILLed at points of an install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from edged.deploy.store import PluginStore
from tests.conftest import ROOT
from tests.support.harness import Broker, Harness, anim_wasm, wait_for


def test_broker_restart_mid_transfer_resumes_without_starting_over(harness: Harness, broker: Broker) -> None:
    """The marketplace stops serving after 12 chunks, so nothing is in flight when the broker restarts: this proves
    that the chunks already stored are kept and that, on reconnecting, the agent asks only for the missing ones.
    Redelivery of chunks queued in the broker across a restart is the next test."""
    h = harness
    meta = h.publish("big", "1.0.0", anim_wasm("big", pad=120_000))
    total = -(-meta.wasm_size // 4096)
    h.market.limit = 12
    h.agent("dev-1", window=4, stall_s=0.5)
    h.market.set_desired("device:dev-1", "big", "1.0.0")
    store = h.store("dev-1")
    wait_for(lambda: (t := store.get_transfer(meta.wasm_sha256)) and len(t.received()) >= 12, what="12 chunks")
    before = set(store.get_transfer(meta.wasm_sha256).received())
    served_before = len(h.market.served)
    broker.restart()
    h.market.limit = None
    h.wait_healthy("dev-1", "big", "1.0.0")
    after = {i for _, i in h.market.served[served_before:]}
    assert not before & after, "chunks received before the restart were fetched again"
    assert before | after == set(range(total))
    assert store.active("big").version == "1.0.0"
    assert store.transfers() == []


def test_chunks_queued_for_an_offline_device_survive_a_broker_restart(harness: Harness, broker: Broker) -> None:
    """Chunks published while the device is disconnected wait in its persistent session (clean session off, QoS 1);
    mosquitto saves them when it stops and delivers them after the restart, when the device reconnects. The
    marketplace serves nothing after the restart until they are stored, so they can only come from the broker."""
    h = harness
    meta = h.publish("big", "1.0.0", anim_wasm("big", pad=120_000))
    agent = h.agent("dev-1", window=4, stall_s=0.5)
    store = h.store("dev-1")
    h.market.limit = 8
    h.market.set_desired("device:dev-1", "big", "1.0.0")
    wait_for(lambda: (t := store.get_transfer(meta.wasm_sha256)) and len(t.received()) >= 8, what="8 chunks")
    h.market.hold, h.market.limit = True, None
    wait_for(lambda: h.market.held, what="the agent to ask for more (held)")
    # the device drops off the network; the broker keeps its session
    agent.client.disconnect()
    agent.client.loop_stop()
    wait_for(lambda: not agent.connected.is_set(), what="the agent to be disconnected")
    queued = {i for _, req in h.market.held for i in req.indices}
    have = set(store.get_transfer(meta.wasm_sha256).received())
    assert queued and not queued & have
    h.market.serve_held()  # acknowledged by the broker, queued for the offline session
    broker.restart()
    h.market.hold = True  # from now on the marketplace serves nothing
    agent.client.reconnect()
    agent.client.loop_start()
    wait_for(
        lambda: queued <= set(store.get_transfer(meta.wasm_sha256).received()),
        what=f"chunks {sorted(queued)} queued before the restart to be delivered",
    )
    h.market.serve_held()  # and the rest of the transfer goes on as usual
    h.wait_healthy("dev-1", "big", "1.0.0")
    assert store.wasm_path(store.active("big")).read_bytes() == h.catalog.get_bundle("big", "1.0.0").wasm


class AgentProcess:
    """``python tests/deploy/agent_runner.py`` (``edged agent``: the real agent, an emulated display) as a child."""

    def __init__(self, h: Harness, device: str, kill_at: str | None = None) -> None:
        args = [
            sys.executable,
            str(ROOT / "tests" / "deploy" / "agent_runner.py"),
            "--device", device,
            "--broker", f"{h.broker.host}:{h.broker.port}",
            "--store", str(h.tmp / "devices" / device),
            "--trust", str(h.trust_path),
            "--chunk-size", "4096",
            "--window", "4",
            "--stall", "0.5",
            "--health-frames", "10",
            "--health-timeout", "30",
            "--fps", "200",
        ]  # fmt: skip
        if kill_at:
            args += ["--kill-at", kill_at]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = h.tmp / f"{device}-{kill_at or 'run'}.log"
        self._out = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_killed(self) -> None:
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"the agent was not killed at its checkpoint:\n{self.log.read_text()[-3000:]}")
        assert rc == -signal.SIGKILL, self.log.read_text()[-3000:]
        self._out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.mark.parametrize(
    "kill_at",
    [
        "after_state_rename:1",  # transfer just created
        "after_chunk_temp_write:3",  # a chunk half written
        "after_chunk_rename:10",  # mid-download
        "after_blob_rename:1",  # verified, blob stored, no record yet
        "after_record_temp_write:1",  # record being written
        "after_record_rename:1",  # installed, not yet active
        "after_transfer_detach:1",  # installed, its chunks being deleted
        "after_record_rename:2",  # active, health check not finished
    ],
)
def test_device_killed_during_install_recovers_on_restart(harness: Harness, kill_at: str) -> None:
    h = harness
    meta = h.publish("big", "1.0.0", anim_wasm("big", pad=80_000))
    h.market.set_desired("device:dev-k", "big", "1.0.0")
    first = AgentProcess(h, "dev-k", kill_at)
    first.wait_killed()
    # the broker publishes the agent's last will for it
    wait_for(lambda: (d := h.catalog.device("dev-k")) and d.presence == "offline", what="the last will")
    root = h.tmp / "devices" / "dev-k"
    t = PluginStore(root).get_transfer(meta.wasm_sha256)
    had = set(t.received()) if t is not None else set()
    served_before = len(h.market.served)
    second = AgentProcess(h, "dev-k")
    try:
        h.wait_healthy_remote("dev-k", "big", "1.0.0")
    finally:
        second.stop()
    store = PluginStore(root)
    assert store.active("big").version == "1.0.0"
    assert PluginStore(root).wasm_path(store.active("big")).read_bytes() == h.catalog.get_bundle("big", "1.0.0").wasm
    assert list(store.tmp.iterdir()) == []
    assert store.transfers() == []
    refetched = {i for _, i in h.market.served[served_before:]} & had
    assert not refetched, f"chunks {sorted(refetched)} were fetched again after the restart"


def test_chunk_corrupted_on_disk_while_down_is_fetched_again(harness: Harness) -> None:
    h = harness
    meta = h.publish("big", "1.0.0", anim_wasm("big", pad=80_000))
    h.market.set_desired("device:dev-k", "big", "1.0.0")
    AgentProcess(h, "dev-k", "after_chunk_rename:15").wait_killed()
    root = h.tmp / "devices" / "dev-k"
    chunk0 = next((root / "transfers" / meta.wasm_sha256 / "chunks").glob("0.*"))
    chunk0.write_bytes(b"\0" * chunk0.stat().st_size)  # bit rot: same size, wrong bytes
    served_before = len(h.market.served)
    second = AgentProcess(h, "dev-k")
    try:
        h.wait_healthy_remote("dev-k", "big", "1.0.0")
    finally:
        second.stop()
    store = PluginStore(root)
    assert store.wasm_path(store.active("big")).read_bytes() == h.catalog.get_bundle("big", "1.0.0").wasm
    assert 0 in {i for _, i in h.market.served[served_before:]}
