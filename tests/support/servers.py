"""Fixtures for deployment over a real mosquitto: the broker (on a free loopback port, restartable), and a harness
with a marketplace and in-process device agents. Helpers live in harness.py (imported lazily, see its docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from edged.deploy.testing import Mosquitto
    from edged.market.testing import Postgres
    from tests.support.harness import Broker, Harness


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port (anonymous, persistent sessions in tmp), restartable."""
    from tests.support.harness import Broker, start_mosquitto

    m = start_mosquitto(tmp_path / "mosquitto")
    try:
        yield Broker(m.host, m.port, m.restart, m)
    finally:
        m.stop()


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start a mosquitto with options (``users``, ``acl``); stopped at the end of the test."""
    from tests.support.harness import start_mosquitto

    started: list[Mosquitto] = []

    def start(**kw: Any) -> Mosquitto:
        m = start_mosquitto(tmp_path / f"mosquitto-{len(started)}", **kw)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def harness(tmp_path: Path, broker: Broker) -> Iterator[Harness]:
    from tests.support.harness import Harness

    h = Harness(tmp_path, broker)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server (initdb + pg_ctl in a temp dir, a free loopback port), for the whole session."""
    from edged.market.testing import MISSING, Postgres, find_pg_bin

    if find_pg_bin() is None:
        pytest.fail(MISSING)
    with Postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh catalog location on each backend: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.create_database()
