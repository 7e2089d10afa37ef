"""The unit tier runs with no server at all: its stores are embedded SQLite files.

`store_url` is narrowed to SQLite here (the MariaDB cases of the same tests run in
`integration/`), and a guard fails any test of this tier that tries to reach the MariaDB
or PostgreSQL server, through a Python socket or a C driver behind SQLAlchemy. So the tier
passes with both servers stopped, and a test that quietly starts needing one is caught
here rather than on a laptop without them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.support.databases import MARIADB_SERVER, POSTGRES_SERVER

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_PORTS = {"mysql": 3306, "mariadb": 3306, "postgresql": 5432}


def _service(url: str) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "localhost", parsed.port or DEFAULT_PORTS[parsed.get_backend_name()]


SERVICES = {_service(MARIADB_SERVER), _service(POSTGRES_SERVER)}
SERVICE_PORTS = {port for _, port in SERVICES}


def _is_service(host: Any, port: Any) -> bool:
    hosts = {host for host, _ in SERVICES} | LOOPBACK
    return port in SERVICE_PORTS and str(host) in hosts


@pytest.fixture(params=["sqlite"])
def store_url(sqlite_url: str) -> str:
    """The unit tier's store: embedded SQLite only."""
    return sqlite_url


@pytest.fixture(autouse=True)
def no_services(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test at the first attempt to connect to MariaDB or PostgreSQL."""
    real_connect = socket.socket.connect

    def refuse(what: str) -> None:
        pytest.fail(f"unit tests use no service, but this one connects to {what}; "
                    "it belongs in tests/integration/")  # fmt: skip

    def guarded_connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and _is_service(address[0], address[1]):
            refuse(f"{address[0]}:{address[1]}")
        return real_connect(sock, address)

    def guarded_dbapi(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        """C drivers (mysqlclient, psycopg2) open their sockets outside Python's."""
        port = cparams.get("port") or DEFAULT_PORTS.get(dialect.name)
        host = cparams.get("host") or "localhost"
        if dialect.name in DEFAULT_PORTS and _is_service(host, int(port)):
            refuse(f"{dialect.name} at {host}:{port}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    sa.event.listen(sa.engine.Engine, "do_connect", guarded_dbapi)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "do_connect", guarded_dbapi)
