"""Keys, trust files and signed envelopes: round trips and every rejection reason."""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.deploy.trust import (
    NonceCache,
    SignedEnvelope,
    TrustStore,
    canonical_json,
    generate_key,
    key_id,
    load_private_key,
    open_envelope,
    public_key_b64,
    save_private_key,
    sign_envelope,
)
from edged.errors import (
    BadSignature,
    ConfigError,
    DeployError,
    MalformedMessage,
    MessageBadSignature,
    MessageExpired,
    MessageNotYetValid,
    MessageRejected,
    MessageReplayed,
    MessageUntrustedKey,
    NonceCacheFull,
    UntrustedKey,
)

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def market_key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def trust(market_key: Ed25519PrivateKey) -> TrustStore:
    store = TrustStore()
    store.add(market_key, ["marketplace"], "market")
    return store


# --- keys and canonical form -------------------------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1, {"z": "é", "y": None}]}) == '{"a":[1,{"y":null,"z":"é"}],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_private_key_round_trip_is_owner_only(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys" / "publisher.pem"
    save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_private_key(path)
    assert public_key_b64(loaded) == public_key_b64(key)
    assert key_id(loaded) == key_id(key.public_key())
    assert len(key_id(key)) == 16 and int(key_id(key), 16) >= 0
    assert len(base64.b64decode(public_key_b64(key))) == 32


def test_load_private_key_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(DeployError, match="not an unencrypted PEM private key"):
        load_private_key(bad)
    with pytest.raises(DeployError, match="cannot read private key"):
        load_private_key(tmp_path / "missing.pem")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_trust_file_round_trip(tmp_path: Path, suffix: str) -> None:
    pub, market = generate_key(), generate_key()
    store = TrustStore()
    store.add(pub, ["publisher"], 'acme "plugins"')
    store.add(market, ["marketplace"], "market")
    path = tmp_path / f"trust{suffix}"
    store.to_file(path)
    again = TrustStore.from_file(path)
    assert set(again.keys) == {key_id(pub), key_id(market)}
    assert again.roles(key_id(pub)) == {"publisher"}
    assert again.roles(key_id(market)) == {"marketplace"}
    assert again.to_model() == store.to_model()


def test_trust_file_errors_name_the_key(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "trust.toml"
    path.write_text(f'[[keys]]\nkey_id = "{key_id(key)}"\npublic_key = "{public_key_b64(key)}"\nroles = ["admin"]\n')
    with pytest.raises(ConfigError, match=r"keys\.0\.roles"):
        TrustStore.from_file(path)
    path.write_text(
        f'[[keys]]\nkey_id = "0000000000000000"\npublic_key = "{public_key_b64(key)}"\nroles = ["publisher"]\n'
    )
    with pytest.raises(ConfigError, match="does not match the public key"):
        TrustStore.from_file(path)
    jpath = tmp_path / "trust.json"
    jpath.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrustStore.from_file(jpath)
    jpath.write_text(json.dumps({"keys": [{"key_id": "x", "public_key": "AAAA", "roles": ["publisher"]}]}))
    with pytest.raises(ConfigError, match="public_key"):
        TrustStore.from_file(jpath)


def test_constructor_keys_are_trusted_for_every_role() -> None:
    key = generate_key()
    store = TrustStore({key_id(key): key.public_key()})
    assert store.roles(key_id(key)) == {"publisher", "marketplace"}
    with pytest.raises(ValueError, match="does not match"):
        TrustStore({"0123456789abcdef": key.public_key()})


def test_verify_reports_unknown_keys_roles_and_bad_signatures(trust: TrustStore, market_key: Ed25519PrivateKey) -> None:
    kid = key_id(market_key)
    sig = market_key.sign(b"data")
    trust.verify(kid, "marketplace", b"data", sig)
    with pytest.raises(BadSignature):
        trust.verify(kid, "marketplace", b"datA", sig)
    with pytest.raises(UntrustedKey, match="not trusted as a publisher"):
        trust.verify(kid, "publisher", b"data", sig)
    with pytest.raises(UntrustedKey, match="not in the trust store"):
        trust.verify("ffffffffffffffff", "marketplace", b"data", sig)


# --- envelopes ---------------------------------------------------------------------------------------------------


def test_envelope_round_trip(trust: TrustStore, market_key: Ed25519PrivateKey) -> None:
    payload = {"command": "install", "plugin": "rainbow", "version": "1.2.0", "args": {"ünïcode": [1, 2.5, None]}}
    env = sign_envelope(payload, market_key, ttl_s=60, now=NOW)
    assert env.key_id == key_id(market_key)
    assert env.expires_at - env.issued_at == 60
    for form in (env, env.model_dump_json(), env.model_dump_json().encode(), env.model_dump(mode="json")):
        assert open_envelope(form, trust, now=NOW + 1) == payload
    # integral times in JSON are the same numbers
    whole = sign_envelope({"x": 1}, market_key, ttl_s=60, now=NOW)
    data = json.loads(whole.model_dump_json())
    data["issued_at"], data["expires_at"] = int(data["issued_at"]), int(data["expires_at"])
    assert open_envelope(json.dumps(data), trust, now=NOW) == {"x": 1}


def test_payload_json_cannot_carry_is_refused_at_signing(market_key: Ed25519PrivateKey) -> None:
    for payload in ({"x": float("inf")}, {"x": float("nan")}, {"x": b"bytes"}):
        with pytest.raises((ValueError, TypeError)):
            sign_envelope(payload, market_key, ttl_s=10, now=NOW)
    with pytest.raises(ValueError, match="ttl_s"):
        sign_envelope({}, market_key, ttl_s=0)


def test_two_envelopes_have_distinct_nonces(market_key: Ed25519PrivateKey) -> None:
    a = sign_envelope({}, market_key, 10, now=NOW)
    b = sign_envelope({}, market_key, 10, now=NOW)
    assert a.nonce != b.nonce and a.signature != b.signature


@pytest.mark.parametrize(
    "field,value",
    [
        ("payload", {"command": "remove", "plugin": "rainbow"}),
        ("expires_at", NOW + 10_000),
        ("issued_at", NOW - 5),
        ("nonce", "0" * 32),
    ],
)
def test_tampered_envelope_is_bad_signature(
    trust: TrustStore, market_key: Ed25519PrivateKey, field: str, value: object
) -> None:
    env = sign_envelope({"command": "install", "plugin": "rainbow"}, market_key, ttl_s=60, now=NOW)
    forged = {**env.model_dump(mode="json"), field: value}
    with pytest.raises(MessageBadSignature) as info:
        open_envelope(forged, trust, now=NOW)
    assert info.value.reason == "bad_signature"


def test_signature_from_another_key_under_a_trusted_id_is_bad_signature(
    trust: TrustStore, market_key: Ed25519PrivateKey
) -> None:
    forger = generate_key()
    env = sign_envelope({"command": "identify"}, forger, ttl_s=60, now=NOW)
    # claim the trusted key's id and re-sign with the forger's key
    unsigned = {**env.model_dump(mode="json", exclude={"signature"}), "key_id": key_id(market_key)}
    sig = base64.b64encode(forger.sign(canonical_json(unsigned))).decode()
    with pytest.raises(MessageBadSignature):
        open_envelope({**unsigned, "signature": sig}, trust, now=NOW)


def test_garbage_signature_is_bad_signature(trust: TrustStore, market_key: Ed25519PrivateKey) -> None:
    env = sign_envelope({"a": 1}, market_key, ttl_s=60, now=NOW)
    for sig in ("not base64!", base64.b64encode(b"short").decode(), ""):
        with pytest.raises(MessageBadSignature):
            open_envelope({**env.model_dump(mode="json"), "signature": sig}, trust, now=NOW)


def test_untrusted_key(trust: TrustStore) -> None:
    env = sign_envelope({"command": "identify"}, generate_key(), ttl_s=60, now=NOW)
    with pytest.raises(MessageUntrustedKey) as info:
        open_envelope(env.model_dump_json(), trust, now=NOW)
    assert info.value.reason == "untrusted_key"


def test_publisher_key_cannot_sign_commands(market_key: Ed25519PrivateKey) -> None:
    publisher = generate_key()
    store = TrustStore()
    store.add(publisher, ["publisher"])
    env = sign_envelope({"command": "remove"}, publisher, ttl_s=60, now=NOW)
    with pytest.raises(MessageUntrustedKey, match="not trusted as a marketplace"):
        open_envelope(env, store, now=NOW)
    assert open_envelope(env, store, role="publisher", now=NOW) == {"command": "remove"}


def test_expired_and_not_yet_valid(trust: TrustStore, market_key: Ed25519PrivateKey) -> None:
    env = sign_envelope({"a": 1}, market_key, ttl_s=60, now=NOW)
    with pytest.raises(MessageExpired) as info:
        open_envelope(env, trust, now=NOW + 60)
    assert info.value.reason == "expired"
    with pytest.raises(MessageNotYetValid) as info2:
        open_envelope(env, trust, now=NOW - 31)
    assert info2.value.reason == "not_yet_valid"
    # a little clock skew is tolerated
    assert open_envelope(env, trust, now=NOW - 29) == {"a": 1}
    with pytest.raises(MessageNotYetValid):
        open_envelope(env, trust, now=NOW - 5, skew_s=0)


def test_envelope_whose_expiry_precedes_its_issue_is_malformed(market_key: Ed25519PrivateKey) -> None:
    trust = TrustStore({key_id(market_key): market_key.public_key()})
    unsigned = {"payload": {}, "key_id": key_id(market_key), "issued_at": NOW, "expires_at": NOW - 1, "nonce": "n" * 16}
    sig = base64.b64encode(market_key.sign(canonical_json(unsigned))).decode()
    with pytest.raises(MalformedMessage, match="expires_at is not after issued_at"):
        open_envelope({**unsigned, "signature": sig}, trust, now=NOW)


@pytest.mark.parametrize(
    "raw,match",
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("null", "expected a JSON object"),
        ('{"payload": {}}', "key_id"),
        ('{"payload": NaN}', "not JSON"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_malformed_envelopes(trust: TrustStore, raw: bytes | str, match: str) -> None:
    with pytest.raises(MalformedMessage, match=match) as info:
        open_envelope(raw, trust, now=NOW)
    assert info.value.reason == "malformed"


def test_malformed_fields(trust: TrustStore, market_key: Ed25519PrivateKey) -> None:
    good = sign_envelope({"a": 1}, market_key, ttl_s=60, now=NOW).model_dump(mode="json")
    for bad in (
        {**good, "extra": 1},
        {**good, "payload": [1]},
        {**good, "issued_at": "1800000000"},
        {**good, "expires_at": True},
        {**good, "key_id": "../../etc/passwd"},
        {**good, "nonce": ""},
        {k: v for k, v in good.items() if k != "signature"},
    ):
        with pytest.raises(MalformedMessage):
            open_envelope(bad, trust, now=NOW)


def test_deeply_nested_payload_is_malformed(trust: TrustStore, market_key: Ed25519PrivateKey) -> None:
    good = sign_envelope({"a": 1}, market_key, ttl_s=60, now=NOW).model_dump(mode="json")
    deep: dict[str, object] = {}
    for _ in range(5000):
        deep = {"x": deep}
    with pytest.raises(MalformedMessage):
        open_envelope({**good, "payload": deep}, trust, now=NOW)


def test_replay_is_refused_also_after_a_restart(
    tmp_path: Path, trust: TrustStore, market_key: Ed25519PrivateKey
) -> None:
    env = sign_envelope({"command": "restart"}, market_key, ttl_s=60, now=NOW)
    cache = NonceCache(tmp_path / "nonces.json")
    assert open_envelope(env, trust, now=NOW, nonces=cache) == {"command": "restart"}
    with pytest.raises(MessageReplayed) as info:
        open_envelope(env, trust, now=NOW + 1, nonces=cache)
    assert info.value.reason == "replayed"
    reopened = NonceCache(tmp_path / "nonces.json")
    with pytest.raises(MessageReplayed):
        open_envelope(env, trust, now=NOW + 2, nonces=reopened)
    # a fresh message still passes, and expired nonces are forgotten
    assert open_envelope(sign_envelope({}, market_key, 60, now=NOW), trust, now=NOW, nonces=reopened) == {}
    assert reopened.add("later", NOW + 200, now=NOW + 100)
    assert env.nonce not in reopened


def test_corrupt_nonce_cache_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    path.write_text("garbage")
    cache = NonceCache(path)
    assert cache.add("abc", NOW + 10, now=NOW)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [["abc", NOW + 10]]


def test_nonce_cache_full_of_live_nonces_refuses_instead_of_forgetting() -> None:
    # forgetting the nonce closest to expiry would let that message be replayed (review of issue 12)
    cache = NonceCache(capacity=2)
    assert cache.add("a", NOW + 10, now=NOW)
    assert cache.add("b", NOW + 30, now=NOW)
    with pytest.raises(NonceCacheFull) as info:
        cache.add("c", NOW + 20, now=NOW)
    assert info.value.reason == "busy"
    assert "a" in cache and "b" in cache and "c" not in cache
    assert not cache.add("a", NOW + 10, now=NOW + 1)  # still a replay
    assert cache.add("c", NOW + 20, now=NOW + 11)  # once "a" expired there is room again


def test_nonce_cache_appends_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    cache = NonceCache(path)
    for i in range(50):
        assert cache.add(f"n{i:04d}", NOW + 10, now=NOW)
    assert len(path.read_text().splitlines()) == 50  # one line per message, not a rewrite of everything
    for i in range(200):  # the first 50 expired: the file is rewritten now and then, never unbounded
        assert cache.add(f"m{i:04d}", NOW + 100 + i, now=NOW + 50 + i)
    lines = path.read_text().splitlines()
    assert len(lines) <= 2 * 200 + 64 + 1
    assert not any(line.startswith('["n') for line in lines)
    reopened = NonceCache(path)
    assert "m0199" in reopened and not reopened.add("m0199", NOW + 299, now=NOW + 250)


def test_nonce_cache_survives_a_torn_line_and_cleans_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    path.write_bytes(b'["good-nonce",1800000100.0]\n["torn-no')  # killed mid-append
    (tmp_path / ".nonces.jsonl.deadbeef.tmp").write_bytes(b"x" * 1000)  # killed mid-rewrite
    cache = NonceCache(path)
    assert not list(tmp_path.glob(".*.tmp"))
    assert not cache.add("good-nonce", NOW + 100, now=NOW)
    assert cache.add("fresh-nonce", NOW + 100, now=NOW)
    assert [json.loads(line)[0] for line in path.read_text().splitlines()] == ["good-nonce", "fresh-nonce"]


def test_nonce_cache_write_failure_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nonces.jsonl"
    cache = NonceCache(path)
    assert cache.add("first-nonce", NOW + 100, now=NOW)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        real_write(fd, data[:5])  # a partial line, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        cache.add("second-nonce", NOW + 100, now=NOW)
    monkeypatch.undo()
    assert "second-nonce" not in cache
    assert path.read_text().splitlines() == ['["first-nonce",1800000100.0]']  # no torn line left
    assert cache.add("second-nonce", NOW + 100, now=NOW)


# --- fuzzing -----------------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)

_fields = st.fixed_dictionaries(
    {},
    optional={
        "payload": _json,
        "key_id": st.text(max_size=20) | st.just("0123456789abcdef"),
        "issued_at": _json | st.floats(),
        "expires_at": _json | st.floats(),
        "nonce": _json,
        "signature": st.text(max_size=100) | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=300) | st.text(max_size=300) | _json | _fields | _fields.map(json.dumps))
def test_random_input_is_rejected_as_a_message(raw: object, trust: TrustStore) -> None:
    with pytest.raises(MessageRejected):
        open_envelope(raw, trust, now=NOW)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=10), _json, max_size=5), flip=st.integers(min_value=0))
def test_any_single_byte_flip_is_rejected(
    payload: dict[str, object], flip: int, trust: TrustStore, market_key: Ed25519PrivateKey
) -> None:
    env = sign_envelope(payload, market_key, ttl_s=60, now=NOW)
    assert open_envelope(env.model_dump_json(), trust, now=NOW) == payload
    raw = bytearray(env.model_dump_json().encode())
    i = flip % len(raw)
    raw[i] ^= 0x01
    try:
        opened = open_envelope(bytes(raw), trust, now=NOW)
    except MessageRejected:
        return
    # a flip inside JSON that leaves the signed content equal (e.g. an escape) is fine; anything else is not
    assert SignedEnvelope.model_validate_json(bytes(raw)).signed_bytes() == env.signed_bytes()
    assert opened == payload


def test_nonce_cache_reads_the_older_single_object_file(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    path.write_text(json.dumps({"old-nonce": NOW + 100}))  # written by an edged before the line format
    cache = NonceCache(path)
    assert not cache.add("old-nonce", NOW + 100, now=NOW)  # still a replay
    assert cache.add("new-nonce", NOW + 100, now=NOW)
    assert [json.loads(line)[0] for line in path.read_text().splitlines()] == ["old-nonce", "new-nonce"]
