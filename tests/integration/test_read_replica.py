"""A read replica for the large reads (issue 22, item 3), on two real `mariadbd` processes
in replication: a CT run's extract and the monitor's log window read from the replica
(seen in the servers' own row counters), and a replica that stopped replicating, fell
too far behind or went away is passed over for the primary, with a warning saying why."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.predlog.store import PredictionLog
from ctloop.settings import Settings
from ctloop.store.features import FeatureStore
from ctloop.store.replica import ReadReplica
from ctloop.training.pipeline import Run, extract
from tests.support.replication import Pair, mariadb_pair

pytestmark = pytest.mark.mariadb

START, DAYS = dt.date(2026, 3, 1), 12
AS_OF = START + dt.timedelta(days=DAYS)
ROWS_READ = "Rows_sent"  # rows the server sent to clients: who answered the read


@dataclasses.dataclass
class ReplicaWorld:
    pair: Pair
    primary: str
    replica: str
    rows: int


@pytest.fixture(scope="module")
def world(view: FeatureView) -> Iterator[ReplicaWorld]:
    """Twelve labelled days written to the primary and replicated."""
    with mariadb_pair() as pair:
        db = f"ctloop_rep_{uuid.uuid4().hex[:8]}"
        primary, replica = f"{pair.primary.url}/{db}", f"{pair.replica.url}/{db}"
        store = FeatureStore(primary)
        store.create_database_if_missing()
        store.init([view])
        config = StreamConfig(rows_per_day=150, label_delay_days=0)  # labels land same day
        for offset in range(DAYS):
            features, labels = generate_day(START + dt.timedelta(days=offset), config)
            store.ingest(view, features, labels)
        rows = len(store.training_set(view, AS_OF))
        store.dispose()
        pair.wait_caught_up()
        yield ReplicaWorld(pair, primary, replica, rows)


def _run(world: ReplicaWorld, view: FeatureView, tmp_path: Path, **settings: object) -> Run:
    cfg = Settings(data_dir=tmp_path / "data", feature_store_url=world.primary,
                   feature_store_read_url=world.replica,
                   mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                   **settings)  # fmt: skip
    return Run(view, AS_OF, settings=cfg)


def _rows_read(world: ReplicaWorld) -> tuple[int, int]:
    return world.pair.primary.status(ROWS_READ), world.pair.replica.status(ROWS_READ)


def test_a_training_extract_reads_from_the_replica(
    world: ReplicaWorld, view: FeatureView, tmp_path: Path
) -> None:
    assert world.rows > 1000
    before = _rows_read(world)
    summary = extract(_run(world, view, tmp_path))
    primary, replica = (b - a for a, b in zip(before, _rows_read(world), strict=True))
    assert summary["rows"] == world.rows  # the same training set the primary holds
    assert replica >= world.rows, (primary, replica)
    assert primary < world.rows // 2, (primary, replica)  # table checks only, not the set


def test_the_monitor_reads_its_log_window_from_the_replica(
    world: ReplicaWorld, view: FeatureView
) -> None:
    now = dt.datetime(2026, 3, 20, 12, 0)
    rows = [{"request_id": uuid.uuid4().hex, "feature_view": view.name, "model_version": "1",
             "entity_id": f"c{i}", "features": json.dumps({"age": 30 + i % 9}),
             "prediction": "Good", "probabilities": "{}", "latency_ms": 1.0,
             "created_at": now + dt.timedelta(seconds=i)} for i in range(400)]  # fmt: skip
    store = FeatureStore(world.primary, read_url=world.replica)
    try:
        PredictionLog(store).write(rows)
        world.pair.wait_caught_up()
        before = _rows_read(world)
        window = PredictionLog(store).read(view.name, now, now + dt.timedelta(hours=1))
        primary, replica = (b - a for a, b in zip(before, _rows_read(world), strict=True))
    finally:
        store.dispose()
    assert len(window) == 400
    assert replica >= 400 and primary < 400, (primary, replica)


def test_a_stopped_replica_makes_reads_fall_back_to_the_primary_with_a_warning(
    world: ReplicaWorld, view: FeatureView, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world.pair.replica.execute("STOP REPLICA")
    try:
        before = _rows_read(world)
        with caplog.at_level(logging.WARNING, logger="ctloop.store.replica"):
            summary = extract(_run(world, view, tmp_path))
        primary, replica = (b - a for a, b in zip(before, _rows_read(world), strict=True))
    finally:
        world.pair.replica.execute("START REPLICA")
    assert summary["rows"] == world.rows
    assert primary >= world.rows and replica < world.rows // 2, (primary, replica)
    assert "reading from the primary, not the replica" in caplog.text
    assert "replication is stopped (IO thread: No, SQL thread: No" in caplog.text
    assert f"127.0.0.1:{world.pair.replica.port}" in caplog.text  # which replica


def test_a_replica_behind_the_bound_is_passed_over_and_used_again_once_caught_up(
    world: ReplicaWorld, view: FeatureView, caplog: pytest.LogCaptureFixture
) -> None:
    """The replica's lag is read from SHOW REPLICA STATUS: a replica held back on purpose
    (MASTER_DELAY) is too far behind for a 1 s bound, and fit again once it caught up."""
    replica = world.pair.replica
    replica.execute("STOP REPLICA")
    replica.execute("CHANGE MASTER TO MASTER_DELAY=3600")
    replica.execute("START REPLICA")
    try:
        store = FeatureStore(world.primary)
        features, labels = generate_day(AS_OF, StreamConfig(rows_per_day=5, seed=3))
        store.ingest(view, features, labels)  # an event the replica holds back for an hour
        store.dispose()
        reader = ReadReplica(world.replica, max_lag_seconds=1, recheck_seconds=0)
        try:
            deadline = dt.datetime.now() + dt.timedelta(seconds=30)
            with caplog.at_level(logging.WARNING, logger="ctloop.store.replica"):
                while reader.usable() and dt.datetime.now() < deadline:
                    time.sleep(0.2)
            state = reader.measure()
            assert not state.usable and state.lag_seconds is not None and state.lag_seconds > 1
            assert "s behind, more than 1 s" in caplog.text
        finally:
            reader.dispose()
    finally:
        replica.execute("STOP REPLICA")
        replica.execute("CHANGE MASTER TO MASTER_DELAY=0")
        replica.execute("START REPLICA")
    world.pair.wait_caught_up()
    reader = ReadReplica(world.replica, max_lag_seconds=1, recheck_seconds=0)
    try:
        assert reader.usable(), reader.measure()
    finally:
        reader.dispose()


def test_a_replica_that_is_not_mariadb_or_of_no_mariadb_primary_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(CtloopError, match=r"FEATURE_STORE_READ_URL .* read replicas are MariaDB"):
        ReadReplica(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(CtloopError, match=r"FEATURE_STORE_URL .* is not MariaDB/MySQL"):
        FeatureStore(f"sqlite:///{tmp_path / 's.db'}", read_url="mysql+pymysql://u@127.0.0.1/x")


def test_a_replica_that_is_gone_makes_reads_fall_back_to_the_primary(
    world: ReplicaWorld, view: FeatureView, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Last in this module: the replica's process is stopped."""
    world.pair.replica.stop()
    with caplog.at_level(logging.WARNING, logger="ctloop.store.replica"):
        summary = extract(_run(world, view, tmp_path))
    assert summary["rows"] == world.rows
    assert "reading from the primary, not the replica" in caplog.text
    assert "it is unreachable" in caplog.text
