"""Issue 10.1: a forged block header (its length rewritten through the kernel's store_u64) handed to a host function
that needs no capability must not crash the host (it was a SIGSEGV in call, preview, check and run)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.containment.conftest import Anchors, anchor_run
from tests.containment.harness import (
    DEFAULT_PLUGIN_MEMORY,
    Run,
    assert_clean_or_refused,
    assert_healthy_kept_rate,
    assert_refused,
    assert_rss_within,
    assert_survived,
    edged,
    launch,
    make_site,
    run_site,
)
from tests.containment.hostile import FORGED_LENGTH, FORGED_TARGETS, HOST_FN_SCRIPT, forged_handle, forged_host_fn

#: the targets ``edged call`` can link (it offers the Extism env, not edged's device functions)
CALL_TARGETS = ["log_info", "var_set", "error_set"]


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return anchor_run(tmp_path_factory.mktemp("anchor"))


@pytest.mark.parametrize("target", CALL_TARGETS)
def test_call_survives_a_forged_header(tmp_path: Path, target: str, anchors: Anchors) -> None:
    o = edged("call", str(forged_handle(target).write(tmp_path)), "frame", cwd=tmp_path)
    assert_clean_or_refused(o, "edged call:")
    assert_rss_within(o, anchors.rss("call"), DEFAULT_PLUGIN_MEMORY, f"call with a forged header to {target}")


@pytest.mark.parametrize("target", list(FORGED_TARGETS))
def test_preview_survives_a_forged_header(tmp_path: Path, target: str, anchors: Anchors) -> None:
    path = forged_handle(target).write(tmp_path)
    o = edged("preview", str(path), "--png", "out.png", "--frames", "5", cwd=tmp_path)
    assert_clean_or_refused(o, "edged preview:")
    assert_rss_within(o, anchors.rss("preview"), DEFAULT_PLUGIN_MEMORY, f"preview with a forged header to {target}")


@pytest.mark.parametrize("target", list(FORGED_TARGETS))
def test_check_survives_a_forged_header(tmp_path: Path, target: str, anchors: Anchors) -> None:
    o = edged("plugin", "check", str(forged_handle(target).write(tmp_path)), "--frames", "5", cwd=tmp_path)
    assert_survived(o)
    assert o.returncode in (0, 1) and o.stdout.rstrip().splitlines()[-1].startswith(("PASS", "FAIL")), o.describe()
    assert_rss_within(o, anchors.rss("check"), DEFAULT_PLUGIN_MEMORY, f"check with a forged header to {target}")


def test_host_fn_of_a_runtime_user_survives_a_forged_header(tmp_path: Path) -> None:
    """``@host_fn`` users of edged.runtime: a ``bytes`` parameter must never be read from a forged header."""
    wasm = tmp_path / "forge.wasm"
    wasm.write_bytes(forged_host_fn())
    o = launch([sys.executable, "-c", HOST_FN_SCRIPT, str(wasm)], tmp_path)
    assert_survived(o)
    if o.returncode == 0:
        seen = [int(n) for n in re.findall(r"\d+", o.stdout.split("saw", 1)[1])]
        assert all(n < FORGED_LENGTH for n in seen), f"the host function was handed {seen} bytes"
    else:
        assert_refused(o, "refused:", codes=(1,))


@pytest.mark.slow
def test_run_keeps_plasma_beside_forged_headers(tmp_path: Path, anchor: Run) -> None:
    """Every target on a layer of its own beside plasma: the daemon survives and plasma keeps its frame rate."""
    layers = [(f"h{i}", forged_handle(t)) for i, t in enumerate(FORGED_TARGETS)]
    run = run_site(make_site(tmp_path, layers))
    assert_healthy_kept_rate(anchor, run)
    assert run.outcome.returncode == 0, run.outcome.describe()
    for layer, plugin in layers:
        slot = run.plugin(layer, plugin.name)
        assert slot is not None, run.stats
        said = slot["last_error"] or ""
        assert "\n" not in said and "Traceback" not in said, said
    cap = len(layers) * DEFAULT_PLUGIN_MEMORY
    assert_rss_within(run.outcome, anchor.outcome.peak_rss, cap, "run beside forged headers")
