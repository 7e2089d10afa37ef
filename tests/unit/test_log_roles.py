"""The prediction log's `role` column: added to a log an older ctloop created (rows kept,
read as the champion's), and the role filter of `PredictionLog.read`. Also run on MariaDB
through the serving tests, whose service writes roles."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from ctloop.predlog.store import CHAMPION_ROLE, SHADOW_ROLE, PredictionLog
from ctloop.store.features import FeatureStore

OLD_LOG = """CREATE TABLE prediction_log (
  id INTEGER PRIMARY KEY, request_id VARCHAR(64) NOT NULL UNIQUE,
  feature_view VARCHAR(64) NOT NULL, model_version VARCHAR(32) NOT NULL,
  entity_id VARCHAR(64), features TEXT NOT NULL, prediction VARCHAR(128) NOT NULL,
  probabilities TEXT NOT NULL, latency_ms FLOAT NOT NULL, created_at DATETIME NOT NULL)"""
AT = dt.datetime(2026, 3, 1, 12)


def row(rid: str, role: str | None = None) -> dict:
    out = {"request_id": rid, "feature_view": "v", "model_version": "1", "entity_id": "e",
           "features": {"x": 1.0}, "prediction": "a", "probabilities": {"a": 1.0},
           "latency_ms": 1.0, "created_at": AT}  # fmt: skip
    if role is not None:
        out["role"] = role
    return out


def test_an_old_log_gets_the_role_column_and_keeps_its_rows(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text(OLD_LOG))
        conn.execute(sa.text(
            "INSERT INTO prediction_log (request_id, feature_view, model_version, features, "
            "prediction, probabilities, latency_ms, created_at) VALUES "
            "('old', 'v', '1', '{}', 'a', '{}', 1.0, '2026-03-01 11:00:00')"
        ))  # fmt: skip
    engine.dispose()
    store = FeatureStore(sqlite_url)
    store.init([])
    store.init([])  # twice: nothing to add the second time
    log = PredictionLog(store)
    assert log.write([row("new", CHAMPION_ROLE), row("new.shadow", SHADOW_ROLE)]) == 2
    window = (dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2))
    champion = log.read("v", *window, expand_features=False, role=CHAMPION_ROLE)
    assert sorted(champion["request_id"]) == ["new", "old"]  # NULL role: the champion's
    shadow = log.read("v", *window, expand_features=False, role=SHADOW_ROLE)
    assert list(shadow["request_id"]) == ["new.shadow"]
    assert len(log.read("v", *window, expand_features=False)) == 3
    store.dispose()
