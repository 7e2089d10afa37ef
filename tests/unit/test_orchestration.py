"""The orchestration glue in-process: no Airflow import, no database.

The DAG tasks are one call each into `ctloop.orchestration`; what those calls decide (the
feature store's URL from a connection, the kind of trigger, the as-of date, the run, the
short circuit before promotion) is tested here on stand-ins for Airflow's objects. The
DAGs themselves, parsed and run by Airflow, are in `tests/integration/test_dags.py`.
"""

from __future__ import annotations

import datetime as dt
import enum
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from ctloop.errors import CtloopError
from ctloop.orchestration import connection, ct
from ctloop.orchestration import context as runctx

VIEW = "credit_score"


def conn(**fields: Any) -> SimpleNamespace:
    base = {"conn_id": "feature_store", "conn_type": "mysql", "host": None, "port": None,
            "login": None, "password": None, "schema": None, "extra_dejson": {}}  # fmt: skip
    return SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"host": "h", "port": 3306, "login": "u", "password": "pw", "schema": "fs"},
         "mysql+pymysql://u:pw@h:3306/fs"),
        ({"conn_type": "mariadb", "host": "h", "schema": "fs"}, "mysql+pymysql://h/fs"),
        ({"host": "h", "schema": "fs", "extra_dejson": {"client": "mysqlclient"}},
         "mysql+mysqldb://h/fs"),
        ({"host": "h", "schema": "fs", "extra_dejson": {"client": "mysql-connector-python"}},
         "mysql+mysqlconnector://h/fs"),
        ({"host": "h", "schema": "fs",
          "extra_dejson": {"ssl_ca": "/etc/ca.pem", "charset": "utf8mb4"}},
         "mysql+pymysql://h/fs?charset=utf8mb4&ssl_ca=%2Fetc%2Fca.pem"),
        ({"conn_type": "postgres", "host": "pg", "login": "u", "schema": "fs"},
         "postgresql+psycopg://u@pg/fs"),
        ({"conn_type": "sqlite", "host": "/data/fs.db"}, "sqlite:////data/fs.db"),
    ],
)  # fmt: skip
def test_connection_url_comes_from_the_provider_hooks(fields: dict, expected: str) -> None:
    assert connection.connection_url(conn(**fields)) == expected


def test_connection_url_keeps_special_characters_in_passwords() -> None:
    url = connection.connection_url(conn(host="h", login="u", password="a@b:c/d%e#f"))
    assert make_url(url).password == "a@b:c/d%e#f"


@pytest.mark.parametrize(
    "fields", [{"conn_type": "http", "host": "h"}, {"extra_dejson": {"client": "odbc"}}]
)
def test_connection_url_refuses_what_cannot_be_a_feature_store(fields: dict) -> None:
    with pytest.raises(CtloopError, match="feature_store"):
        connection.connection_url(conn(**fields))


class RunType(enum.Enum):  # stands in for Airflow's DagRunType enum
    SCHEDULED = "scheduled"
    ASSET_TRIGGERED = "asset_triggered"


def context(run_type: Any = "manual", conf: dict | None = None, params: dict | None = None,
            **times: Any) -> dict[str, Any]:  # fmt: skip
    run_after = times.pop("run_after", dt.datetime(2026, 3, 5, 3, 0, tzinfo=dt.UTC))
    dag_run = SimpleNamespace(
        run_type=run_type, conf=conf or {}, run_id="run__1", run_after=run_after,
        logical_date=None, data_interval_end=None,
    )  # fmt: skip
    return {"dag_run": dag_run, "params": params or {}, **times}


@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        (context(RunType.SCHEDULED), "schedule"),
        (context("backfill"), "schedule"),
        (context(RunType.ASSET_TRIGGERED), "new-data"),
        (context("manual"), "manual"),
        (context("operator_triggered"), "manual"),
        (context("manual", conf={"trigger": "drift", "reason": "psi 0.4"}), "drift"),
        (context("operator_triggered", conf={"trigger": "drift"}), "drift"),
    ],
)
def test_trigger_kind(ctx: dict, expected: str) -> None:
    assert runctx.trigger_kind(ctx) == expected


def test_unknown_conf_trigger_is_refused() -> None:
    with pytest.raises(CtloopError, match="trigger must be one of"):
        runctx.trigger_kind(context(conf={"trigger": "whim"}))


def test_as_of_comes_from_the_run_never_from_now() -> None:
    interval_end = dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)
    scheduled = context(RunType.SCHEDULED, data_interval_end=interval_end, logical_date=None)
    assert runctx.as_of_date(scheduled) == dt.date(2026, 3, 2)
    # param (from the trigger form or conf) wins; blank means "not given"
    assert runctx.as_of_date(
        context(params={"as_of": "2026-02-01"}, data_interval_end=interval_end)
    ) == dt.date(2026, 2, 1)
    assert runctx.as_of_date(
        context(params={"as_of": " "}, data_interval_end=interval_end)
    ) == dt.date(2026, 3, 2)
    # an aware time is taken in UTC: 23:30 in New York on 1 March is 2 March in UTC
    new_york = dt.timezone(dt.timedelta(hours=-5))
    late = dt.datetime(2026, 3, 1, 23, 30, tzinfo=new_york)
    assert runctx.as_of_date(context(logical_date=late)) == dt.date(2026, 3, 2)
    # asset-triggered and manual runs may have no logical date: the run's run_after
    assert runctx.as_of_date(context(RunType.ASSET_TRIGGERED)) == dt.date(2026, 3, 5)
    with pytest.raises(CtloopError, match="not a date"):
        runctx.as_of_date(context(params={"as_of": "March 3rd"}))


def test_make_run_carries_trigger_reason_and_run_id() -> None:
    drift = context(conf={"trigger": "drift", "reason": "psi 0.4 on income"},
                    params={"as_of": "2026-02-01", "reason": "psi 0.4 on income"})  # fmt: skip
    run = runctx.make_run(VIEW, drift)
    assert (run.view.name, run.as_of, run.trigger) == (VIEW, dt.date(2026, 2, 1), "drift")
    assert (run.reason, run.airflow_run_id) == ("psi 0.4 on income", "run__1")
    scheduled = runctx.make_run(VIEW, context(RunType.SCHEDULED))
    assert (scheduled.trigger, scheduled.reason) == ("schedule", "scheduled retraining")


def test_short_circuit_condition() -> None:
    refused = {"blessed": False, "version": "3", "checks": [{"name": "floor", "passed": False}]}
    assert ct.should_promote({"blessed": True}, context()) is True
    assert ct.should_promote(refused, context()) is False
    assert ct.should_promote(refused, context(params={"force_promote": True})) is True


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_param_time_empty_means_not_given(empty: str | None) -> None:
    """The trigger form sends null, the API may send "" or blanks: the DAG's default runs."""
    assert runctx.parse_time("since", empty) is None
    assert runctx.param_time(context(params={"since": empty}), "since") is None
    assert runctx.param_time(context(conf={"since": empty}), "since") is None
    assert runctx.param_time(context(), "since") is None  # no params at all


def test_param_time_reads_utc_and_refuses_what_is_not_a_time() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    expected = dt.datetime(2026, 2, 10, 0, 0)  # naive UTC, the prediction log's clock
    assert runctx.param_time(context(params={"until": "2026-02-10T00:00:00Z"}), "until") == expected
    assert runctx.parse_time("until", "2026-02-10T02:00:00+02:00") == expected
    assert runctx.parse_time("until", dt.datetime(2026, 2, 10, 2, tzinfo=plus_two)) == expected
    assert runctx.parse_time("until", "2026-02-10") == expected  # a date: its midnight
    # conf wins over the params; an empty conf value leaves the param's
    both = context(conf={"since": "2026-02-09T00:00:00Z"}, params={"since": "2026-01-01T00:00Z"})
    assert runctx.param_time(both, "since") == dt.datetime(2026, 2, 9)
    blank_conf = context(conf={"since": ""}, params={"since": "2026-01-01T00:00:00Z"})
    assert runctx.param_time(blank_conf, "since") == dt.datetime(2026, 1, 1)
    with pytest.raises(CtloopError, match="param 'since': 'yesterday' is not an ISO date or time"):
        runctx.param_time(context(params={"since": "yesterday"}), "since")
