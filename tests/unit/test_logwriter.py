"""The prediction-log writer against the real store: batching, the memory bound, spilling
while the database is down, replay (exactly once, also across processes' files), and
flushing on close. An unreachable MariaDB URL (port 1, nothing listens) plays the
database outage. On embedded SQLite here; `tests/integration/test_logwriter_mariadb.py`
runs the same tests on MariaDB.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctloop.errors import StoreUnavailableError
from ctloop.predlog.row import encode_row
from ctloop.predlog.spill import from_line, to_line
from ctloop.predlog.store import PredictionLog
from ctloop.predlog.writer import PredictionLogWriter, WriterConfig
from ctloop.store.features import FeatureStore

DOWN_URL = "mysql+pymysql://root@127.0.0.1:1/ctloop_down"  # nothing listens on port 1


def row(i: int, version: str = "1") -> dict[str, Any]:
    return {
        "request_id": f"req-{i:06d}",
        "feature_view": "credit_score",
        "model_version": version,
        "entity_id": f"c{i}",
        "features": {"age": 30 + i % 50, "occupation": None},
        "prediction": "Good",
        "probabilities": {"Good": 0.7, "Standard": 0.2, "Poor": 0.1},
        "latency_ms": 0.5,
        "created_at": dt.datetime(2026, 3, 1) + dt.timedelta(seconds=i),
    }


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture
def log(store: FeatureStore) -> PredictionLog:
    """The prediction log of the test's fresh store database (SQLite and MariaDB)."""
    return PredictionLog(store)


@pytest.fixture
def down_log() -> Iterator[PredictionLog]:
    """A prediction log whose database never answers."""
    fs = FeatureStore(DOWN_URL)
    yield PredictionLog(fs)
    fs.dispose()


def config(tmp_path: Path, **kw: Any) -> WriterConfig:
    base = {"spill_dir": tmp_path / "spill", "batch_size": 50, "flush_seconds": 0.1,
            "max_queue": 1000, "retry_seconds": 0.2, "orphan_scan_seconds": 0.5}  # fmt: skip
    return WriterConfig(**{**base, **kw})


def spill_files(tmp_path: Path) -> list[Path]:
    """Spill files proper, not the journal's segments (which hold every queued row)."""
    return sorted(
        p for p in (tmp_path / "spill").glob("*.jsonl") if not p.name.startswith("journal-")
    )


def test_rows_are_batched_by_size_and_by_time(log: PredictionLog, tmp_path: Path) -> None:
    sizes: list[int] = []

    def sink(rows: list[dict[str, Any]]) -> int:
        sizes.append(len(rows))
        return log.write(rows)

    writer = PredictionLogWriter(sink, config(tmp_path, batch_size=100, flush_seconds=0.3))
    writer.start()
    try:
        for i in range(250):
            writer.submit(row(i))
        assert writer.flush(10)
        assert sum(sizes) == 250
        assert max(sizes) == 100 and sizes.count(100) >= 2  # full batches first
        start = time.monotonic()
        writer.submit(row(1000))  # a lone row waits at most flush_seconds
        assert writer.flush(5)
        assert time.monotonic() - start < 2
        assert sizes[-1] == 1
    finally:
        writer.close()
    assert log.count("credit_score") == 251
    stats = writer.stats()
    counts = (stats["queued"], stats["written"], stats["spilled"], stats["failed"])
    assert counts == (251, 251, 0, 0)
    stored = log.read("credit_score", dt.datetime(2026, 1, 1), dt.datetime(2027, 1, 1))
    assert stored["request_id"].is_unique
    assert set(stored.columns) >= {"age", "proba_Good"}  # JSON columns as the monitor reads them


def test_close_replays_what_an_overload_spilled(log: PredictionLog, tmp_path: Path) -> None:
    """Traffic faster than the database fills the queue and spills; a shutdown while the
    database answers puts the spilled rows in the table too, not only on disk."""

    def slow_sink(rows: list[dict[str, Any]]) -> int:
        time.sleep(0.05)  # a database slower than the traffic
        return log.write(rows)

    writer = PredictionLogWriter(slow_sink, config(tmp_path, max_queue=100, flush_seconds=60))
    writer.start()
    for i in range(0, 1000, 10):
        writer.submit_many([row(i + k) for k in range(10)])
    assert writer.stats()["spilled"] > 0  # the queue overflowed
    writer.close()
    stats = writer.stats()
    assert stats["written"] + stats["replayed"] == 1000 and stats["failed"] == 0
    assert log.count() == 1000
    assert spill_files(tmp_path) == []


def test_a_spilled_row_is_replayed_exactly_as_it_would_have_been_written(
    log: PredictionLog,
) -> None:
    """A value orjson refuses (an integer beyond 64 bits, a numpy float) must not come back
    from a spill file changed, nor make the line unreadable."""
    odd = {**row(1), "features": {"big": 2**70, "age": np.float64(0.25), "x": float("nan")}}
    back = from_line(to_line(odd))
    assert log.write([back]) == 1
    read = log.read(odd["feature_view"], dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))
    assert len(read) == 1
    got = read.iloc[0]
    assert got["big"] == 2**70 and type(got["big"]) is int  # exact, not a float
    assert got["age"] == 0.25 and math.isnan(got["x"])


def test_close_flushes_everything_queued(log: PredictionLog, tmp_path: Path) -> None:
    writer = PredictionLogWriter(log.write, config(tmp_path, batch_size=500, flush_seconds=60))
    writer.start()
    for i in range(7):
        writer.submit(row(i))
    start = time.monotonic()
    writer.close()
    assert time.monotonic() - start < 5  # does not wait out the 60 s flush interval
    assert log.count() == 7
    writer.submit(row(99))  # after close a row is still kept: on disk
    assert writer.stats()["spilled"] == 1


def test_spill_files_are_readable_by_their_owner_only(
    down_log: PredictionLog, tmp_path: Path
) -> None:
    """Spilled rows hold customer ids and features: the folder is 0700, each file 0600,
    whatever the process umask."""
    old_umask = os.umask(0o022)
    writer = PredictionLogWriter(down_log.write, config(tmp_path))
    writer.start()
    try:
        writer.submit(row(1))
        assert writer.flush(30)
        files = spill_files(tmp_path)
        assert files
        assert stat.S_IMODE((tmp_path / "spill").stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    finally:
        writer.close()
        os.umask(old_umask)


def test_database_down_spills_then_replays_exactly_once(
    log: PredictionLog, down_log: PredictionLog, tmp_path: Path
) -> None:
    writer = PredictionLogWriter(down_log.write, config(tmp_path))
    writer.start()
    try:
        for i in range(120):
            writer.submit(row(i))
        assert writer.flush(30)
        stats = writer.stats()
        assert stats["spilled"] == 120 and stats["written"] == 0
        assert stats["database_ok"] is False and "unreachable" in stats["last_error"]
        assert spill_files(tmp_path), "rows must be on disk while the database is down"
        lines = sum(len(p.read_text().splitlines()) for p in spill_files(tmp_path))
        assert lines == 120
        writer.sink = log.write  # the database comes back
        for i in range(120, 130):
            writer.submit(row(i))
        assert wait_for(lambda: log.count() == 130, 15)
        assert wait_for(lambda: not spill_files(tmp_path), 5)
    finally:
        writer.close()
    stats = writer.stats()
    assert stats["written"] + stats["replayed"] == 130
    assert stats["failed"] == 0 and stats["duplicates"] == 0
    assert stats["database_ok"] is True


def test_replay_skips_rows_already_stored(log: PredictionLog, tmp_path: Path) -> None:
    """A batch that committed although its connection then failed is spilled too."""
    spill = tmp_path / "spill"
    spill.mkdir()
    rows = [encode_row(row(i)) for i in range(40)]
    log.write(rows[:15])  # these made it before the "failure"
    lines = [json.dumps({**r, "created_at": r["created_at"].isoformat()}) for r in rows]
    (spill / "spill-424242-1-dead.jsonl").write_text("\n".join(lines) + '\n{"request_id": "tr')
    writer = PredictionLogWriter(log.write, config(tmp_path))
    writer.start()
    try:
        assert wait_for(lambda: not spill_files(tmp_path), 10)
    finally:
        writer.close()
    assert log.count() == 40
    stats = writer.stats()
    assert (stats["replayed"], stats["duplicates"]) == (25, 15)
    assert stats["failed"] == 1  # the line cut short by the crash


def accented_lines(start: int, n: int) -> list[bytes]:
    """Spill lines of rows with non-ASCII text, as the real writer writes them: a cut can
    land inside a multibyte character."""
    return [
        to_line({**row(i), "entity_id": f"José-{i}", "features": {"city": "Zürich", "age": i}})
        .encode()
        for i in range(start, start + n)
    ]  # fmt: skip


def cut_inside_a_character(lines: list[bytes]) -> tuple[bytes, list[bytes]]:
    """A disk that filled up while spilling: the last line stops after the first byte of é."""
    cut = lines[-1][: lines[-1].index("é".encode()) + 1]
    return b"".join(lines[:-1]) + cut, [cut]


def invalid_utf8_in_the_middle(lines: list[bytes]) -> tuple[bytes, list[bytes]]:
    """A flipped byte: ü's lead byte replaced by one that never starts a character."""
    bad = lines[10].replace("ü".encode(), b"\xff", 1)
    return b"".join([*lines[:10], bad, *lines[11:]]), [bad.rstrip(b"\n")]


def garbage_line(lines: list[bytes]) -> tuple[bytes, list[bytes]]:
    """A line of bytes that are nothing at all: not UTF-8, not JSON."""
    garbage = bytes(range(0x80, 0x100)) + b"\x01\x02}{"
    return b"".join([*lines[:7], garbage + b"\n", *lines[7:]]), [garbage]


def truncated_json(lines: list[bytes]) -> tuple[bytes, list[bytes]]:
    """A line cut short mid-write, with later lines after it."""
    short = lines[5][:40]
    return b"".join([*lines[:5], short + b"\n", *lines[6:]]), [short]


def damaged_field_name(lines: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Valid UTF-8 and valid JSON, but a flipped byte renamed a column: not a row (its
    insert would fail the whole batch, every time)."""
    bad = lines[3].replace(b'"latency_ms"', b'"latency_mz"')
    return b"".join([*lines[:3], bad, *lines[4:]]), [bad.rstrip(b"\n")]


def nul_tail(lines: list[bytes]) -> tuple[bytes, list[bytes]]:
    """What a machine crash can leave: the file's length written, its last blocks not."""
    tail = b"\x00" * 4096
    return b"".join(lines) + tail, [tail]


def empty_file(lines: list[bytes]) -> tuple[bytes, list[bytes]]:
    """A spill file created, then nothing written to it before the crash."""
    return b"", []


DAMAGE = [cut_inside_a_character, invalid_utf8_in_the_middle, garbage_line, truncated_json,
          damaged_field_name, nul_tail, empty_file]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_a_damaged_spill_file_is_quarantined_and_never_stops_replay(
    log: PredictionLog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[list[bytes]], tuple[bytes, list[bytes]]],
) -> None:
    """The bad lines of a dead worker's spill file go to quarantine (0600, with the reason
    and their exact bytes), counted; its good lines and every file after it are replayed,
    and the file is gone, so a restart does not meet it again."""
    spill = tmp_path / "spill"
    spill.mkdir()
    lines = accented_lines(0, 20)
    content, bad = damage(lines)
    good = sum(line in content for line in lines)  # the lines left intact
    (spill / "spill-100-1-dead.jsonl").write_bytes(content)
    (spill / "spill-200-1-dead.jsonl").write_bytes(b"".join(accented_lines(500, 15)))
    seen: dict[str, int] = {}

    def hook(event: str, n: int) -> None:
        seen[event] = seen.get(event, 0) + n

    caplog.set_level(logging.INFO, logger="ctloop.predlog")
    writer = PredictionLogWriter(log.write, config(tmp_path), on_count=hook)
    writer.start()
    try:
        assert wait_for(lambda: log.count() == good + 15, 15)
        assert wait_for(lambda: not spill_files(tmp_path), 5)
        assert wait_for(lambda: writer.stats()["replayed"] == good + 15, 5)
    finally:
        writer.close()
    stats = writer.stats()
    assert (stats["quarantined"], stats["failed"]) == (len(bad), len(bad))
    assert seen.get("quarantined", 0) == len(bad)
    stored = log.read("credit_score", dt.datetime(2026, 1, 1), dt.datetime(2027, 1, 1))
    assert set(stored["city"]) == {"Zürich"} and stored["entity_id"].str.startswith("José").all()
    kept = sorted((spill / "quarantine").glob("*")) if bad else []
    warnings = [r for r in caplog.records if "damaged line" in r.getMessage()]
    if not bad:
        assert not (spill / "quarantine").exists() and warnings == []
        return
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    records = [json.loads(line) for line in kept[0].read_text().splitlines()]
    assert [base64.b64decode(r["base64"]) for r in records] == bad
    assert all(r["reason"] and r["source"] == kept[0].name for r in records)
    assert len(warnings) == 1 and f"{len(bad)} damaged line" in warnings[0].getMessage()


def test_a_quarantine_that_cannot_be_written_does_not_stop_replay(
    log: PredictionLog, tmp_path: Path
) -> None:
    """Damaged lines that cannot be kept (the quarantine cannot be created) are counted as
    lost, and replay still goes on with the good lines and the later files."""
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "quarantine").write_text("not a folder")  # mkdir and open below it fail
    content, bad = cut_inside_a_character(accented_lines(0, 10))
    (spill / "spill-100-1-dead.jsonl").write_bytes(content)
    (spill / "spill-200-1-dead.jsonl").write_bytes(b"".join(accented_lines(500, 5)))
    writer = PredictionLogWriter(log.write, config(tmp_path))
    writer.start()
    try:
        assert wait_for(lambda: log.count() == 9 + 5, 15)
        assert wait_for(lambda: not spill_files(tmp_path), 5)
    finally:
        writer.close()
    stats = writer.stats()
    assert (stats["replayed"], stats["quarantined"], stats["failed"]) == (14, 0, len(bad))


def test_full_queue_spills_instead_of_blocking(log: PredictionLog, tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_sink(rows: list[dict[str, Any]]) -> int:
        gate.wait(20)  # a database that hangs
        return log.write(rows)

    writer = PredictionLogWriter(slow_sink, config(tmp_path, batch_size=10, max_queue=20))
    writer.start()
    try:
        start = time.monotonic()
        for i in range(200):
            writer.submit(row(i))
        assert time.monotonic() - start < 1.0  # requests never wait for the database
        stats = writer.stats()
        assert stats["pending"] <= 20
        assert stats["spilled"] >= 200 - 20 - 10  # queue bound + one batch in flight
        gate.set()
        assert wait_for(lambda: log.count() == 200, 15)
        assert wait_for(lambda: not spill_files(tmp_path), 5)
    finally:
        gate.set()
        writer.close()
    stats = writer.stats()
    assert stats["written"] + stats["replayed"] == 200 and stats["failed"] == 0


def test_close_with_a_hung_database_keeps_rows_on_disk(log: PredictionLog, tmp_path: Path) -> None:
    gate = threading.Event()

    def hung_sink(rows: list[dict[str, Any]]) -> int:
        gate.wait(30)
        raise StoreUnavailableError("gave up")

    writer = PredictionLogWriter(hung_sink, config(tmp_path, batch_size=5))
    writer.start()
    for i in range(23):
        writer.submit(row(i))
    time.sleep(0.3)  # the first batch is in flight, stuck
    writer.close(timeout=0.5)
    gate.set()
    assert writer.stats()["spilled"] >= 23
    # the next process (same spill dir) replays everything, once
    successor = PredictionLogWriter(log.write, config(tmp_path))
    successor.start()
    try:
        assert wait_for(lambda: log.count() == 23, 15)
        assert wait_for(lambda: not spill_files(tmp_path), 5)
    finally:
        successor.close()


def test_live_process_files_are_not_claimed_dead_ones_are_claimed_once(
    log: PredictionLog, down_log: PredictionLog, tmp_path: Path
) -> None:
    # a live worker whose database is down: its spill file stays locked and its own
    live = PredictionLogWriter(down_log.write, config(tmp_path), probe=down_log.db.ping)
    live.start()
    # three dead workers' leftovers
    spill = tmp_path / "spill"
    for w in range(3):
        rows = [encode_row(row(1000 * (w + 1) + i)) for i in range(30)]
        text = "".join(json.dumps({**r, "created_at": r["created_at"].isoformat()}) + "\n"
                       for r in rows)  # fmt: skip
        (spill / f"spill-{90000 + w}-1-dead.jsonl").write_text(text)
    try:
        for i in range(10):
            live.submit(row(i))
        assert live.flush(10)
        own = live.stats()["spill_file"]
        assert own is not None
        with (spill / own).open() as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # two healthy workers race for the orphans
        adopters = [PredictionLogWriter(log.write, config(tmp_path)) for _ in range(2)]
        for a in adopters:
            a.start()
        assert wait_for(lambda: log.count() == 90, 15)
        time.sleep(0.6)  # another scan round: nothing more may appear
        assert log.count() == 90
        assert [p.name for p in spill_files(tmp_path)] == [own]  # the live file untouched
        for a in adopters:
            a.close()
        assert sum(a.stats()["replayed"] for a in adopters) == 90
        assert sum(a.stats()["duplicates"] for a in adopters) == 0
    finally:
        live.close()
    # the live worker stopped with its database still down: its rows wait on disk
    assert len(spill_files(tmp_path)) == 1
    heir = PredictionLogWriter(log.write, config(tmp_path))
    heir.start()
    try:
        assert wait_for(lambda: log.count() == 100, 15)
    finally:
        heir.close()


def test_counter_hook_sees_every_event(log: PredictionLog, tmp_path: Path) -> None:
    seen: dict[str, int] = {}

    def hook(event: str, n: int) -> None:
        seen[event] = seen.get(event, 0) + n

    writer = PredictionLogWriter(log.write, config(tmp_path), on_count=hook)
    writer.start()
    for i in range(12):
        writer.submit(row(i))
    writer.close()
    assert seen == {"queued": 12, "written": 12}


def test_config_refuses_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        WriterConfig(spill_dir=tmp_path, batch_size=0)
