"""Keys, trust and signed messages (Ed25519, via ``cryptography``).

Everything signed is :func:`canonical_json` (sorted keys, no whitespace, UTF-8), so signer and verifier agree on
the bytes without agreeing on a serializer. A :class:`TrustStore` maps key ids to public keys and the roles each key
is trusted for: ``publisher`` keys sign bundles, ``marketplace`` keys sign commands and desired-state documents.
Commands travel in a :class:`SignedEnvelope` with an issue time, an expiry and a nonce, so a forged, replayed-late
or tampered message is refused even on a broker with loose ACLs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import (
    BadSignature,
    ConfigError,
    DeployError,
    MalformedMessage,
    MessageBadSignature,
    MessageExpired,
    MessageNotYetValid,
    MessageReplayed,
    MessageUntrustedKey,
    NonceCacheFull,
    UntrustedKey,
)
from ..fsutil import atomic_write, fsync_dir
from ..tomlconfig import load_toml

log = logging.getLogger("edged.deploy.trust")

Role = Literal["publisher", "marketplace"]
ROLES: tuple[Role, ...] = ("publisher", "marketplace")

#: how far a message's ``issued_at`` may lie in the future before it counts as not yet valid (clock skew)
DEFAULT_SKEW_S = 30.0


# --- canonical form ----------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """``obj`` as canonical JSON: sorted keys, no whitespace, UTF-8, no NaN/Infinity. Raises ``ValueError`` or
    ``TypeError`` for what JSON cannot represent."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON parsing for untrusted input: UTF-8 only, no NaN/Infinity. Raises ``ValueError``."""
    if isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(raw).decode("utf-8")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


# --- keys --------------------------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: str | Path) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by the owner only (mode 0600), atomically."""
    p = Path(path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write(p, pem, 0o600)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a PEM private key written by :func:`save_private_key`; anything but Ed25519 raises :class:`DeployError`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DeployError(f"cannot read private key {p}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise DeployError(f"{p} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DeployError(f"{p} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _public(key_or_pub: Ed25519PrivateKey | Ed25519PublicKey) -> Ed25519PublicKey:
    if isinstance(key_or_pub, Ed25519PrivateKey):
        return key_or_pub.public_key()
    if isinstance(key_or_pub, Ed25519PublicKey):
        return key_or_pub
    raise TypeError(f"expected an Ed25519 key, got {type(key_or_pub).__name__}")


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key_or_pub: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64-encoded."""
    return base64.b64encode(_raw(_public(key_or_pub))).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """The inverse of :func:`public_key_b64`; raises ``ValueError`` for anything but 32 base64-encoded bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public_key must be base64 text") from exc
    if len(raw) != 32:
        raise ValueError(f"public_key must encode 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key_or_pub: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw public key."""
    return hashlib.sha256(_raw(_public(key_or_pub))).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """Sign ``data`` and return the signature as base64 text."""
    return base64.b64encode(key.sign(data)).decode()


def decode_signature(text: str) -> bytes:
    """A base64 signature as bytes; raises :class:`BadSignature` if it is not 64 base64-encoded bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("signature is not base64 text") from None
    if len(raw) != 64:
        raise BadSignature(f"signature must be 64 bytes, not {len(raw)}")
    return raw


# --- trust store -------------------------------------------------------------------------------------------------


class TrustedKey(BaseModel):
    """One entry of a trust file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key_id: str
    public_key: str
    name: str = ""
    roles: list[Role] = Field(min_length=1)

    @field_validator("public_key")
    @classmethod
    def _pub(cls, v: str) -> str:
        public_key_from_b64(v)
        return v

    @model_validator(mode="after")
    def _id_matches(self) -> TrustedKey:
        expected = key_id(public_key_from_b64(self.public_key))
        if self.key_id != expected:
            raise ValueError(f"key_id {self.key_id!r} does not match the public key (its id is {expected!r})")
        return self


class TrustFile(BaseModel):
    """A trust file: ``[[keys]]`` tables in TOML, or ``{"keys": [...]}`` in JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    keys: list[TrustedKey] = Field(default_factory=list)


class TrustStore:
    """Public keys by key id, each trusted for some roles (``publisher``, ``marketplace``).

    Keys given to the constructor without ``roles`` are trusted for every role; trust files always name roles.
    """

    def __init__(
        self,
        keys: dict[str, Ed25519PublicKey] | None = None,
        roles: Mapping[str, Iterable[str]] | None = None,
        names: dict[str, str] | None = None,
    ) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._roles: dict[str, frozenset[Role]] = {}
        self._names: dict[str, str] = {}
        for kid, pub in (keys or {}).items():
            pub = _public(pub)
            if kid != key_id(pub):
                raise ValueError(f"key id {kid!r} does not match its public key (its id is {key_id(pub)!r})")
            self.add(pub, (roles or {}).get(kid, ROLES), (names or {}).get(kid, ""))

    def add(
        self,
        key_or_pub: Ed25519PrivateKey | Ed25519PublicKey,
        roles: Iterable[str] = ROLES,
        name: str = "",
    ) -> str:
        """Trust a key for ``roles``; returns its key id."""
        wanted = set(roles)
        bad = wanted - set(ROLES)
        if bad:
            raise ValueError(f"unknown roles {sorted(bad)}; roles are {list(ROLES)}")
        pub = _public(key_or_pub)
        kid = key_id(pub)
        self._keys[kid] = pub
        self._roles[kid] = frozenset(r for r in ROLES if r in wanted)
        self._names[kid] = name
        return kid

    @property
    def keys(self) -> dict[str, Ed25519PublicKey]:
        return dict(self._keys)

    def roles(self, kid: str) -> frozenset[Role]:
        return self._roles.get(kid, frozenset())

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, kid: str, role: str, data: bytes, signature: bytes) -> None:
        """Check that ``signature`` over ``data`` was made by key ``kid``, trusted for ``role``.

        Raises :class:`UntrustedKey` if the key is unknown or not trusted for the role, :class:`BadSignature` if the
        signature does not verify.
        """
        pub = self._keys.get(kid)
        if pub is None:
            raise UntrustedKey(f"key {kid!r} is not in the trust store")
        if role not in self._roles[kid]:
            raise UntrustedKey(f"key {kid!r} is not trusted as a {role} (it is trusted as: {sorted(self._roles[kid])})")
        try:
            pub.verify(signature, data)
        except InvalidSignature:
            raise BadSignature(f"signature by key {kid!r} does not verify") from None

    def to_model(self) -> TrustFile:
        return TrustFile(
            keys=[
                TrustedKey(
                    key_id=kid,
                    public_key=public_key_b64(pub),
                    name=self._names[kid],
                    roles=sorted(self._roles[kid]),
                )
                for kid, pub in sorted(self._keys.items())
            ]
        )

    @classmethod
    def from_model(cls, model: TrustFile) -> TrustStore:
        store = cls()
        for k in model.keys:
            store.add(public_key_from_b64(k.public_key), k.roles, k.name)
        return store

    @classmethod
    def from_file(cls, path: str | Path) -> TrustStore:
        """Read a trust file: TOML if it ends in ``.toml``, else JSON. Errors raise :class:`ConfigError`."""
        p = Path(path)
        if p.suffix == ".toml":
            return cls.from_model(load_toml(TrustFile, p))
        try:
            raw = parse_json(p.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read trust file {p}: {exc.strerror}") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc})") from None
        try:
            return cls.from_model(TrustFile.model_validate(raw))
        except ValidationError as exc:
            parts = [f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()]
            raise ConfigError(f"{p}: " + "; ".join(parts)) from None

    def to_file(self, path: str | Path) -> None:
        """Write the trust file (TOML if the name ends in ``.toml``, else JSON), atomically."""
        p = Path(path)
        model = self.to_model()
        if p.suffix == ".toml":
            lines = ["# edged trust file: keys the device trusts, and for what", ""]
            for k in model.keys:
                # JSON string and array syntax is valid TOML for these plain values
                lines += [
                    "[[keys]]",
                    f"key_id = {json.dumps(k.key_id)}",
                    f"public_key = {json.dumps(k.public_key)}",
                    f"name = {json.dumps(k.name)}",
                    f"roles = {json.dumps(list(k.roles))}",
                    "",
                ]
            text = "\n".join(lines)
            tomllib.loads(text)  # what we write must read back
        else:
            text = json.dumps(model.model_dump(mode="json"), indent=2) + "\n"
        atomic_write(p, text.encode())


# --- signed messages ---------------------------------------------------------------------------------------------


class SignedEnvelope(BaseModel):
    """A signed message: the payload, who signed it, when it is valid, a nonce, and the signature.

    The signature covers :func:`canonical_json` of every field but ``signature``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    payload: dict[str, Any]
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    issued_at: float
    expires_at: float
    nonce: str = Field(min_length=8, max_length=128)
    signature: str

    @field_validator("issued_at", "expires_at")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        # python mode: JSON mode would quietly turn inf into null, and sign something else than the payload
        return canonical_json(self.model_dump(exclude={"signature"}))


def sign_envelope(
    payload: dict[str, Any], key: Ed25519PrivateKey, ttl_s: float, now: float | None = None
) -> SignedEnvelope:
    """Wrap ``payload`` in an envelope signed by ``key``, valid from ``now`` for ``ttl_s`` seconds."""
    if not ttl_s > 0:
        raise ValueError("ttl_s must be positive")
    canonical_json(payload)  # ValueError/TypeError now for what JSON cannot carry (NaN, inf, bytes, ...)
    issued = time.time() if now is None else now
    unsigned = {
        "payload": payload,
        "key_id": key_id(key),
        "issued_at": float(issued),
        "expires_at": float(issued + ttl_s),
        "nonce": secrets.token_hex(16),
    }
    # validate first so the signature is over exactly what a verifier will rebuild
    draft = SignedEnvelope.model_validate({**unsigned, "signature": ""})
    return draft.model_copy(update={"signature": sign(key, draft.signed_bytes())})


def verify_envelope(
    raw: bytes | str | dict[str, Any] | SignedEnvelope,
    trust: TrustStore,
    role: str = "marketplace",
    now: float | None = None,
    *,
    skew_s: float = DEFAULT_SKEW_S,
) -> SignedEnvelope:
    """Check a signed envelope's signature and validity times and return it; its nonce is NOT recorded.

    A caller that keeps nonces records one only after it has checked the payload is meant for it (see
    :meth:`NonceCache.add`): messages for others must never take room in the cache. Raises a
    :class:`~edged.errors.MessageRejected` subclass (``malformed``, ``untrusted_key``, ``bad_signature``, ``expired``,
    ``not_yet_valid``). The signature is checked before the times, so a forgery is reported as such whatever its
    dates."""
    env = _parse_envelope(raw)
    try:
        signed = env.signed_bytes()
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedMessage(f"payload cannot be signed as canonical JSON: {exc}") from None
    try:
        trust.verify(env.key_id, role, signed, decode_signature(env.signature))
    except UntrustedKey as exc:
        raise MessageUntrustedKey(str(exc)) from None
    except BadSignature as exc:
        raise MessageBadSignature(str(exc)) from None
    t = time.time() if now is None else now
    if env.expires_at <= env.issued_at:
        raise MalformedMessage("expires_at is not after issued_at")
    if t >= env.expires_at:
        raise MessageExpired(f"message expired {t - env.expires_at:.1f} s ago")
    if env.issued_at > t + skew_s:
        raise MessageNotYetValid(f"message is issued {env.issued_at - t:.1f} s in the future")
    return env


def open_envelope(
    raw: bytes | str | dict[str, Any] | SignedEnvelope,
    trust: TrustStore,
    role: str = "marketplace",
    now: float | None = None,
    *,
    skew_s: float = DEFAULT_SKEW_S,
    nonces: NonceCache | None = None,
) -> dict[str, Any]:
    """Verify a signed envelope (:func:`verify_envelope`) and return its payload; with a ``nonces`` cache also
    record its nonce (``replayed`` if it was there). Only for messages every receiver must accept: the device agent
    checks a command's target before it records the nonce."""
    env = verify_envelope(raw, trust, role, now, skew_s=skew_s)
    if nonces is not None and not nonces.add(env.nonce, env.expires_at, time.time() if now is None else now):
        raise MessageReplayed(f"nonce {env.nonce!r} was already used")
    return env.payload


def _parse_envelope(raw: bytes | str | dict[str, Any] | SignedEnvelope) -> SignedEnvelope:
    if isinstance(raw, SignedEnvelope):
        return raw
    if isinstance(raw, bytes | bytearray | memoryview | str):
        try:
            raw = parse_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(raw).__name__}")
    # JSON has one number type: accept integral issued_at/expires_at as floats, nothing else
    data = {k: float(v) if k in ("issued_at", "expires_at") and type(v) is int else v for k, v in raw.items()}
    try:
        return SignedEnvelope.model_validate(data)
    except (ValidationError, OverflowError) as exc:
        if isinstance(exc, ValidationError):
            parts = [f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()]
            raise MalformedMessage("invalid envelope: " + "; ".join(parts)) from None
        raise MalformedMessage(f"invalid envelope: {exc}") from None


# --- replay protection -------------------------------------------------------------------------------------------


class NonceCache:
    """Nonces of accepted messages, kept until the message would have expired anyway.

    With a ``path`` it is persisted append-only: one JSON line ``[nonce, expires_at]`` per accepted message, written
    and fsynced before :meth:`add` returns, so replays stay refused across restarts and a kill -9 loses at most a
    torn last line (skipped at load: that message was never acted on). The file is rewritten (atomically) only when
    expired lines outnumber live ones, never once per message. A full cache (``capacity`` unexpired nonces) refuses
    new messages with :class:`~edged.errors.NonceCacheFull` instead of forgetting a live nonce: forgetting one would
    let its message be replayed. Keep the messages' validity short (see ``MAX_COMMAND_VALIDITY_S`` in
    :mod:`edged.deploy.agent`) so that the cache empties by itself. A failed write (a full disk) raises ``OSError``
    and records nothing."""

    def __init__(self, path: str | Path | None = None, capacity: int = 4096) -> None:
        self.path = Path(path) if path is not None else None
        self.capacity = capacity
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._lines = 0
        if self.path is not None:
            self._clean_tmp()
            self._load()

    def _clean_tmp(self) -> None:
        assert self.path is not None
        # atomic_write's temp files left by a kill -9 during a rewrite
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def _load(self) -> None:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read the nonce cache", extra={"path": str(self.path), "error": str(exc)})
            return
        if raw.lstrip().startswith(b"{"):  # the older format: one JSON object, rewritten on every add
            try:
                data = parse_json(raw)
                self._seen = {str(k): float(v) for k, v in data.items()}
            except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
                log.warning("discarding unreadable nonce cache", extra={"path": str(self.path), "error": str(exc)})
            self._lines = -1  # rewrite in the line format at the next add
            return
        bad = 0
        for line in raw.splitlines():
            try:
                nonce, expires = parse_json(line)
                self._seen[str(nonce)] = float(expires)
                self._lines += 1
            except (ValueError, TypeError, UnicodeDecodeError):
                bad += 1  # a torn last line (killed mid-write) or junk: that message was never acted on
        if bad:
            log.warning("skipped unreadable nonce cache lines", extra={"path": str(self.path), "lines": bad})
            self._lines = -1

    def add(self, nonce: str, expires_at: float, now: float | None = None) -> bool:
        """Record ``nonce``; False if it was already there (a replay). Raises :class:`~edged.errors.NonceCacheFull`
        when ``capacity`` unexpired nonces are kept, ``OSError`` when it cannot be written (then nothing changed)."""
        t = time.time() if now is None else now
        with self._lock:
            if nonce in self._seen and self._seen[nonce] > t:
                return False
            live = {n: e for n, e in self._seen.items() if e > t}
            if len(live) >= self.capacity:
                soonest = min(live.values())
                raise NonceCacheFull(
                    f"{len(live)} unexpired messages are remembered (the limit); the next slot frees in "
                    f"{soonest - t:.0f} s"
                )
            if self.path is not None:
                if self._lines < 0 or self._lines > 2 * len(live) + 64:
                    self._rewrite(live)
                self._append(nonce, expires_at)
            self._seen = live
            self._seen[nonce] = expires_at
            return True

    def _line(self, nonce: str, expires_at: float) -> bytes:
        return canonical_json([nonce, expires_at]) + b"\n"

    def _rewrite(self, live: dict[str, float]) -> None:
        assert self.path is not None
        atomic_write(self.path, b"".join(self._line(n, e) for n, e in live.items()), 0o600)
        self._lines = len(live)

    def _append(self, nonce: str, expires_at: float) -> None:
        assert self.path is not None
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                os.write(fd, self._line(nonce, expires_at))
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # no torn line left behind for the next append to run into
                raise
        finally:
            os.close(fd)
        if new:
            fsync_dir(self.path.parent)
        self._lines += 1

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._seen

    def __len__(self) -> int:
        return len(self._seen)
