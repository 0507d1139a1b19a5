"""Shared fixtures (built test plugins, WAT compilation, an isolated module cache) and the test lanes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

# the lanes: markers applied at collection and the --quick option (see tests/README.md)
from tests.support.lanes import (  # noqa: F401  (pytest hooks and an autouse fixture)
    _quick_lane_guard,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_report_collectionfinish,
)

# real servers for every folder: mosquitto (broker, start_broker), a marketplace and agents (harness), PostgreSQL
from tests.support.servers import broker, catalog_db, harness, postgres, start_broker  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_BUILD = ROOT / "tests" / "plugins" / "build"


def pytest_configure(config: pytest.Config) -> None:
    """Subprocesses (``python -m edged …``) import this checkout's ``edged``, not whatever the venv installed:
    an editable install made from another worktree, or a wheel, would otherwise be what they test."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test session gets its own module cache directory, so tests never depend on a user's cache."""
    monkeypatch.setenv("EDGED_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "module-cache"))


@pytest.fixture(autouse=True)
def _signal_handlers_kept() -> Iterator[None]:
    """A test leaves SIGINT's and SIGTERM's handlers as it found them (a command run in-process through
    ``edged.cli.main`` that kept its own left pytest's Ctrl-C and SIGTERM setting an Event nobody waited for). One
    that changed them fails at teardown, and the handlers go back for the tests after it."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    changed = {s: h for s, h in before.items() if signal.getsignal(s) != h}
    for s, h in changed.items():
        signal.signal(s, signal.SIG_DFL if h is None else h)
    if changed:
        names = ", ".join(signal.Signals(s).name for s in changed)
        pytest.fail(f"the test left the handlers of {names} changed (put back now); restore them where it sets them")


def wat(text: str) -> bytes:
    """Compile WAT text to wasm bytes."""
    return wasmtime.wat2wasm(text)


@pytest.fixture(scope="session")
def built_plugin():
    """Path of a plugin built by ``plugins/build`` (the test command builds them first); missing ones fail loudly."""

    def get(name: str) -> Path:
        path = PLUGIN_BUILD / f"{name}.wasm"
        if not path.exists():
            pytest.fail(f"{path} is missing: run plugins/build before the tests (tests/run does)")
        return path

    return get
