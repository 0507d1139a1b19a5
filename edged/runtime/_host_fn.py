"""User host functions: ``@host_fn``, with wasm types inferred from annotations as in the official Extism SDK.

``bytes``/``str`` parameters and results travel as kernel memory handles (i64), ``Annotated[T, Json]`` as a JSON
handle, ``int`` as i64, ``float`` as f64 and ``bool`` as i32. A parameter annotated :class:`CurrentPlugin` receives
the calling plugin's context. A Python exception inside the function fails the plugin call with a
:class:`~edged.errors.HostFunctionError` that names the function and the exception, and is also an instance of the
exception's own type where Python allows it; it is never swallowed.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from ..errors import EdgedError, HostFunctionError, PluginError


class Json:
    """Marker for ``Annotated[T, Json]``: the value travels as a JSON document in a memory handle."""


class CurrentPlugin:
    """What a host function sees of the plugin that called it. Valid only during that call."""

    __slots__ = ("_kernel", "name")

    def __init__(self, kernel: Any, name: str) -> None:
        self._kernel = kernel
        self.name = name

    def _k(self) -> Any:
        if self._kernel is None:
            raise PluginError("CurrentPlugin used after the host function returned")
        return self._kernel

    def read(self, handle: int) -> bytes:
        """The bytes of the block ``handle`` (empty for 0 or an invalid handle)."""
        return self._k().read(handle)

    def write(self, data: bytes | str) -> int:
        """Copy ``data`` into a new block and return its handle (0 for empty data)."""
        return self._k().alloc_bytes(data.encode() if isinstance(data, str) else data)

    def free(self, handle: int) -> None:
        """Free a block."""
        self._k().free(handle)


# kinds of values: handle-typed ones are converted through kernel memory
_BYTES, _STR, _JSON, _I64, _F64, _BOOL, _CURRENT = "bytes", "str", "json", "i64", "f64", "bool", "current"
_I32 = "i32"  # a raw i32, only through an explicit signature
_VALTYPE = {
    _BYTES: wasmtime.ValType.i64(),
    _STR: wasmtime.ValType.i64(),
    _JSON: wasmtime.ValType.i64(),
    _I64: wasmtime.ValType.i64(),
    _F64: wasmtime.ValType.f64(),
    _BOOL: wasmtime.ValType.i32(),
    _I32: wasmtime.ValType.i32(),
}


def _kind(annotation: Any, where: str) -> str:
    if annotation is inspect.Parameter.empty:
        raise TypeError(f"{where} needs a type annotation (bytes, str, int, float, bool or Annotated[T, Json])")
    if typing.get_origin(annotation) is typing.Annotated:
        if Json in typing.get_args(annotation)[1:]:
            return _JSON
        annotation = typing.get_args(annotation)[0]
    kinds = {bytes: _BYTES, str: _STR, int: _I64, float: _F64, bool: _BOOL, CurrentPlugin: _CURRENT}
    if annotation in kinds:
        return kinds[annotation]
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")


@dataclass
class HostFunction:
    """A Python function made callable from wasm under ``namespace::name``."""

    func: Callable[..., Any]
    name: str
    namespace: str
    params: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    user_data: Any = None

    def functype(self) -> wasmtime.FuncType:
        return wasmtime.FuncType(
            [_VALTYPE[k] for k in self.params if k != _CURRENT], [_VALTYPE[k] for k in self.results]
        )

    def bind(self, kernel_ref: Callable[[], Any], plugin_name: str) -> Callable[..., Any]:
        """The callback given to wasmtime, converting values through the kernel returned by ``kernel_ref``."""
        params, results, func, qualified = (
            self.params,
            self.results,
            self.func,
            f"{self.namespace}::{self.name}",
        )
        wants_user_data = self.user_data is not None
        handle_in = any(k in (_BYTES, _STR, _JSON, _CURRENT) for k in params)
        result_kind = results[0] if results else None

        def callback(*raw: Any) -> Any:
            kernel = kernel_ref()
            current = CurrentPlugin(kernel, plugin_name) if _CURRENT in params else None
            try:
                if handle_in:
                    args: list[Any] = []
                    it = iter(raw)
                    for k in params:
                        if k == _CURRENT:
                            args.append(current)
                            continue
                        v = next(it)
                        if k == _BYTES:
                            v = kernel.read(v)
                        elif k == _STR:
                            v = kernel.read(v).decode("utf-8", errors="replace")
                        elif k == _JSON:
                            v = json.loads(kernel.read(v) or b"null")
                        args.append(v)
                else:
                    args = list(raw)
                if wants_user_data:
                    args.append(self.user_data)
                out = func(*args)
                if result_kind is None:
                    return None
                if result_kind == _BYTES:
                    return kernel.alloc_bytes(bytes(out))
                if result_kind == _STR:
                    return kernel.alloc_bytes(str(out).encode())
                if result_kind == _JSON:
                    return kernel.alloc_bytes(json.dumps(out).encode())
                if result_kind == _BOOL:
                    return 1 if out else 0
                return out
            except EdgedError:
                raise
            except Exception as exc:
                raise host_function_error(f"host function {qualified} raised {type(exc).__name__}: {exc}", exc) from exc
            finally:
                if current is not None:
                    current._kernel = None

        return callback


_ERROR_TYPES: dict[type[BaseException], type[HostFunctionError]] = {}


def host_function_error(message: str, exc: BaseException) -> HostFunctionError:
    """A :class:`HostFunctionError` that is also an instance of ``exc``'s type where Python allows it, so both
    ``except PluginError`` and ``except ValueError`` (say) catch a host function's ``ValueError``."""
    kind = type(exc)
    cls = _ERROR_TYPES.get(kind)
    if cls is None:
        try:
            cls = type(f"HostFunctionError[{kind.__name__}]", (HostFunctionError, kind), {})
        except TypeError:  # an exception type with its own C layout (the OSError family, say)
            cls = HostFunctionError
        _ERROR_TYPES[kind] = cls
    try:
        return cls(message, exc)
    except TypeError:  # a constructor that wants other arguments (JSONDecodeError, UnicodeDecodeError): skip it
        err = cls.__new__(cls, message)
        BaseException.__init__(err, message)
        err.exception = exc
        return err


def host_fn(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    namespace: str = "extism:host/user",
    signature: tuple[Sequence[str], Sequence[str]] | None = None,
    user_data: Any = None,
) -> Any:
    """Declare a host function; usable as ``@host_fn`` or ``@host_fn(name=..., namespace=...)``.

    ``signature=(params, results)`` overrides inference with kind names: ``"bytes"``, ``"str"``, ``"json"``,
    ``"i64"``, ``"i32"``, ``"f64"``, ``"bool"`` and ``"current"`` (a :class:`CurrentPlugin` argument).
    ``user_data`` is passed as an extra last argument.
    """

    def wrap(fn: Callable[..., Any]) -> HostFunction:
        if signature is not None:
            params, results = list(signature[0]), list(signature[1])
            for k in (*params, *results):
                if k not in _VALTYPE and k != _CURRENT:
                    raise TypeError(f"unknown value kind {k!r} in signature")
        else:
            hints = typing.get_type_hints(fn, include_extras=True)
            sig = inspect.signature(fn)
            ps = list(sig.parameters.values())
            if user_data is not None:
                ps = ps[:-1]
            params = [_kind(hints.get(p.name, p.annotation), f"parameter '{p.name}' of {fn.__name__}") for p in ps]
            ret = hints.get("return", sig.return_annotation)
            results = (
                []
                if ret in (None, type(None), inspect.Signature.empty)
                else [_kind(ret, f"return value of {fn.__name__}")]
            )
        if len(results) > 1 or _CURRENT in results:
            raise TypeError("a host function returns at most one value")
        return HostFunction(fn, name or fn.__name__, namespace, params, results, user_data)

    return wrap(func) if func is not None else wrap
