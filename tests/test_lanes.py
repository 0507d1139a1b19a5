"""The quick lane stays honest: every test that starts a process or a server is marked, so ``--quick`` deselects it,
and a process a selected test starts anyway fails that test (tests/support/lanes.py)."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.containment.harness import edged
from tests.support.lanes import FIXTURE_MARKS, MARKERS, QUICK_EXCLUDES, UnmarkedProcess, guard, lane_marks, spawns

TESTS = ROOT / "tests"
# fixtures that start a server or a process, named here on their own (not read from lanes.FIXTURE_MARKS)
SERVER_FIXTURES = {"broker", "start_broker", "harness", "postgres", "browser", "page", "wheel", "installed", "anchors"}
STARTS = {("subprocess", "run"), ("subprocess", "Popen"), ("subprocess", "check_output"), ("os", "fork")}


# what the reading must find (never called)
def _direct() -> None:
    subprocess.run(["true"], check=True)


def _through_a_helper() -> None:
    _direct()


def _through_another_module(tmp: Path) -> None:
    edged("--version", cwd=tmp)


def _local_import() -> None:
    import os as o

    o.fork()


def _annotation_only(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    return done


def test_the_reading_finds_processes_started_directly_through_helpers_and_local_imports() -> None:
    assert spawns(_direct) == "subprocess.run"
    assert spawns(_through_a_helper) == "subprocess.run"
    found = spawns(_through_another_module)
    assert found is not None and "via tests.containment.harness.edged" in found
    assert spawns(_local_import) == "os.fork"
    assert spawns(_annotation_only) is None


def test_fixtures_and_parameters_give_their_marks() -> None:
    assert set(lane_marks(_annotation_only, ["tmp_path", "harness", "broker"])) == {"broker"}
    assert set(lane_marks(_annotation_only, ["catalog_db"], {"catalog_db": "postgres"})) == {"postgres"}
    assert lane_marks(_annotation_only, ["catalog_db"], {"catalog_db": "sqlite"}) == {}
    assert "subprocess" in lane_marks(_annotation_only, ["site"], {}, [("site", _through_a_helper)])


def test_the_markers_are_registered_in_pyproject() -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {line.split(":")[0] for line in ini["markers"]}
    assert set(MARKERS) <= registered
    assert set(QUICK_EXCLUDES) == set(MARKERS)


def test_the_guard_fails_a_process_started_in_the_quick_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    guard(monkeypatch, "tests/x.py::test_y")
    # looked up by name so that reading this test does not mark it (it starts nothing: the guard refuses first)
    popen = getattr(subprocess, "Popen")  # noqa: B009
    with pytest.raises(UnmarkedProcess, match=r"tests/x.py::test_y started a process in the quick lane"):
        popen(["true"])
    with pytest.raises(UnmarkedProcess):
        getattr(os, "fork")()  # noqa: B009


def _own_starts(fn: ast.FunctionDef, helpers: dict[str, ast.FunctionDef]) -> bool:
    """Read on its own terms: the test, or a helper of its module it calls, names subprocess.run/Popen or os.fork."""
    bodies = [fn] + [helpers[n.id] for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in helpers]
    return any(
        isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and (n.value.id, n.attr) in STARTS
        for body in bodies
        for n in ast.walk(body)
    )


def _explicit(module: object, fn: object) -> set[str]:
    marks = list(getattr(fn, "pytestmark", [])) + list(
        getattr(module, "pytestmark", []) if isinstance(getattr(module, "pytestmark", []), list) else []
    )
    single = getattr(module, "pytestmark", None)
    if single is not None and not isinstance(single, list):
        marks.append(single)
    return {m.name for m in marks}


def test_every_test_that_starts_a_process_or_a_server_is_out_of_the_quick_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the whole suite, whatever ran: each test whose own code (or a helper of its module) starts a process, or
    which asks for a server fixture, carries a marker --quick deselects."""
    # importing a test module runs what collecting it runs (tests/hardware/test_failures.py probes `unshare` at
    # import): lift the quick lane's guard, which is for what tests run, not for collection
    monkeypatch.undo()
    unmarked: list[str] = []
    checked = 0
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("test")}
        tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
        expected = {t.name for t in tests if _own_starts(t, helpers) or {a.arg for a in t.args.args} & SERVER_FIXTURES}
        if not expected:
            continue
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for t in tests:
            if t.name not in expected:
                continue
            checked += 1
            fn = getattr(module, t.name)
            params = [a.arg for a in t.args.args]
            marks = set(lane_marks(fn, params)) | _explicit(module, fn)
            if not marks & set(QUICK_EXCLUDES):
                unmarked.append(f"{path.relative_to(ROOT)}::{t.name}")
    assert checked > 100  # the suite has that many: the walk found them
    assert unmarked == [], f"these start a process or a server but the quick lane would run them: {unmarked}"


def test_every_server_fixture_is_classified() -> None:
    """The fixtures named above all give a mark (a renamed fixture must be renamed in lanes.FIXTURE_MARKS too)."""
    assert FIXTURE_MARKS.keys() >= SERVER_FIXTURES
