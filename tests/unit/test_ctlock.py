"""The CT lease (`ctloop.store.ctlock`) on the embedded store: one run per view at a time.

The same code runs on MariaDB in `tests/integration/test_hardening_data.py`, where three
real `ctloop train` processes race for one view.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from ctloop.features.view import FeatureView
from ctloop.orchestration import ct
from ctloop.store.ctlock import CtLock, CtRunInProgressError, airflow_holder, cli_holder
from ctloop.store.engine import Database
from ctloop.training.run import Run


@pytest.fixture
def lock(sqlite_url: str) -> CtLock:
    db = Database(sqlite_url)
    yield CtLock(db)
    db.dispose()


def test_second_holder_is_refused_naming_the_first(lock: CtLock) -> None:
    lock.acquire("credit_score", airflow_holder("manual__1"))
    with pytest.raises(
        CtRunInProgressError,
        match=r"a CT run for view credit_score is in "
        r"progress since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(airflow:manual__1\)",
    ):
        lock.acquire("credit_score", cli_holder())
    lock.acquire("other_view", cli_holder())  # one lease per view


def test_holder_takes_its_lease_again_and_releases_it(lock: CtLock) -> None:
    holder = airflow_holder("manual__1")
    lock.acquire("credit_score", holder)
    lock.acquire("credit_score", holder)  # the next task of the same DAG run, or a retry
    assert not lock.release("credit_score", cli_holder())  # not someone else's to release
    assert lock.release("credit_score", holder)
    with lock.held("credit_score", cli_holder()):
        pass
    lock.acquire("credit_score", airflow_holder("manual__2"))


def test_expired_lease_is_taken_over(lock: CtLock) -> None:
    lock.acquire("credit_score", airflow_holder("killed"), lease=dt.timedelta(seconds=-1))
    lock.acquire("credit_score", cli_holder())
    with pytest.raises(CtRunInProgressError, match=r"\(cli:"):
        lock.acquire("credit_score", airflow_holder("next"))


def test_lease_of_a_dead_cli_process_is_taken_over(lock: CtLock) -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    lock.acquire("credit_score", cli_holder())
    table = lock.table
    with lock.db.begin() as conn:  # as if that (now finished) process had taken it
        conn.execute(sa.update(table).values(pid=int(child.stdout), holder="cli:gone"))
    lock.acquire("credit_score", airflow_holder("after_kill_9"))


def test_an_airflow_run_holds_its_view_between_tasks_and_gives_it_back(
    sqlite_url: str, view: FeatureView, lock: CtLock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CT DAG's tasks (`ctloop.orchestration.ct`) each take the lease in the DAG run's
    name; a CLI run is refused in between; a failed task, a refused candidate
    (`should_promote`) and `promote` give it back."""
    monkeypatch.setattr(ct, "feature_store_url", lambda: sqlite_url)
    run = Run(view, dt.date(2026, 3, 1), airflow_run_id="manual__1")
    context = {"dag_run": SimpleNamespace(run_id="manual__1", conf={}), "params": {}}
    with ct._leased(run):
        pass
    with pytest.raises(CtRunInProgressError, match=r"\(airflow:manual__1\)"):
        lock.acquire(view.name, cli_holder())  # between two tasks of the run
    with pytest.raises(RuntimeError), ct._leased(run):
        raise RuntimeError("the task failed")
    lock.acquire(view.name, cli_holder())  # the failure gave it back
    with pytest.raises(CtRunInProgressError):
        ct._leased(run).__enter__()  # and the run's next task is refused meanwhile
    lock.release(view.name, cli_holder())

    with ct._leased(run):
        pass
    refused = {"blessed": False, "version": "3", "checks": []}
    assert ct.should_promote(refused, context, view.name) is False
    lock.acquire(view.name, cli_holder())  # the refusal ended the run: free
    lock.release(view.name, cli_holder())
    with ct._leased(run, release=True):  # promote, the last step
        pass
    lock.acquire(view.name, cli_holder())
