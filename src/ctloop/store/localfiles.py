"""The one kind of database connection that may send a local file, and only the one it names.

`LOAD DATA LOCAL INFILE` works by the server asking its client for a file by name, and
the client drivers open whatever name the server sends: a rogue server, or anyone in the
middle of an unencrypted connection, could ask for `/proc/self/environ` (passwords,
tokens) instead of the batch file. So the prediction log's bulk path does not simply
turn on `local_infile`: its connections are PyMySQL connections of this class, which
send a file only while the caller has named it (`allow`) and only if the server asks for
exactly that name; any other request is answered with an empty file and raised as
error 2068 (the client refused the file), which the log treats as "no bulk path here".
PyMySQL for both URL drivers, because its protocol code is Python and can be checked
this way; a C driver opens the file inside the C library.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pymysql import err
from pymysql.connections import Connection, LoadLocalPacketWrapper, MySQLResult

# the client refused to send a local file (MySQL's CR_LOAD_DATA_LOCAL_INFILE_REJECTED)
FILE_REFUSED = 2068


class _OneFileResult(MySQLResult):
    """A query result that sends a local file only if it is the one its connection
    allows right now."""

    connection: OneFileConnection

    def _read_load_local_packet(self, first_packet: Any) -> None:
        asked = LoadLocalPacketWrapper(first_packet).filename
        allowed = self.connection.allowed_file
        if allowed is not None and asked == allowed:
            super()._read_load_local_packet(first_packet)
            return
        self.connection.write_packet(b"")  # an empty file keeps the protocol in step
        with contextlib.suppress(err.MySQLError):
            self.connection._read_packet()  # the server's answer to the empty file
        raise err.OperationalError(
            FILE_REFUSED,
            f"refused to send local file {asked!r}: only the file named for this statement is sent",
        )


class OneFileConnection(Connection):
    """A PyMySQL connection with `local_infile` on that sends only the allowed file."""

    allowed_file: bytes | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["local_infile"] = True
        super().__init__(*args, **kwargs)

    @contextlib.contextmanager
    def allow(self, path: str) -> Iterator[None]:
        """Let the server have this one file during the block."""
        self.allowed_file = path.encode()
        try:
            yield
        finally:
            self.allowed_file = None

    def _read_query_result(self, unbuffered: bool = False) -> int:
        # PyMySQL 2.2's own body, with the result class above
        self._result = None
        result = _OneFileResult(self)
        if unbuffered:
            result.init_unbuffered_query()
        else:
            result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows
