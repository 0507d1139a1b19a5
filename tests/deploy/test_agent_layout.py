"""The agent's seams (issue 11): reading a config or using the marketplace's MQTT helpers does not load the agent;
request identities are typed and the state file keeps its on-disk form; ``edged agent`` is the one entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edged.deploy.agent.desired import DEVICE, DesiredStates, Request, Source, SourceKind
from edged.deploy.agent.state import AgentState, Attempt, Pending
from edged.deploy.store import PluginStore
from tests.conftest import ROOT

LOADED = "import sys, {mod}; print(sorted(m for m in sys.modules if m.startswith(('edged.deploy.agent', 'paho'))))"


@pytest.mark.parametrize("mod", ["edged.daemon.config", "edged.deploy.broker"])
def test_reading_a_config_does_not_load_the_agent_or_paho(mod: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LOADED.format(mod=mod)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("mod", ["edged.market.service", "edged.homeassistant.bridge"])
def test_the_marketplace_and_home_assistant_do_not_load_the_agent(mod: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LOADED.format(mod=mod)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "edged.deploy.agent" not in out.stdout, out.stdout


def test_sources_and_requests_are_typed_and_keep_their_wire_form() -> None:
    group, cmd = Source.group("lobby"), Source.command("c-1")
    assert (DEVICE.key, group.key, cmd.key) == ("device", "group:lobby", "cmd:c-1")
    assert [Source.parse(k) for k in ("device", "group:lobby", "cmd:c-1")] == [DEVICE, group, cmd]
    assert group.kind is SourceKind.GROUP and group.is_document and not cmd.is_document
    assert Request(group, 3).key == "group:lobby#3" and Request.parse("group:lobby#3") == Request(group, 3)
    assert Request.parse("cmd:c-1") == Request(cmd) and Request(cmd).seq is None
    for bad in ("", "group:", "lobby", "devices", "cmd"):
        with pytest.raises(ValueError):
            Source.parse(bad)
    # a group id that looks like another source is still a group: identities are never compared as text
    assert Source.group("device") != DEVICE and Source.group("x") != Source.command("x")


def test_group_documents_merge_in_id_order_and_the_device_wins() -> None:
    from edged.deploy.messages import DesiredState

    d = DesiredStates()
    d.record(Source.group("b"), DesiredState(target="group:b", seq=1, playlist=["b"]), [])
    d.record(Source.group("a"), DesiredState(target="group:a", seq=1, playlist=["a"]), [])
    assert d.playlist() == ["b"]
    d.record(DEVICE, DesiredState(target="device:d", seq=1, playlist=["own"]), [])
    assert d.playlist() == ["own"]


def test_the_state_file_keeps_its_format(tmp_path: Path) -> None:
    """A state file written before the split loads into typed keys and is written back the same."""
    old = {
        "applied": {"device": 4, "group:lobby": 2},
        "origin": {"glow": "group:lobby", "spark": "device"},
        "pending": {"glow": {"version": "2.0.0", "source": "group:lobby"}},
        "failed": [["glow", "3.0.0", False, "group:lobby#2"], ["spark", "1.0.0", True, "cmd:c-9"]],
        "transfers_wanted": {"device": ["ab"], "group:lobby": []},
    }
    path = tmp_path / "agent-state.json"
    path.write_text(json.dumps(old))
    state = AgentState(path, PluginStore(tmp_path / "store"), "dev-1")
    state.load()
    lobby = Source.group("lobby")
    assert state.applied == {DEVICE: 4, lobby: 2}
    assert state.origin == {"glow": lobby, "spark": DEVICE}
    assert state.pending == {"glow": Pending("2.0.0", lobby)}
    assert state.failed[Attempt("glow", "3.0.0", False)] == Request(lobby, 2)
    assert state.failed[Attempt("spark", "1.0.0", True)] == Request(Source.command("c-9"))
    assert state.request(lobby) == Request(lobby, 2) and state.request(Source.group("new")) == Request(
        Source.group("new"), -1
    )
    assert state.save(required=True)
    assert json.loads(path.read_text()) == old


def test_edged_agent_is_the_entry_point_and_the_module_is_not_one() -> None:
    import edged.deploy.agent as agent

    assert not hasattr(agent, "main")
    out = subprocess.run(
        [sys.executable, "-m", "edged", "agent", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "--device" in out.stdout and "emulated display" in out.stdout
    gone = subprocess.run([sys.executable, "-m", "edged.deploy.agent"], cwd=ROOT, capture_output=True, text=True)
    assert gone.returncode != 0
