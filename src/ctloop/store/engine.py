"""One database connection for every part that keeps tables in the store's database.

The feature store, the prediction log and the drift report share one MariaDB (or embedded
SQLite) database and, within a process, one pooled engine: `Database` is that engine with
what every part needs around it (URL handling, the dialect, one clear error when the server
cannot be reached, a transaction helper, creating the database itself). It knows nothing of
feature views or logs, so each part's tables and SQL live in the part's own package.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import NoSuchModuleError, OperationalError, ProgrammingError

from ctloop.errors import CtloopError, StoreUnavailableError
from ctloop.redact import redact
from ctloop.store.localfiles import OneFileConnection

log = logging.getLogger(__name__)

MYSQL_DIALECTS = ("mysql", "mariadb")
_UNKNOWN_DATABASE = 1049
ACCEPTED_SCHEMES = (
    "sqlite:///PATH",
    "mysql+pymysql://",
    "mariadb+pymysql://",
    "mysql+mysqldb://",
    "mysql+mysqlconnector://",
    "postgresql+psycopg2://",
    "postgresql+psycopg://",
)
"""The store's URL schemes with a driver ctloop installs (what a bad URL's error lists)."""


def unsupported_url_error(url: URL, exc: Exception) -> CtloopError:
    """One line naming the setting, the scheme at fault and the ones that work.

    SQLAlchemy's own errors (`NoSuchModuleError: Can't load plugin:
    sqlalchemy.dialects:postgres`, a driver's `ModuleNotFoundError`) name neither the
    setting nor the fix, and a user who wrote `postgres://` (Heroku's spelling) needs both.
    """
    scheme = url.drivername
    hint = " (SQLAlchemy spells it postgresql://)" if scheme.split("+")[0] == "postgres" else ""
    why = (
        "no such SQLAlchemy dialect"
        if isinstance(exc, NoSuchModuleError)
        else (f"its driver is not installed ({exc})")
    )
    return CtloopError(
        f"FEATURE_STORE_URL {redact(url.render_as_string(hide_password=True))}: scheme "
        f"'{scheme}' cannot be used: {why}{hint}; accepted schemes: {', '.join(ACCEPTED_SCHEMES)}"
    )


# MariaDB errors about the schema, not the server: table exists, unknown table, unknown
# column, identifier too long, duplicate column, duplicate index name, bad table name, no
# such table
_SCHEMA_ERRORS = (1050, 1051, 1054, 1059, 1060, 1061, 1103, 1146)


# PyMySQL's connection arguments for every engine: a short connect timeout (an outage is
# reported, not waited out) and the 4-byte UTF-8 the tables use
PYMYSQL_CONNECT_ARGS: dict[str, Any] = {"connect_timeout": 5, "charset": "utf8mb4"}


def make_engine(url: URL) -> Engine:
    """A pooled engine tuned per backend: WAL for the embedded SQLite file (readers never
    wait for the log writer), pre-ping and recycling for a server that drops idle
    connections, and a short connect timeout so an outage is reported, not waited out."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if backend in MYSQL_DIALECTS and url.get_driver_name() == "pymysql":
        connect_args = dict(PYMYSQL_CONNECT_ARGS)
    return sa.create_engine(url, pool_pre_ping=True, pool_recycle=3600, connect_args=connect_args)


def local_files_engine(url: URL) -> Engine:
    """An engine on the same MariaDB/MySQL database whose connections may send one named
    local file each (`ctloop.store.localfiles`): PyMySQL whatever the URL's driver, one
    pooled connection (the log writer's thread), two more on overflow."""
    pymysql_url = url.set(drivername=f"{url.get_backend_name()}+pymysql")
    engine = sa.create_engine(
        pymysql_url,
        pool_pre_ping=True,
        pool_recycle=3600,
        pool_size=1,
        max_overflow=2,
        connect_args=dict(PYMYSQL_CONNECT_ARGS),
    )

    @sa.event.listens_for(engine, "do_connect")
    def _one_file_connection(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return OneFileConnection(*cargs, **cparams)

    return engine


def _allowing(conn: Connection, path: str) -> contextlib.AbstractContextManager[None]:
    dbapi = conn.connection.dbapi_connection
    if not isinstance(dbapi, OneFileConnection):  # only local_files_engine's connections
        raise TypeError(f"not a one-file connection: {type(dbapi).__name__}")
    return dbapi.allow(path)


class ReadSource(Protocol):
    """A database the large reads may use instead (`ctloop.store.replica.ReadReplica`)."""

    def usable(self) -> bool:
        """Whether reads may go there now (caught up, reachable)."""
        ...

    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection to it."""
        ...

    def dispose(self) -> None:
        """Close its pool."""
        ...


class Database:
    """Access to one store database; cheap to create, holds a pooled engine."""

    replica: ReadSource | None = None
    """Where `read_connect` reads when it may (set by `FeatureStore` from its read URL)."""

    def __init__(self, url: str | URL) -> None:
        self.url = make_url(url)
        self._local_files_engine: Engine | None = None
        self._local_files_lock = threading.Lock()
        try:
            self.engine = make_engine(self.url)
        except (NoSuchModuleError, ImportError) as exc:
            raise unsupported_url_error(self.url, exc) from exc

    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect name ("mariadb", "mysql", "sqlite", "postgresql")."""
        return self.engine.dialect.name

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn "cannot connect" driver errors into one clear, user-facing error.

        A schema error (a table or index that exists or is missing, a name too long) is
        no outage: it is reported as what it is, and not retried as one.
        """
        try:
            yield
        except (OperationalError, ProgrammingError) as exc:
            reason = str(exc.orig) if exc.orig is not None else str(exc)
            orig = exc.orig
            code = orig.args[0] if orig is not None and orig.args else None
            if code in _SCHEMA_ERRORS:
                raise CtloopError(
                    f"feature store {self.safe_url} refused a schema operation: {reason}"
                ) from exc
            if isinstance(exc, ProgrammingError):  # a bug in the SQL: keep its traceback
                raise
            raise StoreUnavailableError(
                f"feature store {self.safe_url} is unreachable or refused the operation: {reason}"
            ) from exc

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self._translate(), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads, with the store's error translation."""
        with self._translate(), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def read_connect(self) -> Iterator[Connection]:
        """A connection for the large reads (training sets, monitor windows): the read
        replica when one is set and caught up (`ctloop.store.replica`), else this
        database. Writes, and reads that decide a write, use `connect`/`begin`."""
        source = self.replica if self.replica is not None and self.replica.usable() else self
        with source.connect() as conn:
            yield conn

    @property
    def can_send_local_files(self) -> bool:
        """Whether `local_file_begin` exists here: a MariaDB/MySQL database."""
        return self.dialect in MYSQL_DIALECTS

    @contextlib.contextmanager
    def local_file_begin(self, path: str) -> Iterator[Connection]:
        """A transaction whose connection sends the server this one local file if it asks
        for it (LOAD DATA LOCAL INFILE), and no other (`ctloop.store.localfiles`), from a
        small pool of its own opened on first use: no other connection of the process
        can be asked for a file."""
        with self._local_files_lock:
            if self._local_files_engine is None:
                self._local_files_engine = local_files_engine(self.url)
            engine = self._local_files_engine
        with self._translate(), engine.begin() as conn, _allowing(conn, path):
            yield conn

    def dispose_local_files(self) -> None:
        """Close the local-file pool (the server refuses local files: no more use)."""
        with self._local_files_lock:
            engine, self._local_files_engine = self._local_files_engine, None
        if engine is not None:
            engine.dispose()

    def ping(self) -> None:
        """Fail fast with a clear message when the database cannot be reached."""
        with self.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        """Close the pool's connections (a worker's shutdown, a test's teardown)."""
        self.engine.dispose()
        self.dispose_local_files()
        if self.replica is not None:
            self.replica.dispose()

    def create_database_if_missing(self) -> bool:
        """On MariaDB/MySQL, create the URL's database when the server lacks it."""
        if self.dialect not in MYSQL_DIALECTS or not self.url.database:
            return False
        try:
            self.ping()
            return False
        except StoreUnavailableError as exc:
            orig = getattr(exc.__cause__, "orig", None)
            if not (orig is not None and orig.args and orig.args[0] == _UNKNOWN_DATABASE):
                raise
        name = self.url.database
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", name):
            raise CtloopError(f"database name '{name}' must be letters, digits and underscores")
        server_url = URL.create(
            self.url.drivername,
            username=self.url.username,
            password=self.url.password,
            host=self.url.host,
            port=self.url.port,
            query=self.url.query,
        )  # URL.set(database=None) would keep the database
        server = sa.create_engine(server_url, poolclass=sa.pool.NullPool)
        quoted = server.dialect.identifier_preparer.quote_identifier(name)
        try:
            with self._translate(), server.begin() as conn:
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {quoted}"))
        finally:
            server.dispose()
        log.info("created database %s", name)
        return True
