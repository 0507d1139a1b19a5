"""Issue 10.3: the device decides file access, never the plugin.

A WASI plugin whose manifest has no ``edged`` block but names a host folder in ``allowed_paths`` read ``secret.txt``
and wrote ``pwned.txt`` there, under ``wasi = false`` and under ``wasi = true``; preview and check ran it with its
declared paths too."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.containment.conftest import anchor_run
from tests.containment.harness import (
    Outcome,
    Run,
    assert_healthy_kept_rate,
    assert_refused,
    assert_survived,
    edged,
    make_site,
    run_site,
)
from tests.containment.hostile import PWNED, escape


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return anchor_run(tmp_path_factory.mktemp("anchor"))


class HostFolder:
    """A host folder holding ``secret.txt``: what the plugin names in its manifest."""

    def __init__(self, root: Path) -> None:
        self.path = root / "host-folder"
        self.path.mkdir()
        self.secret = f"TOP-SECRET-{secrets.token_hex(8)}"
        (self.path / "secret.txt").write_text(self.secret)

    def assert_untouched(self, *outputs: Outcome, extra: str = "") -> None:
        """Nothing was written there, and the secret shows up in no output of the process."""
        assert sorted(p.name for p in self.path.iterdir()) == ["secret.txt"], f"written: {list(self.path.iterdir())}"
        assert (self.path / "secret.txt").read_text() == self.secret
        for o in outputs:
            assert self.secret not in o.stdout + o.stderr, f"the plugin read the secret: {o.describe()}"
        assert self.secret not in extra, "the plugin read the secret"


@pytest.fixture
def folder(tmp_path: Path) -> HostFolder:
    return HostFolder(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("wasi", ["false", "true"])
def test_run_keeps_the_host_folder_from_a_plugin_that_names_it(
    tmp_path: Path, folder: HostFolder, wasi: str, anchor: Run
) -> None:
    site = make_site(tmp_path / "site", [("h1", escape(str(folder.path)))], policy=f"wasi = {wasi}")
    run = run_site(site)
    assert_healthy_kept_rate(anchor, run)
    folder.assert_untouched(run.outcome, extra=str(run.stats))
    assert not list(tmp_path.rglob(PWNED)), list(tmp_path.rglob(PWNED))


def test_preview_keeps_the_host_folder(tmp_path: Path, folder: HostFolder) -> None:
    o = edged("preview", str(escape(str(folder.path)).write(tmp_path)), "--png", "out.png", cwd=tmp_path)
    assert_survived(o)
    folder.assert_untouched(o)


def test_check_keeps_the_host_folder(tmp_path: Path, folder: HostFolder) -> None:
    o = edged("plugin", "check", str(escape(str(folder.path)).write(tmp_path)), cwd=tmp_path)
    assert_survived(o)
    folder.assert_untouched(o)


def test_call_without_wasi_refuses_it(tmp_path: Path, folder: HostFolder) -> None:
    """``edged call`` grants WASI only with ``--wasi``: without it, the plugin does not load."""
    o = edged("call", str(escape(str(folder.path)).write(tmp_path)), "frame", cwd=tmp_path)
    assert_refused(o, "edged call:", "wasi", codes=(2,))
    folder.assert_untouched(o)
