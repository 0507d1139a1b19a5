"""Reaching the MQTT broker: :class:`BrokerConfig`, :func:`make_client` and the chunk size a broker message bounds.

Light on purpose: a config loader or the marketplace imports it without the agent, wasmtime or (until a client is
made) paho.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

#: the largest chunk: with its header line (under 1 KB, see ``messages.CHUNK_OVERHEAD``) a chunk message stays within
#: 128 KB, AWS IoT's message limit, and well within ``max_packet_size`` of the shipped ``deploy/mosquitto.conf``
MAX_CHUNK_SIZE = 127 * 1024
MIN_CHUNK_SIZE = 1024
#: AWS IoT's message limit is 128 KB; a chunk plus its header line stays below it (at most ``MAX_CHUNK_SIZE``)
DEFAULT_CHUNK_SIZE = 96 * 1024


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` if it is within ``MIN_CHUNK_SIZE``..``MAX_CHUNK_SIZE``, else raise :class:`ConfigError`."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ConfigError(
            f"chunk_size {chunk_size} is out of range: {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes (a chunk and its "
            f"header must fit in a 128 KB MQTT message, the limit of AWS IoT and of deploy/mosquitto.conf's chunks)"
        )
    return chunk_size


class BrokerConfig(BaseModel):
    """Where and how to connect. TLS is on when ``ca_file`` is set."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = Field(default=30, ge=5)


def make_client(broker: BrokerConfig, client_id: str, clean_session: bool) -> mqtt.Client:
    """A paho 2.x client (MQTT 3.1.1) set up with ``broker``'s credentials and TLS, reconnecting quickly."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311
    )
    if broker.username is not None:
        c.username_pw_set(broker.username, broker.password)
    if broker.ca_file is not None:
        c.tls_set(
            ca_certs=str(broker.ca_file),
            certfile=str(broker.cert_file) if broker.cert_file else None,
            keyfile=str(broker.key_file) if broker.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    # paho annotates the delays as int; it takes float seconds
    c.reconnect_delay_set(min_delay=0.2, max_delay=2)  # type: ignore[arg-type]
    c.max_inflight_messages_set(64)
    return c
