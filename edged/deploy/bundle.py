"""Plugin bundles: the wasm, its manifest (with edged's capability block) and a publisher's signed metadata.

A bundle file is a zip holding ``meta.json``, ``manifest.json`` and ``plugin.wasm``, written deterministically (fixed
order and timestamps), so building the same bundle twice gives the same bytes. The signature in ``meta.json`` covers
:func:`~edged.deploy.trust.canonical_json` of every other meta field: name, version, the wasm's sha256 and size, the
manifest's digest, the publisher's key id, the rollback flag and the creation time. See docs/deploy-store.md.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
import zipfile
from functools import total_ordering
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import BadSignature, BundleRejected, CapabilityDenied, PluginLoadError, UntrustedKey
from ..fsutil import atomic_write
from ..host.capabilities import Capabilities, DevicePolicy
from ..host.functions import check_imports
from ..host.plugin import drawing_kind
from ..runtime import Manifest, ModuleCache, compile_module, default_cache, parse_manifest
from .trust import TrustStore, canonical_json, decode_signature, key_id, parse_json, sign

log = logging.getLogger("edged.deploy.bundle")

#: the stable reason codes of :class:`~edged.errors.BundleRejected`
REASONS = (
    "malformed",
    "bad_signature",
    "untrusted_key",
    "hash_mismatch",
    "manifest_mismatch",
    "policy_violation",
    "downgrade",
    "invalid_manifest",
    "invalid_wasm",
    "oversize",
)

#: largest wasm a device accepts unless told otherwise
DEFAULT_MAX_WASM_BYTES = 16 * 1024 * 1024
_MAX_JSON_BYTES = 1024 * 1024
#: the name the wasm has inside a bundle, and in the bundled manifest's single ``wasm`` entry
WASM_ENTRY = "plugin.wasm"
_MEMBERS = ("meta.json", "manifest.json", WASM_ENTRY)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

_SEMVER = re.compile(
    r"(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?"
)
#: what a plugin name may be (also its store file name); always used with ``fullmatch`` (``$`` would accept "glow\n")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


# --- versions ----------------------------------------------------------------------------------------------------


@total_ordering
class SemVer:
    """A semantic version (``MAJOR.MINOR.PATCH[-pre][+build]``) ordered by semver 2.0 precedence."""

    __slots__ = ("build_free", "core", "pre", "text")

    def __init__(self, text: str) -> None:
        m = _SEMVER.fullmatch(text)
        if not m:
            raise ValueError(f"{text!r} is not a semantic version such as 1.2.3")
        self.text = text
        self.core = (int(m[1]), int(m[2]), int(m[3]))
        self.pre: tuple[tuple[int, int | str], ...] | None = (
            tuple((0, int(p)) if p.isdigit() else (1, p) for p in m[4].split(".")) if m[4] else None
        )
        self.build_free = text.split("+", 1)[0]

    def _key(self) -> tuple[Any, ...]:
        # a release sorts after all of its pre-releases; numeric identifiers sort before alphanumeric ones
        return (self.core, 1, ()) if self.pre is None else (self.core, 0, self.pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SemVer) and self._key() == other._key()

    def __lt__(self, other: SemVer) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"SemVer({self.text!r})"

    def __str__(self) -> str:
        return self.text


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` sorts before, level with or after ``b``."""
    va, vb = SemVer(a), SemVer(b)
    return (va > vb) - (va < vb)


# --- models ------------------------------------------------------------------------------------------------------


class BundleMeta(BaseModel):
    """The signed metadata of a bundle. ``signature`` is over canonical JSON of every other field."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str
    version: str
    wasm_sha256: str
    wasm_size: int = Field(ge=0)
    manifest_digest: str
    publisher_key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    rollback: bool = False
    created_at: float
    #: base64 Ed25519 signature; empty means unsigned (always rejected)
    signature: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError("must be 1-64 chars of lowercase letters, digits, '-' or '_'")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        SemVer(v)
        return v

    @field_validator("wasm_sha256", "manifest_digest")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _HEX64.fullmatch(v):
            raise ValueError("must be a 64-character lowercase hex sha256 digest")
        return v

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json(self.model_dump(exclude={"signature"}))

    @property
    def semver(self) -> SemVer:
        return SemVer(self.version)

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


class Bundle(BaseModel):
    """A bundle in memory: signed metadata, the manifest as a JSON object, and the wasm bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    meta: BundleMeta
    manifest: dict[str, Any]
    wasm: bytes

    def verify(
        self,
        trust: TrustStore,
        policy: DevicePolicy | None = None,
        installed_version: str | None = None,
        **kwargs: Any,
    ) -> Capabilities:
        """:func:`verify_bundle` on this bundle."""
        return verify_bundle(self.meta, self.manifest, self.wasm, trust, policy, installed_version, **kwargs)


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 hex of the manifest's canonical JSON."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def parse_meta(raw: BundleMeta | dict[str, Any] | bytes | str) -> BundleMeta:
    """Validate bundle metadata; anything wrong raises :class:`BundleRejected` ``malformed``."""
    if isinstance(raw, BundleMeta):
        return raw
    if isinstance(raw, bytes | str):
        try:
            raw = parse_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleRejected("malformed", f"bundle meta is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BundleRejected("malformed", "bundle meta must be a JSON object")
    data = {k: float(v) if k == "created_at" and type(v) is int else v for k, v in raw.items()}
    try:
        return BundleMeta.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()]
        raise BundleRejected("malformed", "invalid bundle meta: " + "; ".join(parts)) from None


# --- building ----------------------------------------------------------------------------------------------------


def _bundled_manifest(name: str, version: str, wasm_sha256: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as it travels in a bundle: one wasm entry pointing at ``plugin.wasm`` with its hash, and an
    ``edged`` block naming the bundle's name and version."""
    if not isinstance(manifest, dict):
        raise BundleRejected("invalid_manifest", "the manifest must be a JSON object")
    out = dict(manifest)
    wasm = out.get("wasm")
    if wasm is None:
        wasm = [{}]
    if not isinstance(wasm, list) or len(wasm) != 1 or not isinstance(wasm[0], dict):
        raise BundleRejected("invalid_manifest", "a bundled manifest needs exactly one wasm module")
    entry: dict[str, Any] = {"path": WASM_ENTRY, "hash": wasm_sha256}
    if wasm[0].get("name"):
        entry["name"] = wasm[0]["name"]
    out["wasm"] = [entry]
    edged = out.get("edged", {})
    if not isinstance(edged, dict):
        raise BundleRejected("invalid_manifest", "invalid manifest: edged: must be an object")
    edged = dict(edged)
    for field, value in (("name", name), ("version", version)):
        if field in edged and edged[field] != value:
            raise BundleRejected(
                "manifest_mismatch", f"the manifest's edged.{field} is {edged[field]!r}, the bundle's is {value!r}"
            )
        edged[field] = value
    out["edged"] = edged
    return out


def build_bundle(
    name: str,
    version: str,
    wasm: bytes,
    manifest: dict[str, Any],
    key: Ed25519PrivateKey,
    rollback: bool = False,
    *,
    created_at: float | None = None,
) -> Bundle:
    """Validate ``wasm`` and ``manifest`` and sign them as a bundle.

    The manifest's ``wasm`` list is replaced by one entry for ``plugin.wasm`` with its hash (a name given to the
    module is kept); its ``edged`` block gets ``name`` and ``version`` if it lacks them. Raises
    :class:`BundleRejected` (``invalid_wasm``, ``invalid_manifest``, ``manifest_mismatch``, ``malformed``).
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BundleRejected("malformed", f"bundle name {name!r}: use 1-64 lowercase letters, digits, '-' or '_'")
    try:
        SemVer(version)
    except (ValueError, TypeError) as exc:
        raise BundleRejected("malformed", f"bundle version: {exc}") from None
    digest = hashlib.sha256(wasm).hexdigest()
    bundled = _bundled_manifest(name, version, digest, manifest)
    parsed = _check_manifest(bundled)
    caps = _capabilities(parsed)
    _check_wasm(wasm, caps, name, edged=parsed.edged)
    meta = parse_meta(
        {
            "name": name,
            "version": version,
            "wasm_sha256": digest,
            "wasm_size": len(wasm),
            "manifest_digest": manifest_digest(bundled),
            "publisher_key_id": key_id(key),
            "rollback": rollback,
            "created_at": float(time.time() if created_at is None else created_at),
        }
    )
    meta = meta.model_copy(update={"signature": sign(key, meta.signed_bytes())})
    log.info("bundle built", extra={"plugin": meta.ref, "wasm_sha256": digest, "key_id": meta.publisher_key_id})
    return Bundle(meta=meta, manifest=bundled, wasm=wasm)


# --- files -------------------------------------------------------------------------------------------------------


def bundle_to_bytes(bundle: Bundle) -> bytes:
    """The bundle as zip bytes; the same bundle always gives the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member, data in (
            ("meta.json", canonical_json(bundle.meta.model_dump(mode="json"))),
            ("manifest.json", canonical_json(bundle.manifest)),
            (WASM_ENTRY, bundle.wasm),
        ):
            info = zipfile.ZipInfo(member, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=6)
    return buf.getvalue()


def bundle_from_bytes(data: bytes, max_wasm_bytes: int = DEFAULT_MAX_WASM_BYTES) -> Bundle:
    """Parse zip bytes into a :class:`Bundle`, checking its structure only (see :func:`verify_bundle`).

    Anything that is not a well-formed bundle raises :class:`BundleRejected` (``malformed``, or ``oversize`` for a
    member larger than allowed), never another exception.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise BundleRejected("malformed", f"not a bundle (zip): {exc}") from None
    with zf:
        try:
            infos = {i.filename: i for i in zf.infolist()}
        except Exception as exc:  # zipfile raises a zoo of errors on corrupt directories
            raise BundleRejected("malformed", f"not a bundle (zip): {exc}") from None
        names = sorted(infos)
        if names != sorted(_MEMBERS) or len(zf.infolist()) != len(_MEMBERS):
            raise BundleRejected("malformed", f"a bundle holds exactly {list(_MEMBERS)}, this one holds {names}")
        limits = {"meta.json": _MAX_JSON_BYTES, "manifest.json": _MAX_JSON_BYTES, WASM_ENTRY: max_wasm_bytes}
        contents: dict[str, bytes] = {}
        for member, limit in limits.items():
            if infos[member].file_size > limit:
                raise BundleRejected("oversize", f"{member} is {infos[member].file_size} bytes, the limit is {limit}")
            try:
                with zf.open(member) as f:
                    blob = f.read(limit + 1)
            except Exception as exc:  # bad CRC, bad compression data, truncated member, ...
                raise BundleRejected("malformed", f"cannot read {member} from the bundle: {exc}") from None
            if len(blob) > limit:
                raise BundleRejected("oversize", f"{member} is larger than {limit} bytes")
            contents[member] = blob
    meta = parse_meta(contents["meta.json"])
    try:
        manifest = parse_json(contents["manifest.json"])
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleRejected("malformed", f"manifest.json is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleRejected("malformed", "manifest.json must hold a JSON object")
    return Bundle(meta=meta, manifest=manifest, wasm=contents[WASM_ENTRY])


def write_bundle(bundle: Bundle, path: str | Path) -> None:
    """Write the bundle file (atomically)."""
    atomic_write(Path(path), bundle_to_bytes(bundle))


def read_bundle(path: str | Path, max_wasm_bytes: int = DEFAULT_MAX_WASM_BYTES) -> Bundle:
    """Read a bundle file; see :func:`bundle_from_bytes`. An unreadable file raises :class:`BundleRejected`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BundleRejected("malformed", f"cannot read bundle {p}: {exc.strerror}") from None
    return bundle_from_bytes(data, max_wasm_bytes)


# --- verification ------------------------------------------------------------------------------------------------


def _check_manifest(manifest: dict[str, Any]) -> Manifest:
    try:
        parsed = parse_manifest(manifest)
    except PluginLoadError as exc:
        raise BundleRejected("invalid_manifest", str(exc)) from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise BundleRejected("invalid_manifest", f"invalid manifest: {exc}") from None
    if parsed.edged is None:
        raise BundleRejected("invalid_manifest", "a bundled manifest needs an 'edged' block")
    return parsed


def _capabilities(parsed: Manifest) -> Capabilities:
    assert parsed.edged is not None
    try:
        return Capabilities.from_manifest_block(parsed.edged.capabilities)
    except PluginLoadError as exc:
        raise BundleRejected("invalid_manifest", str(exc)) from None


def _check_wasm(
    wasm: bytes, caps: Capabilities, name: str, cache: ModuleCache | None = None, edged: Any = None
) -> None:
    try:
        module = cache.load(wasm) if cache is not None else compile_module(wasm)
    except PluginLoadError as exc:
        raise BundleRejected("invalid_wasm", str(exc)) from None
    imports = [(imp.module, imp.name or "") for imp in module.imports]
    if not caps.wasi and any(mod.startswith("wasi_") for mod, _ in imports):
        raise BundleRejected(
            "invalid_manifest", f"{name}: the module imports WASI but the manifest does not ask for it"
        )
    try:
        check_imports(imports, caps, name)
    except CapabilityDenied as exc:
        raise BundleRejected("invalid_manifest", str(exc)) from None
    # the same gate the device applies when it loads the plugin: a drawing plugin must ask for 'led'
    kind = drawing_kind(edged, {e.name for e in module.exports})
    if kind is not None and not caps.led:
        raise BundleRejected(
            "invalid_manifest",
            f"{name}: {kind} plugins draw on the display, which needs the 'led' capability; the manifest does not "
            "ask for it",
        )


def verify_meta(meta: BundleMeta | dict[str, Any], trust: TrustStore) -> BundleMeta:
    """The bundle's metadata, parsed, after checking its signature by a key trusted as a ``publisher``.

    A device calls this before it asks for the first chunk, so a forged or tampered meta (name, version, wasm sha256
    and size, manifest digest) never causes a download. Raises :class:`BundleRejected` (``malformed``,
    ``bad_signature``, ``untrusted_key``)."""
    meta = parse_meta(meta)
    if not meta.signature:
        raise BundleRejected("bad_signature", f"{meta.ref}: the bundle is unsigned")
    try:
        trust.verify(meta.publisher_key_id, "publisher", meta.signed_bytes(), decode_signature(meta.signature))
    except UntrustedKey as exc:
        raise BundleRejected("untrusted_key", f"{meta.ref}: {exc}") from None
    except BadSignature as exc:
        raise BundleRejected("bad_signature", f"{meta.ref}: {exc}") from None
    return meta


def check_manifest_digest(meta: BundleMeta, manifest: Any) -> None:
    """Raise :class:`BundleRejected` ``manifest_mismatch`` unless ``manifest`` hashes to the signed digest."""
    if not isinstance(manifest, dict):
        raise BundleRejected("manifest_mismatch", f"{meta.ref}: the manifest is not a JSON object")
    try:
        digest = manifest_digest(manifest)
    except (ValueError, TypeError, RecursionError):
        raise BundleRejected("manifest_mismatch", f"{meta.ref}: the manifest is not canonical JSON") from None
    if digest != meta.manifest_digest:
        raise BundleRejected(
            "manifest_mismatch", f"{meta.ref}: the manifest's digest is {digest}, signed as {meta.manifest_digest}"
        )


def verify_bundle(
    meta: BundleMeta | dict[str, Any],
    manifest: dict[str, Any],
    wasm: bytes,
    trust: TrustStore,
    policy: DevicePolicy | None = None,
    installed_version: str | None = None,
    *,
    max_wasm_bytes: int = DEFAULT_MAX_WASM_BYTES,
    compile: bool = True,
) -> Capabilities:
    """Check everything a device checks before installing a bundle, and return the capabilities it asks for.

    In order: the meta is well formed; it is signed by a key trusted as a ``publisher``; the wasm is within
    ``max_wasm_bytes`` and matches the signed size and sha256; the manifest matches the signed digest, is valid, and
    names the same plugin, version and wasm hash; its capabilities fit ``policy``; the version is not lower than
    ``installed_version`` unless the meta is a signed rollback; the wasm compiles and imports only what its
    capabilities allow. The first failure raises :class:`BundleRejected` with its reason code.
    """
    meta = verify_meta(meta, trust)
    if meta.wasm_size > max_wasm_bytes or len(wasm) > max_wasm_bytes:
        size = max(meta.wasm_size, len(wasm))
        raise BundleRejected("oversize", f"{meta.ref}: the wasm is {size} bytes, the limit is {max_wasm_bytes}")
    if len(wasm) != meta.wasm_size:
        raise BundleRejected("hash_mismatch", f"{meta.ref}: the wasm is {len(wasm)} bytes, signed as {meta.wasm_size}")
    found = hashlib.sha256(wasm).hexdigest()
    if found != meta.wasm_sha256:
        raise BundleRejected("hash_mismatch", f"{meta.ref}: the wasm's sha256 is {found}, signed as {meta.wasm_sha256}")

    check_manifest_digest(meta, manifest)
    parsed = _check_manifest(manifest)
    assert parsed.edged is not None
    if (parsed.edged.name, parsed.edged.version) != (meta.name, meta.version):
        raise BundleRejected(
            "manifest_mismatch",
            f"{meta.ref}: the manifest names {parsed.edged.name}@{parsed.edged.version}",
        )
    if [src.hash for _, src in parsed.modules()] != [meta.wasm_sha256]:
        raise BundleRejected(
            "manifest_mismatch", f"{meta.ref}: the manifest's wasm entry does not carry the wasm's hash"
        )
    caps = _capabilities(parsed)

    if policy is not None:
        excess = policy.excess(caps)
        if excess:
            raise BundleRejected(
                "policy_violation", f"{meta.ref}: the device policy does not allow: {', '.join(excess)}"
            )

    if installed_version is not None:
        try:
            lower = SemVer(meta.version) < SemVer(installed_version)
        except ValueError:
            lower = False  # an unparseable installed version cannot block an update
            log.warning("installed version is not semver", extra={"plugin": meta.name, "version": installed_version})
        if lower and not meta.rollback:
            raise BundleRejected(
                "downgrade",
                f"{meta.ref}: {meta.version} is lower than the installed {installed_version} "
                "and the bundle is not a signed rollback",
            )

    if compile:
        # through the module cache: the device loads this very module right after installing it
        _check_wasm(wasm, caps, meta.name, default_cache(), edged=parsed.edged)
    return caps
