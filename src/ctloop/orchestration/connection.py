"""Where the DAGs' data lives: the feature store's Airflow connection and its Assets.

Credentials live in the Airflow connection `feature_store` (Admin -> Connections,
`AIRFLOW_CONN_FEATURE_STORE` or a secrets backend), read through the providers' own hooks
(`MySqlHook`, `PostgresHook`), which build the SQLAlchemy URL from the connection and its
extras (`client`, `charset`, SSL) as Airflow documents them. Without that connection the
settings' URL is used, so a DAG also runs on a bare machine.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ctloop.errors import CtloopError
from ctloop.settings import get_settings

if TYPE_CHECKING:
    from airflow.sdk import Asset

log = logging.getLogger(__name__)

FEATURE_STORE_CONN_ID = "feature_store"
"""The Airflow connection holding the feature store (`AIRFLOW_CONN_FEATURE_STORE`)."""

_MYSQL_TYPES = ("mysql", "mariadb")
_MYSQL_CLIENTS = ("pymysql", "mysqlclient", "mysql-connector-python")  # MySqlHook's `client`
_POSTGRES_TYPES = ("postgres", "postgresql")


def asset_uri(view: str) -> str:
    """The URI of the Asset that stands for a view's rows in the feature store."""
    return f"ctloop://feature_store/{view}"


def feature_store_asset(view: str) -> Asset:
    """The Asset ingestion updates and the CT DAG is scheduled on (same object both sides)."""
    from airflow.sdk import Asset  # (a) importing Airflow loads its config: only under Airflow

    return Asset(name=asset_uri(view), uri=asset_uri(view), group="feature_store")


def connection_url(conn: Any) -> str:
    """A SQLAlchemy URL (with its password) for an Airflow connection, from its provider's
    hook: MySQL/MariaDB through `MySqlHook`, PostgreSQL through `PostgresHook`; a SQLite
    connection keeps its file path in `host`. Other extras become URL query parameters,
    as the hooks make them (`charset`, `ssl_ca`, ...).

    The `client` extra picks the MySQL driver (pymysql, mysqlclient or
    mysql-connector-python). Without it ctloop takes pymysql, the driver its store is
    tested on, where the hook would take mysqlclient.
    """
    conn_type = (conn.conn_type or "").strip().lower()
    conn_id = getattr(conn, "conn_id", None) or "?"
    if conn_type in _MYSQL_TYPES:
        from airflow.providers.mysql.hooks.mysql import MySqlHook  # (a) a provider
        from sqlalchemy.engine import make_url  # (a) SQLAlchemy stays out of DAG parsing

        client = (conn.extra_dejson or {}).get("client")
        if client is not None and client not in _MYSQL_CLIENTS:
            raise CtloopError(
                f"connection {conn_id}: unknown MySQL client '{client}' "
                f"(expected one of {', '.join(_MYSQL_CLIENTS)})"
            )
        url = make_url(MySqlHook(mysql_conn_id=conn_id, connection=conn).get_uri())
        if client in (None, "pymysql", "mysqlclient"):  # the hook writes mysqlclient as mysql://
            url = url.set(
                drivername="mysql+mysqldb" if client == "mysqlclient" else "mysql+pymysql"
            )
        return url.render_as_string(hide_password=False)
    if conn_type in _POSTGRES_TYPES:
        from airflow.providers.postgres.hooks.postgres import PostgresHook  # (a) a provider

        return PostgresHook(postgres_conn_id=conn_id, connection=conn).get_uri()
    if conn_type == "sqlite":
        path = conn.host or conn.schema or ""
        return f"sqlite:///{path}" if path else "sqlite://"
    raise CtloopError(
        f"connection {conn_id}: type '{conn.conn_type}' is not a supported feature store "
        f"(use one of {', '.join((*_MYSQL_TYPES, *_POSTGRES_TYPES, 'sqlite'))})"
    )


def feature_store_url(conn_id: str = FEATURE_STORE_CONN_ID) -> str:
    """The feature store's SQLAlchemy URL: the Airflow connection, else ctloop's settings."""
    from airflow.sdk import Connection  # (a) importing Airflow loads its config
    from airflow.sdk.exceptions import AirflowNotFoundException  # (a) as above
    from sqlalchemy.engine import make_url  # (a) SQLAlchemy stays out of DAG parsing

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        url = get_settings().store_url
        source = f"ctloop settings (no Airflow connection '{conn_id}')"
    else:
        url = connection_url(conn)
        source = f"Airflow connection '{conn_id}'"
    log.info("feature store: %s from %s", make_url(url).render_as_string(), source)
    return url
