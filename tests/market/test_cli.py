"""``edged market`` end to end: keygen, publish, list, show, serve (a subprocess), deploy, status, rollback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.cli import main
from edged.deploy.agent import DeviceAgent
from edged.deploy.broker import BrokerConfig
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.testing import free_port
from edged.deploy.trust import TrustStore
from edged.market import SQLiteCatalog
from tests.conftest import ROOT
from tests.support.harness import ANIM_MANIFEST, Broker, anim_wasm, wait_for


@pytest.fixture
def market_dir(tmp_path: Path, broker: Broker) -> Iterator[dict[str, Any]]:
    d = tmp_path / "market"
    base = ["market", "--db", str(d / "catalog.db"), "--key", str(d / "market.key")]
    base += ["--broker", f"{broker.host}:{broker.port}"]
    yield {"dir": d, "base": base, "tmp": tmp_path, "broker": broker}


def cli(ctx: dict[str, Any], capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main([*ctx["base"], *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_market_cli_end_to_end(market_dir: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ctx = market_dir
    tmp, broker = ctx["tmp"], ctx["broker"]
    rc, out, _ = cli(ctx, capsys, "keygen")
    assert rc == 0 and "key id:" in out
    assert cli(ctx, capsys, "keygen")[0] == 2  # never overwrites a key by accident
    (tmp / "m.json").write_text(json.dumps(ANIM_MANIFEST))
    for v in ("1.0.0", "1.1.0"):
        (tmp / f"glow-{v}.wasm").write_bytes(anim_wasm(f"glow-{v}"))
        rc, out, err = cli(
            ctx, capsys, "publish", str(tmp / f"glow-{v}.wasm"), "--manifest", str(tmp / "m.json"),
            "--name", "glow", "--version", v,
        )  # fmt: skip
        assert rc == 0, err
        assert f"published glow@{v}" in out
    rc, out, _ = cli(ctx, capsys, "list")
    assert rc == 0 and "glow" in out and "1.0.0, 1.1.0" in out
    rc, out, _ = cli(ctx, capsys, "show", "glow")
    shown = json.loads(out)
    assert [s["version"] for s in shown] == ["1.0.0", "1.1.0"] and shown[0]["capabilities"] == {"led": True}
    assert cli(ctx, capsys, "show", "nope")[0] == 1

    # the marketplace service in its own process, and a device
    serve = subprocess.Popen(
        [sys.executable, "-m", "edged", *ctx["base"], "serve"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    target = EmulatedTarget(width=8, height=8, fps=200)
    agent = DeviceAgent(
        "dev-1",
        BrokerConfig(host=broker.host, port=broker.port),
        PluginStore(tmp / "dev-1"),
        TrustStore.from_file(ctx["dir"] / "trust.json"),
        target,
        groups=["lobby"],
        chunk_size=4096,
        health_frames=10,
    )
    try:
        assert serve.stdout is not None and b"serving on" in serve.stdout.readline()
        agent.start()
        rc, out, err = cli(ctx, capsys, "group", "add", "lobby", "dev-1")
        assert rc == 0 and "group lobby: dev-1" in out, err
        wait_for(lambda: SQLiteCatalog(ctx["dir"] / "catalog.db").device("dev-1"), what="serve to track dev-1")
        rc, out, err = cli(ctx, capsys, "deploy", "glow@1.0.0", "--device", "dev-1", "--timeout", "60", "--wait")
        assert rc == 0, out + err
        assert "dev-1: healthy" in out and "rollout 1 done" in out
        assert "healthy=1" in err and err.count("\n") <= 2  # one aggregate progress bar (redrawn in place)
        assert target.running() == {"glow": "1.0.0"}
        rc, out, err = cli(
            ctx, capsys, "deploy", "glow@1.1.0", "--group", "lobby", "--canary", "0.5", "--no-progress", "--wait"
        )
        assert rc == 0, out + err
        assert target.running() == {"glow": "1.1.0"}
        rc, out, _ = cli(ctx, capsys, "rollback", "glow", "--group", "lobby")
        assert rc == 0 and "rolled back to 1.0.0" in out
        wait_for(lambda: target.running() == {"glow": "1.0.0"}, what="the rollback to run")
        # the group's playlist, applied through the target
        rc, out, err = cli(ctx, capsys, "playlist", "glow", "--group", "lobby")
        assert rc == 0 and "playlist glow" in out, err
        wait_for(lambda: target.playlist == ["glow"], what="the playlist to be applied")
        assert cli(ctx, capsys, "playlist", "--group", "lobby")[0] == 2  # names or --clear
        assert cli(ctx, capsys, "playlist", "a,,b", "--group", "lobby")[0] == 2  # an empty name
        assert cli(ctx, capsys, "playlist", "--clear", "--group", "lobby")[0] == 0
        wait_for(lambda: target.playlists[-1:] == [None], what="the playlist to be dropped")
        # one-off commands from the CLI, answered with the device's reply
        rc, out, err = cli(ctx, capsys, "command", "dev-1", "identify")
        assert rc == 0, err
        assert json.loads(out)["result"]["plugins"] == {"glow": "1.0.0"}
        rc, out, err = cli(ctx, capsys, "command", "dev-1", "restart", "glow")
        assert rc == 0 and json.loads(out)["ok"], err
        rc, out, _ = cli(ctx, capsys, "command", "dev-1", "remove", "nope")
        assert rc == 1 and json.loads(out)["error"] == "unknown_plugin"
        assert cli(ctx, capsys, "command", "dev-1", "install", "glow")[0] == 2  # needs NAME@VERSION
        # `serve` tracked the device into the shared catalog
        wait_for(lambda: "1.0.0" in cli(ctx, capsys, "status")[1], what="status to show 1.0.0")
        rc, out, _ = cli(ctx, capsys, "status")
        header, row = out.splitlines()[:2]
        cols = ["device", "groups", "presence", "plugin", "version", "state", "reason", "pin", "last", "seen"]
        assert header.split() == cols
        assert row.split()[:5] == ["dev-1", "lobby", "online", "glow", "1.0.0"]
    finally:
        agent.stop()
        target.close()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=20)
    assert serve.returncode == 0


def test_market_cli_bad_input(market_dir: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ctx = market_dir
    tmp = ctx["tmp"]
    rc, _, err = cli(ctx, capsys, "rollback", "p", "--device", "x")
    assert rc == 2 and "edged market keygen" in err  # no key yet
    assert cli(ctx, capsys, "keygen")[0] == 0
    (tmp / "m.json").write_text("{not json")
    (tmp / "ok.json").write_text(json.dumps(ANIM_MANIFEST))
    (tmp / "p.wasm").write_bytes(anim_wasm("p"))
    (tmp / "bad.wasm").write_bytes(b"not wasm at all")
    pub = ["publish", "--name", "p", "--version", "1.0.0"]
    rc, _, err = cli(ctx, capsys, *pub, str(tmp / "p.wasm"), "--manifest", str(tmp / "m.json"))
    assert rc == 2 and "not valid JSON" in err
    rc, _, err = cli(ctx, capsys, *pub, str(tmp / "bad.wasm"), "--manifest", str(tmp / "ok.json"))
    assert rc == 1 and "invalid_wasm" in err
    rc, _, err = cli(ctx, capsys, *pub, str(tmp / "missing.wasm"), "--manifest", str(tmp / "ok.json"))
    assert rc == 2 and "missing.wasm" in err
    rc, _, err = cli(ctx, capsys, "deploy", "p-without-version", "--device", "x")
    assert rc == 2 and "NAME@VERSION" in err
    rc, _, err = cli(ctx, capsys, "deploy", "nope@1.0.0", "--device", "x", "--timeout", "5")
    assert rc == 1 and "not published" in err
    # no `serve` answers chunk requests on this broker: said at once, nothing deployed
    assert cli(ctx, capsys, *pub, str(tmp / "p.wasm"), "--manifest", str(tmp / "ok.json"))[0] == 0
    for args in (["deploy", "p@1.0.0", "--device", "x"], ["command", "x", "install", "p@1.0.0"]):
        rc, _, err = cli(ctx, capsys, *args, "--timeout", "5")
        assert rc == 2 and "no `edged market serve` is running" in err and "--serve-chunks" in err
    db = SQLiteCatalog(ctx["dir"] / "catalog.db")
    assert db.get_desired("device:x") == ({}, 0)
    db.close()
    base = [*ctx["base"][:-1], f"127.0.0.1:{free_port()}"]
    assert main([*base, "deploy", "p@1.0.0", "--device", "x"]) == 2
    assert "cannot reach the broker" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*ctx["base"], "deploy", "p@1.0.0"])  # needs --device or --group
    assert exc.value.code == 2


def test_market_cli_install_rollback_unpin_and_unknown_targets(
    market_dir: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = market_dir
    tmp, broker = ctx["tmp"], ctx["broker"]
    assert cli(ctx, capsys, "keygen")[0] == 0
    (tmp / "m.json").write_text(json.dumps(ANIM_MANIFEST))
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        (tmp / f"glow-{v}.wasm").write_bytes(anim_wasm(f"glow-{v}"))
        pub = ["publish", str(tmp / f"glow-{v}.wasm"), "--manifest", str(tmp / "m.json"), "--name", "glow"]
        assert cli(ctx, capsys, *pub, "--version", v)[0] == 0
    target = EmulatedTarget(width=8, height=8, fps=200)
    agent = DeviceAgent(
        "dev-1",
        BrokerConfig(host=broker.host, port=broker.port),
        PluginStore(tmp / "dev-1"),
        TrustStore.from_file(ctx["dir"] / "trust.json"),
        target,
        groups=["lobby"],
        chunk_size=4096,
        health_frames=10,
    )
    chunks = ["--serve-chunks", "--timeout", "60"]
    assert cli(ctx, capsys, "group", "add", "lobby", "dev-1")[0] == 0
    try:
        agent.start()
        wait_for(agent.connected.is_set, what="dev-1 to connect")
        rc, out, err = cli(ctx, capsys, "command", "dev-1", "identify")  # the device's presence is in by now
        assert rc == 0, err
        # a device id or a group the marketplace never heard of: said at once, nothing published
        rc, _, err = cli(ctx, capsys, "deploy", "glow@1.0.0", "--device", "dev-l", *chunks)
        assert rc == 2 and "'dev-l' has never been seen" in err and "--allow-unknown" in err
        rc, _, err = cli(ctx, capsys, "deploy", "glow@1.0.0", "--group", "lobyy", *chunks)
        assert rc == 2 and "no device recorded in group 'lobyy'" in err
        db = SQLiteCatalog(ctx["dir"] / "catalog.db")
        assert db.get_desired("device:dev-l") == ({}, 0) and db.get_desired("group:lobyy") == ({}, 0)
        # ...unless asked to: published for when it first connects, reported offline after a short grace
        rc, out, _ = cli(ctx, capsys, "deploy", "glow@1.0.0", "--device", "dev-l", "--allow-unknown", *chunks)
        assert rc == 1 and "dev-l: offline" in out and "offline: glow@1.0.0" in out
        assert db.get_desired("device:dev-l")[0]["glow"].version == "1.0.0"

        # one-off install and rollback commands, answered with the device's reply
        rc, out, err = cli(ctx, capsys, "command", "dev-1", "install", "glow@1.0.0", *chunks)
        assert rc == 0, out + err
        assert json.loads(out)["ok"] and target.running() == {"glow": "1.0.0"}
        rc, out, err = cli(ctx, capsys, "command", "dev-1", "install", "glow@1.1.0", *chunks)
        assert rc == 0, out + err
        assert target.running() == {"glow": "1.1.0"}
        rc, out, _ = cli(ctx, capsys, "command", "dev-1", "install", "glow@1.0.0", *chunks)
        assert rc == 1 and json.loads(out)["error"] == "downgrade"  # without --allow-downgrade
        assert target.running() == {"glow": "1.1.0"}
        rc, out, err = cli(ctx, capsys, "command", "dev-1", "rollback", "glow")
        assert rc == 0, out + err
        assert json.loads(out)["result"]["version"] == "1.0.0"
        assert target.running() == {"glow": "1.0.0"}
        rc, _, err = cli(ctx, capsys, "command", "dev-1", "install", "glow@9.9.9", *chunks)
        assert rc == 1 and "not published" in err
        assert cli(ctx, capsys, "command", "dev-1", "rollback")[0] == 2  # needs the NAME

        # a device deploy pins dev-1; a group deploy that moves the group ends the pin
        rc, out, err = cli(ctx, capsys, "deploy", "glow@1.1.0", "--device", "dev-1", "--no-progress", *chunks)
        assert rc == 0, out + err
        assert db.get_desired("device:dev-1")[0]["glow"].version == "1.1.0"
        rc, out, err = cli(ctx, capsys, "deploy", "glow@1.2.0", "--group", "lobby", "--no-progress", *chunks)
        assert rc == 0, out + err
        assert "following the group again (own entry ended): dev-1" in out
        assert target.running() == {"glow": "1.2.0"} and "glow" not in db.get_desired("device:dev-1")[0]
        rc, _, err = cli(ctx, capsys, "unpin", "glow", "--device", "dev-1")
        assert rc == 1 and "no desired entry of its own" in err
        # and unpin ends one by hand: the device follows its group (same version: nothing to install)
        assert cli(ctx, capsys, "deploy", "glow@1.2.0", "--device", "dev-1", "--no-progress", *chunks)[0] == 0
        assert "glow" in db.get_desired("device:dev-1")[0]
        rc, out, err = cli(ctx, capsys, "unpin", "glow", "--device", "dev-1")
        assert rc == 0 and "follows its groups for glow again" in out, err
        assert "glow" not in db.get_desired("device:dev-1")[0]
        rc, out, _ = cli(ctx, capsys, "command", "dev-1", "identify")  # answered after the unpinned document
        assert json.loads(out)["result"]["plugins"] == {"glow": "1.2.0"}
        db.close()
    finally:
        agent.stop()
        target.close()
