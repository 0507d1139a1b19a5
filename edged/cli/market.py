"""``edged market``: the marketplace. Publish signed plugin bundles and deploy them to devices over MQTT.

``keygen`` makes the marketplace key (and a trust file for devices); ``publish`` checks (as ``edged plugin check``),
signs and stores a plugin, its name and version from its manifest; ``list``/``show`` read the catalog; ``group
add|remove|list`` records which devices belong to a group (the marketplace never trusts the groups a device
claims); ``deploy NAME@VERSION`` records a rollout to a device or a
group (optionally a canary fraction first, then waves, halting past a failure rate) that ``serve`` executes, and
returns, or with ``--wait`` follows it with one aggregate progress bar; ``rollouts`` lists rollouts with per-state
counts and ``rollout show|pause|resume|abort|revert ID`` inspects or steers one; ``rollback`` goes back one version;
``unpin NAME --device D`` ends a device's own entry for a plugin (a pin) so it follows its groups again;
``playlist`` sets what a device or group plays; ``command DEVICE OP [NAME[@VERSION]]`` sends one signed command and
prints the reply; ``status`` shows every device with its pins; ``serve`` runs rollouts, answers chunk requests and
tracks device state. ``--db`` is a SQLite file (the default) or a ``postgresql://`` URL shared by several
``serve`` processes. Exit code 0 on success, 1 when something failed (a rollout halted, a device failed), 2 for bad
usage, a broker that cannot be reached, no ``serve`` to run the rollout, a target with a rollout already active,
or a ``deploy`` target the marketplace does not know (a device never seen, or a group with no recorded member;
``--allow-unknown`` publishes anyway).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..daemon.paths import default_state_dir
from ..deploy import topics
from ..deploy.broker import BrokerConfig
from ..deploy.bundle import build_bundle
from ..deploy.trust import TrustStore, generate_key, key_id, load_private_key, public_key_b64, save_private_key
from ..errors import BundleRejected, ConfigError, EdgedError, NoChunkService, UnknownTarget
from ..market import (
    CatalogUnavailable,
    Marketplace,
    RolloutConflict,
    RolloutPolicy,
    RolloutRunner,
    open_catalog,
    publish,
)
from ..market import rollout as rollouts
from ..market.catalog import PostgresCatalog, RolloutRecord, SQLiteCatalog
from .exitcodes import ExitCode
from .stopsignals import stop_on_signals

log = logging.getLogger("edged.cli.market")


def _default_dir() -> Path:
    return default_state_dir() / "market"


def register(sub: Any) -> None:
    p = sub.add_parser("market", help="publish and deploy plugins over MQTT", description=__doc__)
    p.add_argument(
        "--db",
        help="catalog: a SQLite file (default: <state dir>/market/catalog.db) or a postgresql:// URL",
    )
    p.add_argument("--key", type=Path, help="marketplace signing key (default: <state dir>/market/market.key)")
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT", help="MQTT broker")
    p.add_argument("--username", help="MQTT user (the ACL expects 'market')")
    p.add_argument("--password", help="MQTT password")
    p.add_argument("--ca", type=Path, help="CA certificate: connect with TLS")
    ms = p.add_subparsers(dest="market_command", metavar="ACTION", required=True)

    k = ms.add_parser("keygen", help="create the marketplace key and a trust file for devices")
    k.add_argument("--trust-out", type=Path, help="write a device trust file here (default: next to the key)")
    k.add_argument("--force", action="store_true", help="replace an existing key")

    pub = ms.add_parser("publish", help="check, sign and store a plugin (name and version from its manifest)")
    pub.add_argument("wasm", type=Path, metavar="PLUGIN", help="the plugin's .wasm, or its folder (holding NAME.wasm)")
    pub.add_argument(
        "--manifest", type=Path, help="manifest JSON with the edged block (default: the one beside the .wasm)"
    )
    pub.add_argument("--name", help="plugin name, if the manifest has no edged.name (it must match one)")
    pub.add_argument("--version", help="version, if the manifest has no edged.version (it must match one)")
    pub.add_argument("--rollback", action="store_true", help="sign it as an allowed downgrade")
    pub.add_argument("--force", action="store_true", help="publish even if `edged plugin check` fails it")

    ms.add_parser("list", help="published plugins")
    sh = ms.add_parser("show", help="one plugin's versions and metadata")
    sh.add_argument("name", help="plugin name")

    d = ms.add_parser("deploy", help="roll NAME@VERSION out to a device or a group (executed by `serve`)")
    d.add_argument("ref", metavar="NAME@VERSION", help="a published plugin version")
    _target(d)
    d.add_argument("--canary", type=float, default=0.0, metavar="FRACTION", help="deploy to this fraction first")
    d.add_argument(
        "--halt-failure-rate",
        type=float,
        default=0.2,
        metavar="R",
        help="halt when failed (or timed out) / finished devices goes past R (default 0.2; 1 never halts)",
    )
    d.add_argument(
        "--halt-min-finished",
        type=int,
        default=10,
        metavar="N",
        help="judge the failure rate only once N devices finished (default 10, at most the target's size)",
    )
    d.add_argument(
        "--wave",
        type=float,
        metavar="FRACTION",
        help="move this fraction of the group per wave, halting between waves (default 0.25 when R < 1, else 1)",
    )
    d.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="a started device with no outcome after S seconds is timed_out (a failure)",
    )
    d.add_argument(
        "--on-abort",
        choices=["finish", "rollback"],
        default="finish",
        help="on a halt or abort, started devices finish (keeping the version, pinned) or roll back",
    )
    d.add_argument("--wait", action="store_true", help="follow the rollout until it is over (one progress bar)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar while waiting")
    d.add_argument(
        "--serve-chunks",
        action="store_true",
        help="run the rollout and answer chunk requests in this process (no `serve` running); implies --wait",
    )
    d.add_argument(
        "--allow-unknown",
        action="store_true",
        help="publish even for a device (or an empty group) the marketplace does not know: it converges when it "
        "first connects",
    )

    ms.add_parser("rollouts", help="every rollout with its state and per-state device counts")
    ro = ms.add_parser("rollout", help="show, pause, resume, abort or revert one rollout")
    ro.add_argument(
        "action",
        choices=["show", "pause", "resume", "abort", "revert"],
        help="show its devices; pause or resume starting devices; abort it; revert it across its target",
    )
    ro.add_argument("id", type=int, metavar="ID", help="the rollout's id (see `edged market rollouts`)")
    ro.add_argument(
        "--on-abort",
        choices=["finish", "rollback"],
        help="abort: started devices finish or roll back (default: the rollout's own choice)",
    )

    gr = ms.add_parser("group", help="record which devices belong to a group")
    gr.add_argument("action", choices=["add", "remove", "list"], help="add or remove members, or list groups")
    gr.add_argument("group", nargs="?", metavar="GROUP", help="the group (list: only this one)")
    gr.add_argument("devices", nargs="*", metavar="DEVICE", help="device ids to add or remove")

    r = ms.add_parser("rollback", help="go back to the version before the deployed one")
    r.add_argument("name", help="plugin name")
    _target(r)

    u = ms.add_parser("unpin", help="drop a device's own entry for a plugin, so it follows its groups again")
    u.add_argument("name", help="plugin name")
    u.add_argument("--device", metavar="ID", required=True, help="the device whose own entry to drop")

    pl = ms.add_parser("playlist", help="set (or --clear) the playlist of a device or a group")
    pl.add_argument("items", nargs="?", metavar="NAME[,NAME...]", help="plugin names in play order")
    _target(pl)
    pl.add_argument("--clear", action="store_true", help="ask for no playlist: devices keep their own")

    c = ms.add_parser("command", help="send one signed command to a device and wait for its reply")
    c.add_argument("device", metavar="DEVICE", help="device id")
    c.add_argument(
        "op", choices=["install", "remove", "restart", "identify", "rollback"], help="what the device should do"
    )
    c.add_argument(
        "plugin",
        nargs="?",
        metavar="NAME[@VERSION]",
        help="install: NAME@VERSION; rollback: NAME[@FROM] (default FROM: the version the device reports); else NAME",
    )
    c.add_argument("--allow-downgrade", action="store_true", help="install: sign it as an allowed downgrade")
    c.add_argument("--timeout", type=float, default=120.0, metavar="S", help="wait this long for the reply")
    c.add_argument("--serve-chunks", action="store_true", help="answer chunk requests too (no `serve` running)")

    ms.add_parser("status", help="per-device table: version, state, pins, last seen")
    sv = ms.add_parser("serve", help="run rollouts, answer chunk requests and track device state until interrupted")
    sv.add_argument(
        "--name",
        metavar="ID",
        help="this service's id (MQTT client id and rollout lease owner; default: random). A serve restarted with "
        "the same name resumes its rollouts at once instead of waiting for its old lease to run out; never give "
        "two running serves one name",
    )
    sv.add_argument(
        "--max-inflight-mb",
        type=float,
        default=8.0,
        metavar="MB",
        help="most chunk data published and not yet acknowledged by the broker (default 8)",
    )
    sv.add_argument(
        "--device-rate-kb",
        type=float,
        default=2048.0,
        metavar="KB",
        help="chunk data per device per second (default 2048; bursts of twice that)",
    )
    p.set_defaults(handler=run)


def _target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--device", metavar="ID", help="one device, by id")
    g.add_argument("--group", metavar="G", help="every device of a group")


def _paths(args: argparse.Namespace) -> tuple[str, Path]:
    base = _default_dir()
    return args.db or str(base / "catalog.db"), args.key or base / "market.key"


def _broker(args: argparse.Namespace) -> BrokerConfig:
    host, sep, port = args.broker.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--broker expects HOST:PORT, got {args.broker!r}")
    return BrokerConfig(host=host, port=int(port), username=args.username, password=args.password, ca_file=args.ca)


def run(args: argparse.Namespace) -> int:
    try:
        return _ACTIONS[args.market_command](args)
    except FileNotFoundError as exc:
        print(f"edged market: no such file: {exc.filename}", file=sys.stderr)
        return ExitCode.USAGE
    except (NoChunkService, UnknownTarget, RolloutConflict, CatalogUnavailable, ValueError, ConfigError) as exc:
        print(f"edged market: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except (TimeoutError, OSError) as exc:
        print(f"edged market: cannot reach the broker at {args.broker}: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except (EdgedError, LookupError) as exc:
        print(f"edged market: {exc}", file=sys.stderr)
        return ExitCode.FAILED


def _keygen(args: argparse.Namespace) -> int:
    _, key_path = _paths(args)
    if key_path.exists() and not args.force:
        raise ValueError(f"{key_path} exists; use --force to replace it")
    key = generate_key()
    key_path.parent.mkdir(parents=True, exist_ok=True)
    save_private_key(key, key_path)
    trust = TrustStore()
    trust.add(key, ["publisher", "marketplace"], "marketplace")
    trust_out = args.trust_out or key_path.with_name("trust.json")
    trust.to_file(trust_out)
    print(f"key id:     {key_id(key)}")
    print(f"public key: {public_key_b64(key)}")
    print(f"key file:   {key_path}")
    print(f"trust file: {trust_out} (copy to each device)")
    return ExitCode.OK


def _load_key(path: Path) -> Any:
    if not path.exists():
        raise ValueError(f"no marketplace key at {path}: run `edged market keygen` first, or pass --key")
    return load_private_key(path)


def _catalog(args: argparse.Namespace) -> SQLiteCatalog | PostgresCatalog:
    db, _ = _paths(args)
    try:
        return open_catalog(db)
    except ImportError as exc:
        raise ValueError(f"a PostgreSQL catalog needs psycopg: pip install 'psycopg[binary]' ({exc})") from None


def _publish_source(args: argparse.Namespace) -> tuple[Path, Path, dict[str, Any]]:
    """The .wasm, the manifest file and its document: a folder means its NAME.wasm; the manifest defaults to the
    one `edged plugin check` would use beside it."""
    from ..tooling.check import find_manifest

    wasm = args.wasm
    if wasm.is_dir():
        wasm = wasm / f"{wasm.name}.wasm"
    if not wasm.is_file():
        raise FileNotFoundError(2, "no such file", str(wasm))
    manifest_path = args.manifest or find_manifest(wasm)
    if manifest_path is None:
        raise ValueError(f"no manifest beside {wasm} (manifest.json or {wasm.stem}.manifest.json): pass --manifest")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path}: a manifest is a JSON object")
    return wasm, manifest_path, manifest


def _check_before_publish(wasm: Path, manifest: dict[str, Any]) -> list[str]:
    """What `edged plugin check` finds wrong with this .wasm and manifest (nothing: an empty list)."""
    import tempfile

    from ..tooling import check_plugin

    with tempfile.TemporaryDirectory(prefix="edged-publish-") as tmp:
        doc = {**manifest, "wasm": [{"path": str(wasm.resolve())}]}
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps(doc))
        return check_plugin(wasm, manifest=path).problems


def _publish(args: argparse.Namespace) -> int:
    _, key_path = _paths(args)
    key = _load_key(key_path)
    wasm, manifest_path, manifest = _publish_source(args)
    section = manifest.get("edged")
    edged: dict[str, Any] = section if isinstance(section, dict) else {}
    name, version = args.name or edged.get("name"), args.version or edged.get("version")
    if not name or not version:
        missing = [w for w, v in (("name", name), ("version", version)) if not v]
        keys = " and ".join(f"edged.{w}" for w in missing)
        flags = " and ".join(f"--{w}" for w in missing)
        raise ValueError(f"{manifest_path} has no {keys}: set it there, or pass {flags}")
    data = wasm.read_bytes()
    try:
        bundle = build_bundle(name, version, data, manifest, key, rollback=args.rollback)  # its own checks first
    except BundleRejected as exc:
        print(f"edged market: refused ({exc.reason}): {exc}", file=sys.stderr)
        return ExitCode.FAILED
    problems = _check_before_publish(wasm, bundle.manifest)  # the manifest as devices get it
    if problems and not args.force:
        print(
            f"edged market: refused: `edged plugin check` fails {wasm}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            + "; fix it, or pass --force to publish anyway",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    for problem in problems:
        print(f"edged market: publishing despite a failed check (--force): {problem}", file=sys.stderr)
    catalog = _catalog(args)
    try:
        meta = publish(catalog, data, manifest, name, version, key, args.rollback)
    except BundleRejected as exc:
        print(f"edged market: refused ({exc.reason}): {exc}", file=sys.stderr)
        return ExitCode.FAILED
    finally:
        catalog.close()
    print(f"published {meta.ref}  sha256 {meta.wasm_sha256}  {meta.wasm_size} bytes")
    return ExitCode.OK


def _list(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    try:
        by_name: dict[str, list[str]] = {}
        for m in catalog.bundles():
            by_name.setdefault(m.name, []).append(m.version)
    finally:
        catalog.close()
    rows = [{"name": n, "latest": vs[-1], "versions": ", ".join(vs)} for n, vs in sorted(by_name.items())]
    print(_table(rows, ["name", "latest", "versions"]))
    return ExitCode.OK


def _show(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    try:
        metas = catalog.bundles(args.name)
        if not metas:
            print(f"edged market: no plugin named {args.name!r}", file=sys.stderr)
            return ExitCode.FAILED
        out = []
        for m, manifest in catalog.manifests(args.name):  # metadata and manifests only: no wasm is read
            edged = manifest.get("edged") or {}
            out.append({**m.model_dump(mode="json"), "capabilities": edged.get("capabilities", {})})
    finally:
        catalog.close()
    print(json.dumps(out, indent=2))
    return ExitCode.OK


def _market(
    args: argparse.Namespace,
    serve: bool,
    chunk_options: dict[str, Any] | None = None,
    client_id: str | None = None,
) -> tuple[Marketplace, SQLiteCatalog | PostgresCatalog]:
    _, key_path = _paths(args)
    key = _load_key(key_path)
    catalog = _catalog(args)
    market = Marketplace(catalog, key, _broker(args), serve=serve, chunk_options=chunk_options, client_id=client_id)
    try:
        market.start()
    except Exception:  # unreachable, refused or silent: the caller reports it
        catalog.close()
        raise
    return market, catalog


def _require_chunk_service(market: Marketplace, args: argparse.Namespace) -> None:
    if args.serve_chunks:
        return
    market.settle()
    if not market.chunk_service_running():
        raise NoChunkService(
            f"no `edged market serve` is running on {args.broker} (no service presence on "
            f"edged/v1/market/service/+), so devices would wait for chunks: start `edged market serve`, or pass "
            f"--serve-chunks"
        )


def _require_known_target(market: Marketplace, args: argparse.Namespace) -> None:
    if args.allow_unknown:
        return
    market.settle()  # retained presence and reported state of every device arrive right after connecting
    if args.device and market.catalog.device(args.device) is None:
        raise UnknownTarget(
            f"device {args.device!r} has never been seen by the marketplace (no presence or reported state): check "
            f"the id with `edged market status`, or pass --allow-unknown to publish for it anyway"
        )
    if args.group and not market.group_members(args.group):
        raise UnknownTarget(
            f"no device recorded in group {args.group!r}: record members with `edged market group add "
            f"{args.group} DEVICE...` (check names with `edged market group list`), or pass --allow-unknown to "
            f"publish for it anyway"
        )


def _deploy(args: argparse.Namespace) -> int:
    name, sep, version = args.ref.partition("@")
    if not sep or not name or not version:
        raise ValueError(f"expected NAME@VERSION, got {args.ref!r}")
    if not 0 <= args.halt_failure_rate <= 1 or not 0 <= args.canary <= 1:
        raise ValueError("--canary and --halt-failure-rate are fractions between 0 and 1")
    if args.wave is not None and not 0 < args.wave <= 1:
        raise ValueError("--wave is a fraction of the group above 0 and at most 1")
    if args.halt_min_finished < 1 or args.timeout <= 0:
        raise ValueError("--halt-min-finished is at least 1 and --timeout above 0")
    market, catalog = _market(args, serve=args.serve_chunks)
    try:
        market.spec(name, version)  # published?
        _require_chunk_service(market, args)
        _require_known_target(market, args)
        size = len(market.group_members(args.group)) if args.group else 1
        policy = RolloutPolicy(
            canary=args.canary,
            wave=args.wave if args.wave is not None else (rollouts.DEFAULT_WAVE if args.halt_failure_rate < 1 else 1),
            halt_failure_rate=args.halt_failure_rate,
            min_finished=max(1, min(args.halt_min_finished, size)),
            device_timeout_s=args.timeout,
            on_abort=args.on_abort,
        )
        rid = rollouts.create_rollout(market, name, version, device=args.device, group=args.group, policy=policy)
        target = f"device:{args.device}" if args.device else f"group:{args.group}"
        print(f"rollout {rid}: {name}@{version} to {target} ({size} device{'s' if size != 1 else ''})", flush=True)
        if not (args.wait or args.serve_chunks):
            print(f"`serve` runs it; follow it with `edged market rollout show {rid}`")
            return ExitCode.OK
        bar = None if args.no_progress else _Bar(f"{name}@{version}", size)
        try:
            result = rollouts.follow(
                market, rid, run_here=args.serve_chunks, interval=0.2, on_progress=bar.update if bar else None
            )
        finally:
            if bar is not None:
                bar.close()
    finally:
        market.stop()
        catalog.close()
    outcomes = sorted(result.outcomes.items())
    for device, state in outcomes[:50]:
        reason = result.reasons.get(device)
        print(f"{device}: {state}" + (f" ({reason})" if reason else ""))
    if len(outcomes) > 50:
        print(f"... and {len(outcomes) - 50} more: `edged market rollout show {rid}`")
    if result.canaries:
        print(f"canaries: {', '.join(result.canaries)}")
    if result.offline:
        print(f"offline (they converge when they come back): {', '.join(result.offline[:50])}")
    if result.pinned:
        print(f"kept on {version} through their own desired state: {', '.join(result.pinned[:50])}")
    if result.unpinned:
        print(f"following the group again (own entry ended): {', '.join(result.unpinned[:50])}")
    print(f"rollout {rid} {result.state}: {name}@{version}, {_counts(result.outcomes)}, failure rate "
          f"{result.failure_rate:.0%}")  # fmt: skip
    if not result.outcomes:
        print("no devices in the target (record members with `edged market group add`)")
    return ExitCode.OK if result.state == "done" else ExitCode.FAILED


class _Bar:
    """One aggregate progress bar: finished devices out of the target's, with per-state counts."""

    def __init__(self, ref: str, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="dev", desc=ref, file=sys.stderr, leave=True)

    def update(self, r: RolloutRecord) -> None:
        done = sum(n for s, n in r.counts.items() if s in rollouts.SETTLED)
        self.bar.total = max(self.bar.total or 0, sum(r.counts.values()))
        self.bar.n = done
        self.bar.set_postfix_str(f"{r.state}: {_counts(r.counts)}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _counts(states: dict[str, str] | dict[str, int]) -> str:
    counts: dict[str, int] = {}
    for k, v in states.items():
        if isinstance(v, int):
            counts[k] = counts.get(k, 0) + v
        else:
            counts[v] = counts.get(v, 0) + 1
    return " ".join(f"{k}={n}" for k, n in sorted(counts.items())) or "no devices"


def _rollouts(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    try:
        rows = [
            {
                "id": r.id,
                "plugin": f"{r.name}@{r.version}",
                "target": r.target,
                "state": r.state,
                "devices": sum(r.counts.values()),
                "counts": _counts(r.counts),
                "created": _ago(r.created_at),
            }
            for r in catalog.rollouts()
        ]
    finally:
        catalog.close()
    print(_table(rows, ["id", "plugin", "target", "state", "devices", "counts", "created"]))
    return ExitCode.OK


def _rollout(args: argparse.Namespace) -> int:
    if args.action == "revert":
        market, catalog = _market(args, serve=False)
        try:
            version = rollouts.revert(market, args.id)
        finally:
            market.stop()
            catalog.close()
        print(f"rollout {args.id} reverted: " + (f"back to {version}" if version else "plugin removed from the target"))
        return ExitCode.OK
    catalog = _catalog(args)
    try:
        if args.action == "pause":
            rollouts.pause(catalog, args.id)
        elif args.action == "resume":
            rollouts.resume(catalog, args.id)
        elif args.action == "abort":
            rollouts.abort(catalog, args.id, on_abort=args.on_abort)
        r = catalog.rollout(args.id)
        if r is None:
            raise LookupError(f"no rollout {args.id}")
        devs = catalog.rollout_devices(args.id)
    finally:
        catalog.close()
    if args.action != "show":
        print(f"rollout {r.id}: {r.state}" + (" (serve carries it out)" if r.state == "aborting" else ""))
        return ExitCode.OK
    p = r.policy
    print(f"rollout {r.id}: {r.name}@{r.version} to {r.target}: {r.state}")
    print(f"  created {_ago(r.created_at)}, updated {_ago(r.updated_at)}" + (f", run by {r.owner}" if r.owner else ""))
    print(f"  canary {p.canary:g}, wave {p.wave:g}, halt past {p.halt_failure_rate:g} after {p.min_finished} "
          f"finished, device timeout {p.device_timeout_s:g} s, on abort: {p.on_abort}")  # fmt: skip
    print(f"  {_counts(r.counts)}")
    if r.detail.get("abort"):
        print(f"  stopped: {r.detail['abort'].get('reason')}")
    rows = [
        {
            "device": d.device,
            "stage": "-" if d.stage < 0 else d.stage,
            "state": d.state,
            "percent": f"{d.percent:.0f}%" if d.state in rollouts.STARTED else "",
            "reason": d.reason or "",
            "seq": d.seq if d.seq is not None else "",
            "started": _ago(d.started_at) if d.started_at else "",
        }
        for d in devs
    ]
    print(_table(rows, ["device", "stage", "state", "percent", "reason", "seq", "started"]))
    return ExitCode.OK


def _group(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    try:
        if args.action == "list":
            groups = catalog.groups()
            if args.group:
                groups = {args.group: groups.get(args.group, [])}
            rows = [{"group": g, "devices": ", ".join(ds)} for g, ds in sorted(groups.items())]
            print(_table(rows, ["group", "devices"]))
            return ExitCode.OK
        if not args.group or not args.devices:
            raise ValueError(f"group {args.action} needs GROUP and at least one DEVICE")
        topics.check_id(args.group, "group id")
        for d in args.devices:
            topics.check_id(d)
        if args.action == "add":
            catalog.set_members(args.group, add=args.devices)
        else:
            catalog.set_members(args.group, remove=args.devices)
        members = catalog.group_members(args.group)
    finally:
        catalog.close()
    print(f"group {args.group}: {', '.join(members) or 'no members'}")
    return ExitCode.OK


def _rollback(args: argparse.Namespace) -> int:
    market, catalog = _market(args, serve=False)
    try:
        target = f"device:{args.device}" if args.device else f"group:{args.group}"
        version = market.rollback(args.name, target)
    finally:
        market.stop()
        catalog.close()
    print(f"{target}: {args.name} rolled back to {version}")
    return ExitCode.OK


def _command(args: argparse.Namespace) -> int:
    name, _, version = (args.plugin or "").partition("@")
    if args.op == "install" and not (name and version):
        raise ValueError("install needs NAME@VERSION")
    if args.op not in ("install", "identify") and not name:
        raise ValueError(f"{args.op} needs the plugin NAME")
    market, catalog = _market(args, serve=args.serve_chunks)
    try:
        spec = market.spec(name, version, args.allow_downgrade) if args.op == "install" else None
        if spec is not None:
            _require_chunk_service(market, args)
        from_version = (version or None) if args.op == "rollback" else None  # rollback NAME@FROM (default: running)
        cid = market.command(args.device, args.op, name=name or None, plugin=spec, from_version=from_version)
        end = time.monotonic() + args.timeout
        while (reply := market.replies.get(cid)) is None and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        market.stop()
        catalog.close()
    if reply is None:
        print(f"edged market: no reply from {args.device} within {args.timeout:g} s (command {cid})", file=sys.stderr)
        return ExitCode.FAILED
    print(reply.model_dump_json(indent=2))
    return ExitCode.OK if reply.ok else ExitCode.FAILED


def _unpin(args: argparse.Namespace) -> int:
    market, catalog = _market(args, serve=False)
    try:
        market.settle()  # its presence decides how the pin ends
        follows = market.unpin(args.device, args.name)
    finally:
        market.stop()
        catalog.close()
    now = f"its groups' {follows}" if follows else "none of its groups names it: removed"
    print(f"device:{args.device}: own entry for {args.name} ended; it follows its groups for {args.name} again ({now})")
    return ExitCode.OK


def _playlist(args: argparse.Namespace) -> int:
    if bool(args.items) == args.clear:
        raise ValueError("give the playlist as NAME[,NAME...] or --clear, not both")
    items = None if args.clear else [i.strip() for i in args.items.split(",")]
    market, catalog = _market(args, serve=False)
    target = f"device:{args.device}" if args.device else f"group:{args.group}"
    try:
        market.set_playlist(target, items)
    except ValidationError as exc:
        raise ValueError(f"bad playlist {args.items!r}: {exc.errors()[0]['msg']}") from None
    finally:
        market.stop()
        catalog.close()
    print(f"{target}: playlist " + (", ".join(items) if items else "cleared (devices keep their own)"))
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    try:
        devices = catalog.devices()
        pins = {d.id: catalog.get_desired(f"device:{d.id}")[0] for d in devices}
    finally:
        catalog.close()
    rows = []
    for d in devices:
        own = pins.get(d.id, {})
        plugins = d.reported.get("plugins", {}) if d.reported else {}
        names = sorted(set(plugins) | set(d.status) | set(own)) or [""]
        for n in names:
            rp = plugins.get(n, {})
            st = d.status.get(n, {})
            state = rp.get("state") or st.get("state") or ""
            if st.get("state") == "downloading" and st.get("version") != rp.get("version"):
                state = f"downloading {st.get('percent', 0):.0f}%"
            rows.append(
                {
                    "device": d.id,
                    "groups": ",".join(d.groups)
                    or (f"(claims {','.join(d.claimed_groups)})" if d.claimed_groups else ""),
                    "presence": d.presence,
                    "plugin": n,
                    "version": rp.get("version") or "",
                    "state": state,
                    "reason": rp.get("reason") or st.get("reason") or "",
                    "pin": _pin(own.get(n)),
                    "last seen": _ago(d.last_seen),
                }
            )
    cols = ["device", "groups", "presence", "plugin", "version", "state", "reason", "pin", "last seen"]
    print(_table(rows, cols))
    return ExitCode.OK


def _claims(groups: list[str]) -> str:
    """Groups a device claims but is not recorded in: shown, never trusted."""
    return f"(claims {','.join(groups)})" if groups else ""


def _pin(entry: Any) -> str:
    """A device's own entry for a plugin: its version and the rollout that set it (or ``manual``)."""
    if entry is None:
        return ""
    who = f"rollout {entry.rollout}" if entry.rollout is not None else "manual"
    return f"{entry.version} ({who})"


def _serve(args: argparse.Namespace) -> int:
    if args.max_inflight_mb <= 0 or args.device_rate_kb <= 0:
        raise ValueError("--max-inflight-mb and --device-rate-kb are above 0")
    options = {
        "max_inflight_bytes": int(args.max_inflight_mb * 1024 * 1024),
        "device_rate": args.device_rate_kb * 1024,
        "device_burst": args.device_rate_kb * 2048,
    }
    if args.name is not None:
        topics.check_id(args.name, "service name")
    market, catalog = _market(args, serve=True, chunk_options=options, client_id=args.name)
    runner = RolloutRunner(market, owner=args.name)
    runner.start()
    done = threading.Event()
    try:
        with stop_on_signals(done):
            print(f"serving on {args.broker}", flush=True)
            done.wait()
    finally:
        runner.stop()
        market.stop()
        catalog.close()
    print(f"served {market.chunks_served} chunks ({market.bytes_served} bytes)")
    return ExitCode.OK


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    cells = [[str(r.get(c, "")) or "-" for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


_ACTIONS = {
    "keygen": _keygen,
    "publish": _publish,
    "list": _list,
    "show": _show,
    "deploy": _deploy,
    "rollback": _rollback,
    "command": _command,
    "unpin": _unpin,
    "playlist": _playlist,
    "status": _status,
    "serve": _serve,
    "rollouts": _rollouts,
    "rollout": _rollout,
    "group": _group,
}
