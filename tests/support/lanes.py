"""The test lanes: markers for what a test needs beyond this process, applied at collection, and the quick lane.

A test is marked for what it needs that the edit-test loop should not wait for:

- ``broker``: a real mosquitto (the ``broker``, ``start_broker`` and ``harness`` fixtures)
- ``postgres``: a real PostgreSQL server (the ``postgres`` fixture, ``catalog_db`` on its postgres backend)
- ``browser``: chromium driven by Playwright (the ``browser`` and ``page`` fixtures)
- ``subprocess``: starts another process (edged, python, a build, a server): found by reading the test's code
- ``toolchain``: a compiler, npm or a wheel build (the ``wheel`` and ``installed`` fixtures, ``plugins/build``)
- ``slow``: marked by hand on long in-process tests

Markers come from the fixtures a test uses (``FIXTURE_MARKS``, ``PARAM_MARKS``) and from :func:`spawns`, which reads
the test's source, the fixtures' and every helper they name in this repository's test code (``tests.*`` and the
library's ``edged.*.testing`` modules), so a helper that starts a process marks every test that calls it. Marks
written by hand (``pytestmark``, ``@pytest.mark.subprocess``) count too.

``--quick`` deselects every test carrying one of ``QUICK_EXCLUDES`` (never skips: the summary counts them as
deselected) and, as a check the reading cannot miss, makes any process a selected test starts fail that test.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

import pytest

MARKERS = {
    "broker": "needs a real mosquitto (deselected by --quick)",
    "postgres": "needs a real PostgreSQL server (deselected by --quick)",
    "browser": "needs chromium driven by Playwright (deselected by --quick)",
    "subprocess": "starts another process: edged, python, a build or a server (deselected by --quick)",
    "toolchain": "needs a compiler, npm or a wheel build (deselected by --quick)",
    "slow": "longer end-to-end tests (still run by the full suite; deselected by --quick)",
}
QUICK_EXCLUDES = tuple(MARKERS)

FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "broker": ("broker",),
    "start_broker": ("broker",),
    "harness": ("broker",),
    "postgres": ("postgres",),
    "browser": ("browser",),
    "page": ("browser",),
    "wheel": ("toolchain", "subprocess"),
    "installed": ("toolchain", "subprocess"),
    "anchors": ("subprocess",),
}
# (fixture, parameter) -> marks, for fixtures that start a server only for some of their parameters
PARAM_MARKS: dict[tuple[str, str], tuple[str, ...]] = {("catalog_db", "postgres"): ("postgres",)}

# the names that start a process: module -> attributes (an empty set: any use of the module)
SPAWNERS: dict[str, frozenset[str]] = {
    "subprocess": frozenset({"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}),
    "os": frozenset(
        {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "spawnv", "spawnl", "execv", "execvp"}
    ),
    "asyncio": frozenset({"create_subprocess_exec", "create_subprocess_shell"}),
    "multiprocessing": frozenset(),
    "pty": frozenset({"spawn", "fork"}),
}


def in_scope(module: str) -> bool:
    """Test code whose helpers are read: this repository's tests and the library's test-support modules (not this
    module: its guard names what it refuses)."""
    if module == __name__:
        return False
    return module.split(".")[0] == "tests" or (module.startswith("edged.") and module.endswith(".testing"))


def _imports(nodes: Iterable[ast.AST]) -> dict[str, tuple[str, str | None]]:
    """Local name -> (module, attribute or None) for the import statements among ``nodes``."""
    out: dict[str, tuple[str, str | None]] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = (a.name, None)
                else:
                    out[a.name.split(".")[0]] = (a.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                out[a.asname or a.name] = (node.module, a.name)
    return out


class _Module:
    """One module's top-level definitions and imports, read once."""

    def __init__(self, name: str, tree: ast.Module) -> None:
        self.name = name
        self.defs: dict[str, ast.AST] = {
            node.name: node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        self.imports = _imports(tree.body)


@functools.cache
def _module(name: str) -> _Module | None:
    mod = sys.modules.get(name)
    if mod is None:
        try:
            mod = importlib.import_module(name)
        except Exception:
            return None
    return _module_of(mod)


def _module_of(mod: ModuleType) -> _Module | None:
    try:
        source = inspect.getsource(mod)
    except (OSError, TypeError):
        return None
    return _Module(mod.__name__, ast.parse(source))


def _references(node: ast.AST) -> Iterator[tuple[str, str | None]]:
    """(name, attribute) for each name a definition uses, leaving out annotations (they start nothing)."""
    skip: set[int] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.arg | ast.AnnAssign) and n.annotation is not None:
            skip.update(id(m) for m in ast.walk(n.annotation))
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.returns is not None:
            skip.update(id(m) for m in ast.walk(n.returns))
    for n in ast.walk(node):
        if id(n) in skip:
            continue
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            skip.add(id(n.value))
            yield n.value.id, n.attr
        elif isinstance(n, ast.Name):
            yield n.id, None


def _spawns_def(module: _Module, node: ast.AST, seen: set[tuple[str, int]]) -> str | None:
    key = (module.name, id(node))
    if key in seen:
        return None
    seen.add(key)
    imports = {**module.imports, **_imports(ast.walk(node))}  # with the imports inside the definition
    for name, attr in _references(node):
        if name in module.defs:
            found = _spawns_def(module, module.defs[name], seen)
            if found:
                return found
            continue
        if name not in imports:
            continue
        source, imported = imports[name]
        if imported is None:  # `import subprocess`, then subprocess.run
            root = source.split(".")[0]
            if root in SPAWNERS and (not SPAWNERS[root] or attr in SPAWNERS[root]):
                return f"{source}.{attr}" if attr else source
            other = _module(source) if attr and in_scope(source) else None
            if other is not None and attr in other.defs:
                found = _spawns_def(other, other.defs[attr], seen)
                if found:
                    return f"{found} (via {source}.{attr})"
            continue
        root = source.split(".")[0]
        if root in SPAWNERS and (not SPAWNERS[root] or imported in SPAWNERS[root]):
            return f"{source}.{imported}"
        if in_scope(source):
            other = _module(source)
            if other is not None and imported in other.defs:
                found = _spawns_def(other, other.defs[imported], seen)
                if found:
                    return f"{found} (via {source}.{imported})"
    return None


def spawns(func: Callable[..., Any]) -> str | None:
    """What starts a process when ``func`` runs, read from its source and the helpers it names (None: nothing
    found). Over-approximates within a helper: using a class reads all of its methods."""
    func = inspect.unwrap(func)
    modname = getattr(func, "__module__", None)
    if not modname or not in_scope(modname):
        return None
    module = _module(modname)
    if module is None:
        return None
    node = module.defs.get(func.__name__)
    if node is None:  # a method or a nested function: read its own source
        try:
            node = ast.parse(textwrap.dedent(inspect.getsource(func)))
        except (OSError, TypeError, SyntaxError):
            return None
    return _spawns_def(module, node, set())


def _fixture_funcs(item: pytest.Item) -> Iterator[tuple[str, Callable[..., Any]]]:
    info = getattr(item, "_fixtureinfo", None)
    for name, defs in (info.name2fixturedefs if info else {}).items():
        for d in defs:
            yield name, d.func


def lane_marks(
    function: Callable[..., Any] | None,
    fixturenames: Iterable[str] = (),
    params: dict[str, Any] | None = None,
    fixtures: Iterable[tuple[str, Callable[..., Any]]] = (),
) -> dict[str, str]:
    """The lane markers a test needs, each with the reason: from the fixtures it uses (all of them, transitively),
    its parameters, and what its code and its fixtures' code start."""
    out: dict[str, str] = {}
    for name in sorted(set(fixturenames) & FIXTURE_MARKS.keys()):
        for mark in FIXTURE_MARKS[name]:
            out.setdefault(mark, f"uses the {name} fixture")
    for (fixture, value), marks in PARAM_MARKS.items():
        if (params or {}).get(fixture) == value:
            for mark in marks:
                out.setdefault(mark, f"{fixture}[{value}]")
    if "subprocess" not in out:
        found = spawns(function) if function is not None else None
        if found:
            out["subprocess"] = f"calls {found}"
        else:
            for name, func in fixtures:
                found = spawns(func)
                if found:
                    out["subprocess"] = f"fixture {name} calls {found}"
                    break
    return out


def marks_for(item: pytest.Item) -> dict[str, str]:
    """The lane markers a collected test needs (see :func:`lane_marks`)."""
    return lane_marks(
        item.function if isinstance(item, pytest.Function) else None,
        getattr(item, "fixturenames", ()),
        getattr(getattr(item, "callspec", None), "params", {}),
        _fixture_funcs(item),
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick",
        action="store_true",
        help="the edit-test loop: deselect tests marked " + ", ".join(QUICK_EXCLUDES) + " (the full run is CI's)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in marks_for(item):
            item.add_marker(mark)
    if not config.getoption("quick"):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    why: Counter[str] = Counter()
    for item in items:
        hit = [m for m in QUICK_EXCLUDES if item.get_closest_marker(m) is not None]
        if hit:
            dropped.append(item)
            why.update(hit)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    config.stash[_QUICK_SUMMARY] = (len(kept), len(dropped), why)


_QUICK_SUMMARY = pytest.StashKey[tuple[int, int, Counter[str]]]()


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    summary = config.stash.get(_QUICK_SUMMARY, None)
    if summary is None:
        return None
    kept, dropped, why = summary
    detail = ", ".join(f"{m} {why[m]}" for m in QUICK_EXCLUDES if why[m])
    return f"quick lane: {kept} selected, {dropped} deselected ({detail}; a test may have several marks)"


class UnmarkedProcess(RuntimeError):
    """A test selected by --quick started a process: its markers are missing (see tests/support/lanes.py)."""


@pytest.fixture(autouse=True)
def _quick_lane_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the quick lane, a selected test that starts a process fails (instead of slowing the lane silently)."""
    if request.config.getoption("quick"):
        guard(monkeypatch, request.node.nodeid)


def guard(monkeypatch: pytest.MonkeyPatch, nodeid: str) -> None:
    """Make starting a process from this process raise :class:`UnmarkedProcess` (undone with ``monkeypatch``)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise UnmarkedProcess(
            f"{nodeid} started a process in the quick lane: mark it @pytest.mark.subprocess (or the marker of what "
            "it starts) so --quick deselects it"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
