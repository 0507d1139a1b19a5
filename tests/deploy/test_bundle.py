"""Signed bundles: build, file round trip, and every reason a device refuses one."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.deploy.bundle import (
    REASONS,
    Bundle,
    BundleMeta,
    SemVer,
    build_bundle,
    bundle_from_bytes,
    bundle_to_bytes,
    compare_versions,
    manifest_digest,
    read_bundle,
    verify_bundle,
    write_bundle,
)
from edged.deploy.trust import TrustStore, canonical_json, generate_key, sign
from edged.errors import BundleRejected, DeployError
from edged.host.capabilities import DevicePolicy
from edged.runtime import default_cache

ROOT = Path(__file__).resolve().parents[2]
COUNT_VOWELS = ROOT / "tests" / "plugins" / "build" / "count_vowels_c.wasm"
WASI_FILES = ROOT / "tests" / "plugins" / "build" / "wasi_files.wasm"

GPIO_PLUGIN = wasmtime.wat2wasm(
    """(module
      (import "extism:host/user" "edged_gpio_write" (func $w (param i64)))
      (func (export "frame") (result i32) (i32.const 0)))"""
)


def wasm_bytes(path: Path = COUNT_VOWELS) -> bytes:
    if not path.exists():
        pytest.fail(f"{path} is missing: run plugins/build before the tests (tests/run does)")
    return path.read_bytes()


def with_custom_section(wasm: bytes, payload: bytes) -> bytes:
    """The same module with a custom section appended: still valid, different bytes (a different version)."""
    name = b"edged-test"
    body = bytes([len(name)]) + name + payload
    assert len(body) < 128
    return wasm + bytes([0, len(body)]) + body


@pytest.fixture(scope="module")
def publisher() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def trust(publisher: Ed25519PrivateKey) -> TrustStore:
    store = TrustStore()
    store.add(publisher, ["publisher"], "acme")
    return store


@pytest.fixture(scope="module")
def bundle(publisher: Ed25519PrivateKey) -> Bundle:
    manifest = {
        "wasm": [{"path": "count_vowels.wasm"}],
        "config": {"speed": "3"},
        "edged": {"capabilities": {"led": True}},
    }
    return build_bundle("vowels", "1.2.0", wasm_bytes(), manifest, publisher, created_at=1_800_000_000.0)


def resign(meta: BundleMeta, key: Ed25519PrivateKey, **changes: Any) -> BundleMeta:
    """A meta with ``changes``, properly signed by ``key`` (a publisher signing whatever it likes)."""
    m = meta.model_copy(update={**changes, "signature": ""})
    return m.model_copy(update={"signature": sign(key, m.signed_bytes())})


def rejected(reason: str, fn: Any, *args: Any, **kwargs: Any) -> BundleRejected:
    with pytest.raises(BundleRejected) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, str(info.value)
    assert info.value.reason in REASONS
    return info.value


# --- versions ----------------------------------------------------------------------------------------------------


def test_semver_precedence() -> None:
    ordered = ["0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0"]
    ordered += ["1.0.1", "1.2.0", "1.10.0", "2.0.0"]
    assert sorted(ordered, key=SemVer) == ordered
    assert compare_versions("1.0.0+build.5", "1.0.0") == 0
    assert compare_versions("1.10.0", "1.9.0") == 1
    for bad in ("1.0", "01.0.0", "1.0.0.0", "v1.0.0", "1.0.0-", ""):
        with pytest.raises(ValueError):
            SemVer(bad)


# --- building and files ------------------------------------------------------------------------------------------


def test_build_and_verify(bundle: Bundle, trust: TrustStore, publisher: Ed25519PrivateKey) -> None:
    wasm = wasm_bytes()
    meta = bundle.meta
    assert (meta.name, meta.version, meta.rollback) == ("vowels", "1.2.0", False)
    assert meta.wasm_sha256 == hashlib.sha256(wasm).hexdigest() and meta.wasm_size == len(wasm)
    assert meta.manifest_digest == hashlib.sha256(canonical_json(bundle.manifest)).hexdigest()
    assert meta.publisher_key_id in trust
    # the bundled manifest points at plugin.wasm by hash and names the plugin
    assert bundle.manifest["wasm"] == [{"path": "plugin.wasm", "hash": meta.wasm_sha256}]
    assert bundle.manifest["edged"]["name"] == "vowels" and bundle.manifest["edged"]["version"] == "1.2.0"
    assert bundle.manifest["config"] == {"speed": "3"}
    caps = verify_bundle(meta, bundle.manifest, wasm, trust, DevicePolicy(), installed_version="1.1.0")
    assert caps.led and not caps.wasi
    assert bundle.verify(trust) == caps


def test_verification_compiles_into_the_module_cache(publisher: Ed25519PrivateKey, trust: TrustStore) -> None:
    """The device loads the module right after verifying it; that load must not compile it a second time."""
    wasm = with_custom_section(wasm_bytes(), b"cache-warm")
    b = build_bundle("warm", "1.0.0", wasm, {}, publisher)
    cache = default_cache()
    verify_bundle(b.meta, b.manifest, b.wasm, trust)
    hits, misses = cache.hits, cache.misses
    cache.load(wasm)
    assert (cache.hits, cache.misses) == (hits + 1, misses)


def test_bundle_bytes_are_deterministic_and_round_trip(
    bundle: Bundle, publisher: Ed25519PrivateKey, tmp_path: Path
) -> None:
    again = build_bundle("vowels", "1.2.0", bundle.wasm, bundle.manifest, publisher, created_at=1_800_000_000.0)
    assert bundle_to_bytes(again) == bundle_to_bytes(bundle)
    write_bundle(bundle, tmp_path / "vowels-1.2.0.edb")
    back = read_bundle(tmp_path / "vowels-1.2.0.edb")
    assert back == bundle
    with zipfile.ZipFile(tmp_path / "vowels-1.2.0.edb") as zf:
        assert zf.namelist() == ["meta.json", "manifest.json", "plugin.wasm"]


def test_build_keeps_a_module_name_and_fills_the_edged_block(publisher: Ed25519PrivateKey) -> None:
    b = build_bundle("vowels", "0.1.0", wasm_bytes(), {"wasm": [{"data": "AA==", "name": "main"}]}, publisher)
    assert b.manifest["wasm"][0]["name"] == "main"
    assert b.manifest["edged"] == {"name": "vowels", "version": "0.1.0"}


def test_build_rejects_bad_input(publisher: Ed25519PrivateKey) -> None:
    wasm = wasm_bytes()
    err = rejected("invalid_wasm", build_bundle, "x", "1.0.0", b"\0asm\x01\0\0\0garbage", {}, publisher)
    assert "invalid WebAssembly module" in str(err)
    rejected("invalid_wasm", build_bundle, "x", "1.0.0", b"hello", {}, publisher)
    err = rejected("invalid_manifest", build_bundle, "x", "1.0.0", wasm, {"memory": {"max_page": 3}}, publisher)
    assert "memory.max_page" in str(err)
    err = rejected(
        "invalid_manifest", build_bundle, "x", "1.0.0", wasm, {"edged": {"capabilities": {"gpoi": {}}}}, publisher
    )
    assert "edged.capabilities.gpoi" in str(err)
    rejected("invalid_manifest", build_bundle, "x", "1.0.0", wasm, {"edged": "yes"}, publisher)
    rejected("invalid_manifest", build_bundle, "x", "1.0.0", wasm, [], publisher)
    rejected("invalid_manifest", build_bundle, "x", "1.0.0", wasm, {"wasm": "a.wasm"}, publisher)
    two = {"wasm": [{"path": "a.wasm", "name": "lib"}, {"path": "b.wasm"}]}
    rejected("invalid_manifest", build_bundle, "x", "1.0.0", wasm, two, publisher)
    err = rejected("manifest_mismatch", build_bundle, "x", "1.0.0", wasm, {"edged": {"name": "y"}}, publisher)
    assert "edged.name is 'y'" in str(err)
    rejected("manifest_mismatch", build_bundle, "x", "1.0.0", wasm, {"edged": {"version": "2.0.0"}}, publisher)
    rejected("malformed", build_bundle, "Bad Name", "1.0.0", wasm, {}, publisher)
    rejected("malformed", build_bundle, "x", "1.0", wasm, {}, publisher)


def test_build_rejects_imports_the_manifest_does_not_ask_for(publisher: Ed25519PrivateKey) -> None:
    err = rejected("invalid_manifest", build_bundle, "gpio", "1.0.0", GPIO_PLUGIN, {}, publisher)
    assert "edged_gpio_write" in str(err) and "gpio.write" in str(err)
    # it draws (exports frame), so it needs 'led' too, as the device itself would refuse it
    err = rejected(
        "invalid_manifest",
        build_bundle,
        "gpio",
        "1.0.0",
        GPIO_PLUGIN,
        {"edged": {"capabilities": {"gpio": {"write": [17]}}}},
        publisher,
    )
    assert "needs the 'led' capability" in str(err)
    caps = {"led": True, "gpio": {"write": [17]}}
    ok = build_bundle("gpio", "1.0.0", GPIO_PLUGIN, {"edged": {"capabilities": caps}}, publisher)
    assert ok.manifest["edged"]["capabilities"] == caps
    err = rejected("invalid_manifest", build_bundle, "files", "1.0.0", wasm_bytes(WASI_FILES), {}, publisher)
    assert "WASI" in str(err)
    build_bundle("files", "1.0.0", wasm_bytes(WASI_FILES), {"edged": {"capabilities": {"wasi": True}}}, publisher)


# --- rejections --------------------------------------------------------------------------------------------------


def test_tampered_wasm(bundle: Bundle, trust: TrustStore) -> None:
    wasm = bytearray(bundle.wasm)
    wasm[-1] ^= 0xFF
    err = rejected("hash_mismatch", verify_bundle, bundle.meta, bundle.manifest, bytes(wasm), trust)
    assert bundle.meta.wasm_sha256 in str(err)
    rejected("hash_mismatch", verify_bundle, bundle.meta, bundle.manifest, bundle.wasm[:-1], trust)
    rejected("hash_mismatch", verify_bundle, bundle.meta, bundle.manifest, bundle.wasm + b"\0", trust)


def test_tampered_manifest(bundle: Bundle, trust: TrustStore) -> None:
    more = json.loads(json.dumps(bundle.manifest))
    more["edged"]["capabilities"] = {"led": True, "gpio": {"write": [17]}}
    rejected("manifest_mismatch", verify_bundle, bundle.meta, more, bundle.wasm, trust)
    more = {**bundle.manifest, "allowed_hosts": ["evil.example.com"]}
    rejected("manifest_mismatch", verify_bundle, bundle.meta, more, bundle.wasm, trust)
    rejected("manifest_mismatch", verify_bundle, bundle.meta, ["not", "a", "dict"], bundle.wasm, trust)


@pytest.mark.parametrize(
    "change",
    [
        {"version": "9.9.9"},
        {"rollback": True},
        {"name": "other"},
        {"wasm_size": 1},
        {"created_at": 0.0},
        {"manifest_digest": "0" * 64},
    ],
)
def test_tampered_meta_is_bad_signature(bundle: Bundle, trust: TrustStore, change: dict[str, Any]) -> None:
    forged = bundle.meta.model_copy(update=change)
    rejected("bad_signature", verify_bundle, forged, bundle.manifest, bundle.wasm, trust)


def test_unsigned_and_garbage_signatures(bundle: Bundle, trust: TrustStore) -> None:
    err = rejected(
        "bad_signature",
        verify_bundle,
        bundle.meta.model_copy(update={"signature": ""}),
        bundle.manifest,
        bundle.wasm,
        trust,
    )
    assert "unsigned" in str(err)
    for sig in ("!!!", "AAAA"):
        forged = bundle.meta.model_copy(update={"signature": sig})
        rejected("bad_signature", verify_bundle, forged, bundle.manifest, bundle.wasm, trust)


def test_wrong_key(bundle: Bundle, trust: TrustStore) -> None:
    stranger = generate_key()
    b = build_bundle("vowels", "1.2.0", bundle.wasm, bundle.manifest, stranger)
    err = rejected("untrusted_key", verify_bundle, b.meta, b.manifest, b.wasm, trust)
    assert "not in the trust store" in str(err)
    # the stranger signs but claims the trusted publisher's key id
    claimed = resign(b.meta, stranger, publisher_key_id=bundle.meta.publisher_key_id)
    rejected("bad_signature", verify_bundle, claimed, b.manifest, b.wasm, trust)


def test_marketplace_key_cannot_publish(bundle: Bundle) -> None:
    market = generate_key()
    store = TrustStore()
    store.add(market, ["marketplace"])
    b = build_bundle("vowels", "1.2.0", bundle.wasm, bundle.manifest, market)
    err = rejected("untrusted_key", verify_bundle, b.meta, b.manifest, b.wasm, store)
    assert "not trusted as a publisher" in str(err)


def test_policy_violation_names_each_excess(publisher: Ed25519PrivateKey, trust: TrustStore) -> None:
    caps = {"led": True, "gpio": {"write": [17, 18], "read": [4]}, "sensors": ["distance"], "wasi": True}
    b = build_bundle("greedy", "1.0.0", GPIO_PLUGIN, {"edged": {"capabilities": caps}}, publisher)
    policy = DevicePolicy(gpio_read=[4], sensors=["cpu_temperature"])
    err = rejected("policy_violation", verify_bundle, b.meta, b.manifest, b.wasm, trust, policy)
    for item in ("gpio.write pin 17", "gpio.write pin 18 (reserved by the device)", "sensor 'distance'", "wasi"):
        assert item in str(err)
    assert "gpio.read" not in str(err)
    generous = DevicePolicy(gpio_read=[4], gpio_write=[17], reserved_pins=[], sensors=["*"], wasi=True)
    with pytest.raises(BundleRejected, match="gpio.write pin 18$"):
        verify_bundle(b.meta, b.manifest, b.wasm, trust, generous)
    generous = generous.model_copy(update={"gpio_write": [17, 18]})
    assert verify_bundle(b.meta, b.manifest, b.wasm, trust, generous).gpio.write == [17, 18]


def test_downgrade_refused_and_signed_rollback_accepted(
    bundle: Bundle, trust: TrustStore, publisher: Ed25519PrivateKey
) -> None:
    m, w = bundle.manifest, bundle.wasm
    err = rejected("downgrade", verify_bundle, bundle.meta, m, w, trust, None, "1.10.0")
    assert "lower than the installed 1.10.0" in str(err)
    rejected("downgrade", verify_bundle, bundle.meta, m, w, trust, None, "1.2.1-rc.1")
    # the same version again, and any higher one, are fine
    for installed in ("1.2.0", "1.2.0-rc.1", "1.1.9", "0.0.1"):
        verify_bundle(bundle.meta, m, w, trust, None, installed)
    back = build_bundle("vowels", "1.2.0", w, m, publisher, rollback=True)
    assert back.meta.rollback
    verify_bundle(back.meta, back.manifest, back.wasm, trust, None, "1.10.0")
    # the rollback flag cannot be added without the publisher's key
    rejected(
        "bad_signature", verify_bundle, bundle.meta.model_copy(update={"rollback": True}), m, w, trust, None, "1.10.0"
    )


def test_oversize(bundle: Bundle, trust: TrustStore) -> None:
    err = rejected("oversize", verify_bundle, bundle.meta, bundle.manifest, bundle.wasm, trust, max_wasm_bytes=1000)
    assert "limit is 1000" in str(err)
    rejected("oversize", bundle_from_bytes, bundle_to_bytes(bundle), max_wasm_bytes=1000)


def test_signed_but_invalid_content(bundle: Bundle, trust: TrustStore, publisher: Ed25519PrivateKey) -> None:
    """A trusted publisher that skips build_bundle's checks still cannot get bad content installed."""

    def signed(manifest: dict[str, Any], wasm: bytes = bundle.wasm, **meta: Any) -> tuple[BundleMeta, dict[str, Any]]:
        fields = {
            "manifest_digest": manifest_digest(manifest),
            "wasm_sha256": hashlib.sha256(wasm).hexdigest(),
            "wasm_size": len(wasm),
            **meta,
        }
        return resign(bundle.meta, publisher, **fields), manifest

    meta, man = signed({**bundle.manifest, "bogus": 1})
    assert "bogus" in str(rejected("invalid_manifest", verify_bundle, meta, man, bundle.wasm, trust))
    meta, man = signed({k: v for k, v in bundle.manifest.items() if k != "edged"})
    rejected("invalid_manifest", verify_bundle, meta, man, bundle.wasm, trust)
    meta, man = signed({**bundle.manifest, "edged": {**bundle.manifest["edged"], "name": "other"}})
    assert "names other@1.2.0" in str(rejected("manifest_mismatch", verify_bundle, meta, man, bundle.wasm, trust))
    meta, man = signed({**bundle.manifest, "wasm": [{"path": "plugin.wasm"}]})
    rejected("manifest_mismatch", verify_bundle, meta, man, bundle.wasm, trust)
    bad_wasm = b"\0asm\x01\0\0\0\x01\xff"
    meta, man = signed(
        {**bundle.manifest, "wasm": [{"path": "plugin.wasm", "hash": hashlib.sha256(bad_wasm).hexdigest()}]}, bad_wasm
    )
    rejected("invalid_wasm", verify_bundle, meta, man, bad_wasm, trust)
    meta, man = signed(
        {**bundle.manifest, "wasm": [{"path": "plugin.wasm", "hash": hashlib.sha256(GPIO_PLUGIN).hexdigest()}]},
        GPIO_PLUGIN,
    )
    rejected("invalid_manifest", verify_bundle, meta, man, GPIO_PLUGIN, trust)


def test_malformed_meta(bundle: Bundle, trust: TrustStore) -> None:
    good = bundle.meta.model_dump(mode="json")
    for bad in (
        {**good, "extra": 1},
        {**good, "wasm_sha256": "../../etc/passwd"},
        {**good, "version": "latest"},
        {**good, "wasm_size": "12"},
        {**good, "rollback": "yes"},
        {k: v for k, v in good.items() if k != "name"},
        "not a dict",
    ):
        rejected("malformed", verify_bundle, bad, bundle.manifest, bundle.wasm, trust)
    assert verify_bundle(good, bundle.manifest, bundle.wasm, trust).led


# --- bundle files ------------------------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_malformed_bundle_files(bundle: Bundle, tmp_path: Path) -> None:
    members = {
        "meta.json": canonical_json(bundle.meta.model_dump(mode="json")),
        "manifest.json": canonical_json(bundle.manifest),
        "plugin.wasm": bundle.wasm,
    }
    assert bundle_from_bytes(_zip(members)) == bundle
    rejected("malformed", bundle_from_bytes, b"")
    rejected("malformed", bundle_from_bytes, b"PK\x03\x04 truncated")
    rejected("malformed", bundle_from_bytes, _zip({k: v for k, v in members.items() if k != "plugin.wasm"}))
    rejected("malformed", bundle_from_bytes, _zip({**members, "extra.txt": b"x"}))
    rejected("malformed", bundle_from_bytes, _zip({**members, "meta.json": b"{"}))
    rejected("malformed", bundle_from_bytes, _zip({**members, "meta.json": b"[]"}))
    rejected("malformed", bundle_from_bytes, _zip({**members, "manifest.json": b"[1]"}))
    rejected("malformed", bundle_from_bytes, _zip({**members, "manifest.json": b"\xff"}))
    # a corrupted member (bad CRC)
    raw = bytearray(_zip(members))
    at = raw.find(bundle.wasm[100:120])
    raw[at] ^= 0xFF
    rejected("malformed", bundle_from_bytes, bytes(raw))
    rejected("malformed", read_bundle, tmp_path / "missing.edb")


def test_oversized_members_are_refused_before_reading(bundle: Bundle) -> None:
    members = {
        "meta.json": canonical_json(bundle.meta.model_dump(mode="json")),
        "manifest.json": b"{" + b" " * (2 * 1024 * 1024) + b"}",
        "plugin.wasm": bundle.wasm,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    assert len(buf.getvalue()) < 64 * 1024  # compresses well: a small file that would inflate to megabytes
    rejected("oversize", bundle_from_bytes, buf.getvalue())


# --- fuzzing -----------------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=500))
def test_random_bytes_are_rejected_as_bundles(data: bytes) -> None:
    with pytest.raises(BundleRejected):
        bundle_from_bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    meta=st.binary(max_size=100) | _json.map(lambda v: json.dumps(v).encode()),
    manifest=st.binary(max_size=100) | _json.map(lambda v: json.dumps(v).encode()),
    wasm=st.binary(max_size=100),
)
def test_random_zip_members_are_rejected(meta: bytes, manifest: bytes, wasm: bytes, trust: TrustStore) -> None:
    data = _zip({"meta.json": meta, "manifest.json": manifest, "plugin.wasm": wasm})
    try:
        b = bundle_from_bytes(data)
    except BundleRejected:
        return
    with pytest.raises(BundleRejected):
        verify_bundle(b.meta, b.manifest, b.wasm, trust)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    meta=_json | st.fixed_dictionaries({}, optional={k: _json for k in BundleMeta.model_fields}),
    manifest=_json,
    wasm=st.binary(max_size=64),
)
def test_random_meta_and_manifest_are_rejected(
    meta: Any, manifest: Any, wasm: bytes, bundle: Bundle, trust: TrustStore
) -> None:
    with pytest.raises(BundleRejected):
        verify_bundle(meta, manifest, wasm, trust)
    # a genuine meta with random manifest or wasm is refused too
    with pytest.raises(BundleRejected):
        verify_bundle(bundle.meta, manifest, wasm, trust)


def test_bundle_rejected_is_a_deploy_error() -> None:
    err = BundleRejected("downgrade", "msg")
    assert isinstance(err, DeployError) and isinstance(err, ValueError)
    assert (err.reason, str(err)) == ("downgrade", "msg")
    # it survives pickling (multiprocessing, logging handlers)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is BundleRejected and (back.reason, str(back)) == ("downgrade", "msg")
