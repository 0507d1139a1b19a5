"""Issue 15 point 7: `edged market publish` takes the name and version from the manifest (flags give them when it
has none) and refuses a plugin that `edged plugin check` fails, with the check's reason (``--force`` publishes it
anyway)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from edged.cli import main
from edged.market import SQLiteCatalog
from tests.support.harness import anim_wasm


@pytest.fixture
def market(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    base = ["market", "--db", str(tmp_path / "catalog.db"), "--key", str(tmp_path / "market.key")]
    assert main([*base, "keygen"]) == 0
    capsys.readouterr()
    return base


def plugin(folder: Path, name: str, wasm: bytes, edged: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / f"{name}.wasm").write_bytes(wasm)
    manifest = {"wasm": [{"path": f"{name}.wasm"}], "edged": {"kind": "animation", "capabilities": {"led": True}}}
    manifest["edged"].update(edged)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def published(tmp_path: Path) -> list[str]:
    catalog = SQLiteCatalog(tmp_path / "catalog.db")
    try:
        return [m.ref for m in catalog.bundles()]
    finally:
        catalog.close()


def test_publish_takes_name_and_version_from_the_manifest(
    tmp_path: Path, market: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    glow = plugin(tmp_path / "glow", "glow", anim_wasm("glow"), {"name": "glow", "version": "1.2.0"})
    rc, out, err = run(capsys, *market, "publish", str(glow / "glow.wasm"))
    assert rc == 0, err
    assert out.startswith("published glow@1.2.0")
    rc, out, err = run(capsys, *market, "publish", str(glow), "--version", "1.3.0")  # a flag contradicting it
    assert rc == 1 and "the manifest's edged.version is '1.2.0', the bundle's is '1.3.0'" in err
    bare = plugin(tmp_path / "bare", "bare", anim_wasm("bare"), {})  # a manifest without name and version
    rc, out, err = run(capsys, *market, "publish", str(bare), "--name", "bare", "--version", "0.1.0")
    assert rc == 0, err
    assert out.startswith("published bare@0.1.0")
    assert published(tmp_path) == ["bare@0.1.0", "glow@1.2.0"]


def test_publish_without_a_version_anywhere_says_where_to_put_it(
    tmp_path: Path, market: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    glow = plugin(tmp_path / "glow", "glow", anim_wasm("glow"), {"name": "glow"})
    rc, _, err = run(capsys, *market, "publish", str(glow / "glow.wasm"))
    assert rc == 2 and "Traceback" not in err
    assert err.strip() == (
        f"edged market: {glow / 'manifest.json'} has no edged.version: set it there, or pass --version"
    )


def test_publish_refuses_a_plugin_that_plugin_check_fails(
    tmp_path: Path, market: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = plugin(tmp_path / "trap", "trap", anim_wasm("t", trap_at=0), {"name": "trap", "version": "1.0.0"})
    check = main(["plugin", "check", str(bad)])
    capsys.readouterr()
    assert check == 1  # what `edged plugin check` says of it
    rc, out, err = run(capsys, *market, "publish", str(bad / "trap.wasm"))
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("edged market: refused: `edged plugin check` fails")
    assert "frame 0 failed" in lines[0] and "--force" in lines[0]
    assert published(tmp_path) == []
    rc, out, err = run(capsys, *market, "publish", str(bad / "trap.wasm"), "--force")
    assert rc == 0 and out.startswith("published trap@1.0.0")
    assert "publishing despite a failed check (--force): frame 0 failed" in err


def test_deploy_draws_one_progress_bar_for_the_whole_rollout(
    tmp_path: Path, market: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edged market deploy glow@1.0.0 --group lobby --wait` with three devices reporting: one bar, not one per
    device, with the count of devices in each state."""
    from types import SimpleNamespace

    import edged.cli.market as market_cli
    from edged.market.catalog import RolloutRecord
    from edged.market.rollout import RolloutResult

    class FakeMarket:
        def spec(self, name: str, version: str) -> None:
            return None

        def group_members(self, group: str) -> list[str]:
            return ["dev-1", "dev-2", "dev-3"]

        def stop(self) -> None:
            pass

    def follow(market: Any, rid: int, *, on_progress: Any, **kw: Any) -> RolloutResult:
        for counts in ({"planned": 3}, {"downloading": 2, "planned": 1}, {"healthy": 2, "installing": 1}):
            on_progress(RolloutRecord(id=rid, name="glow", version="1.0.0", target="group:lobby", state="running",
                                      created_at=0.0, counts=counts))  # fmt: skip
        on_progress(RolloutRecord(id=rid, name="glow", version="1.0.0", target="group:lobby", state="done",
                                  created_at=0.0, counts={"healthy": 3}))  # fmt: skip
        return RolloutResult(state="done", id=rid, outcomes=dict.fromkeys(["dev-1", "dev-2", "dev-3"], "healthy"))

    fake = (FakeMarket(), SimpleNamespace(close=lambda: 0))
    monkeypatch.setattr(market_cli, "_market", lambda args, serve, **kw: fake)
    monkeypatch.setattr(market_cli.rollouts, "create_rollout", lambda *a, **kw: 7)
    monkeypatch.setattr(market_cli.rollouts, "follow", follow)
    rc, out, err = run(
        capsys, *market, "deploy", "glow@1.0.0", "--group", "lobby", "--serve-chunks", "--allow-unknown", "--wait"
    )
    assert rc == 0 and "rollout 7 done" in out
    bars = {line.split(":")[0] for line in re.split(r"[\r\n]+", err) if "|" in line}
    assert bars == {"glow@1.0.0"}, err  # one bar, named after the rollout
    assert "done: healthy=3" in err and "3/3" in err
