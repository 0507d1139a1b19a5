"""The chunk size limit: a chunk message (header line and data) fits in 128 KB, AWS IoT's limit and what the
shipped deploy/mosquitto.conf allows; a bigger configured chunk size is refused with a clear error."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edged.cli import main
from edged.deploy import topics
from edged.deploy.agent import DeviceAgent
from edged.deploy.broker import DEFAULT_CHUNK_SIZE, BrokerConfig
from edged.deploy.messages import CHUNK_OVERHEAD, MAX_CHUNK_SIZE, ChunkHeader, ChunkRequest, pack_chunk
from edged.deploy.store import PluginStore
from edged.deploy.target import EmulatedTarget
from edged.deploy.trust import TrustStore
from edged.errors import ConfigError
from tests.conftest import ROOT
from tests.support.harness import Broker, Harness, anim_wasm

AWS_LIMIT = 128 * 1024


def _largest_chunk_message() -> int:
    header = ChunkHeader(
        name="n" * 64,
        version="9" * 64,
        wasm_sha256="a" * 64,
        index=10**9,
        total=10**9,
        chunk_size=MAX_CHUNK_SIZE,
        sha256="b" * 64,
    )
    topic = topics.chunks("d" * 64)
    # MQTT PUBLISH: 1 byte type, up to 4 bytes length, 2 bytes topic length, topic, 2 bytes packet id, payload
    return 1 + 4 + 2 + len(topic) + 2 + len(pack_chunk(header, b"\0" * MAX_CHUNK_SIZE))


def test_largest_chunk_fits_128_kb_and_the_shipped_broker_config() -> None:
    assert DEFAULT_CHUNK_SIZE <= MAX_CHUNK_SIZE
    size = _largest_chunk_message()
    assert size <= MAX_CHUNK_SIZE + CHUNK_OVERHEAD <= AWS_LIMIT
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text()
    m = re.search(r"^max_packet_size\s+(\d+)", conf, re.M)
    assert m is not None and size <= int(m.group(1))


def test_bigger_chunk_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        ChunkRequest(device="d", name="n", version="1", wasm_sha256="a" * 64, chunk_size=200_000, indices=[0])
    store, target = PluginStore(tmp_path), EmulatedTarget()
    with pytest.raises(ConfigError, match=r"chunk_size 200000 is out of range: 1024\.\.130048"):
        DeviceAgent("d", BrokerConfig(), store, TrustStore(), target, chunk_size=200_000)
    with pytest.raises(SystemExit) as exc:
        main(["agent", "--device", "d", "--store", str(tmp_path), "--trust", "t.json", "--chunk-size", "200000"])
    assert exc.value.code == 2


def test_largest_chunks_travel_through_a_broker_limited_to_128_kb(
    start_broker: Callable[..., Any], tmp_path: Path
) -> None:
    m = start_broker(max_packet_size=AWS_LIMIT)
    h = Harness(tmp_path / "h", Broker(m.host, m.port, m.restart, m))
    try:
        meta = h.publish("big", "1.0.0", anim_wasm("big", pad=300_000))
        assert meta.wasm_size > 2 * MAX_CHUNK_SIZE
        h.agent("dev-1", chunk_size=MAX_CHUNK_SIZE)
        h.market.set_desired("device:dev-1", "big", "1.0.0")
        h.wait_healthy("dev-1", "big", "1.0.0")
    finally:
        h.close()
