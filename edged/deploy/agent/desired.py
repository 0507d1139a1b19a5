"""Desired state: who asks for what (:class:`Source`, :class:`Request`), reading a signed desired-state document,
and merging the device's and its groups' documents into one wanted set and playlist."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import ValidationError

from ...errors import MessageWrongTarget
from ..messages import DesiredState, PluginSpec, check_plugin_name, check_version
from ..trust import TrustStore, open_envelope


class SourceKind(Enum):
    """What kind of sender a request comes from."""

    DEVICE = "device"
    GROUP = "group"
    COMMAND = "cmd"


@dataclass(frozen=True)
class Source:
    """Who asked: the device's own desired state, a group's (``id`` the group), or one command (``id`` its id)."""

    kind: SourceKind
    id: str = ""

    @classmethod
    def group(cls, group: str) -> Source:
        return cls(SourceKind.GROUP, group)

    @classmethod
    def command(cls, cmd_id: str) -> Source:
        return cls(SourceKind.COMMAND, cmd_id)

    @property
    def is_document(self) -> bool:
        """True for a desired-state document's source (the device's or a group's), False for a command."""
        return self.kind is not SourceKind.COMMAND

    @property
    def key(self) -> str:
        """The wire and disk form: ``device``, ``group:<id>`` or ``cmd:<id>`` (``Reported.applied``'s keys)."""
        return self.kind.value if self.kind is SourceKind.DEVICE else f"{self.kind.value}:{self.id}"

    @classmethod
    def parse(cls, key: str) -> Source:
        """The source :attr:`key` names; ``ValueError`` for anything else."""
        if key == SourceKind.DEVICE.value:
            return DEVICE
        kind, sep, ident = key.partition(":")
        if sep and ident and kind in (SourceKind.GROUP.value, SourceKind.COMMAND.value):
            return cls(SourceKind(kind), ident)
        raise ValueError(f"not a request source: {key!r}")


DEVICE = Source(SourceKind.DEVICE)


@dataclass(frozen=True)
class Request:
    """One request: a source's document at ``seq`` (a command has none). A failed install is remembered against its
    request: not retried for it, retried once for a newer one."""

    source: Source
    seq: int | None = None

    @property
    def key(self) -> str:
        """The disk form: ``<source>#<seq>`` or ``cmd:<id>``."""
        return self.source.key if self.seq is None else f"{self.source.key}#{self.seq}"

    @classmethod
    def parse(cls, key: str) -> Request:
        """The request :attr:`key` names; ``ValueError`` for anything else."""
        source, sep, seq = key.rpartition("#")
        if not sep:
            return cls(Source.parse(key))
        return cls(Source.parse(source), int(seq))


def require_target(data: Any, expected: str) -> None:
    """Raise :class:`MessageWrongTarget` unless the signed payload ``data`` names ``expected`` (``device:<id>`` or
    ``group:<g>``, derived from the topic it came in on) as its ``target``.

    The signature covers the target, so a document signed for one device or group cannot be replayed onto another's
    topic. A document without a target (signed before targets were bound) is refused too: it could be anyone's."""
    target = data.get("target") if isinstance(data, dict) else None
    if target is None:
        raise MessageWrongTarget(
            f"the document names no target (it arrived as {expected}'s); unbound documents are refused, "
            "the marketplace must sign it again"
        )
    if target != expected:
        raise MessageWrongTarget(f"the document is signed for {target!r}, but arrived as {expected}'s")


@dataclass(frozen=True)
class RefusedEntry:
    """A plugin entry or playlist item taken out of a desired-state document, and why."""

    name: str
    label: str
    reason: str
    detail: str


def split_bad_entries(data: dict[str, Any]) -> tuple[dict[str, Any], list[RefusedEntry]]:
    """Take the plugin entries and playlist items that cannot be valid out of a desired-state payload.

    Returns the payload without them, and a :class:`RefusedEntry` for each one taken out (reason ``invalid_name``
    for a name or version that is not one, ``wrong_schema`` for any other fault of that entry). The rest of the
    document still applies."""
    refused: list[RefusedEntry] = []
    out = dict(data)
    plugins = data.get("plugins")
    if isinstance(plugins, list):
        kept = []
        for i, entry in enumerate(plugins):
            name = entry.get("name") if isinstance(entry, dict) else None
            label = repr(name) if isinstance(entry, dict) else f"#{i}"
            key = name if isinstance(name, str) else label
            try:
                if isinstance(entry, dict):
                    check_plugin_name(entry.get("name"))  # type: ignore[arg-type]  # checking is the point
                    check_version(entry.get("version"))  # type: ignore[arg-type]
            except ValueError as exc:
                refused.append(RefusedEntry(key, label, "invalid_name", f"plugins[{i}]: {exc}"))
                continue
            try:
                PluginSpec.model_validate(entry)
            except ValidationError as exc:
                refused.append(RefusedEntry(key, label, "wrong_schema", f"plugins[{i}]: {short(exc)}"))
                continue
            kept.append(entry)
        out["plugins"] = kept
    playlist = data.get("playlist")
    if isinstance(playlist, list):
        items = []
        for i, item in enumerate(playlist):
            try:
                items.append(check_plugin_name(item))
            except ValueError as exc:
                key = item if isinstance(item, str) else repr(item)
                refused.append(RefusedEntry(key, repr(item), "invalid_name", f"playlist[{i}]: {exc}"))
        out["playlist"] = items
    return out, refused


def read_desired(
    payload: bytes, trust: TrustStore, source: Source, device_id: str
) -> tuple[DesiredState, list[RefusedEntry]]:
    """Open, check and parse a signed desired-state document from ``source``; its bad entries are returned apart.

    Raises :class:`~edged.errors.MessageRejected` (a bad envelope or target) or ``ValidationError``."""
    data = open_envelope(payload, trust, role="marketplace")
    require_target(data, source.key if source.kind is SourceKind.GROUP else f"device:{device_id}")
    refused: list[RefusedEntry] = []
    if isinstance(data, dict):
        data, refused = split_bad_entries(data)
    return DesiredState.model_validate(data), refused


@dataclass
class DesiredStates:
    """The documents applied this session, by source. The device's own document wins over its groups'; among
    groups the last in id order wins."""

    docs: dict[Source, DesiredState] = field(default_factory=dict)
    #: sources whose document arrived in this session (only those may make the device remove a plugin)
    seen: set[Source] = field(default_factory=set)
    #: names each source's current document names but whose entry was refused (never removed for that)
    refused: dict[Source, set[str]] = field(default_factory=dict)

    def record(self, source: Source, doc: DesiredState, refused: list[RefusedEntry]) -> None:
        """Take ``doc`` as ``source``'s current document."""
        self.refused[source] = {r.name for r in refused}
        self.docs[source] = doc
        self.seen.add(source)

    def _in_order(self) -> list[tuple[Source, DesiredState]]:
        groups = sorted(((s, d) for s, d in self.docs.items() if s.kind is SourceKind.GROUP), key=lambda sd: sd[0].id)
        own = [(DEVICE, self.docs[DEVICE])] if DEVICE in self.docs else []
        return [*groups, *own]

    def wanted(self) -> dict[str, tuple[PluginSpec, Source]]:
        """Each plugin asked for, with the spec that wins and its source."""
        out: dict[str, tuple[PluginSpec, Source]] = {}
        for source, doc in self._in_order():
            for spec in doc.plugins:
                out[spec.name] = (spec, source)
        return out

    def playlist(self) -> list[str] | None:
        """The playlist asked for: the device's own document's, else the last group's (in id order) with one."""
        found: list[str] | None = None
        for _, doc in self._in_order():
            found = doc.playlist or found
        return found

    def keeps(self, name: str, source: Source) -> bool:
        """Whether ``name``, installed for ``source``, stays although no document wants it: until that source has
        spoken in this session (a group's retained state may arrive after the device's own), or when its entry was
        refused (a bad version string must not uninstall what runs)."""
        return source not in self.seen or name in self.refused.get(source, ())


def short(exc: Exception) -> str:
    """A validation error in one line (at most five faults), or any other error's text cut to 500 characters."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)[:500]
