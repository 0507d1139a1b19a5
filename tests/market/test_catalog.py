"""The catalog on both backends (the same tests, parametrized): SQLite in a file and a real PostgreSQL server that
the ``postgres`` fixture starts itself. Migrations, bundles and blobs, desired state with a seq that stays unique
under concurrent writers, one active rollout per target, leases, membership records and bounded status rows."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edged.deploy.bundle import Bundle, build_bundle
from edged.deploy.trust import generate_key
from edged.errors import BundleRejected
from edged.market import CatalogError, RolloutConflict, RolloutPolicy, open_catalog, publish
from edged.market.catalog import MAX_STATUS_ROWS, DesiredEntry
from tests.conftest import ROOT
from tests.support.harness import ANIM_MANIFEST, anim_wasm


def test_publish_list_refusals_and_reopen(catalog_db: str) -> None:
    key = generate_key()
    cat = open_catalog(catalog_db)
    assert cat.schema_version() == 2
    publish(cat, anim_wasm("a1"), ANIM_MANIFEST, "glow", "1.0.0", key)
    publish(cat, anim_wasm("a2"), ANIM_MANIFEST, "glow", "1.10.0", key)
    publish(cat, anim_wasm("a3"), ANIM_MANIFEST, "glow", "1.9.0", key)
    assert [m.version for m in cat.bundles("glow")] == ["1.0.0", "1.9.0", "1.10.0"]  # semver order
    assert [m.version for m, _ in cat.manifests("glow")] == ["1.0.0", "1.9.0", "1.10.0"]
    with pytest.raises(CatalogError, match="already published"):
        publish(cat, anim_wasm("other"), ANIM_MANIFEST, "glow", "1.0.0", key)
    with pytest.raises(BundleRejected) as exc:
        publish(cat, b"\0asm garbage", ANIM_MANIFEST, "bad", "1.0.0", key)
    assert exc.value.reason == "invalid_wasm"
    assert [m.name for m in cat.bundles()] == ["glow"] * 3  # nothing half-published
    assert cat.plugin_names() == {"glow"}
    cat.set_desired("group:lobby", {"glow": DesiredEntry(version="1.9.0")}, 7)
    cat.close()
    again = open_catalog(catalog_db)  # another process: serve and the CLI share it; migrations are not re-run
    assert again.schema_version() == 2
    assert again.get_desired("group:lobby") == ({"glow": DesiredEntry(version="1.9.0")}, 7)
    b = again.get_bundle("glow", "1.10.0")
    assert b is not None and b.wasm == anim_wasm("a2")
    wasm = b.wasm
    sha = b.meta.wasm_sha256
    assert again.blob_size(sha) == len(wasm)
    for off, size in ((0, 100), (37, 1000), (len(wasm) - 10, 4096)):
        assert again.read_chunk(sha, off, size) == wasm[off : off + size]
    assert again.read_chunk("0" * 64, 0, 10) is None and again.bundle_info("glow", "9.9.9") is None
    again.close()


def test_seq_is_unique_per_target_under_concurrent_writers(catalog_db: str) -> None:
    """Two writers (own connections, as two processes would have) x 150 updates of one target: every seq is used
    exactly once and names exactly one document."""
    open_catalog(catalog_db).close()
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        cat = open_catalog(catalog_db)
        try:
            for i in range(150):
                entries, seq = cat.update_desired(
                    "group:lobby", lambda e, i=i: {**e, "glow": DesiredEntry(version=f"1.{i}.0-{tag}")}
                )
                with lock:
                    seen.append((seq, entries["glow"].version))
        except BaseException as exc:
            errors.append(exc)
        finally:
            cat.close()

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    seqs = [s for s, _ in seen]
    assert sorted(seqs) == list(range(1, 301))  # unique and gap-free
    cat = open_catalog(catalog_db)
    entries, seq = cat.get_desired("group:lobby")
    assert seq == 300 and entries["glow"].version == dict(seen)[300]
    # a change that changes nothing keeps the seq
    assert cat.update_desired("group:lobby", lambda e: None)[1] == 300
    cat.close()


def _plan(n: int) -> list[tuple[str, int, str]]:
    return [(f"d{i}", 0, "planned") for i in range(n)]


def test_one_active_rollout_per_target_and_leases(catalog_db: str) -> None:
    cat = open_catalog(catalog_db)
    rid = cat.create_rollout("glow", "1.0.0", "group:lobby", RolloutPolicy(), _plan(3), {})
    with pytest.raises(RolloutConflict, match=f"rollout {rid} .*is running on group:lobby"):
        cat.create_rollout("glow", "2.0.0", "group:lobby", RolloutPolicy(), _plan(3), {})
    other = cat.create_rollout("glow", "2.0.0", "group:hall", RolloutPolicy(), _plan(1), {})  # another target
    assert cat.rollout(rid).counts == {"planned": 3}  # type: ignore[union-attr]
    # leases: one serve holds a rollout until its lease runs out
    assert cat.claim_rollouts("serve-a", 30) == [rid, other]
    assert cat.claim_rollouts("serve-b", 30) == []
    assert cat.claim_rollouts("serve-a", 30, rid) == [rid]  # renewing
    cat.release_rollouts("serve-a")
    assert cat.claim_rollouts("serve-b", -1) == [rid, other]  # an expired lease (negative: already run out)
    assert cat.claim_rollouts("serve-a", 30) == [rid, other]
    # compare-and-set state changes
    assert cat.set_rollout(rid, state="paused", expect=("running",))
    assert not cat.set_rollout(rid, state="paused", expect=("running",))
    cat.update_rollout_device(rid, "d1", state="healthy", percent=100.0, seq=4, source="group:lobby")
    d1 = next(d for d in cat.rollout_devices(rid) if d.device == "d1")
    assert (d1.state, d1.seq, d1.source) == ("healthy", 4, "group:lobby")
    assert cat.set_rollout(rid, state="done", expect=("paused",))
    assert [r.id for r in cat.rollouts(active=True)] == [other]
    again = cat.create_rollout("glow", "2.0.0", "group:lobby", RolloutPolicy(), _plan(1), {})  # free again
    assert again > rid
    cat.close()


def test_concurrent_creates_one_wins(catalog_db: str) -> None:
    open_catalog(catalog_db).close()
    results: list[object] = []

    def create(v: str) -> None:
        cat = open_catalog(catalog_db)
        try:
            results.append(cat.create_rollout("glow", v, "group:lobby", RolloutPolicy(), _plan(50), {}))
        except RolloutConflict as exc:
            results.append(exc)
        finally:
            cat.close()

    threads = [threading.Thread(target=create, args=(f"1.{i}.0",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, int) for r in results) == 1, results
    assert sum(isinstance(r, RolloutConflict) for r in results) == 3


def test_membership_records_and_bounded_status_rows(catalog_db: str) -> None:
    cat = open_catalog(catalog_db)
    cat.update_device("d1", presence="online", groups=["lobby", "vip"])  # what the device claims
    assert cat.device("d1").groups == [] and cat.device("d1").claimed_groups == ["lobby", "vip"]  # type: ignore[union-attr]
    cat.set_members("lobby", add=["d1", "d2"])
    cat.set_members("hall", add=["d2"])
    assert cat.group_members("lobby") == ["d1", "d2"] and cat.groups_of("d2") == ["hall", "lobby"]
    assert cat.device("d1").groups == ["lobby"]  # type: ignore[union-attr]
    cat.set_members("lobby", remove=["d1"])
    assert cat.group_members("lobby") == ["d2"] and cat.groups() == {"hall": ["d2"], "lobby": ["d2"]}
    for i in range(MAX_STATUS_ROWS + 50):
        cat.set_plugin_status("d1", f"p{i}", {"state": "downloading"})
    assert cat.status_rows("d1") == MAX_STATUS_ROWS
    assert cat.set_plugin_status("d1", "p0", {"state": "healthy"})  # an existing row is still updated
    assert cat.device("d1").status["p0"] == {"state": "healthy"}  # type: ignore[union-attr]
    cat.grant_chunks("d1", "a" * 64, 60)
    cat.grant_chunks("d1", "b" * 64, -1)  # expired
    assert cat.granted("d1") == {"a" * 64} and cat.has_grant("d1", "a" * 64)
    cat.close()


def test_sqlite_catalog_of_the_previous_release_is_migrated(tmp_path: Path) -> None:
    """A catalog.db written before migrations existed (wasm inside the bundles table, no rollout devices)."""
    key = generate_key()
    b = build_bundle("glow", "1.0.0", anim_wasm("old"), ANIM_MANIFEST, key)
    db = sqlite3.connect(tmp_path / "catalog.db")
    schema = (ROOT / "edged/market/migrations/sqlite/0001_initial.sql").read_text()
    db.executescript(schema)
    m = b.meta
    db.execute(
        "INSERT INTO bundles VALUES (?,?,?,?,?,?,?)",
        (m.name, m.version, m.wasm_sha256, m.model_dump_json(), json.dumps(b.manifest), b.wasm, m.created_at),
    )
    db.execute("INSERT INTO rollouts (name, version, target, canary, halt, state, created_at) VALUES "
               "('glow', '1.0.0', 'group:lobby', 0, 0, 'started', 0)")  # fmt: skip
    db.commit()
    db.close()
    cat = open_catalog(tmp_path / "catalog.db")
    assert cat.schema_version() == 2
    assert cat.get_bundle("glow", "1.0.0").wasm == b.wasm  # type: ignore[union-attr]
    assert cat.rollouts()[0].state == "interrupted"  # a CLI killed mid-rollout left it "started"
    cat.close()


def test_show_never_reads_the_blobs(catalog_db: str, tmp_path: Path) -> None:
    """`edged market show` of a plugin with 100 versions of 1 MB stays under 100 MB RSS (measured in a child)."""
    key = generate_key()
    base = build_bundle("big", "1.0.0", anim_wasm("big", pad=1024 * 1024), ANIM_MANIFEST, key)
    cat = open_catalog(catalog_db)
    for i in range(100):
        wasm = base.wasm + bytes([0, 1, i])  # distinct blobs (the catalog stores what it is given)
        meta = base.meta.model_copy(
            update={"version": f"1.0.{i}", "wasm_sha256": hashlib.sha256(wasm).hexdigest(), "wasm_size": len(wasm)}
        )
        cat.add_bundle(Bundle(meta=meta, manifest=base.manifest, wasm=wasm))
    cat.close()
    probe = (
        "import sys\n"
        "from edged.cli import main\n"
        f"rc = main(['market', '--db', {catalog_db!r}, 'show', 'big'])\n"
        # VmHWM is this process's own peak RSS: ru_maxrss would also count the parent's, which Linux carries over
        # exec from the forked (or vforked) image, and the parent has just written 100 MB
        "peak = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1]\n"
        "print('RSS', peak, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert len(shown) == 100 and shown[-1]["version"] == "1.0.99"
    rss_kb = int(proc.stderr.rsplit("RSS", 1)[1].split()[0])
    assert rss_kb < 100 * 1024, f"show used {rss_kb / 1024:.0f} MB RSS"


def test_cli_bad_input_on_the_catalog(catalog_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edged.cli import main
    from edged.deploy.testing import free_port

    def run(db: str, *args: str) -> tuple[int, str, str]:
        rc = main(["market", "--db", db, *args])
        out, err = capsys.readouterr()
        return rc, out, err

    # a catalog that cannot be opened: said plainly, exit 2, no traceback
    (tmp_path / "a-dir").mkdir()
    for bad in (str(tmp_path / "a-dir"), f"postgresql://edged:secret@127.0.0.1:{free_port()}/nope"):
        rc, _, err = run(bad, "list")
        assert rc == 2 and "cannot open the catalog" in err and "secret" not in err, err
    rc, out, _ = run(catalog_db, "rollouts")
    assert rc == 0 and out.split() == ["id", "plugin", "target", "state", "devices", "counts", "created"]
    rc, _, err = run(catalog_db, "rollout", "show", "999")
    assert rc == 1 and "no rollout 999" in err
    cat = open_catalog(catalog_db)
    rid = cat.create_rollout("glow", "1.0.0", "group:lobby", RolloutPolicy(), _plan(2), {})
    cat.set_rollout(rid, state="done")
    cat.close()
    for action in ("pause", "resume", "abort"):
        rc, _, err = run(catalog_db, "rollout", action, str(rid))
        assert rc == 1 and f"rollout {rid} is done" in err, err
    rc, out, _ = run(catalog_db, "rollout", "show", str(rid))
    assert rc == 0 and "glow@1.0.0 to group:lobby: done" in out and "planned=2" in out
    rc, _, err = run(catalog_db, "group", "add", "bad group", "d1")
    assert rc == 2 and "invalid group id" in err
    rc, _, err = run(catalog_db, "group", "add", "lobby")
    assert rc == 2 and "needs GROUP and at least one DEVICE" in err
    rc, _, err = run(catalog_db, "group", "add", "lobby", "d/1")
    assert rc == 2 and "invalid device id" in err
    rc, out, _ = run(catalog_db, "group", "add", "lobby", "d1", "d2")
    assert rc == 0 and "group lobby: d1, d2" in out
    rc, out, _ = run(catalog_db, "group", "remove", "lobby", "d1")
    assert rc == 0 and "group lobby: d2" in out
    rc, out, _ = run(catalog_db, "group", "list")
    assert rc == 0 and "lobby  d2" in out
