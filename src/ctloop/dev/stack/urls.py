"""The database URLs of the stack: made absolute, shown without passwords, checked.

Every process of the stack has its own working folder, so SQLite paths are made absolute
once here; every message that names a database goes through `safe_url`, so no password
reaches a terminal or a log; and Airflow's metadata URL is checked before anything starts
(MariaDB is refused, a missing PostgreSQL driver is named), not found out mid-migration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ctloop.errors import CtloopError


def absolute_sqlite(url: str) -> str:
    """A SQLite URL with an absolute path: every process has another working folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if parsed.database == ":memory:":
        raise CtloopError(f"{url}: an in-memory SQLite database cannot be shared by processes")
    path = Path(parsed.database).expanduser().resolve()
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages (never the URL itself)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show nothing of it that could be a secret
        return "<unparseable URL>"


def airflow_metadata_url(env: Mapping[str, str], airflow_home: Path) -> str:
    """Airflow's metadata database: SQLite under AIRFLOW_HOME, or the PostgreSQL URL given.

    Airflow does not support MariaDB for its own metadata (and ctloop's MariaDB holds the
    feature store), so a mysql/mariadb URL is refused here instead of failing later inside
    a migration.
    """
    url = (env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or "").strip()
    if not url:
        return f"sqlite:///{airflow_home / 'airflow.db'}"
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CtloopError(f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not a URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        raise CtloopError(
            f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={safe_url(url)} points Airflow's metadata at "
            "MySQL/MariaDB: Airflow does not support MariaDB for its metadata, and ctloop's "
            "MariaDB is the feature store. Use PostgreSQL "
            "(postgresql+psycopg2://user:pass@host:5432/airflow) or unset it for SQLite "
            f"under {airflow_home}"
        )
    if backend == "postgresql":
        try:
            parsed.get_dialect().import_dbapi()
        except ImportError as exc:
            raise CtloopError(
                f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={safe_url(url)} needs the PostgreSQL "
                f"driver '{parsed.get_driver_name()}', which this environment lacks ({exc}); "
                "the locked environment has psycopg2 (postgresql+psycopg2://): run "
                "`make install`, or use that driver"
            ) from exc
        return url
    if backend == "sqlite":
        return absolute_sqlite(url)
    raise CtloopError(
        f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={safe_url(url)}: '{backend}' is not a database "
        "Airflow's metadata can use here (PostgreSQL, or SQLite for one machine)"
    )


# SQLAlchemy MySQL driver -> the `client` extra of the MySQL provider's hook
_MYSQL_CLIENTS = {"pymysql": "pymysql", "mysqldb": "mysqlclient",
                  "mysqlconnector": "mysql-connector-python"}  # fmt: skip


def airflow_connection_json(store_url: str) -> str:
    """The feature store as an Airflow connection (AIRFLOW_CONN_FEATURE_STORE, JSON form).

    JSON, not a URI, so passwords need no escaping. The driver travels in the extra the
    providers' hooks read (`ctloop.orchestration.connection.connection_url`): `client` for
    MySQL/MariaDB (`MySqlHook`), `sqlalchemy_scheme` for PostgreSQL (`PostgresHook`).
    """
    url = make_url(store_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": url.database or ""})
    conn_type = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgres"}.get(backend)
    if conn_type is None:
        raise CtloopError(f"FEATURE_STORE_URL={safe_url(store_url)}: unsupported database")
    if conn_type == "mysql":
        client = _MYSQL_CLIENTS.get(url.get_driver_name(), "mysqlclient")
        # pymysql is ctloop's default without a `client`; left out, the hook's own calls
        # (Admin -> Connections -> Test) use mysqlclient, which MySqlHook supports and
        # pymysql it does not (`Unknown MySQL client name`)
        extra: dict[str, Any] = {} if client == "pymysql" else {"client": client}
    else:
        extra = {"sqlalchemy_scheme": url.drivername}
    extra.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    conn = {
        "conn_type": conn_type,
        "host": url.host or "",
        "port": url.port,
        "login": url.username or "",
        "password": url.password or "",
        "schema": url.database or "",
        "extra": extra,
    }
    return json.dumps({k: v for k, v in conn.items() if v not in (None, "")})
