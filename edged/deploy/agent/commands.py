"""Signed one-off commands: ``identify``, ``install``, ``remove``, ``restart`` and ``rollback``, each answered with a
reply. A command's nonce is remembered until it expires, so none runs twice."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from ...errors import (
    DeployError,
    DiskFull,
    MessageRejected,
    MessageReplayed,
    NonceCacheFull,
    PluginError,
    StoreError,
    ValidityTooLong,
)
from .. import topics
from ..messages import Command, PluginSpec
from ..trust import NonceCache, TrustStore, verify_envelope
from .desired import Source, require_target, short
from .install import Installer
from .state import Attempt

log = logging.getLogger("edged.deploy.agent")

#: how long a device shows that it is being identified
IDENTIFY_SECONDS = 5.0

#: the longest a command may be signed valid for (``expires_at - issued_at``). The device remembers the nonce of
#: every command meant for it until the command expires, at most ``NONCE_CAPACITY`` of them, and refuses new
#: commands (``busy``) rather than forget one: with this bound the marketplace would have to send one device
#: more than ``NONCE_CAPACITY`` commands within 10 minutes to make it refuse. The marketplace signs commands for
#: 5 minutes (``COMMAND_TTL_S``).
MAX_COMMAND_VALIDITY_S = 600.0
#: unexpired command nonces kept (one JSON line each in ``agent-nonces.jsonl``)
NONCE_CAPACITY = 4096


def open_nonces(state_dir: Path) -> NonceCache:
    """The command nonce cache in ``state_dir`` (an older ``agent-nonces.json`` is taken over)."""
    path = state_dir / "agent-nonces.jsonl"
    legacy = state_dir / "agent-nonces.json"  # the older format: one JSON object rewritten per add
    if legacy.exists() and not path.exists():
        with contextlib.suppress(OSError):
            os.replace(legacy, path)  # read in the old format, rewritten in lines at the next add
    with contextlib.suppress(OSError):
        legacy.unlink(missing_ok=True)
        for stale in legacy.parent.glob(f".{legacy.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    return NonceCache(path, NONCE_CAPACITY)


class Commands:
    """Checks and executes commands for one device. ``wanted`` gives what the desired states ask for (a rollback
    must not be undone by the document that asked for the version rolled back from); ``groups`` the device's."""

    def __init__(
        self,
        device_id: str,
        groups: list[str],
        trust: TrustStore,
        nonces: NonceCache,
        installer: Installer,
        wanted: Callable[[], dict[str, tuple[PluginSpec, Source]]],
    ) -> None:
        self.device_id = device_id
        self.groups = groups
        self.trust = trust
        self.nonces = nonces
        self.installer = installer
        self._wanted = wanted

    def on_command(self, payload: bytes) -> None:
        """Signature, validity, target, validity bound and schema are checked BEFORE the nonce is recorded: only
        commands meant for this device take room in the nonce cache, so commands for others (replayed here by a
        broker) can never push out the nonce of one of ours and let it be replayed."""
        reports = self.installer.reports
        topic = topics.cmd(self.device_id)
        try:
            env = verify_envelope(payload, self.trust, role="marketplace")
        except MessageRejected as exc:
            reports.reply(None, False, exc.reason, str(exc))
            reports.reject(topic, exc.reason, str(exc))
            return
        data = env.payload
        cmd_id = data.get("id") if isinstance(data.get("id"), str) else None
        try:
            require_target(data, f"device:{self.device_id}")
            if env.expires_at - env.issued_at > MAX_COMMAND_VALIDITY_S:
                raise ValidityTooLong(
                    f"signed valid for {env.expires_at - env.issued_at:.0f} s; commands may be valid for at most "
                    f"{MAX_COMMAND_VALIDITY_S:.0f} s"
                )
        except MessageRejected as exc:
            reports.reply(cmd_id, False, exc.reason, str(exc))
            reports.reject(topic, exc.reason, str(exc))
            return
        try:
            cmd = Command.model_validate(data)
        except ValidationError as exc:
            reports.reply(cmd_id, False, "wrong_schema", short(exc))
            reports.reject(topic, "wrong_schema", short(exc))
            return
        try:
            if not self.nonces.add(env.nonce, env.expires_at):
                raise MessageReplayed(f"nonce {env.nonce!r} was already used")
        except (MessageReplayed, NonceCacheFull) as exc:
            reports.reply(cmd.id, False, exc.reason, str(exc))
            reports.reject(topic, exc.reason, str(exc))
            return
        except OSError as exc:  # not remembered, so not executed: it could be replayed after a restart
            err = self.installer.store.write_error("cannot record the command's nonce", exc, 256)
            reason = err.reason if isinstance(err, DiskFull) else "install_failed"
            reports.reply(cmd.id, False, reason, f"command not executed: {err}")
            reports.status("failed", reason=reason, detail=f"command {cmd.id} not executed: {err}", topic=topic)
            return
        try:
            self.execute(cmd)
        except (StoreError, PluginError, DeployError) as exc:
            if isinstance(exc, DiskFull):
                reason = exc.reason
            elif isinstance(exc, StoreError):
                reason = "unknown_plugin"
            else:
                reason = getattr(exc, "reason", None) or "failed"
            reports.reply(cmd.id, False, reason, str(exc))

    def execute(self, cmd: Command) -> None:
        """Run a checked command and reply."""
        inst, reports = self.installer, self.installer.reports
        if cmd.op == "identify":
            log.warning("identify requested", extra={"device": self.device_id})
            show = getattr(inst.target, "identify", None)
            if callable(show):  # a target with a display blinks it (optional, like apply_playlist)
                show(IDENTIFY_SECONDS)
            reports.reply(cmd.id, True, result={"groups": self.groups, "plugins": inst.running_versions()})
            return
        if cmd.op == "install":
            if cmd.plugin is None:
                reports.reply(cmd.id, False, "wrong_schema", "install needs 'plugin'")
                return
            inst.state.failed.pop(Attempt(cmd.plugin.name, cmd.plugin.version, cmd.plugin.allow_downgrade), None)
            if inst.active_version(cmd.plugin.name) == cmd.plugin.version:
                reports.reply(cmd.id, True, result={"version": cmd.plugin.version, "state": "healthy"})
                return
            if (job := inst.jobs.get(cmd.plugin.name)) is not None:
                inst.abandon(job)
            inst.begin(cmd.plugin, Source.command(cmd.id), cmd_id=cmd.id)
            return
        name = cmd.name
        if not name or (inst.active_version(name) is None and name not in inst.jobs):
            reports.reply(cmd.id, False, "unknown_plugin", f"no plugin {name!r} on this device")
            return
        if cmd.op == "remove":
            inst.remove(name)
            reports.reply(cmd.id, True)
        elif cmd.op == "restart":
            inst.start_active(name)
            reports.reply(cmd.id, True, result={"version": inst.active_version(name)})
        elif cmd.op == "rollback" and not self._rollback(cmd, name):
            return
        reports.publish_reported()

    def _rollback(self, cmd: Command, name: str) -> bool:
        """Roll ``name`` back as ``cmd`` says; False if refused (the reply says why)."""
        inst, reports = self.installer, self.installer.reports
        failed = inst.active_version(name)
        # a rollback names the version it rolls back from: executed once, it cannot take the device further
        # back (a replay, or the same command delivered twice, finds another version active)
        if cmd.from_version is None:
            reports.reply(cmd.id, False, "wrong_schema", "rollback needs from_version: the version to roll back from")
            return False
        if failed != cmd.from_version:
            detail = f"rollback from {cmd.from_version} refused: {name} runs {failed}"
            reports.reply(cmd.id, False, "not_active", detail, result={"version": failed})
            return False
        try:
            inst.store.rollback(name)
        except StoreError as exc:
            reports.reply(cmd.id, False, "nothing_to_rollback", str(exc))
            return False
        now = inst.active_version(name)
        if failed and (want := self._wanted().get(name)) is not None:
            # the desired state that asked for the version rolled back from must not reinstall it
            inst.state.failed[Attempt(name, failed, False)] = inst.state.request(want[1])
        inst.start_active(name)
        reports.set(name, now, "rolled_back", "command", wanted=None)
        reports.status("rolled_back", name=name, version=now, reason="command")
        reports.reply(cmd.id, True, result={"version": now})
        return True
