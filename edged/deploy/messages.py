"""Pydantic models of every payload on the deployment topics (see docs/mqtt.md). All refuse unknown fields.

Desired-state documents and commands travel inside a signed envelope (:mod:`edged.deploy.trust`); the models here
describe the envelope's ``payload``. Chunks travel as one JSON header line, a newline, then the raw bytes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .broker import MAX_CHUNK_SIZE as MAX_CHUNK_SIZE  # the chunk bounds sit with the broker's message size
from .broker import MIN_CHUNK_SIZE as MIN_CHUNK_SIZE
from .bundle import NAME_RE, SemVer
from .topics import check_id

_STRICT = ConfigDict(extra="forbid")

#: most chunk indices one request may ask for
MAX_INDICES = 256
#: bytes a chunk message may add to its data: the header line (names and versions are at most 64 characters)
#: plus the MQTT fixed header and topic
CHUNK_OVERHEAD = 1024

#: the longest ``detail`` and ``topic`` a device sends in a status or reply (longer ones are cut, marked with "...")
MAX_DETAIL = 256


def clip(value: object, limit: int = MAX_DETAIL) -> object:
    """``value`` cut to ``limit`` characters (the last three become ``...``) if it is a longer string."""
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value


State = Literal[
    "downloading", "verifying", "installing", "activating", "healthy", "failed", "rejected", "removed", "rolled_back"
]


def check_plugin_name(value: str) -> str:
    """``value`` if it is a plugin name (the whole string: ``glow\\n`` is not ``glow``), else raise ``ValueError``."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a plugin name: 1-64 lowercase letters, digits, '-' or '_'")
    return value


def check_version(value: str) -> str:
    """``value`` if it is a semantic version (the whole string), else raise ``ValueError``."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"{value!r} is not a semantic version")
    SemVer(value)
    return value


def check_target(value: str) -> str:
    """``value`` if it is ``device:<id>`` or ``group:<g>`` with a valid id, else raise ``ValueError``."""
    kind, sep, ident = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or kind not in ("device", "group"):
        raise ValueError(f"a target is 'device:<id>' or 'group:<g>', not {value!r}")
    check_id(ident, f"{kind} id")
    return value


PluginName = Annotated[str, Field(min_length=1, max_length=64)]


class PluginSpec(BaseModel):
    """One plugin of a desired state: the signed bundle metadata and manifest, fetched in chunks by hash."""

    model_config = _STRICT
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)
    #: the bundle's signed metadata (``edged.deploy.bundle.BundleMeta`` as JSON)
    meta: dict[str, Any]
    #: the bundle's manifest (the digest in ``meta`` covers it)
    manifest: dict[str, Any]
    #: the marketplace signs this to allow going back to a lower version (a rollback)
    allow_downgrade: bool = False

    _name = field_validator("name")(classmethod(lambda cls, v: check_plugin_name(v)))
    _version = field_validator("version")(classmethod(lambda cls, v: check_version(v)))


class DesiredState(BaseModel):
    """The plugin set (and playlist) a device or group should run. Newer ``seq`` wins; older ones are ignored.

    ``target`` (``device:<id>`` or ``group:<g>``) is signed with the rest: a device applies a document only if it
    names that device, or a group the device is in, and came in on that target's topic."""

    model_config = _STRICT
    target: str
    #: strictly increasing per target (the marketplace gives each change the previous seq + 1 under a row lock)
    seq: int = Field(ge=0)
    plugins: list[PluginSpec] = Field(default_factory=list, max_length=64)
    #: plugin names in play order; None (or an empty list) asks for no playlist: the device keeps its own
    playlist: list[PluginName] | None = Field(default=None, max_length=256)

    _target = field_validator("target")(classmethod(lambda cls, v: check_target(v)))

    @field_validator("playlist")
    @classmethod
    def _playlist_names(cls, v: list[str] | None) -> list[str] | None:
        for item in v or ():
            check_plugin_name(item)
        return v

    @field_validator("plugins")
    @classmethod
    def _unique(cls, v: list[PluginSpec]) -> list[PluginSpec]:
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate plugin names: {names}")
        return v


#: what a :class:`Command` asks of a device
CommandOp = Literal["install", "remove", "rollback", "restart", "identify"]


class Command(BaseModel):
    """A one-off action with a correlation id, answered on the device's reply topic.

    ``target`` (``device:<id>``) is signed with the rest: a device executes only commands that name it."""

    model_config = _STRICT
    target: str
    id: str = Field(min_length=1, max_length=64)
    op: CommandOp
    name: str | None = Field(default=None, max_length=64)
    #: for ``install``: what to install
    plugin: PluginSpec | None = None
    #: for ``rollback`` (required there): the version rolled back from; refused (``not_active``) unless it is the
    #: one active, so a rollback runs at most once and never takes the device back further
    from_version: str | None = Field(default=None, max_length=64)

    @field_validator("from_version")
    @classmethod
    def _from_version(cls, v: str | None) -> str | None:
        return None if v is None else check_version(v)

    @field_validator("target")
    @classmethod
    def _device_target(cls, v: str) -> str:
        if not check_target(v).startswith("device:"):
            raise ValueError(f"a command targets one device ('device:<id>'), not {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_plugin_name(v)


class Reply(BaseModel):
    """The device's answer to a command (or to a message it could not even read, with ``id`` None)."""

    model_config = _STRICT
    id: str | None
    device: str
    ok: bool
    #: stable reason code when not ok (``malformed``, ``bad_signature``, ``expired``, ``unknown_plugin``, ...)
    error: str | None = None
    detail: str = ""
    result: dict[str, Any] = Field(default_factory=dict)

    _clip = field_validator("detail", mode="before")(classmethod(lambda cls, v: clip(v)))


class Status(BaseModel):
    """A progress or error event on the device's status topic."""

    model_config = _STRICT
    device: str
    state: State
    name: str | None = None
    version: str | None = None
    percent: float = Field(default=0.0, ge=0, le=100)
    reason: str | None = None
    detail: str = ""
    #: the topic of the message that caused an error, if any
    topic: str | None = None
    #: how many messages this status stands for (rejections in a burst are coalesced: one status per reason)
    count: int = Field(default=1, ge=1)
    ts: float = Field(default_factory=time.time)

    _clip = field_validator("detail", "topic", mode="before")(classmethod(lambda cls, v: clip(v)))


class ReportedPlugin(BaseModel):
    model_config = _STRICT
    version: str | None
    state: State
    reason: str | None = None
    #: the version that was asked for when it differs from the running one (after a rollback or failure)
    wanted: str | None = None


class Reported(BaseModel):
    """What the device actually runs (retained)."""

    model_config = _STRICT
    device: str
    groups: list[str] = Field(default_factory=list)
    plugins: dict[str, ReportedPlugin] = Field(default_factory=dict)
    #: the ``seq`` of the last desired state applied, per source (``device`` or ``group:<g>``)
    applied: dict[str, int] = Field(default_factory=dict)
    #: the playlist the device applied from its desired state (None: none asked for, or the target has none)
    playlist: list[str] | None = None
    ts: float = Field(default_factory=time.time)


class Presence(BaseModel):
    """``online`` on connect, ``offline`` as the last will (both retained)."""

    model_config = _STRICT
    device: str
    state: Literal["online", "offline"]
    groups: list[str] = Field(default_factory=list)
    ts: float = Field(default_factory=time.time)


class ServicePresence(BaseModel):
    """A marketplace service that answers chunk requests says so, retained; its last will clears the message."""

    model_config = _STRICT
    service: str
    state: Literal["online"] = "online"
    ts: float = Field(default_factory=time.time)


class ChunkRequest(BaseModel):
    """A device asks the marketplace for some chunks of one bundle's wasm."""

    model_config = _STRICT
    device: str
    name: str = Field(max_length=64)
    version: str = Field(max_length=64)
    wasm_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    chunk_size: int = Field(ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)
    indices: list[int] = Field(min_length=1, max_length=MAX_INDICES)

    _dev = field_validator("device")(classmethod(lambda cls, v: check_id(v)))


class ChunkHeader(BaseModel):
    """The JSON line in front of a chunk's bytes. ``error`` set means no bytes follow (``unknown_plugin``, ...)."""

    model_config = _STRICT
    name: str
    version: str
    wasm_sha256: str
    index: int = Field(ge=0)
    total: int = Field(ge=0)
    chunk_size: int = Field(ge=1, le=MAX_CHUNK_SIZE)
    sha256: str = ""
    error: str | None = None


def pack_chunk(header: ChunkHeader, data: bytes) -> bytes:
    """A chunk message: the header as one JSON line, then the raw bytes."""
    return header.model_dump_json().encode() + b"\n" + data


def unpack_chunk(raw: bytes) -> tuple[ChunkHeader, bytes]:
    """Split and validate a chunk message; raises ``ValueError`` (a pydantic ``ValidationError``) when malformed."""
    head, sep, data = raw.partition(b"\n")
    if not sep:
        raise ValueError("chunk message without a header line")
    return ChunkHeader.model_validate_json(head), data
