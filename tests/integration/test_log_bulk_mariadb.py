"""The prediction log's bulk path on MariaDB: `LOAD DATA LOCAL INFILE` from a temporary file.

It must store exactly what the INSERT path stores (every column, byte for byte, also for
text full of the characters LOAD DATA treats specially), never store a request twice, and
hand a batch to the INSERT path whenever it cannot take it: a server that refuses local
files or fails the load (from then on), a temporary folder that cannot be written. The
bulk connections send only the file a statement names. Whether a batch really
went through LOAD DATA is read from the server's own statement counter (`Com_load`), so
a bulk path that silently never runs fails here.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ctloop.errors import StoreUnavailableError
from ctloop.features.view import FeatureView
from ctloop.predlog.store import PredictionLog, _tsv_line
from ctloop.store.features import FeatureStore
from ctloop.store.localfiles import FILE_REFUSED
from tests.support.databases import MARIADB_SERVER

pytestmark = [pytest.mark.mariadb, pytest.mark.serial]  # Com_load, local_infile: server-wide

AWKWARD = ["tab\there", "new\nline", "back\\slash", '"quoted"', "\\N", "NULL", "é ü 中 😀",
           "cr\rhere", "nul\x00here", "", "trailing\\"]  # fmt: skip


@pytest.fixture(params=["pymysql", "mysqldb"])
def store(mariadb_url: str, request: pytest.FixtureRequest) -> Iterator[FeatureStore]:
    """A log database through each driver the bulk path supports."""
    store = FeatureStore(mariadb_url.replace("+pymysql", f"+{request.param}"))
    store.init([])
    yield store
    store.dispose()


def rows(n: int, created: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Log rows as the service and its spill files make them: JSON fields as objects (or
    text), awkward strings everywhere a client's text can reach, no entity now and then."""
    created = created or dt.datetime(2026, 12, 4, 10, 30, 15, 123456)
    out = []
    for i in range(n):
        text = AWKWARD[i % len(AWKWARD)]
        features: Any = {"occupation": text, "age": 30.5 + i, "income": None, "big": 2**70}
        out.append({
            "request_id": uuid.uuid4().hex,
            "feature_view": "credit_score",
            "model_version": "3",
            "entity_id": None if i % 4 == 0 else text or "e",
            "prediction": ["Good", "1.25e-07", text][i % 3],
            "latency_ms": 0.25 * i + 1e-9,
            "created_at": created + dt.timedelta(microseconds=i),
            "role": ["champion", "shadow", None][i % 3],
            "probabilities": {} if i % 5 == 0 else {"Good": 0.1, "Poor": 0.9},
            "features": features if i % 6 else '{"as": "text", "x": "\\t"}',
        })  # fmt: skip
    return out


def loads() -> int:
    """LOAD DATA statements the server has run (all sessions)."""
    server = sa.create_engine(MARIADB_SERVER, poolclass=sa.pool.NullPool)
    try:
        with server.connect() as conn:
            return int(conn.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Com_load'")).one()[1])
    finally:
        server.dispose()


def stored(store: FeatureStore, ids: list[str]) -> list[tuple[Any, ...]]:
    """The stored rows of these request ids, in their order, without id and request id."""
    log = PredictionLog(store)
    columns = [c for c in log.table.columns if c.name not in ("id", "request_id")]
    with store.connect() as conn:
        found = {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                sa.select(log.table.c.request_id, *columns).where(log.table.c.request_id.in_(ids))
            )
        }
    return [found[i] for i in ids]


def test_a_bulk_loaded_batch_is_stored_exactly_as_the_insert_path_stores_it(
    store: FeatureStore,
) -> None:
    bulk, insert = PredictionLog(store, bulk_load=True), PredictionLog(store, bulk_load=False)
    batch = rows(60)
    twin = [{**r, "request_id": uuid.uuid4().hex} for r in batch]
    before = loads()
    assert bulk.write(batch) == 60
    assert loads() == before + 1 and bulk.bulk_load  # one LOAD DATA statement
    assert insert.write(twin) == 60
    assert loads() == before + 1  # the INSERT path loaded nothing
    by_bulk = stored(store, [r["request_id"] for r in batch])
    by_insert = stored(store, [r["request_id"] for r in twin])
    assert by_bulk == by_insert
    assert any(None in row for row in by_bulk)  # NULL entities stayed NULL, "\N" stayed text
    assert {row[2] for row in by_bulk} >= {None, "\\N", "NULL", "tab\there", "nul\x00here"}


def test_a_views_typed_table_is_bulk_loaded_as_the_insert_path_stores_it(
    store: FeatureStore, view: FeatureView
) -> None:
    """The view's own table (one column per feature, `_extra` for what no column holds):
    one LOAD DATA per batch, the same stored values as the INSERT path, and the values
    read back as they were logged."""
    store.init([view])
    bulk, insert = PredictionLog(store, bulk_load=True), PredictionLog(store, bulk_load=False)
    batch = [{**r, "feature_view": view.name} for r in rows(60)]
    twin = [{**r, "request_id": uuid.uuid4().hex} for r in batch]
    before = loads()
    assert bulk.write(batch) == 60
    assert loads() == before + 1 and bulk.bulk_load
    assert insert.write(twin) == 60
    assert loads() == before + 1
    assert bulk.write(batch) == 0  # a replay: nothing twice
    table = bulk.layout(view.name).table  # type: ignore[union-attr]
    columns = [c for c in table.columns if c.name not in ("id", "request_id")]
    with store.connect() as conn:
        found = {r[0]: tuple(r[1:]) for r in conn.execute(sa.select(table.c.request_id, *columns))}
    assert [found[r["request_id"]] for r in batch] == [found[r["request_id"]] for r in twin]
    assert PredictionLog(store).count(view.name) == 120
    back = bulk.read(view.name, dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))
    by_id = back.set_index("request_id")
    for row in batch:
        got = by_id.loc[row["request_id"]]
        features = row["features"]
        if isinstance(features, str):
            features = json.loads(features)
        for key, value in features.items():
            assert got[key] == value or (value is None and pd.isna(got[key])), (key, got[key])
        assert got["entity_id"] == row["entity_id"] or row["entity_id"] is None
        assert got["prediction"] == row["prediction"]


def test_a_replayed_batch_is_never_stored_twice(store: FeatureStore) -> None:
    log = PredictionLog(store, bulk_load=True)
    batch = rows(40)
    assert log.write(batch[:30]) == 30
    assert log.write(batch[:30]) == 0  # a replay after an outage: all stored already
    assert log.write(batch[20:]) == 10  # half stored, half new
    assert log.count() == 40


def test_a_server_that_refuses_local_files_gets_inserts_from_then_on(
    store: FeatureStore,
) -> None:
    log = PredictionLog(store, bulk_load=True)
    server = sa.create_engine(MARIADB_SERVER, poolclass=sa.pool.NullPool)
    with server.begin() as conn:
        conn.execute(sa.text("SET GLOBAL local_infile = 0"))
    try:
        before = loads()
        assert log.write(rows(25)) == 25  # refused, then inserted: nothing lost
        assert not log.bulk_load
        assert log.write(rows(5)) == 5
        assert loads() == before + 1  # the refused attempt only, no second try
    finally:
        with server.begin() as conn:
            conn.execute(sa.text("SET GLOBAL local_infile = 1"))
        server.dispose()
    assert log.count() == 30


def test_a_temporary_folder_that_cannot_be_written_costs_the_bulk_path_not_a_row(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    log = PredictionLog(store, bulk_load=True)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "missing"))
    before = loads()
    assert log.write(rows(10)) == 10
    assert loads() == before and log.bulk_load  # this batch inserted; the path is kept
    monkeypatch.undo()
    assert log.write(rows(10)) == 10  # within the minute's pause: INSERT, no new attempt
    assert loads() == before
    log._spool_retry_at = 0.0  # the minute has passed
    assert log.write(rows(10)) == 10
    assert loads() == before + 1
    assert log.count() == 30


def test_only_the_named_file_is_ever_sent(store: FeatureStore, tmp_path: Any) -> None:
    """A server asking for another file than the statement's (a rogue server, or a
    man in the middle) gets nothing: error 2068, no row from that file."""
    named, secret = tmp_path / "batch.tsv", tmp_path / "secret.tsv"
    named.write_text("1\n")
    secret.write_text("42\n")
    with store.begin() as conn:
        conn.execute(sa.text("CREATE TABLE bulk_probe (n INT)"))
    with (
        pytest.raises(StoreUnavailableError) as refused,
        store.local_file_begin(str(named)) as conn,
    ):
        conn.exec_driver_sql("LOAD DATA LOCAL INFILE %s INTO TABLE bulk_probe", (str(secret),))
    assert refused.value.__cause__.orig.args[0] == FILE_REFUSED  # type: ignore[union-attr]
    with store.local_file_begin(str(named)) as conn:  # the pool's connection still works
        conn.exec_driver_sql("LOAD DATA LOCAL INFILE %s INTO TABLE bulk_probe", (str(named),))
    with store.connect() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT n FROM bulk_probe"))] == [1]


def test_a_load_failing_for_another_reason_gets_inserts_from_then_on(
    store: FeatureStore,
) -> None:
    log = PredictionLog(store, bulk_load=True)
    log._load_sqls["prediction_log"] = (  # a statement the server fails (no such column)
        "LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE prediction_log (no_such_column)"
    )
    assert log.write(rows(12)) == 12
    assert not log.bulk_load
    assert log.count() == 12


def test_values_are_written_as_the_drivers_bind_them() -> None:
    line = _tsv_line(
        {"a": np.float64(1.5), "b": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
         "c": dt.datetime(2026, 1, 2, 3, 4, 5, 6), "d": 1e-7},
        ["a", "b", "c", "d"],
    )  # fmt: skip
    assert line == "1.5\t2026-01-02 03:04:05.000000\t2026-01-02 03:04:05.000006\t1e-07\n"
