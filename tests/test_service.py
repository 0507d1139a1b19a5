"""Issue 11 point 2: ``edged run``'s parts are wired by one service object, started in order and stopped in
reverse; a step that fails to start stops the steps started before it. Real parts in emulation throughout."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest

from edged.daemon import assembly
from edged.daemon.client import request
from edged.daemon.config import load_config
from edged.hardware.backends import EmulatedBackend
from edged.service import EdgeService, RunOptions, ServiceStartError
from tests.daemon.test_daemon import CONFIG, write_plugin
from tests.engine.anims import solid

STEPS = ["signals", "hardware", "daemon", "deploy agent", "web", "control socket", "systemd"]


def site(tmp_path: Path, extra: str = "") -> Path:
    write_plugin(tmp_path, "red", solid(255, 0, 0), {"capabilities": {"led": True}})
    write_plugin(tmp_path, "blue", solid(0, 0, 255))
    path = tmp_path / "edged.toml"
    path.write_text(CONFIG.format(side="blue", calibrate="false") + "\n[http]\nport = 0\n" + extra)
    return path


def steps(caplog: pytest.LogCaptureFixture, verb: str) -> list[str]:
    return [r.step for r in caplog.records if r.name == "edged.service" and r.getMessage().startswith(verb)]  # type: ignore[attr-defined]


def test_steps_start_in_order_and_stop_in_reverse(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edged.service")
    path = site(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with EdgeService(load_config(path), RunOptions(config_path=path, emulate=True)) as service:
        assert service.started == STEPS
        assert steps(caplog, "starting") == STEPS
        assert service.daemon is not None and service.face is not None and service.face.web is not None
        assert signal.getsignal(signal.SIGTERM) is not before  # edged's handler while it runs
        reply = request(service.config.control_socket, {"cmd": "displays"})  # the control socket answers
        assert reply["ok"], reply
        output = service.hardware.outputs["main"] if service.hardware is not None else None
    assert steps(caplog, "stopping") == list(reversed(STEPS))
    assert output is not None and isinstance(output.backend, EmulatedBackend)
    last = output.backend.latest()
    assert output.backend.closed and last is not None and not last.data.any()  # blanked
    assert signal.getsignal(signal.SIGTERM) is before
    assert not service.config.control_socket.exists()
    assert (service.config.state_dir / "state.json").exists()
    service.stop()  # idempotent
    assert steps(caplog, "stopping") == list(reversed(STEPS))


def test_a_step_that_fails_stops_the_steps_started_before_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edged.service")
    (tmp_path / "not-a-folder").write_text("")  # the control socket cannot be made under a file
    path = site(tmp_path)
    cfg = load_config(path)
    cfg = cfg.model_copy(
        update={"daemon": cfg.daemon.model_copy(update={"control_socket": tmp_path / "not-a-folder" / "c.sock"})}
    )
    before = signal.getsignal(signal.SIGTERM)
    service = EdgeService(cfg, RunOptions(config_path=path, emulate=True))
    with pytest.raises(ServiceStartError, match="control socket") as err:
        service.start()
    assert err.value.step == "control socket"
    started = STEPS[: STEPS.index("control socket")]
    assert steps(caplog, "starting") == [*started, "control socket"]
    assert steps(caplog, "stopping") == list(reversed(started))
    assert service.daemon is not None and service.hardware is not None
    backend = service.hardware.outputs["main"].backend
    assert isinstance(backend, EmulatedBackend) and backend.closed  # released...
    last = backend.latest()
    assert last is not None and not last.data.any()  # ...and blanked
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_daemon_that_does_not_start_releases_the_hardware(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="edged.service")
    monkeypatch.setattr(assembly, "machine_memory_mb", lambda: 128)  # the plugins' memory caps do not fit
    path = site(tmp_path)
    service = EdgeService(load_config(path), RunOptions(config_path=path, emulate=True, http=False))
    with pytest.raises(ServiceStartError, match="does not fit this machine") as err:
        service.start()
    assert err.value.step == "daemon"
    assert steps(caplog, "stopping") == ["hardware", "signals"]
    assert service.hardware is not None
    backends = [o.backend for o in service.hardware.outputs.values()]
    assert backends and all(isinstance(b, EmulatedBackend) and b.closed for b in backends)


def test_a_profile_that_does_not_load_names_where_it_came_from(tmp_path: Path) -> None:
    path = site(tmp_path)
    service = EdgeService(load_config(path), RunOptions(config_path=path, emulate=True, profile="no-such-profile"))
    with pytest.raises(ServiceStartError, match="^--profile: ") as err:
        service.start()
    assert err.value.step == "hardware" and service.started == [] and service.daemon is None
