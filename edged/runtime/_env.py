"""The host side of ``extism:host/env``: logging and HTTP, and vars when their budget is too big for the kernel.

The kernel serves everything else (memory, input/output, errors, config and, normally, vars) inside wasm. Every
handle passed to these functions is consumed, as Extism's PDKs expect.
"""

from __future__ import annotations

import fnmatch
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import wasmtime
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import PluginError, PluginTimeout

if TYPE_CHECKING:
    from ._kernel import Kernel

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

#: Extism's defaults.
DEFAULT_MAX_VAR_BYTES = 1024 * 1024
DEFAULT_MAX_HTTP_RESPONSE_BYTES = 50 * 1024 * 1024
#: Bookkeeping cost counted per var entry on top of its key and value (the size of a key and a value header).
VAR_ENTRY_OVERHEAD = 48

_I32, _I64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()


def extism_log_level(logger: logging.Logger) -> int:
    """Map a logger's effective level onto Extism's: trace 0 .. error 4, i32::MAX when nothing would be logged."""
    lvl = logger.getEffectiveLevel()
    if lvl > logging.ERROR:
        return 0x7FFFFFFF
    for threshold, extism in ((TRACE, 0), (logging.DEBUG, 1), (logging.INFO, 2), (logging.WARNING, 3)):
        if lvl <= threshold:
            return extism
    return 4


#: The longest plugin log line kept; the rest is cut with a note of how much.
MAX_LOG_LINE = 2000
#: Plugin log lines per second a plugin may write before lines are dropped (with a count), and the burst allowed.
LOG_LINES_PER_S = 50.0
LOG_BURST = 200.0

_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def log_text(raw: bytes) -> str:
    """A plugin's log message as one safe line: UTF-8 (invalid bytes replaced), control characters (newlines, ANSI
    escapes) and line separators escaped, cut at :data:`MAX_LOG_LINE` characters. A plugin cannot start a line of
    its own in the host's log, forge another logger's line or drive the terminal."""
    text = raw.decode("utf-8", errors="replace").translate(_ESCAPES)
    if len(text) > MAX_LOG_LINE:
        text = f"{text[:MAX_LOG_LINE]}… ({len(text) - MAX_LOG_LINE} more characters)"
    return text


class LogLimiter:
    """A token bucket on one plugin's log lines: at most :data:`LOG_LINES_PER_S` a second after a burst of
    :data:`LOG_BURST`; dropped lines are counted and reported in the next line that passes."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self._clock = clock
        self._tokens = LOG_BURST
        self._last = clock()
        self.dropped = 0
        self._reported = 0

    def log(self, level: int, raw: bytes) -> None:
        self.log_lines(level, [raw])

    def log_lines(self, level: int, lines: list[bytes]) -> None:
        """Log as many of ``lines`` as the rate allows and count the rest, in time independent of how many."""
        if not lines or not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        self._tokens = min(LOG_BURST, self._tokens + (now - self._last) * LOG_LINES_PER_S)
        self._last = now
        take = min(len(lines), int(self._tokens))
        self._tokens -= take
        self.dropped += len(lines) - take
        for raw in lines[:take]:
            self._emit(level, raw)

    def _emit(self, level: int, raw: bytes) -> None:
        if self.dropped != self._reported:
            self.logger.warning(
                "%d log lines of this plugin were dropped (more than %g a second)",
                self.dropped - self._reported,
                LOG_LINES_PER_S,
            )
            self._reported = self.dropped
        self.logger.log(level, "%s", log_text(raw))


class HostEnv:
    """Per-plugin state behind the Python-served env functions. It outlives instances: vars persist when a plugin
    is re-instantiated after a trap."""

    def __init__(
        self,
        logger: logging.Logger,
        max_var_bytes: int | None,
        allowed_hosts: list[str] | None,
        max_http_response_bytes: int | None,
        kernel_ref: Callable[[], Kernel],
    ) -> None:
        self.logger = logger
        self.vars: dict[bytes, bytes] = {}
        self.var_bytes = 0
        self.max_var_bytes = DEFAULT_MAX_VAR_BYTES if max_var_bytes is None else max_var_bytes
        self.allowed_hosts = allowed_hosts
        self.max_http = DEFAULT_MAX_HTTP_RESPONSE_BYTES if max_http_response_bytes is None else max_http_response_bytes
        self.http_status = 0
        self.http_headers: dict[str, str] | None = None
        #: hand the last response's headers to the plugin (``http_headers``)? Off by default, as in Extism, where
        #: the plugin then sees no headers (``{}`` from the PDKs)
        self.http_response_headers = False
        self._k = kernel_ref
        #: ``time.monotonic()`` by which the current call must end (set by the plugin around each call), or None
        self.deadline: float | None = None
        #: every log line of the plugin (env log functions, WASI stdout/stderr) passes through this
        self.log_limiter = LogLimiter(logger)

    def forget_state(self) -> None:
        """Forget what a plugin kept between calls here: its vars and the last HTTP response."""
        self.vars.clear()
        self.var_bytes = 0
        self.http_status = 0
        self.http_headers = None

    # --- vars --------------------------------------------------------------------------------------------------

    def var_get(self, key: int) -> int:
        k = self._k()
        name = k.take(key)
        value = self.vars.get(name)
        return k.alloc_bytes(value) if value else 0

    def var_set(self, key: int, value: int) -> None:
        k = self._k()
        name = k.take(key)
        data = k.take(value) if value else None
        if self.max_var_bytes == 0:
            raise PluginError("Vars are disabled by this host")
        old = self.vars.get(name)
        old_size = len(name) + len(old) + VAR_ENTRY_OVERHEAD if old is not None else 0
        if data is None:
            if old is not None:
                del self.vars[name]
                self.var_bytes -= old_size
            return
        new_size = len(name) + len(data) + VAR_ENTRY_OVERHEAD
        if self.var_bytes - old_size + new_size > self.max_var_bytes:
            raise PluginError("Variable store is full")
        self.vars[name] = data
        self.var_bytes += new_size - old_size

    # --- logging -----------------------------------------------------------------------------------------------

    def _log(self, level: int) -> Callable[[int], None]:
        def log(handle: int) -> None:
            msg = self._k().take(handle)
            self.log_limiter.log(level, msg)

        return log

    # --- HTTP --------------------------------------------------------------------------------------------------

    def host_allowed(self, url: str) -> bool:
        """Deny by default; otherwise the URL's host must match one of the ``allowed_hosts`` globs."""
        if not self.allowed_hosts:
            return False
        host = urllib.parse.urlsplit(url).hostname or ""
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed_hosts)

    def http_request(self, req: int, body: int) -> int:
        k = self._k()
        raw = k.take(req)
        payload = k.take(body) if body else None
        try:
            spec = HttpRequestSpec.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "request"
            raise PluginError(f"invalid HTTP request: {where}: {first['msg']}") from None
        url = spec.url
        method = (spec.method or ("POST" if payload else "GET")).upper()
        if not self._allowed(url):
            raise PluginError(f"HTTP request to {url} is not allowed")
        try:
            request = urllib.request.Request(url, data=payload, headers=spec.headers, method=method)
        except ValueError as exc:
            raise PluginError(f"invalid HTTP request: {exc}") from None
        timeout = HTTP_TIMEOUT_S
        if self.deadline is not None:  # never outlive the call's own deadline (wasm cannot be interrupted here)
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise PluginTimeout("timeout")
        try:
            resp = self._opener().open(request, timeout=timeout)
        except urllib.error.HTTPError as err:  # a non-2xx status is not an error
            resp = err
        except TimeoutError:
            raise PluginTimeout("timeout") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if isinstance(getattr(exc, "reason", None), TimeoutError):
                raise PluginTimeout("timeout") from None
            raise PluginError(f"HTTP request to {url} failed: {exc}") from None
        with resp:
            data = resp.read(self.max_http + 1)
            self.http_status = resp.status
            self.http_headers = {key.lower(): value for key, value in resp.headers.items()}
        if len(data) > self.max_http:
            raise PluginError(f"HTTP response exceeds the limit of {self.max_http} bytes")
        return k.alloc_bytes(data)

    def _allowed(self, url: str) -> bool:
        try:
            scheme = urllib.parse.urlsplit(url).scheme
        except ValueError:
            return False
        return scheme in ("http", "https") and self.host_allowed(url)

    def _opener(self) -> urllib.request.OpenerDirector:
        """An opener whose redirects are checked against allowed_hosts like the first request: an allowed host
        cannot send a plugin on to one it may not reach."""
        env = self

        class CheckedRedirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(
                self,
                req: urllib.request.Request,
                fp: IO[bytes],
                code: int,
                msg: str,
                headers: http.client.HTTPMessage,
                newurl: str,
            ) -> urllib.request.Request | None:
                if not env._allowed(newurl):
                    raise PluginError(f"HTTP redirect to {newurl} is not allowed")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        return urllib.request.build_opener(CheckedRedirects, _NoDefaultContentType)

    def http_status_code(self) -> int:
        return self.http_status

    def http_headers_json(self) -> int:
        if self.http_headers is None or not self.http_response_headers:
            return 0
        return self._k().alloc_bytes(json.dumps(self.http_headers).encode())

    # --- linking -----------------------------------------------------------------------------------------------

    def functions(self) -> dict[str, tuple[wasmtime.FuncType, Callable[..., Any]]]:
        """The env functions this object serves, by name, with their wasm types."""
        fns: dict[str, tuple[wasmtime.FuncType, Callable[..., Any]]] = {
            "var_get": (wasmtime.FuncType([_I64], [_I64]), self.var_get),
            "var_set": (wasmtime.FuncType([_I64, _I64], []), self.var_set),
            "http_request": (wasmtime.FuncType([_I64, _I64], [_I64]), self.http_request),
            "http_status_code": (wasmtime.FuncType([], [_I32]), self.http_status_code),
            "http_headers": (wasmtime.FuncType([], [_I64]), self.http_headers_json),
        }
        levels = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
        levels["error"] = logging.ERROR
        for name, level in levels.items():
            fns[f"log_{name}"] = (wasmtime.FuncType([_I64], []), self._log(level))
        return fns


class _NoDefaultContentType(urllib.request.BaseHandler):
    """urllib gives a request with a body ``Content-Type: application/x-www-form-urlencoded`` unless one is set;
    Extism sends what the plugin asked for and nothing more. Runs after urllib's own request processing."""

    handler_order = 1000

    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        if "Content-type" not in request.headers:  # the plugin's own headers (urllib capitalizes the names)
            request.unredirected_hdrs.pop("Content-type", None)
        return request

    https_request = http_request


#: The longest an HTTP request may take when the call has no deadline of its own.
HTTP_TIMEOUT_S = 30.0


class HttpRequestSpec(BaseModel):
    """The request document a PDK passes to ``http_request``. Extra fields are ignored, as Extism does."""

    model_config = ConfigDict(extra="ignore")
    url: str
    method: str | None = None
    headers: dict[str, str] = {}


#: Names served by :class:`HostEnv`, for import validation before anything is instantiated.
ENV_HOST_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "var_get": (("i64",), ("i64",)),
    "var_set": (("i64", "i64"), ()),
    "http_request": (("i64", "i64"), ("i64",)),
    "http_status_code": ((), ("i32",)),
    "http_headers": ((), ("i64",)),
    **{f"log_{n}": (("i64",), ()) for n in ("trace", "debug", "info", "warn", "error")},
}
