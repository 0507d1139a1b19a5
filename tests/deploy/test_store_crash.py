"""Crash safety for real: a child process kills itself with SIGKILL at each write point of an install, an
activation or a chunk download; the store, reopened and recovered, holds exactly the old or exactly the new state."""

from __future__ import annotations

import errno
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.deploy.bundle import Bundle, build_bundle, write_bundle
from edged.deploy.store import CHECKPOINTS, PluginStore, expected_chunks
from edged.deploy.trust import generate_key
from edged.errors import DiskFull
from edged.runtime import Plugin
from tests.deploy.test_store import with_custom_section

ROOT = Path(__file__).resolve().parents[2]
COUNT_VOWELS = ROOT / "tests" / "plugins" / "build" / "count_vowels_c.wasm"

# The child: open the store with a checkpoint hook that SIGKILLs the process at the named point, then do the work.
CHILD = """
import hashlib, os, signal, sys
from edged.deploy.bundle import read_bundle
from edged.deploy.store import PluginStore

root, bundle_path, point, op = sys.argv[1:5]

def hook(name):
    if name == point:
        os.kill(os.getpid(), signal.SIGKILL)

store = PluginStore(root, checkpoint=hook)
b = read_bundle(bundle_path)
if op == "install":
    store.install(b.meta, b.manifest, b.wasm, activate=True)
elif op == "activate":
    store.activate(b.meta.name, b.meta.version)
elif op == "rollback":
    store.rollback(b.meta.name)
elif op == "chunk":
    size = int(sys.argv[5])
    t = store.transfer(b.meta, size, -(-len(b.wasm) // size))
    for i in t.missing():
        part = b.wasm[i * size:(i + 1) * size]
        t.put_chunk(i, part, hashlib.sha256(part).hexdigest())
elif op in ("discard", "reclaim", "gc"):
    size = int(sys.argv[5])
    t = store.transfer(b.meta, size, -(-len(b.wasm) // size))
    for i in t.missing()[:3]:
        part = b.wasm[i * size:(i + 1) * size]
        t.put_chunk(i, part, hashlib.sha256(part).hexdigest())
    if op == "discard":
        t.discard()
    elif op == "reclaim":
        store.reclaim_transfers(keep=set())
    else:
        store.gc(keep_transfers=set())
sys.exit(0)
"""


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def bundles(key: Ed25519PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Bundle, Path]]:
    if not COUNT_VOWELS.exists():
        pytest.fail(f"{COUNT_VOWELS} is missing: run plugins/build before the tests (tests/run does)")
    out = {}
    directory = tmp_path_factory.mktemp("bundles")
    for version in ("1.0.0", "2.0.0"):
        wasm = with_custom_section(COUNT_VOWELS.read_bytes(), version.encode())
        b = build_bundle("vowels", version, wasm, {"config": {"v": version}}, key)
        path = directory / f"vowels-{version}.edb"
        write_bundle(b, path)
        out[version] = (b, path)
    return out


def crash(root: Path, bundle_path: Path, point: str, op: str, *extra: str) -> None:
    """Run ``op`` in a child that must die by SIGKILL at ``point`` (if it got past it, the test is void)."""
    assert point in CHECKPOINTS
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(bundle_path), point, op, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, f"child did not die at {point}: rc={proc.returncode} {proc.stderr}"


def check_whole(store: PluginStore, expected: dict[str, str | None], versions: set[str]) -> None:
    """The active version is the expected one, exactly ``versions`` are installed, every blob hashes right, the
    active plugin runs, and no temp file is left."""
    iv = store.active("vowels")
    assert (iv.version if iv else None) == expected["active"]
    assert {v.version for v in store.versions("vowels")} == versions
    for v in store.versions("vowels"):
        assert hashlib.sha256(store.wasm_path(v).read_bytes()).hexdigest() == v.wasm_sha256
        assert v.manifest["config"] == {"v": v.version}  # the record never mixes one version's parts with another's
    assert list(store.tmp.iterdir()) == []
    if iv is not None:
        with Plugin(store.runtime_manifest(iv)) as plugin:
            assert json.loads(plugin.call("count_vowels", "aeiou"))["count"] == 5


@pytest.mark.parametrize(
    "point,new",
    [
        ("after_temp_write", False),
        ("after_blob_rename", False),
        ("after_record_temp_write", False),
        ("after_record_rename", True),
    ],
)
def test_kill_during_an_upgrade(tmp_path: Path, bundles, point: str, new: bool) -> None:
    (old, _), (_, new_path) = bundles["1.0.0"], bundles["2.0.0"]
    root = tmp_path / "store"
    PluginStore(root).install(old.meta, old.manifest, old.wasm, activate=True)

    crash(root, new_path, point, "install")

    debris = list((root / "tmp").iterdir())
    assert bool(debris) == (point in ("after_temp_write", "after_record_temp_write"))
    store = PluginStore(root)
    report = store.recover()
    assert sorted(report.temp_files_removed) == sorted(p.name for p in debris)
    assert report.dropped_versions == [] and report.corrupt_records == [] and report.corrupt_blobs == []
    if new:
        check_whole(store, {"active": "2.0.0"}, {"1.0.0", "2.0.0"})
        assert store.record("vowels").previous == "1.0.0"  # type: ignore[union-attr]
    else:
        check_whole(store, {"active": "1.0.0"}, {"1.0.0"})
        # a blob renamed into place but never referenced is garbage, and gc finds it
        assert store.gc() == (0 if point == "after_temp_write" else 1)
    # and the interrupted install can simply be done again
    b = bundles["2.0.0"][0]
    store.install(b.meta, b.manifest, b.wasm, activate=True)
    check_whole(store, {"active": "2.0.0"}, {"1.0.0", "2.0.0"})


@pytest.mark.parametrize("point", ["after_temp_write", "after_blob_rename", "after_record_temp_write"])
def test_kill_during_a_first_install(tmp_path: Path, bundles, point: str) -> None:
    root = tmp_path / "store"
    crash(root, bundles["1.0.0"][1], point, "install")
    store = PluginStore(root)
    store.recover()
    assert store.names() == []
    check_whole(store, {"active": None}, set())


@pytest.mark.parametrize("point,new", [("after_record_temp_write", False), ("after_record_rename", True)])
@pytest.mark.parametrize("op", ["activate", "rollback"])
def test_kill_during_activate_and_rollback(tmp_path: Path, bundles, point: str, new: bool, op: str) -> None:
    (old, _), (upgrade, upgrade_path) = bundles["1.0.0"], bundles["2.0.0"]
    root = tmp_path / "store"
    store = PluginStore(root)
    store.install(old.meta, old.manifest, old.wasm, activate=True)
    store.install(upgrade.meta, upgrade.manifest, upgrade.wasm, activate=(op == "rollback"))
    before = "1.0.0" if op == "activate" else "2.0.0"
    after = "2.0.0" if op == "activate" else "1.0.0"

    crash(root, upgrade_path, point, op)

    store = PluginStore(root)
    store.recover()
    check_whole(store, {"active": after if new else before}, {"1.0.0", "2.0.0"})


@pytest.mark.parametrize("point", ["after_chunk_temp_write", "after_chunk_rename", "after_state_temp_write"])
def test_kill_during_a_download_then_resume(tmp_path: Path, bundles, point: str) -> None:
    b, path = bundles["2.0.0"]
    root = tmp_path / "store"
    size = 512
    total = expected_chunks(b.meta.wasm_size, size)

    crash(root, path, point, "chunk", str(size))

    store = PluginStore(root)
    report = store.recover()
    assert list(store.tmp.iterdir()) == []
    if point == "after_state_temp_write":
        # died before the transfer existed: nothing to resume, start afresh
        assert report.transfers == [] and store.transfers() == []
    else:
        assert report.transfers == [b.meta.wasm_sha256]
    t = store.transfer(b.meta, size, total)
    got = t.received()
    assert got == ([0] if point == "after_chunk_rename" else [])
    for i in t.missing():
        part = b.wasm[i * size : (i + 1) * size]
        t.put_chunk(i, part, hashlib.sha256(part).hexdigest())
    assert t.assemble() == b.wasm


@pytest.mark.parametrize("op", ["discard", "reclaim", "gc"])
def test_kill_while_a_partial_download_is_reclaimed(tmp_path: Path, bundles, op: str) -> None:
    """Reclaiming a transfer detaches its directory into tmp/ in one rename; killed right after, the transfer is
    gone and recovery deletes the rest, while the installed version stays whole."""
    (old, _), (_, new_path) = bundles["1.0.0"], bundles["2.0.0"]
    root = tmp_path / "store"
    PluginStore(root).install(old.meta, old.manifest, old.wasm, activate=True)

    crash(root, new_path, "after_transfer_detach", op, "512")

    assert list((root / "transfers").iterdir()) == []
    assert [p.name.startswith("transfer-") for p in (root / "tmp").iterdir()] == [True]
    store = PluginStore(root)
    store.recover()
    assert store.transfers() == []
    check_whole(store, {"active": "1.0.0"}, {"1.0.0"})


@pytest.mark.parametrize(
    "point,op",
    [
        ("after_temp_write", "install"),
        ("after_record_temp_write", "install"),
        ("after_record_temp_write", "activate"),
        ("after_record_temp_write", "rollback"),
        ("after_chunk_temp_write", "chunk"),
        ("after_state_temp_write", "transfer"),
    ],
)
def test_enospc_at_every_write_is_disk_full_and_changes_nothing(tmp_path: Path, bundles, point: str, op: str) -> None:
    """ENOSPC at each write of the store (raised where the temp file is written) is ``DiskFull`` with its numbers;
    the store keeps its old state, leaves no temp file, and the same operation works once there is room."""
    (old, _), (new, _) = bundles["1.0.0"], bundles["2.0.0"]
    root = tmp_path / "store"
    full = {"on": False}

    def hook(name: str) -> None:
        if full["on"] and name == point:
            raise OSError(errno.ENOSPC, "No space left on device")

    store = PluginStore(root, checkpoint=hook)
    store.install(old.meta, old.manifest, old.wasm, activate=True)
    if op in ("activate", "rollback"):
        store.install(new.meta, new.manifest, new.wasm, activate=(op == "rollback"))
    before = store.record("vowels")
    size = 512
    total = expected_chunks(new.meta.wasm_size, size)
    transfer = store.transfer(new.meta, size, total) if op == "chunk" else None

    def run() -> None:
        if op == "install":
            store.install(new.meta, new.manifest, new.wasm, activate=True)
        elif op == "activate":
            store.activate("vowels", "2.0.0")
        elif op == "rollback":
            store.rollback("vowels")
        elif op == "chunk":
            assert transfer is not None
            part = new.wasm[:size]
            transfer.put_chunk(0, part, hashlib.sha256(part).hexdigest())
        else:
            store.transfer(new.meta, size, total)

    full["on"] = True
    with pytest.raises(DiskFull, match=r"the disk is full \(-?\d+ bytes free, \d+ needed\)") as err:
        run()
    assert err.value.reason == "disk_full" and err.value.needed > 0
    assert store.record("vowels") == before and list(store.tmp.iterdir()) == []
    assert transfer is None or transfer.received() == []
    assert op != "transfer" or store.transfers() == []
    full["on"] = False
    run()


LOOP_CHILD = """
import sys
from edged.deploy.bundle import read_bundle
from edged.deploy.store import PluginStore

root, *paths = sys.argv[1:]
bundles = [read_bundle(p) for p in paths]
store = PluginStore(root, keep=2)
print("ready", flush=True)
while True:
    for b in bundles:
        store.install(b.meta, b.manifest, b.wasm, activate=True)
        store.gc()
        if b.meta.version.endswith(".1.0"):
            store.rollback(b.meta.name)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay_ms", [0, 3, 7, 15, 40])
def test_kill_at_an_arbitrary_moment(tmp_path: Path, key: Ed25519PrivateKey, delay_ms: int) -> None:
    """Not at a chosen point: the child installs, activates, rolls back and collects garbage in a loop, and is
    killed whenever the delay ends. Whatever it was doing, the recovered store is whole."""
    paths = []
    base = COUNT_VOWELS.read_bytes()
    for major in range(1, 4):
        for minor in range(3):
            version = f"{major}.{minor}.0"
            b = build_bundle(
                "vowels", version, with_custom_section(base, version.encode()), {"config": {"v": version}}, key
            )
            path = tmp_path / f"{version}.edb"
            write_bundle(b, path)
            paths.append(str(path))
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", LOOP_CHILD, str(root), *paths], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay_ms / 1000)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    store = PluginStore(root)
    report = store.recover()
    assert report.dropped_versions == [] and report.corrupt_records == [] and report.corrupt_blobs == []
    record = store.record("vowels")
    if record is None:  # killed before the first install finished
        assert store.names() == []
        return
    assert record.active in record.versions
    assert all(v in record.versions for v in record.history)
    check_whole(store, {"active": record.active}, set(record.versions))
