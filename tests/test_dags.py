"""The Airflow DAGs: parse checks, the orchestration glue, and the CT DAG run by Airflow.

Airflow reads its configuration when it is first imported, so everything that imports
Airflow runs in a child process whose environment is set before it starts: its own
AIRFLOW_HOME and SQLite metadata under tmp_path (never MariaDB, which Airflow does not
support for its metadata), the DAGs folder of this checkout, the feature store as the
Airflow connection `feature_store` (a MariaDB database of its own) and a real MLflow
SQLite store. The test process only reads the outcomes: the metadata Airflow returns, the
MLflow registry and the feature store.

The CT DAG runs through `dag.test()` (the whole scheduler loop in one process, tasks run
by the Task SDK) in one long-lived child that serves several runs, so Airflow's start-up
cost is paid once; between runs the test corrupts the data in MariaDB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from ctloop.dev.dagrunner import DagRunner
from ctloop.errors import CtloopError
from ctloop.features.view import list_views, load_view_file
from ctloop.ingest.synth import StreamConfig, land_synthetic_day, stream
from ctloop.orchestration import connection, ct
from ctloop.orchestration import context as runctx
from ctloop.registry import Registry
from ctloop.store.features import FeatureStore
from tests.conftest import ROOT, mariadb_database

DAGS = ROOT / "dags"
VIEW = "credit_score"
CT_DAG = f"ct_{VIEW}"
INGEST_DAG = f"ingest_{VIEW}"
CT_TASKS = ["extract", "validate_data", "train", "evaluate", "blessed", "infra_check", "promote"]
HEAVY_MODULES = ("pandas", "numpy", "mlflow", "catboost", "sklearn", "matplotlib")

START = dt.date(2026, 1, 1)
DAYS = 40
ROWS_PER_DAY = 600
SEED = 11
AS_OF = START + dt.timedelta(days=DAYS)
RUN_TIMEOUT_S = 420


def airflow_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A child environment with nothing inherited from Airflow, ctloop or MLflow settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "CTLOOP_", "MLFLOW_")) and key != "FEATURE_STORE_URL"
    }
    home = tmp / "airflow"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "CTLOOP_DATA_DIR": str(tmp / "data"),
            "CTLOOP_FEATURES_DIR": str(ROOT / "features"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_python(script: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
    """Run a Python script in a child process; its output is the failure message if it fails."""
    __tracebackhide__ = True  # keep the environment out of failure reports
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env, cwd=cwd, timeout=300, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = f"{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, f"child exited with {done.returncode}:\n{output}"


# ------------------------------------------------------------------ DAG files, parsed by Airflow

PARSE_SCRIPT = r"""
import json
import sys

from airflow.dag_processing.dagbag import DagBag

out, dags_folder, heavy, conn_ids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
bag = DagBag(dag_folder=dags_folder)
facts = {
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "heavy_modules": sorted(m for m in heavy.split(",") if m in sys.modules),
    "dags": {},
}
for dag_id, dag in bag.dags.items():
    timetable = dag.timetable
    condition = getattr(timetable, "asset_condition", None)
    facts["dags"][dag_id] = {
        "fileloc": dag.fileloc,
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "tags": sorted(dag.tags),
        "doc_md": dag.doc_md or "",
        "timetable": type(timetable).__name__,
        "cron": getattr(getattr(timetable, "timetable", timetable), "expression", None),
        "assets": sorted(a.uri for a in condition.objects) if condition else [],
        "params": {
            name: {"default": dag.params.get_param(name).value,
                   "schema": dag.params.get_param(name).schema}
            for name in dag.params
        },
        "order": [t.task_id for t in dag.topological_sort()],
        "tasks": {
            t.task_id: {
                "upstream": sorted(t.upstream_task_ids),
                "retries": t.retries,
                "operator": type(t).__name__,
                "outlets": [getattr(o, "uri", str(o)) for o in t.outlets],
            }
            for t in dag.tasks
        },
    }

# The glue as tasks use it, with Airflow's own parsing of AIRFLOW_CONN_* variables.
from airflow.sdk.exceptions import AirflowFailException
from ctloop.orchestration.connection import feature_store_url
from ctloop.orchestration.context import fail_fast
from ctloop.errors import CtloopError, StoreUnavailableError

facts["urls"] = {conn_id: feature_store_url(conn_id) for conn_id in conn_ids}
raised = {}
errors = {
    "refusal": CtloopError("refused"),
    "store_down": StoreUnavailableError("down"),
    "bug": ValueError("bug"),
}
for name, error in errors.items():
    try:
        with fail_fast():
            raise error
    except Exception as exc:
        raised[name] = [type(exc).__name__, isinstance(exc, AirflowFailException)]
facts["fail_fast"] = raised
with open(out, "w") as fh:
    json.dump(facts, fh, default=str)
"""

JSON_CONN = {
    "conn_type": "mysql",
    "host": "db.internal",
    "port": 3307,
    "login": "ctloop",
    "password": "p@ss/w:rd?",
    "schema": "features",
    "extra": {"charset": "utf8mb4"},
}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What Airflow makes of the DAG folder, plus connection resolution, in a child process."""
    tmp = tmp_path_factory.mktemp("dagbag")
    out = tmp / "facts.json"
    env = airflow_env(
        tmp,
        AIRFLOW_CONN_FEATURE_STORE=json.dumps(JSON_CONN),
        AIRFLOW_CONN_CT_URI="mysql://reader:s%40cret@10.0.0.5:3306/ctloop?charset=utf8mb4",
        FEATURE_STORE_URL=f"sqlite:///{tmp / 'fallback.db'}",
    )
    args = [str(out), str(DAGS), ",".join(HEAVY_MODULES), "feature_store", "ct_uri", "not_defined"]
    run_python(PARSE_SCRIPT, args, env=env, cwd=tmp)
    facts = json.loads(out.read_text())
    facts["fallback"] = f"sqlite:///{tmp / 'fallback.db'}"
    return facts


@pytest.mark.slow
def test_dag_folder_imports_without_errors(parsed: dict) -> None:
    assert parsed["import_errors"] == {}
    views = list_views(ROOT / "features")
    assert VIEW in views
    kinds = ("ct", "ingest", "monitor")
    assert set(parsed["dags"]) == {f"{kind}_{v}" for v in views for kind in kinds}
    assert parsed["dags"][CT_DAG]["fileloc"].endswith("dags/ct_training.py")
    assert parsed["dags"][INGEST_DAG]["fileloc"].endswith("dags/ingest.py")
    # DAG files are parsed often: no pandas, MLflow, CatBoost... at their top level.
    assert parsed["heavy_modules"] == []


@pytest.mark.slow
def test_ct_dag_wiring(parsed: dict) -> None:
    ct = parsed["dags"][CT_DAG]
    assert ct["max_active_runs"] == 1
    assert ct["catchup"] is False
    assert {"ctloop", VIEW} <= set(ct["tags"])
    assert "# Continuous training" in ct["doc_md"] and "force_promote" in ct["doc_md"]
    assert ct["order"] == CT_TASKS
    tasks = ct["tasks"]
    assert tasks["extract"]["upstream"] == []
    assert tasks["validate_data"]["upstream"] == ["extract"]
    assert tasks["train"]["upstream"] == ["extract", "validate_data"]
    assert tasks["evaluate"]["upstream"] == ["extract", "train"]
    assert tasks["blessed"]["upstream"] == ["evaluate"]
    assert tasks["blessed"]["operator"] == "_ShortCircuitDecoratedOperator"
    assert tasks["infra_check"]["upstream"] == ["blessed", "train"]
    assert tasks["promote"]["upstream"] == ["evaluate", "infra_check", "train"]
    for step in ("extract", "train", "infra_check", "promote"):
        assert tasks[step]["retries"] == 2, step
    # schedule: its own daily timetable OR new data in the feature store
    assert ct["timetable"] == "AssetOrTimeSchedule"
    assert ct["cron"] == "0 3 * * *"
    assert ct["assets"] == [connection.asset_uri(VIEW)] == ["ctloop://feature_store/credit_score"]
    params = ct["params"]
    assert set(params) == {"as_of", "force_promote", "reason"}
    assert params["as_of"]["default"] is None
    assert params["as_of"]["schema"]["format"] == "date"
    assert "null" in params["as_of"]["schema"]["type"]
    assert params["force_promote"]["default"] is False
    assert params["force_promote"]["schema"]["type"] == "boolean"
    assert params["reason"]["default"] == ""


@pytest.mark.slow
def test_ingest_dag_updates_the_ct_asset(parsed: dict) -> None:
    ingest = parsed["dags"][INGEST_DAG]
    assert ingest["max_active_runs"] == 1
    assert ingest["catchup"] is False
    assert ingest["timetable"] == "CronTriggerTimetable"
    assert list(ingest["tasks"]) == ["land_day"]
    assert ingest["tasks"]["land_day"]["outlets"] == parsed["dags"][CT_DAG]["assets"]
    assert set(ingest["params"]) == {"day", "rows_per_day", "seed"}


@pytest.mark.slow
def test_feature_store_connection_resolves_to_sqlalchemy_urls(parsed: dict) -> None:
    urls = parsed["urls"]
    from_json = make_url(urls["feature_store"])
    assert from_json.drivername == "mysql+pymysql"
    assert (from_json.host, from_json.port, from_json.database) == ("db.internal", 3307, "features")
    assert (from_json.username, from_json.password) == ("ctloop", "p@ss/w:rd?")
    assert from_json.query == {"charset": "utf8mb4"}
    from_uri = make_url(urls["ct_uri"])
    assert from_uri.drivername == "mysql+pymysql"
    assert (from_uri.username, from_uri.password, from_uri.host) == ("reader", "s@cret", "10.0.0.5")
    assert (from_uri.port, from_uri.database) == (3306, "ctloop")
    # no connection: ctloop's own settings (FEATURE_STORE_URL, else embedded SQLite)
    assert urls["not_defined"] == parsed["fallback"]


@pytest.mark.slow
def test_refusals_fail_fast_and_outages_keep_retries(parsed: dict) -> None:
    assert parsed["fail_fast"] == {
        "refusal": ["AirflowFailException", True],
        "store_down": ["StoreUnavailableError", False],
        "bug": ["ValueError", False],
    }


# ------------------------------------------------------------------ orchestration glue, in-process


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


# ------------------------------------------------------------------ the CT DAG run by Airflow


class AirflowProcess(DagRunner):
    """`ctloop.dev.dagrunner` (what `make demo` uses) as the tests drive it: one long-lived
    Airflow child that runs each DAG run with `dag.test()`; failures fail the test."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        super().__init__(DAGS, tmp, env)

    def trigger(self, dag_id: str, conf: dict[str, Any], timeout: float = RUN_TIMEOUT_S) -> dict:
        try:
            return super().trigger(dag_id, conf, timeout)
        except CtloopError as exc:
            pytest.fail(str(exc))

    def close(self) -> int:
        code = super().close()
        assert code == 0, f"the Airflow process exited with {code}:\n{self.output()[-6000:]}"
        return code


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """MariaDB with 40 days x 600 rows, a MLflow SQLite store, and Airflow in a child process."""
    view = load_view_file(ROOT / "features" / f"{VIEW}.yaml")
    tmp = tmp_path_factory.mktemp("ct_dag")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with mariadb_database("ctloop_dagtest") as url:
        # Airflow's connection as users write it: mysql://user@host:port/database
        conn_uri = make_url(url).set(drivername="mysql").render_as_string(hide_password=False)
        env = airflow_env(
            tmp, AIRFLOW_CONN_FEATURE_STORE=conn_uri, MLFLOW_TRACKING_URI=tracking_uri
        )
        airflow = AirflowProcess(tmp, env)  # starts up while the history is written
        store = FeatureStore(url)
        try:
            store.init([view])
            config = StreamConfig(
                seed=SEED, rows_per_day=ROWS_PER_DAY,
                label_delay_days=view.training.label_delay_days,
            )  # fmt: skip
            labels_until = pd.Timestamp(AS_OF)  # only labels that had arrived by the as-of date
            for _, features, labels in stream(view, START, DAYS, config):
                store.ingest(view, features, labels[labels["arrived_at"] < labels_until])
            yield {"view": view, "store": store, "airflow": airflow,
                   "registry": Registry(tracking_uri), "tracking_uri": tracking_uri}  # fmt: skip
        finally:
            airflow.close()
            store.dispose()


def task_states(outcome: dict) -> dict[str, str]:
    return {task: info["state"] for task, info in outcome["tasks"].items()}


@pytest.fixture(scope="module")
def first_run(world: dict) -> dict[str, Any]:
    conf = {"as_of": AS_OF.isoformat(), "reason": "first model from the UI"}
    return world["airflow"].trigger(CT_DAG, conf)


@contextlib.contextmanager
def replaced_labels(world: dict, change) -> Iterator[None]:
    """Upsert changed labels for the window (same keys), restore the originals afterwards."""
    store, view = world["store"], world["view"]
    original = store.labels_for_days(view, START, AS_OF, dt.datetime.combine(AS_OF, dt.time.min))
    store.upsert_labels(view, change(original.copy()))
    try:
        yield
    finally:
        store.upsert_labels(view, original)


@contextlib.contextmanager
def replaced_features(world: dict, change) -> Iterator[None]:
    store, view = world["store"], world["view"]
    original = store.latest_features(view, AS_OF, 10**9, since=START).sort_values(
        [view.event_date, view.entity], ignore_index=True
    )
    store.ingest(view, change(original.copy()))
    try:
        yield
    finally:
        store.ingest(view, original)


@pytest.fixture(scope="module")
def shuffled_run(world: dict, first_run: dict) -> dict[str, Any]:
    """A drift-triggered run on labels shuffled at random: a worthless candidate."""
    label = world["view"].label.name

    def shuffle(labels: pd.DataFrame) -> pd.DataFrame:
        labels[label] = np.random.default_rng(0).permutation(labels[label].to_numpy())
        return labels

    conf = {"trigger": "drift", "reason": "prediction drift 0.31 on credit_score",
            "findings": {"prediction_drift": 0.31}, "as_of": AS_OF.isoformat()}  # fmt: skip
    with replaced_labels(world, shuffle):
        return world["airflow"].trigger(CT_DAG, conf)


@pytest.fixture(scope="module")
def null_run(world: dict, shuffled_run: dict) -> dict[str, Any]:
    """A run on data where a non-nullable feature is NULL in 3 rows of 4."""

    def flood(features: pd.DataFrame) -> pd.DataFrame:
        features.loc[features.index % 4 != 0, "interest_rate"] = None
        return features

    before = [v.version for v in world["registry"].versions(VIEW)]
    with replaced_features(world, flood):
        outcome = world["airflow"].trigger(CT_DAG, {"as_of": AS_OF.isoformat()})
    outcome["versions_before"] = before
    return outcome


@pytest.mark.mariadb
@pytest.mark.slow
def test_first_run_trains_and_promotes_a_fully_tagged_champion(
    world: dict, first_run: dict
) -> None:
    assert first_run["state"] == "success", first_run["log"][-4000:]
    assert task_states(first_run) == dict.fromkeys(CT_TASKS, "success")
    assert all(info["try_number"] == 1 for info in first_run["tasks"].values())
    xcom = first_run["xcom"]
    assert xcom["extract"]["as_of"] == AS_OF.isoformat()
    assert xcom["extract"]["trigger"] == "manual"
    assert xcom["extract"]["rows"] > world["view"].gates.data.min_rows
    fingerprint = xcom["extract"]["fingerprint"]
    assert xcom["train"]["fingerprint"] == fingerprint  # passed on, and the data unchanged
    assert xcom["evaluate"]["blessed"] is True
    assert xcom["blessed"] is True

    registry = world["registry"]
    champion = registry.champion(VIEW)
    assert champion is not None
    assert champion.version == xcom["train"]["version"] == xcom["promote"]["champion"]
    tags = champion.tags
    for key in ("trigger", "as_of", "data_fingerprint", "git_commit", "airflow_run_id",
                "gate.data", "gate.model", "gate.infra", "window", "reason"):  # fmt: skip
        assert tags.get(key), key
    assert tags["trigger"] == "manual"
    assert tags["as_of"] == AS_OF.isoformat()
    assert tags["reason"] == "first model from the UI"
    assert tags["data_fingerprint"] == fingerprint
    assert tags["airflow_run_id"] == first_run["run_id"]
    assert tags["promoted_by"] == first_run["run_id"]
    assert (tags["gate.data"], tags["gate.model"], tags["gate.infra"]) == ("passed",) * 3
    # the feature store came from the Airflow connection, not from settings
    assert "from Airflow connection 'feature_store'" in first_run["log"]


@pytest.mark.mariadb
@pytest.mark.slow
def test_first_run_logs_artifacts_and_a_loadable_model(world: dict, first_run: dict) -> None:
    import mlflow
    import mlflow.catboost

    assert first_run["state"] == "success"
    registry, view = world["registry"], world["view"]
    champion = registry.champion(VIEW)
    client = registry.client
    run = client.get_run(champion.run_id)
    assert run.data.tags["ctloop.airflow_run_id"] == first_run["run_id"]
    assert run.data.metrics["val_macro_f1"] >= view.gates.model.min_value
    reference = {a.path for a in client.list_artifacts(champion.run_id, "reference")}
    plots = {a.path for a in client.list_artifacts(champion.run_id, "plots")}
    assert "reference/profile.json" in reference
    assert "plots/confusion_matrix.png" in plots
    # MLflow 3 keeps the model as a LoggedModel (models:/m-...) linked to run and version.
    source = client.get_model_version(VIEW, champion.version).source
    assert source.startswith("models:/m-")
    logged = client.get_logged_model(source.removeprefix("models:/"))
    assert logged.source_run_id == champion.run_id
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(world["tracking_uri"])
    mlflow.set_registry_uri(world["tracking_uri"])  # another test may have set another one
    try:
        model = mlflow.catboost.load_model(f"models:/{VIEW}@champion")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    assert [str(c) for c in model.classes_] == view.label.classes


@pytest.mark.mariadb
@pytest.mark.slow
def test_refused_candidate_skips_infra_check_and_promotion(
    world: dict, first_run: dict, shuffled_run: dict
) -> None:
    assert shuffled_run["state"] == "success", shuffled_run["log"][-4000:]
    assert task_states(shuffled_run) == {
        **dict.fromkeys(CT_TASKS[:5], "success"), "infra_check": "skipped", "promote": "skipped"
    }  # fmt: skip
    xcom = shuffled_run["xcom"]
    assert xcom["extract"]["trigger"] == "drift"
    assert xcom["evaluate"]["blessed"] is False
    assert "drift findings" in shuffled_run["log"] and "prediction_drift" in shuffled_run["log"]

    registry = world["registry"]
    champion = registry.champion(VIEW)
    candidate = registry.version(VIEW, xcom["train"]["version"])
    assert champion.version == first_run["xcom"]["promote"]["champion"]  # did not move
    assert candidate.version != champion.version
    assert registry.previous(VIEW) is None
    assert candidate.tags["gate.model"] == "failed"
    assert candidate.tags["gate.data"] == "passed"
    assert "gate.infra" not in candidate.tags
    assert candidate.tags["trigger"] == "drift"
    assert candidate.tags["reason"] == "prediction drift 0.31 on credit_score"
    assert candidate.tags["airflow_run_id"] == shuffled_run["run_id"]


@pytest.mark.mariadb
@pytest.mark.slow
def test_bad_data_fails_the_data_gate_at_once(world: dict, first_run: dict, null_run: dict) -> None:
    assert null_run["state"] == "failed"
    states = task_states(null_run)
    assert states["extract"] == "success"
    assert states["validate_data"] == "failed"
    assert null_run["tasks"]["validate_data"]["try_number"] == 1  # no retry on a refusal
    assert {states[t] for t in CT_TASKS[2:]} == {"upstream_failed"}
    assert "missing_rate:interest_rate" in null_run["log"]  # the log names the failed check
    assert "AirflowFailException" in null_run["log"]
    registry = world["registry"]
    assert [v.version for v in registry.versions(VIEW)] == null_run["versions_before"]
    assert registry.champion(VIEW).version == first_run["xcom"]["promote"]["champion"]


@pytest.mark.mariadb
@pytest.mark.slow
def test_ingest_dag_lands_a_day_and_queues_the_ct_dag(world: dict) -> None:
    store, view = world["store"], world["view"]
    label_day = AS_OF - dt.timedelta(days=view.training.label_delay_days)

    def counts() -> dict[dt.date, tuple[int, int]]:
        return {d.event_date: (d.features, d.labels) for d in store.status(view).days}

    before = counts()
    assert AS_OF not in before
    assert before[label_day] == (ROWS_PER_DAY, 0)  # its labels land on the as-of day
    conf = {"day": AS_OF.isoformat(), "rows_per_day": ROWS_PER_DAY, "seed": SEED}
    outcome = world["airflow"].trigger(INGEST_DAG, conf)
    assert outcome["state"] == "success", outcome["log"][-4000:]
    after = counts()
    assert after[AS_OF] == (ROWS_PER_DAY, 0)
    assert after[label_day] == (ROWS_PER_DAY, ROWS_PER_DAY)
    assert {d: c for d, c in after.items() if d not in (AS_OF, label_day)} == {
        d: c for d, c in before.items() if d != label_day
    }
    asset = connection.asset_uri(VIEW)
    assert outcome["asset_events"] == [{"uri": asset, "extra": outcome["xcom"]["land_day"]}]
    assert outcome["xcom"]["land_day"]["day"] == AS_OF.isoformat()
    assert [asset, CT_DAG] in outcome["queued"]  # the scheduler would now start ct_<view>
    # landing the same day again changes nothing (idempotent upserts)
    url = store.url.render_as_string(hide_password=False)
    land_synthetic_day(VIEW, AS_OF, ROWS_PER_DAY, SEED, url)
    assert counts() == after


# ------------------------------------------------------------------ the loop: monitor -> CT


def test_monitor_dag_triggers_a_drift_retrain_then_respects_the_cooldown(
    world: dict, first_run: dict, shuffled_run: dict, null_run: dict
) -> None:
    """Drifted traffic -> monitor DAG -> ct DAG triggered with the reason -> new champion.

    Concept drift (same customers, new scoring rule) with labels landing the same day: the
    monitor finds accuracy decay. dag.test() has no scheduler, so the test runs the CT DAG
    with the conf the monitor's trigger queued, then retires the queued copy.
    """
    from ctloop.core.predictor import Predictor
    from ctloop.ingest.synth import Scenario, generate_day
    from tests.test_monitor import log_day

    view, store, registry, airflow = (
        world["view"],
        world["store"],
        world["registry"],
        world["airflow"],
    )
    import mlflow

    mlflow.set_tracking_uri(world["tracking_uri"])
    mlflow.set_registry_uri(world["tracking_uri"])  # models:/ URIs resolve in the registry
    before = registry.champion(VIEW)
    predictor = Predictor.load(view, before.uri, before.version)
    drift = StreamConfig(seed=SEED + 1, rows_per_day=ROWS_PER_DAY, label_delay_days=0,
                         scenario=Scenario.CONCEPT_DRIFT, drift_start=AS_OF)  # fmt: skip
    live = {"view": view, "store": store, "predictor": predictor}
    days = [AS_OF + dt.timedelta(days=i) for i in range(14)]
    for day in days:
        features, labels = generate_day(day, drift)
        store.ingest(view, features, labels)
        log_day(live, day, features)
    since = dt.datetime.combine(days[0], dt.time.min)
    until = dt.datetime.combine(days[-1], dt.time.min) + dt.timedelta(days=1)
    window = {"since": since.isoformat(), "until": until.isoformat()}

    checked = airflow.trigger(f"monitor_{VIEW}", window)
    assert task_states(checked) == dict.fromkeys(
        ["check", "retrain_needed", "ct_conf", "trigger_ct"], "success"
    ), checked["log"][-3000:]
    decision = checked["xcom"]["check"]
    assert decision["status"] == "decay" and decision["trigger"] is True
    assert "DECAY" in checked["log"]  # the one-line summary in the task log
    [queued] = checked["triggered"]
    assert queued["dag_id"] == CT_DAG
    assert queued["conf"]["trigger"] == "drift"
    assert "accuracy decay" in queued["conf"]["reason"]

    retrain_day = days[-1] + dt.timedelta(days=1)
    retrained = airflow.trigger(CT_DAG, {**queued["conf"], "as_of": retrain_day.isoformat()})
    assert set(task_states(retrained).values()) == {"success"}, retrained["log"][-3000:]
    after = registry.champion(VIEW)
    assert after.version != before.version
    assert after.tags["trigger"] == "drift"
    assert "accuracy decay" in after.tags["reason"]
    assert registry.previous(VIEW).version == before.version
    # the monitor dated the change to its first day and the run learnt from there on,
    # inside the shorter drift window
    assert queued["conf"]["onset"] == AS_OF.isoformat()
    assert registry.change_onset(VIEW)[0] == AS_OF.isoformat()
    assert retrain_day - dt.timedelta(days=view.training.drift_window_days) < AS_OF
    assert after.tags["window"].startswith(AS_OF.isoformat())
    assert after.tags["change_onset"] == f"{AS_OF.isoformat()} (dropped before)"
    airflow.retire_queued()

    # a second drift right away: recorded, but inside the cooldown nothing is triggered
    predictor = Predictor.load(view, after.uri, after.version)
    shift = StreamConfig(seed=SEED + 2, rows_per_day=ROWS_PER_DAY, label_delay_days=0,
                         scenario=Scenario.COVARIATE_SHIFT, drift_start=retrain_day)  # fmt: skip
    features, labels = generate_day(retrain_day, shift)
    log_day({"view": view, "store": store, "predictor": predictor}, retrain_day, features)
    second_window = {"since": until.isoformat(),
                     "until": (until + dt.timedelta(days=2)).isoformat()}  # fmt: skip
    second = airflow.trigger(f"monitor_{VIEW}", second_window)
    states = task_states(second)
    assert states["check"] == "success"
    assert states["trigger_ct"] == "skipped"
    assert second["triggered"] == []
    decision = second["xcom"]["check"]
    assert decision["status"] == "drift"
    assert decision["trigger"] is False
    assert "cooldown" in decision["blocked"]
