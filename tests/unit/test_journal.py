"""The prediction-log journal and the spill write boundary (issue 18, items 2 and 9).

A writer process is SIGKILLed with rows it accepted but never delivered (its database
call hangs): a new writer on the same folder replays them from the journal, each exactly
once. A full disk is injected at the one place files are written (`spill._os_write`): a
cut append keeps its whole lines, leaves no cut line behind, and the counters say what
happened to each row, once.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctloop.predlog import spill
from ctloop.predlog.spill import read_rows
from ctloop.predlog.store import PredictionLog
from ctloop.predlog.writer import PredictionLogWriter
from ctloop.store.features import FeatureStore
from tests.support.paths import ROOT
from tests.unit.test_logwriter import DOWN_URL, config, row, spill_files, wait_for


@pytest.fixture
def log(store: FeatureStore) -> PredictionLog:
    """The prediction log of the test's fresh store database."""
    return PredictionLog(store)


@pytest.fixture
def down_log() -> Iterator[PredictionLog]:
    """A prediction log whose database never answers."""
    fs = FeatureStore(DOWN_URL)
    yield PredictionLog(fs)
    fs.dispose()


CHILD = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from ctloop.predlog.writer import PredictionLogWriter, WriterConfig
    from tests.unit.test_logwriter import row

    def hang(rows):  # a database call that never returns: rows stay in memory
        threading.Event().wait()

    writer = PredictionLogWriter(hang, WriterConfig(spill_dir=Path(sys.argv[1]),
                                 batch_size=10, flush_seconds=0.05)).start()
    for i in range(int(sys.argv[2])):
        writer.submit(row(i))  # returns once the row is journaled: "answered"
    print("answered", flush=True)
    time.sleep(60)
    """
)


def test_rows_answered_before_a_kill_9_are_replayed_exactly_once(
    log: PredictionLog, tmp_path: Path
) -> None:
    """Fails without the journal: the killed process held the rows only in memory."""
    spill_dir = tmp_path / "spill"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(spill_dir), "137"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "answered"
        journals = list(spill_dir.glob("journal-*.jsonl"))
        assert journals and all(p.stat().st_mode & 0o777 == 0o600 for p in journals)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    assert log.count() == 0
    writer = PredictionLogWriter(log.write, config(tmp_path)).start()
    try:
        assert wait_for(lambda: log.count() == 137), log.count()
        assert wait_for(lambda: not list(spill_dir.glob("*.jsonl")))
        writer.submit(row(5))  # answered again with an id already stored: skipped
        assert writer.flush()
    finally:
        writer.close()
    assert log.count() == 137
    assert writer.stats()["failed"] == 0


def test_journal_segments_go_once_their_rows_are_stored(log: PredictionLog, tmp_path: Path) -> None:
    """While the process lives its journal holds the undelivered rows; once delivered the
    segments are deleted, and a graceful close leaves no file at all."""
    writer = PredictionLogWriter(log.write, config(tmp_path)).start()
    try:
        for i in range(300):
            writer.submit(row(i))
        assert list((tmp_path / "spill").glob("journal-*.jsonl"))
        assert writer.flush()
        assert log.count() == 300
    finally:
        writer.close()
    assert not list((tmp_path / "spill").glob("*.jsonl"))


def full_disk_after(budget: int) -> Any:
    """An `os.write` that takes `budget` more bytes, then fails like a full disk."""
    left = [budget]

    def write(fd: int, data: Any) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = os.write(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    return write


def test_a_full_spill_disk_keeps_whole_lines_and_counts_each_row_once(
    down_log: PredictionLog, log: PredictionLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills in the middle of a spilled batch: the lines written are kept and
    counted spilled (not failed), the file ends at a whole line (no cut line to be counted
    failed a second time at replay), and only the rest is counted failed."""
    line = len(spill.to_line(row(0)).encode())
    monkeypatch.setattr(spill, "_os_write", full_disk_after(int(line * 20.5)))
    writer = PredictionLogWriter(down_log.write, config(tmp_path, journal=False)).start()
    try:
        writer.submit_many([row(i) for i in range(50)])  # one batch: the insert fails
        assert writer.flush()
        stats = writer.stats()
    finally:
        writer.close()
    assert (stats["spilled"], stats["failed"]) == (20, 30), stats
    [path] = spill_files(tmp_path)
    with path.open("rb") as handle:
        rows, damaged = read_rows(handle)
    assert len(rows) == 20 and not damaged
    monkeypatch.setattr(spill, "_os_write", os.write)
    replayer = PredictionLogWriter(log.write, config(tmp_path)).start()
    try:
        assert wait_for(lambda: log.count() == 20)
        assert wait_for(lambda: not spill_files(tmp_path))
    finally:
        replayer.close()
    assert replayer.stats()["failed"] == 0 and replayer.stats()["quarantined"] == 0
