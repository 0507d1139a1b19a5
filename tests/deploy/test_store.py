"""The on-device plugin store: install, activate, rollback, keep-N and GC, recovery, resumable transfers."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.deploy.bundle import Bundle, build_bundle
from edged.deploy.store import PluginStore, expected_chunks
from edged.deploy.trust import generate_key
from edged.errors import BundleRejected, DiskFull, StoreError
from edged.runtime import Plugin

ROOT = Path(__file__).resolve().parents[2]
COUNT_VOWELS = ROOT / "tests" / "plugins" / "build" / "count_vowels_c.wasm"


def base_wasm() -> bytes:
    if not COUNT_VOWELS.exists():
        pytest.fail(f"{COUNT_VOWELS} is missing: run plugins/build before the tests (tests/run does)")
    return COUNT_VOWELS.read_bytes()


def with_custom_section(wasm: bytes, payload: bytes) -> bytes:
    """The same module with a custom section appended: still valid, different bytes."""
    name = b"edged-test"
    body = bytes([len(name)]) + name + payload
    return wasm + bytes([0, len(body)]) + body


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def make(key: Ed25519PrivateKey):
    """``make(version, name="vowels", **kw)``: a signed bundle whose wasm differs per version."""
    cache: dict[tuple[str, str, bool], Bundle] = {}

    def build(version: str, name: str = "vowels", rollback: bool = False) -> Bundle:
        k = (name, version, rollback)
        if k not in cache:
            wasm = with_custom_section(base_wasm(), f"{name}@{version}".encode())
            cache[k] = build_bundle(name, version, wasm, {"config": {"v": version}}, key, rollback=rollback)
        return cache[k]

    return build


def install(store: PluginStore, b: Bundle, activate: bool = True):
    return store.install(b.meta, b.manifest, b.wasm, activate=activate)


def blobs(store: PluginStore) -> set[str]:
    return {p.name for p in store.blobs.iterdir()}


# --- install / activate / rollback -------------------------------------------------------------------------------


def test_install_activate_and_run_from_the_store(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path / "store")
    b = make("1.0.0")
    iv = install(store, b, activate=False)
    assert (iv.name, iv.version, iv.wasm_sha256) == ("vowels", "1.0.0", b.meta.wasm_sha256)
    assert store.active("vowels") is None and store.installed() == {}
    assert [v.version for v in store.versions("vowels")] == ["1.0.0"]
    assert store.activate("vowels", "1.0.0") == iv
    assert store.installed() == {"vowels": iv}
    path = store.wasm_path(iv)
    assert path == tmp_path / "store" / "blobs" / "sha256" / b.meta.wasm_sha256
    assert hashlib.sha256(path.read_bytes()).hexdigest() == b.meta.wasm_sha256
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # read-only blob (root may write anyway)
    assert oct(path.stat().st_mode & 0o777) == oct(0o444)
    # the record is plain JSON, readable by humans and other tools
    record = json.loads((tmp_path / "store" / "plugins" / "vowels.json").read_text())
    assert record["active"] == "1.0.0" and set(record["versions"]) == {"1.0.0"}
    # the runtime manifest loads and runs from the blob
    with Plugin(store.runtime_manifest(iv)) as plugin:
        assert json.loads(plugin.call("count_vowels", "Hello, World!"))["count"] == 3
    # a new store object sees the same
    again = PluginStore(tmp_path / "store")
    assert again.active("vowels") == iv


def test_install_is_idempotent_and_versions_are_immutable(tmp_path: Path, make, key: Ed25519PrivateKey) -> None:
    store = PluginStore(tmp_path)
    first = install(store, make("1.0.0"))
    assert install(store, make("1.0.0")) == first
    other = build_bundle("vowels", "1.0.0", base_wasm(), {}, key)
    with pytest.raises(StoreError, match="already installed with different wasm"):
        install(store, other)
    assert store.active("vowels") == first and len(blobs(store)) == 1


def test_install_refuses_wasm_that_does_not_match_the_meta(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    b = make("1.0.0")
    with pytest.raises(BundleRejected) as info:
        store.install(b.meta, b.manifest, b.wasm + b"\0")
    assert info.value.reason == "hash_mismatch"
    assert store.names() == [] and blobs(store) == set()
    with pytest.raises(BundleRejected) as info:
        store.install(b.meta, {**b.manifest, "config": {"v": "other"}}, b.wasm)
    assert info.value.reason == "manifest_mismatch"
    assert store.names() == [] and blobs(store) == set()
    with pytest.raises(BundleRejected) as info:
        store.install({"name": "x"}, b.manifest, b.wasm)  # type: ignore[arg-type]
    assert info.value.reason == "malformed"


def test_activate_and_rollback_walk_the_history(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        install(store, make(v))
    record = store.record("vowels")
    assert record is not None and record.active == "1.2.0" and record.history == ["1.0.0", "1.1.0"]
    assert record.previous == "1.1.0"
    assert store.rollback("vowels").version == "1.1.0"
    assert store.rollback("vowels").version == "1.0.0"
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback("vowels")
    assert store.active("vowels").version == "1.0.0"  # type: ignore[union-attr]
    # the versions rolled back from stay installed until gc
    assert [v.version for v in store.versions("vowels")] == ["1.0.0", "1.1.0", "1.2.0"]
    store.activate("vowels", "1.2.0")
    assert store.record("vowels").previous == "1.0.0"  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="not installed"):
        store.activate("vowels", "9.0.0")
    with pytest.raises(StoreError, match="not installed"):
        store.activate("nope", "1.0.0")
    with pytest.raises(StoreError, match="not installed"):
        store.rollback("nope")


def test_remove(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    install(store, make("1.0.0"))
    install(store, make("1.1.0"))
    with pytest.raises(StoreError, match="is active"):
        store.remove("vowels", "1.1.0")
    store.remove("vowels", "1.0.0")
    assert [v.version for v in store.versions("vowels")] == ["1.1.0"]
    assert store.record("vowels").previous is None  # type: ignore[union-attr]
    store.remove("vowels")
    assert store.active("vowels") is None and store.names() == []
    with pytest.raises(StoreError):
        store.remove("vowels")
    assert store.gc() == 2 and blobs(store) == set()


# --- keep-N and gc -----------------------------------------------------------------------------------------------


def test_gc_keeps_the_active_and_n_previous_versions(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path, keep=2)
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
    for v in versions:
        install(store, make(v))
    install(store, make("0.1.0", name="other"))
    assert len(blobs(store)) == 6
    assert store.gc() == 2
    assert [v.version for v in store.versions("vowels")] == ["1.2.0", "1.3.0", "1.4.0"]
    assert store.record("vowels").history == ["1.2.0", "1.3.0"]  # type: ignore[union-attr]
    assert blobs(store) == {make(v).meta.wasm_sha256 for v in ("1.2.0", "1.3.0", "1.4.0")} | {
        make("0.1.0", name="other").meta.wasm_sha256
    }
    assert store.gc() == 0
    # a staged (installed, not yet active) upgrade is never the one dropped
    install(store, make("1.5.0"), activate=False)
    store.gc()
    assert [v.version for v in store.versions("vowels")] == ["1.3.0", "1.4.0", "1.5.0"]
    assert store.active("vowels").version == "1.4.0"  # type: ignore[union-attr]
    # the rollback target survives gc
    assert store.rollback("vowels").version == "1.3.0"


def test_gc_with_keep_zero_and_shared_blobs(tmp_path: Path, make, key: Ed25519PrivateKey) -> None:
    store = PluginStore(tmp_path, keep=0)
    install(store, make("1.0.0"))
    # another plugin with the very same wasm shares the blob
    same = build_bundle("twin", "1.0.0", make("1.0.0").wasm, {}, key)
    install(store, same)
    assert len(blobs(store)) == 1
    install(store, make("2.0.0"))
    assert store.gc() == 0  # the old blob is still the twin's
    assert [v.version for v in store.versions("vowels")] == ["2.0.0"]
    store.remove("twin")
    assert store.gc() == 1


def test_gc_leaves_blobs_alone_while_a_record_is_corrupt(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    install(store, make("1.0.0"))
    install(store, make("1.0.0", name="other"))
    (tmp_path / "plugins" / "other.json").write_text("{broken")
    report = store.recover()
    assert report.corrupt_records and report.corrupt_records[0].startswith("other.json")
    assert (tmp_path / "plugins" / "other.json.corrupt").exists()
    assert store.gc() == 0 and len(blobs(store)) == 2


# --- recovery ----------------------------------------------------------------------------------------------------


def test_recover_on_a_clean_store_finds_nothing(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    install(store, make("1.0.0"))
    report = store.recover()
    assert report.clean and report.transfers == []


def test_recover_cleans_temp_files(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    install(store, make("1.0.0"))
    (tmp_path / "tmp" / "abc.tmp").write_bytes(b"half a blob")
    (tmp_path / "tmp" / "sub").mkdir()
    report = PluginStore(tmp_path).recover()
    assert sorted(report.temp_files_removed) == ["abc.tmp", "sub"]
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.active("vowels").version == "1.0.0"  # type: ignore[union-attr]


def test_recover_drops_versions_with_missing_or_corrupt_blobs(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        install(store, make(v))
    # the active version's blob is corrupted, the previous one's is lost
    active_blob = store.wasm_path(store.active("vowels"))  # type: ignore[arg-type]
    os.chmod(active_blob, 0o644)
    active_blob.write_bytes(b"\0asm bit rot")
    store.wasm_path(store.versions("vowels")[1]).unlink()
    report = store.recover()
    assert sorted(report.dropped_versions) == [
        "vowels@1.1.0: blob missing or corrupt",
        "vowels@1.2.0: blob missing or corrupt",
    ]
    assert report.corrupt_blobs == [make("1.2.0").meta.wasm_sha256]
    assert not active_blob.exists()
    iv = store.active("vowels")
    assert iv is not None and iv.version == "1.0.0"
    assert hashlib.sha256(store.wasm_path(iv).read_bytes()).hexdigest() == iv.wasm_sha256
    assert store.recover().clean


def test_recover_with_every_blob_gone_leaves_nothing_active(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    install(store, make("1.0.0"))
    for p in store.blobs.iterdir():
        p.unlink()
    store.recover()
    assert store.active("vowels") is None and store.versions("vowels") == []


def test_unreadable_record_is_reported_not_silently_used(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    install(store, make("1.0.0"))
    (tmp_path / "plugins" / "vowels.json").write_text('{"name": "vowels", "versions": 3}')
    with pytest.raises(StoreError, match="run recover"):
        store.active("vowels")
    store.recover()
    assert store.active("vowels") is None
    assert (tmp_path / "plugins" / "vowels.json.corrupt").read_text().startswith('{"name"')
    # a fresh install works afterwards
    install(store, make("1.0.0"))
    assert store.active("vowels").version == "1.0.0"  # type: ignore[union-attr]


# --- transfers ---------------------------------------------------------------------------------------------------


def chunks_of(data: bytes, size: int) -> list[tuple[bytes, str]]:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return [(p, hashlib.sha256(p).hexdigest()) for p in parts]


def test_transfer_resumes_across_store_objects(tmp_path: Path, make) -> None:
    b = make("1.0.0")
    size = 700
    parts = chunks_of(b.wasm, size)
    total = expected_chunks(len(b.wasm), size)
    assert total == len(parts) > 3

    store = PluginStore(tmp_path)
    t = store.transfer(b.meta, size, total)
    assert t.missing() == list(range(total)) and t.progress() == 0.0
    for i in (0, 2):
        assert t.put_chunk(i, *parts[i])
    assert not t.put_chunk(2, *parts[2])  # again: nothing to do
    del store, t

    # "restart": a new store object on the same directory picks up where it stopped
    store = PluginStore(tmp_path)
    assert store.recover().transfers == [b.meta.wasm_sha256]
    assert [x.meta for x in store.transfers()] == [b.meta]
    t = store.transfer(b.meta, size, total)
    assert t.received() == [0, 2]
    assert t.missing() == [1, *range(3, total)]
    assert t.progress() == pytest.approx(2 / total)
    for i in t.missing():
        t.put_chunk(i, *parts[i])
    assert t.complete and t.progress() == 1.0
    wasm = t.assemble()
    assert wasm == b.wasm
    store.install(b.meta, b.manifest, wasm, activate=True)
    t.discard()
    assert store.transfers() == [] and store.get_transfer(b.meta.wasm_sha256) is None


def test_transfer_rejects_bad_chunks_and_keeps_the_good_ones(tmp_path: Path, make) -> None:
    b = make("1.0.0")
    size = 1000
    parts = chunks_of(b.wasm, size)
    t = PluginStore(tmp_path).transfer(b.meta, size, len(parts))
    t.put_chunk(0, *parts[0])

    def reason(index: object, data: bytes, sha: str) -> str:
        with pytest.raises(BundleRejected) as info:
            t.put_chunk(index, data, sha)  # type: ignore[arg-type]
        return info.value.reason

    assert reason(1, parts[1][0], "0" * 64) == "hash_mismatch"
    assert reason(1, parts[1][0] + b"x", hashlib.sha256(parts[1][0] + b"x").hexdigest()) == "oversize"
    assert reason(1, parts[1][0][:-1], hashlib.sha256(parts[1][0][:-1]).hexdigest()) == "malformed"
    assert reason(len(parts), *parts[0]) == "malformed"
    assert reason(-1, *parts[0]) == "malformed"
    assert reason("1", *parts[1]) == "malformed"
    # the last chunk is short, and must be exactly as short as the signed size says
    assert reason(len(parts) - 1, parts[0][0], parts[0][1]) == "malformed"
    assert t.received() == [0]
    with pytest.raises(BundleRejected) as info:
        t.assemble()
    assert info.value.reason == "malformed" and "missing" in str(info.value)


def test_transfer_refuses_chunking_that_does_not_fit(tmp_path: Path, make) -> None:
    b = make("1.0.0")
    store = PluginStore(tmp_path)
    for size, total in ((1000, 1), (0, 5), (len(b.wasm), 2)):
        with pytest.raises(BundleRejected) as info:
            store.transfer(b.meta, size, total)
        assert info.value.reason == "malformed"
    assert store.transfers() == []


def test_new_chunking_restarts_the_transfer(tmp_path: Path, make) -> None:
    b = make("1.0.0")
    store = PluginStore(tmp_path)
    t = store.transfer(b.meta, 1000, expected_chunks(b.meta.wasm_size, 1000))
    t.put_chunk(0, *chunks_of(b.wasm, 1000)[0])
    t2 = store.transfer(b.meta, 500, expected_chunks(b.meta.wasm_size, 500))
    assert t2.received() == [] and t2.chunk_size == 500


def test_assemble_detects_corruption_on_disk(tmp_path: Path, make, key: Ed25519PrivateKey) -> None:
    b = make("1.0.0")
    size = 1000
    parts = chunks_of(b.wasm, size)
    store = PluginStore(tmp_path)
    t = store.transfer(b.meta, size, len(parts))
    for i, (data, sha) in enumerate(parts):
        t.put_chunk(i, data, sha)
    # a chunk rots on disk: it is dropped and fetched again
    chunk1 = next(p for p in (t.directory / "chunks").iterdir() if p.name.startswith("1."))
    chunk1.write_bytes(b"\0" * len(parts[1][0]))
    with pytest.raises(BundleRejected) as info:
        t.assemble()
    assert info.value.reason == "hash_mismatch" and t.missing() == [1]
    t.put_chunk(1, *parts[1])
    assert t.assemble() == b.wasm
    # chunks that each match what the sender said but not the signed whole: everything is fetched again
    other = with_custom_section(base_wasm(), b"vowels@1.0.1")
    assert len(other) == len(b.wasm)
    t.discard()
    t = store.transfer(b.meta, size, len(parts))
    for i, (data, sha) in enumerate(chunks_of(other, size)):
        t.put_chunk(i, data, sha)
    with pytest.raises(BundleRejected) as info:
        t.assemble()
    assert info.value.reason == "hash_mismatch"
    assert t.missing() == list(range(len(parts)))


def test_unreadable_transfer_state_is_dropped_by_recover(tmp_path: Path, make) -> None:
    b = make("1.0.0")
    store = PluginStore(tmp_path)
    t = store.transfer(b.meta, 1000, expected_chunks(b.meta.wasm_size, 1000))
    (t.directory / "state.json").write_text("nope")
    (tmp_path / "transfers" / "not-a-transfer").mkdir()
    assert store.recover().transfers == []
    assert list((tmp_path / "transfers").iterdir()) == []
    assert store.get_transfer("../../etc") is None


def test_names_from_commands_cannot_leave_the_store(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path / "store")
    install(store, make("1.0.0"))
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    for name in ("../../victim", "../plugins/vowels", "Vowels", "", "a/b"):
        with pytest.raises(StoreError, match="not a plugin name"):
            store.remove(name)
        with pytest.raises(StoreError, match="not a plugin name"):
            store.activate(name, "1.0.0")
        with pytest.raises(StoreError, match="not a plugin name"):
            store.rollback(name)
        with pytest.raises(StoreError, match="not a plugin name"):
            store.active(name)
    assert victim.exists() and store.active("vowels").version == "1.0.0"  # type: ignore[union-attr]
    # a stray file with a name no plugin can have is not taken for one
    (tmp_path / "store" / "plugins" / "Stray.json").write_text("{}")
    assert store.names() == ["vowels"] and list(store.installed()) == ["vowels"]


def test_a_full_disk_is_a_store_error_and_keeps_the_old_state(
    tmp_path: Path, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PluginStore(tmp_path)
    install(store, make("1.0.0"))
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(store.tmp)):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFull, match=r"the disk is full \(\d+ bytes free, \d+ needed\)") as err:
        install(store, make("2.0.0"))
    assert err.value.reason == "disk_full" and err.value.needed > 0
    with pytest.raises(DiskFull, match="the disk is full"):
        store.transfer(make("2.0.0").meta, 1000, expected_chunks(make("2.0.0").meta.wasm_size, 1000))
    monkeypatch.undo()
    assert list(store.tmp.iterdir()) == []
    assert store.active("vowels").version == "1.0.0"  # type: ignore[union-attr]
    assert store.recover().clean
    install(store, make("2.0.0"))
    assert store.active("vowels").version == "2.0.0"  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(min_value=-5, max_value=50) | st.text(max_size=3) | st.none() | st.floats(),
    data=st.binary(max_size=1200) | st.text(max_size=5),
    sha=st.text(max_size=70) | st.binary(max_size=32).map(lambda b: hashlib.sha256(b).hexdigest()) | st.none(),
)
def test_random_chunks_are_rejected_or_stored_never_crash(tmp_path: Path, make, index, data, sha) -> None:
    b = make("1.0.0")
    store = PluginStore(tmp_path / "fuzz")
    t = store.transfer(b.meta, 1000, expected_chunks(b.meta.wasm_size, 1000))
    try:
        stored = t.put_chunk(index, data, sha)
    except BundleRejected:
        return
    # only a chunk that really is the right length with the right hash gets in
    assert stored in (True, False) and isinstance(index, int)
    assert len(data) == t.chunk_length(index) and hashlib.sha256(data).hexdigest() == sha


def test_gc_and_recover_reclaim_unwanted_and_idle_transfers(tmp_path: Path, make) -> None:
    store = PluginStore(tmp_path)
    a, b, c = make("1.0.0"), make("2.0.0"), make("3.0.0")
    for bundle in (a, b, c):
        t = store.transfer(bundle.meta, 1000, expected_chunks(bundle.meta.wasm_size, 1000))
        part = bundle.wasm[:1000]
        t.put_chunk(0, part, hashlib.sha256(part).hexdigest())
    assert store.gc() == 0 and len(store.transfers()) == 3  # no keep list, none idle: all stay
    old = time.time() - 8 * 86400
    for p in (store.transfers_dir / c.meta.wasm_sha256).rglob("*"):
        os.utime(p, (old, old))
    os.utime(store.transfers_dir / c.meta.wasm_sha256, (old, old))
    store.gc()  # idle for more than a week: abandoned
    assert sorted(t.meta.version for t in store.transfers()) == ["1.0.0", "2.0.0"]
    store.gc(keep_transfers={a.meta.wasm_sha256})
    assert [t.meta.version for t in store.transfers()] == ["1.0.0"]
    report = store.recover(keep_transfers=set())
    assert report.reclaimed_transfers == [a.meta.wasm_sha256] and store.transfers() == []
    assert list(store.tmp.iterdir()) == []
