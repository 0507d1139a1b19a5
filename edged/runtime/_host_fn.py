"""User host functions: ``@host_fn``, with wasm types inferred from annotations as in the official Extism SDK.

``bytes``/``str`` parameters and results travel as kernel memory handles (i64), ``Annotated[T, Json]``,
``Annotated[T, Pickle]`` and ``Annotated[T, Codec(f)]`` as handles holding the encoded value, ``int`` parameters as
i64, ``float`` as f64 and ``bool`` as i32. As in the SDK, an ``int`` result is returned as a handle to its 8
little-endian bytes and a ``bool`` result as an i32 handle to 4; ``Tuple[...]`` results return several values. A
parameter annotated :class:`CurrentPlugin` receives the calling plugin's context. ``signature=([ValType...],
[ValType...])`` declares the wasm types explicitly; the function is then called as ``f(current_plugin, params,
results, *user_data)`` with :class:`Val` lists, as in the SDK. A Python exception inside the function fails the
plugin call with a :class:`~edged.errors.HostFunctionError` that names the function and the exception, and is also
an instance of the exception's own type where Python allows it; it is never swallowed.
"""

from __future__ import annotations

import contextvars
import ctypes
import enum
import inspect
import json
import pickle
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import wasmtime

from ..errors import EdgedError, HostFunctionError, PluginError

if TYPE_CHECKING:
    from ._kernel import Kernel


class Json:
    """Marker for ``Annotated[T, Json]``: the value travels as a JSON document in a memory handle."""


class Pickle:
    """Marker for ``Annotated[T, Pickle]``: the value travels pickled in a memory handle (trusted plugins only:
    unpickling runs code)."""


class Codec:
    """``Annotated[T, Codec(f)]``: ``f`` decodes a parameter's bytes, or encodes a result to bytes."""

    def __init__(self, codec: Callable[[Any], Any]) -> None:
        self.codec = codec


class ValType(enum.Enum):
    """Wasm value types for explicit signatures (the SDK's numbering; ``PTR`` is an alias of ``I64``)."""

    I32 = 0
    PTR = 1
    I64 = 1
    F32 = 2
    F64 = 3
    V128 = 4
    FUNC_REF = 5
    EXTERN_REF = 6


class Val:
    """A wasm value with its :class:`ValType`, as explicit-signature host functions see their params and results."""

    def __init__(self, t: ValType, v: Any) -> None:
        self.t = t
        self.value = v

    def __repr__(self) -> str:
        return f"Val({self.t}, {self.value})"


class Memory:
    """A block of the calling plugin's (kernel) memory: ``offset`` (its handle) and ``length``."""

    def __init__(self, offs: int, length: int) -> None:
        self.offset = offs
        self.length = length

    def __len__(self) -> int:
        return self.length


#: the ``host_context`` of the plugin call running on this thread (see ``Plugin.call``)
HOST_CONTEXT: contextvars.ContextVar[Any] = contextvars.ContextVar("edged_host_context", default=None)


class CurrentPlugin:
    """What a host function sees of the plugin that called it. Valid only during that call."""

    __slots__ = ("_kernel", "name")

    def __init__(self, kernel: Kernel | None, name: str) -> None:
        self._kernel = kernel
        self.name = name

    def _k(self) -> Kernel:
        if self._kernel is None:
            raise PluginError("CurrentPlugin used after the host function returned")
        return self._kernel

    def read(self, handle: int) -> bytes:
        """The bytes of the block ``handle`` (empty for 0 or an invalid handle)."""
        return self._k().read(handle)

    def write(self, data: bytes | str) -> int:
        """Copy ``data`` into a new block and return its handle (0 for empty data)."""
        return self._k().alloc_bytes(data.encode() if isinstance(data, str) else data)

    def free(self, handle: int | Memory) -> None:
        """Free a block (a handle or a :class:`Memory`)."""
        self._k().free(handle.offset if isinstance(handle, Memory) else handle)

    # --- the SDK's names -----------------------------------------------------------------------------------------

    def host_context(self) -> Any:
        """The ``host_context`` passed to the ``Plugin.call`` that led here (None if none)."""
        return HOST_CONTEXT.get()

    def alloc(self, size: int) -> Memory:
        """A new zeroed block of ``size`` bytes."""
        return Memory(self._k().alloc_bytes(bytes(size)), size)

    def memory_at_offset(self, offs: int | Val) -> Memory:
        """The block whose handle is ``offs`` (length 0 if it is not an active block)."""
        offset = int(offs.value if isinstance(offs, Val) else offs)
        kernel = self._k()
        block = kernel._block(offset) if offset else None
        return Memory(offset, block[2] if block is not None else 0)

    def memory(self, mem: Memory) -> memoryview:
        """A writable view of the block ``mem`` (checked to lie inside one active block)."""
        kernel = self._k()
        block = kernel._block(mem.offset) if mem.offset else None
        if block is None or mem.length > block[1]:
            if mem.length == 0:
                return memoryview(bytearray())
            raise PluginError(f"memory ({mem.offset}, {mem.length}) is not inside an allocated block")
        return memoryview((ctypes.c_ubyte * mem.length).from_address(kernel.base + mem.offset)).cast("B")

    def return_bytes(self, output: Val, b: bytes) -> None:
        """Copy ``b`` into a new block and make ``output`` hold its handle."""
        output.value = self.write(bytes(b))

    def return_string(self, output: Val, s: str) -> None:
        """Copy ``s`` (UTF-8) into a new block and make ``output`` hold its handle."""
        self.return_bytes(output, s.encode())

    def input_buffer(self, input: Val) -> memoryview:
        """A view of the block a handle parameter points at."""
        return self.memory(self.memory_at_offset(input))

    def input_bytes(self, input: Val) -> bytes:
        """The bytes a handle parameter points at."""
        return bytes(self.input_buffer(input))

    def input_string(self, input: Val) -> str:
        """The UTF-8 text a handle parameter points at."""
        return self.input_bytes(input).decode()


# kinds of values: handle-typed ones are converted through kernel memory
_BYTES, _STR, _JSON, _I64, _F64, _BOOL, _CURRENT = "bytes", "str", "json", "i64", "f64", "bool", "current"
_I32, _F32 = "i32", "f32"  # raw values, only through an explicit signature
_PICKLE, _CODEC = "pickle", "codec"
#: the SDK's ``-> int`` and ``-> bool`` results: a handle (i64 / i32) to the value's 8 / 4 little-endian bytes
_INT_BLOCK, _BOOL_BLOCK = "int_block", "bool_block"
_VALTYPE = {
    _BYTES: wasmtime.ValType.i64(),
    _STR: wasmtime.ValType.i64(),
    _JSON: wasmtime.ValType.i64(),
    _PICKLE: wasmtime.ValType.i64(),
    _CODEC: wasmtime.ValType.i64(),
    _INT_BLOCK: wasmtime.ValType.i64(),
    _BOOL_BLOCK: wasmtime.ValType.i32(),
    _I64: wasmtime.ValType.i64(),
    _F64: wasmtime.ValType.f64(),
    _BOOL: wasmtime.ValType.i32(),
    _I32: wasmtime.ValType.i32(),
    _F32: wasmtime.ValType.f32(),
}
_HANDLE_IN = (_BYTES, _STR, _JSON, _PICKLE, _CODEC, _CURRENT)
_RAW_KIND = {ValType.I32: _I32, ValType.I64: _I64, ValType.F32: _F32, ValType.F64: _F64}


def _annotated(annotation: Any) -> tuple[Any, str | None, Codec | None]:
    """``(base type, "json"/"pickle"/"codec" or None, the Codec)`` of an annotation."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        for item in meta:
            if item is Json:
                return base, _JSON, None
            if item is Pickle:
                return base, _PICKLE, None
            if isinstance(item, Codec):
                return base, _CODEC, item
        return base, None, None
    return annotation, None, None


def _kind(annotation: Any, where: str, result: bool = False) -> tuple[str, Codec | None]:
    if annotation is inspect.Parameter.empty:
        raise TypeError(
            f"{where} needs a type annotation (bytes, str, int, float, bool or Annotated[T, Json | Pickle | Codec])"
        )
    annotation, encoded, codec = _annotated(annotation)
    if encoded is not None:
        return encoded, codec
    kinds = {bytes: _BYTES, str: _STR, int: _I64, float: _F64, bool: _BOOL, CurrentPlugin: _CURRENT}
    if result:  # as the SDK returns them
        kinds |= {int: _INT_BLOCK, bool: _BOOL_BLOCK}
    if annotation in kinds:
        return kinds[annotation], None
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")


def _encode_result(kernel: Any, kind: str, codec: Codec | None, out: Any) -> Any:
    if kind == _BYTES:
        return kernel.alloc_bytes(bytes(out))
    if kind == _STR:
        return kernel.alloc_bytes(str(out).encode())
    if kind == _JSON:
        return kernel.alloc_bytes(json.dumps(out).encode())
    if kind == _PICKLE:
        return kernel.alloc_bytes(pickle.dumps(out))
    if kind == _CODEC:
        assert codec is not None  # _kind() gives the _CODEC kind only with its codec
        return kernel.alloc_bytes(bytes(codec.codec(out)))
    if kind == _INT_BLOCK:
        return kernel.alloc_bytes((int(out) & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little"))
    if kind == _BOOL_BLOCK:
        return kernel.alloc_bytes((1 if out else 0).to_bytes(4, "little"))
    if kind == _BOOL:
        return 1 if out else 0
    return out


@dataclass
class HostFunction:
    """A Python function made callable from wasm under ``namespace::name``.

    ``params``/``results`` are value kinds (see :func:`host_fn`); ``codecs`` maps ``("param", i)`` or
    ``("result", i)`` to the :class:`Codec` of a ``"codec"`` kind. ``valtypes`` set means the SDK's explicit
    signature calling convention: ``func(current_plugin, params: list[Val], results: list[Val], *extra_args)``.
    ``extra_args`` are passed last (default: ``(user_data,)`` when there is user data).
    """

    func: Callable[..., Any]
    name: str
    namespace: str
    params: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    user_data: Any = None
    codecs: dict[tuple[str, int], Codec] = field(default_factory=dict)
    valtypes: tuple[list[ValType], list[ValType]] | None = None
    extra_args: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.extra_args is None:
            self.extra_args = (self.user_data,) if self.user_data is not None else ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the Python function itself (as the SDK's decorated functions can be)."""
        return self.func(*args, **kwargs)

    def functype(self) -> wasmtime.FuncType:
        return wasmtime.FuncType(
            [_VALTYPE[k] for k in self.params if k != _CURRENT], [_VALTYPE[k] for k in self.results]
        )

    def bind(self, kernel_ref: Callable[[], Kernel], plugin_name: str) -> Callable[..., Any]:
        """The callback given to wasmtime, converting values through the kernel returned by ``kernel_ref``."""
        if self.valtypes is not None:
            return self._bind_explicit(kernel_ref, plugin_name)
        params, results, func, qualified = (
            self.params,
            self.results,
            self.func,
            f"{self.namespace}::{self.name}",
        )
        extra = self.extra_args or ()
        codecs = self.codecs
        handle_in = any(k in _HANDLE_IN for k in params)
        single = results[0] if len(results) == 1 else None
        single_codec = codecs.get(("result", 0))
        several = len(results) > 1

        def callback(*raw: Any) -> Any:
            kernel = kernel_ref()
            current = CurrentPlugin(kernel, plugin_name) if _CURRENT in params else None
            try:
                if handle_in:
                    args: list[Any] = []
                    it = iter(raw)
                    for i, k in enumerate(params):
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
                        elif k == _PICKLE:
                            v = pickle.loads(kernel.read(v))
                        elif k == _CODEC:
                            v = codecs[("param", i)].codec(kernel.read(v))
                        args.append(v)
                else:
                    args = list(raw)
                out = func(*args, *extra)
                if several:
                    if not isinstance(out, tuple | list) or len(out) != len(results):
                        raise TypeError(f"expected a tuple of {len(results)} results, got {out!r}")
                    return [
                        _encode_result(kernel, k, codecs.get(("result", i)), o)
                        for i, (k, o) in enumerate(zip(results, out, strict=True))
                    ]
                if single is None:
                    return None
                return _encode_result(kernel, single, single_codec, out)
            except EdgedError:
                raise
            except Exception as exc:
                raise host_function_error(f"host function {qualified} raised {type(exc).__name__}: {exc}", exc) from exc
            finally:
                if current is not None:
                    current._kernel = None

        return callback

    def _bind_explicit(self, kernel_ref: Callable[[], Kernel], plugin_name: str) -> Callable[..., Any]:
        """The SDK's explicit-signature convention: ``Val`` lists in and out."""
        assert self.valtypes is not None
        ptypes, rtypes = self.valtypes
        func, extra, qualified = self.func, self.extra_args or (), f"{self.namespace}::{self.name}"
        floats = (ValType.F32, ValType.F64)

        def callback(*raw: Any) -> Any:
            current = CurrentPlugin(kernel_ref(), plugin_name)
            try:
                inputs = [Val(t, v) for t, v in zip(ptypes, raw, strict=True)]
                outputs = [Val(t, 0.0 if t in floats else 0) for t in rtypes]
                func(current, inputs, outputs, *extra)
                values = [float(o.value) if o.t in floats else int(o.value) for o in outputs]
            except EdgedError:
                raise
            except Exception as exc:
                raise host_function_error(f"host function {qualified} raised {type(exc).__name__}: {exc}", exc) from exc
            finally:
                current._kernel = None
            if not values:
                return None
            return values[0] if len(values) == 1 else values

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


#: every function made with :func:`host_fn`: what a plugin links when ``functions=`` is not given (as in the SDK)
HOST_FN_REGISTRY: list[HostFunction] = []


def _sdk_user_data(user_data: Any) -> tuple[Any, ...]:
    """The SDK passes user data as ``*user_data``: bytes as one argument, a list as one argument per item."""
    if user_data is None:
        return ()
    if isinstance(user_data, list | tuple):
        return tuple(user_data)
    return (user_data,)


def make_host_function(
    fn: Callable[..., Any],
    name: str | None = None,
    namespace: str | None = None,
    signature: tuple[Sequence[Any], Sequence[Any]] | None = None,
    user_data: Any = None,
) -> HostFunction:
    """Build a :class:`HostFunction` as :func:`host_fn` does, without registering it."""
    name = name or fn.__name__
    namespace = namespace or "extism:host/user"
    sig_params = inspect.signature(fn).parameters.values()
    star_args = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig_params)
    if signature is not None and all(isinstance(t, ValType) for t in (*signature[0], *signature[1])):
        ptypes, rtypes = list(signature[0]), list(signature[1])
        for t in (*ptypes, *rtypes):
            if t not in _RAW_KIND:
                raise TypeError(f"host functions cannot take or return {t}")
        return HostFunction(
            fn,
            name,
            namespace,
            [_RAW_KIND[t] for t in ptypes],
            [_RAW_KIND[t] for t in rtypes],
            user_data,
            valtypes=(ptypes, rtypes),
            extra_args=_sdk_user_data(user_data),
        )
    codecs: dict[tuple[str, int], Codec] = {}
    if signature is not None:
        params, results = list(signature[0]), list(signature[1])
        for k in (*params, *results):
            if k not in _VALTYPE and k != _CURRENT:
                raise TypeError(f"unknown value kind {k!r} in signature")
    else:
        hints = typing.get_type_hints(fn, include_extras=True)
        ps = [p for p in sig_params if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if user_data is not None and not star_args:
            ps = ps[:-1]  # the user data arrives as the last named parameter
        params = []
        for i, p in enumerate(ps):
            kind, codec = _kind(hints.get(p.name, p.annotation), f"parameter '{p.name}' of {fn.__name__}")
            params.append(kind)
            if codec is not None:
                codecs[("param", i)] = codec
        ret = hints.get("return", inspect.signature(fn).return_annotation)
        if ret in (None, type(None), inspect.Signature.empty):
            rets: list[Any] = []
        elif typing.get_origin(ret) is tuple:
            rets = list(typing.get_args(ret))
        else:
            rets = [ret]
        results = []
        for i, r in enumerate(rets):
            kind, codec = _kind(r, f"return value of {fn.__name__}", result=True)
            results.append(kind)
            if codec is not None:
                codecs[("result", i)] = codec
    if _CURRENT in results:
        raise TypeError("a host function cannot return a CurrentPlugin")
    extra = _sdk_user_data(user_data) if star_args else None
    return HostFunction(fn, name, namespace, params, results, user_data, codecs, extra_args=extra)


class Function(HostFunction):
    """The SDK's low-level host function: ``Function(namespace, name, args, returns, f, *user_data)`` with
    :class:`ValType` lists; ``f(current_plugin, params, results, *user_data)`` fills ``results`` (:class:`Val`)."""

    def __init__(
        self,
        namespace: str | None,
        name: str,
        args: Sequence[ValType],
        returns: Sequence[ValType],
        f: Callable[..., Any],
        *user_data: Any,
    ) -> None:
        built = make_host_function(f, name, namespace, (list(args), list(returns)), list(user_data))
        super().__init__(**{k: getattr(built, k) for k in built.__dataclass_fields__})


def host_fn(
    func: Callable[..., Any] | str | None = None,
    namespace: str | None = None,
    signature: tuple[Sequence[Any], Sequence[Any]] | None = None,
    user_data: Any = None,
    *,
    name: str | None = None,
) -> Any:
    """Declare a host function; usable as ``@host_fn``, ``@host_fn()`` or ``@host_fn(name=..., namespace=...)``.

    Types are inferred from annotations as in the Extism SDK. ``signature=(params, results)`` declares them instead:
    with :class:`ValType` lists the function is called the SDK's low-level way, ``f(current_plugin, params,
    results, *user_data)``; with kind names (``"bytes"``, ``"str"``, ``"json"``, ``"i64"``, ``"i32"``, ``"f64"``,
    ``"bool"``, ``"current"``) it gets converted values and raw ``i64`` results. ``namespace`` defaults to
    ``extism:host/user``. ``user_data`` is passed last (as ``*user_data`` items when the function takes
    ``*args``, as in the SDK). Every function made here is registered, and a plugin created without
    ``functions=`` links them all, as in the SDK.
    """
    if isinstance(func, str):  # the SDK's first positional parameter is the name
        name, func = func, None

    def wrap(fn: Callable[..., Any]) -> HostFunction:
        hf = make_host_function(fn, name, namespace, signature, user_data)
        HOST_FN_REGISTRY.append(hf)
        return hf

    return wrap(func) if func is not None else wrap
