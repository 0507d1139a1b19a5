"""edged.errors is the one error tree: every exception and warning class edged defines is defined there, under
EdgedError or EdgedWarning (modules that raise one may export its name, as the same object)."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
from pathlib import Path

import edged
from edged import errors, runtime

EDGED = Path(edged.__file__).parent
ERROR_NAMES = {n for n, o in vars(errors).items() if inspect.isclass(o) and issubclass(o, BaseException)}
BUILTIN_ERRORS = {n for n, o in vars(builtins).items() if inspect.isclass(o) and issubclass(o, BaseException)}


def test_every_class_in_errors_is_under_one_of_the_two_roots() -> None:
    for name in ERROR_NAMES:
        cls = getattr(errors, name)
        assert cls.__module__ == "edged.errors", name
        assert issubclass(cls, errors.EdgedError | errors.EdgedWarning), name


def test_no_exception_class_is_defined_outside_errors_py() -> None:
    """Read every source file: a class whose base is a builtin exception or one of edged's, anywhere (nested too),
    must live in errors.py. Private helpers (``_NotAnInteger``, control flow inside one module) are exempt."""
    strays = []
    for path in sorted(EDGED.rglob("*.py")):
        if path.name == "errors.py" and path.parent == EDGED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {
                b.id if isinstance(b, ast.Name) else b.attr
                for b in node.bases
                if isinstance(b, ast.Name | ast.Attribute)
            }
            if bases & (ERROR_NAMES | BUILTIN_ERRORS):
                strays.append(f"{path.relative_to(EDGED.parent)}: {node.name}")
    assert strays == []


def test_every_module_exports_errors_from_the_tree() -> None:
    """Import every module: each public exception class found in one is edged.errors' own object."""
    seen: set[str] = set()
    for info in pkgutil.walk_packages(edged.__path__, "edged."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("edged"):
                if name.startswith("_"):
                    continue
                assert obj.__module__ == "edged.errors", f"{info.name}.{name} is defined in {obj.__module__}"
                assert getattr(errors, obj.__name__) is obj
                seen.add(obj.__name__)
    # the families raised across the layers are all met on the way (the walk did reach the packages)
    assert {"PluginLoadError", "FrameError", "PinNotConfigured", "StoreError", "CatalogError", "UsageError"} <= seen


def test_the_runtime_exports_its_errors_from_the_tree() -> None:
    for name in runtime.__all__:
        obj = getattr(runtime, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert getattr(errors, obj.__name__) is obj, name  # (``Error`` is the SDK's name for PluginError)


def test_leaves_keep_their_builtin_bases() -> None:
    """Moving the classes changed no behaviour: callers catching a builtin still catch them."""
    assert issubclass(errors.PinNotConfigured, LookupError) and issubclass(errors.PinNotConfigured, errors.GpioError)
    assert issubclass(errors.SensorReadError, OSError) and issubclass(errors.SensorReadError, errors.HardwareError)
    assert issubclass(errors.BrokerRefused, errors.ConfigError) and issubclass(errors.BrokerRefused, ValueError)
    assert issubclass(errors.RolloutConflict, errors.CatalogError) and issubclass(errors.CatalogError, LookupError)
    assert issubclass(errors.FrameError, errors.PluginError) and issubclass(errors.InternalFailure, errors.PluginError)
    assert issubclass(errors.UsageError, ValueError) and issubclass(errors.ScaffoldError, ValueError)
