"""Extism's manifest format, parsed with pydantic, plus edged's ``edged`` extension block.

Unknown fields are rejected with an error that names them, as in Extism. See docs/manifest.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import urllib.request
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ManifestError, PluginLoadError

_STRICT = ConfigDict(extra="forbid", frozen=True)
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _WasmSource(BaseModel):
    model_config = _STRICT
    name: str | None = None
    hash: str | None = None

    @field_validator("hash")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.fullmatch(v.lower()):
            raise ValueError("must be a 64-character hex sha256 digest")
        return v.lower() if v else v


class WasmPath(_WasmSource):
    """A module loaded from a file path (relative paths are resolved against the manifest's directory)."""

    path: str


class WasmData(_WasmSource):
    """A module given inline: raw bytes from Python, or base64 text in JSON."""

    data: bytes

    @field_validator("data", mode="before")
    @classmethod
    def _decode(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("data must be base64 text (or raw bytes from Python)") from exc
        return v


class WasmUrl(_WasmSource):
    """A module fetched over HTTP(S); refused unless the loader is told URLs are allowed."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    method: str = "GET"


WasmSource = WasmPath | WasmData | WasmUrl


def _source_kind(v: Any) -> str | None:
    if isinstance(v, dict):
        keys = {"path", "data", "url"} & v.keys()
        return keys.pop() if len(keys) == 1 else None
    kinds: dict[type, str] = {WasmPath: "path", WasmData: "data", WasmUrl: "url"}
    return kinds.get(type(v))


_WasmEntry = Annotated[
    Annotated[WasmPath, Tag("path")] | Annotated[WasmData, Tag("data")] | Annotated[WasmUrl, Tag("url")],
    Discriminator(
        _source_kind,
        custom_error_type="wasm_source",
        custom_error_message="each wasm entry needs exactly one of 'path', 'data' or 'url'",
    ),
]


class MemoryOptions(BaseModel):
    """Extism's ``memory`` block."""

    model_config = _STRICT
    max_pages: int | None = Field(default=None, ge=1, le=65536)
    max_http_response_bytes: int | None = Field(default=None, ge=0)
    max_var_bytes: int | None = Field(default=None, ge=0)


class EdgedBlock(BaseModel):
    """edged's extension block: who the plugin is and what it asks for.

    The runtime only carries ``capabilities``; the host-function layer validates and grants them.
    """

    model_config = _STRICT
    name: str
    version: str = "0.0.0"
    #: how the engine drives the plugin; None: from its exports (``frame``, ``update``, ``tick``)
    kind: Literal["animation", "sensor", "matricks", "service"] | None = None
    description: str = ""
    author: str = ""
    capabilities: dict[str, Any] = Field(default_factory=dict)
    #: per-call budget hints (frame milliseconds, fuel); the frame engine derives real budgets from these
    budget: dict[str, float] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError(
                "must be 1-64 chars of lowercase letters, digits, '-' or '_', starting with a letter/digit"
            )
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _SEMVER.fullmatch(v):
            raise ValueError("must be a semantic version such as 1.2.3")
        return v

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: dict[str, float]) -> dict[str, float]:
        for key, value in v.items():
            if key not in ("frame_ms", "fuel"):
                raise ValueError(f"unknown budget key '{key}' (known: frame_ms, fuel)")
            if not math.isfinite(value) or value <= 0 or value > 1e15:
                raise ValueError(f"budget.{key} must be a positive number, not {value}")
        return v


class Manifest(BaseModel):
    """An Extism manifest (``wasm``, ``memory``, ``config``, ``allowed_hosts``, ``allowed_paths``, ``timeout_ms``)
    with edged's optional ``edged`` block."""

    model_config = _STRICT
    wasm: list[_WasmEntry] = Field(min_length=1)
    memory: MemoryOptions = Field(default_factory=MemoryOptions)
    config: dict[str, str] = Field(default_factory=dict)
    allowed_hosts: list[str] | None = None
    allowed_paths: dict[str, str] | None = None
    timeout_ms: int | None = Field(default=None, ge=1)
    edged: EdgedBlock | None = None

    @model_validator(mode="after")
    def _names(self) -> Manifest:
        names = [_module_name(w, i, len(self.wasm)) for i, w in enumerate(self.wasm)]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate module names in wasm: {names}")
        if "main" not in names:
            raise ValueError("one wasm module must be named 'main' (the last one is 'main' by default)")
        return self

    def modules(self) -> list[tuple[str, WasmSource]]:
        """The modules with their effective names; ``main`` is the one to call."""
        return [(_module_name(w, i, len(self.wasm)), w) for i, w in enumerate(self.wasm)]

    def to_extism_dict(self) -> dict[str, Any]:
        """The manifest as plain Extism JSON (without the ``edged`` block), for tools that only know Extism."""
        out = self.model_dump(mode="json", exclude_none=True, exclude={"edged"})
        for entry, src in zip(out["wasm"], self.wasm, strict=True):
            if isinstance(src, WasmData):
                entry["data"] = base64.b64encode(src.data).decode()
        if not out.get("memory"):
            out.pop("memory", None)
        return out


def _module_name(w: WasmSource, index: int, count: int) -> str:
    if w.name:
        return w.name
    return "main" if index == count - 1 else f"module{index}"


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        # drop pydantic's union tags ("path"/"data"/"url") from locations such as wasm.0.path.bogus
        loc = ".".join(str(p) for i, p in enumerate(err["loc"]) if not (i == 2 and err["loc"][0] == "wasm"))
        loc = loc or "(root)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field '{loc}'")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return "invalid manifest: " + "; ".join(parts)


def parse_manifest(source: Manifest | dict[str, Any] | str | bytes) -> Manifest:
    """Parse a manifest from a model, a dict or JSON text, raising :class:`ManifestError` with the field named."""
    if isinstance(source, Manifest):
        return source
    if isinstance(source, bytes | str):
        try:
            source = json.loads(source)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"invalid manifest: not JSON ({exc})") from exc
    if not isinstance(source, dict):
        raise ManifestError("invalid manifest: expected a JSON object")
    try:
        return Manifest.model_validate(source)
    except ValidationError as exc:
        raise ManifestError(_format_validation(exc)) from None


def load_manifest_file(path: str | Path) -> tuple[Manifest, Path]:
    """Read a manifest JSON file; returns it with the directory that relative wasm paths are resolved against."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {p}: {exc.strerror}") from exc
    return parse_manifest(text), p.resolve().parent


def resolve_source(source: Any) -> tuple[Manifest, Path | None]:
    """Turn anything :class:`~edged.runtime.Plugin` accepts into a manifest and the directory its relative wasm
    paths are resolved against (None when there is none).

    ``source`` is a :class:`Manifest`, a dict or JSON text (a manifest), ``.wasm`` bytes, WebAssembly text, or a
    path to a ``.wasm`` file or a manifest ``.json`` file. A missing file raises :class:`PluginLoadError`, a bad
    manifest :class:`ManifestError`, any other type :class:`TypeError`.
    """
    if isinstance(source, Manifest):
        return source, None
    if isinstance(source, dict):
        return parse_manifest(source), None
    if isinstance(source, bytes | bytearray | memoryview):
        raw = bytes(source)
        if raw.lstrip()[:1] == b"{":
            return parse_manifest(raw), None
        return Manifest(wasm=[WasmData(data=raw)]), None
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return parse_manifest(source), None
    if isinstance(source, str) and source.lstrip().startswith("("):  # WebAssembly text
        return Manifest(wasm=[WasmData(data=source.encode())]), None
    if isinstance(source, str | Path):
        p = Path(source)
        if p.suffix == ".json":
            return load_manifest_file(p)
        if not p.exists():
            raise PluginLoadError(f"no such plugin file: {p}")
        return Manifest(wasm=[WasmPath(path=str(p.resolve()))]), None
    raise TypeError(f"cannot load a plugin from {type(source).__name__}")


def read_module(src: WasmSource, base_dir: Path | None, allow_urls: bool) -> bytes:
    """Fetch a module's bytes and verify its ``hash`` if one is given."""
    if isinstance(src, WasmData):
        data = src.data
    elif isinstance(src, WasmPath):
        p = Path(src.path)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise PluginLoadError(f"cannot read wasm file {p}: {exc.strerror}") from exc
    else:
        if not allow_urls:
            raise PluginLoadError(f"fetching wasm from a URL is not allowed here: {src.url}")
        req = urllib.request.Request(src.url, headers=src.headers, method=src.method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                data = resp.read()
        except OSError as exc:
            raise PluginLoadError(f"cannot fetch wasm from {src.url}: {exc}") from exc
    if src.hash is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != src.hash:
            raise PluginLoadError(f"Hash mismatch, found {found} but expected {src.hash}")
    return data
