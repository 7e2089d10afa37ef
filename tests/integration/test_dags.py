"""The Airflow DAGs: parse checks and the CT, ingest and monitor DAGs run by Airflow.

The glue the tasks call is tested in-process in `tests/unit/test_orchestration.py`.

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

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import mlflow
import mlflow.catboost
import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from ctloop.core.predictor import Predictor
from ctloop.features.view import list_views, load_view_file
from ctloop.ingest.synth import Scenario, StreamConfig, generate_day, land_synthetic_day
from ctloop.orchestration import connection
from tests.support.airflow import AirflowProcess, airflow_env, run_python
from tests.support.paths import DAGS_DIR, FEATURES_DIR
from tests.support.predictions import log_day
from tests.support.world import (
    History,
    World,
    built_world,
    replaced_features,
    replaced_labels,
    write_history,
)

VIEW = "credit_score"
CT_DAG = f"ct_{VIEW}"
INGEST_DAG = f"ingest_{VIEW}"
MONITOR_DAG = f"monitor_{VIEW}"
CT_TASKS = ["extract", "validate_data", "train", "evaluate", "blessed", "infra_check", "promote"]
HEAVY_MODULES = ("pandas", "numpy", "mlflow", "catboost", "sklearn", "matplotlib")

START = dt.date(2026, 1, 1)
DAYS = 40
ROWS_PER_DAY = 600
SEED = 11
AS_OF = START + dt.timedelta(days=DAYS)
HISTORY = History(start=START, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED, labels_before=AS_OF)


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
                   "schema": dag.params.get_param(name).schema,
                   "description": dag.params.get_param(name).description}
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

# What the trigger form and the REST API check before a run exists: each conf against the
# monitor DAGs' params, with Airflow's own validation.
import copy

MONITOR_CONFS = {
    "defaults": {},
    "nulls": {"since": None, "until": None},
    "utc": {"since": "2026-02-10T00:00:00Z", "until": "2026-02-11T00:00:00+00:00"},
    "no_offset": {"since": "2026-02-10T00:00:00"},
    "not_a_time": {"until": "yesterday"},
}
for dag_id, dag in bag.dags.items():
    if not dag_id.startswith("monitor_"):
        continue
    verdicts = {}
    for name, conf in MONITOR_CONFS.items():
        params = copy.deepcopy(dag.params)
        try:
            for key, value in conf.items():
                params[key] = value
            params.validate()
            verdicts[name] = "accepted"
        except Exception as exc:
            verdicts[name] = type(exc).__name__
    facts["dags"][dag_id]["confs"] = verdicts

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
    args = [
        str(out),
        str(DAGS_DIR),
        ",".join(HEAVY_MODULES),
        "feature_store",
        "ct_uri",
        "not_defined",
    ]
    run_python(PARSE_SCRIPT, args, env=env, cwd=tmp)
    facts = json.loads(out.read_text())
    facts["fallback"] = f"sqlite:///{tmp / 'fallback.db'}"
    return facts


@pytest.mark.slow
def test_dag_folder_imports_without_errors(parsed: dict) -> None:
    assert parsed["import_errors"] == {}
    views = list_views(FEATURES_DIR)
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
def test_monitor_dag_can_be_triggered_with_the_forms_defaults(parsed: dict) -> None:
    monitor = parsed["dags"][MONITOR_DAG]
    assert monitor["catchup"] is False and monitor["max_active_runs"] == 1
    assert "# Drift and accuracy monitor" in monitor["doc_md"]
    assert "since the last check / now" in monitor["doc_md"]
    params = monitor["params"]
    assert set(params) == {"since", "until"}
    for name, param in params.items():
        assert param["default"] is None, name  # not required: the form's Trigger is enabled
        assert param["schema"]["type"] == ["null", "string"], name
        assert param["schema"]["format"] == "date-time", name
        assert param["schema"]["title"] and param["description"], name
    # Airflow itself accepts the defaults and real times, and refuses what is not a time
    assert monitor["confs"] == {
        "defaults": "accepted",
        "nulls": "accepted",
        "utc": "accepted",
        "no_offset": "ParamValidationError",
        "not_a_time": "ParamValidationError",
    }


@pytest.mark.slow
def test_ingest_dag_updates_the_ct_asset(parsed: dict) -> None:
    ingest = parsed["dags"][INGEST_DAG]
    assert ingest["max_active_runs"] == 1
    assert ingest["catchup"] is False
    assert ingest["timetable"] == "CronTriggerTimetable"
    assert ingest["order"] == ["land", "update_asset"]
    assert ingest["tasks"]["land"]["outlets"] == []  # the Asset moves only when rows landed
    assert ingest["tasks"]["land"]["retries"] == 2  # a source that is down is retried
    assert ingest["tasks"]["update_asset"]["outlets"] == parsed["dags"][CT_DAG]["assets"]
    assert set(ingest["params"]) == {"day", "since", "until", "rows_per_day", "seed"}


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


# ------------------------------------------------------------------ the CT DAG run by Airflow


@dataclasses.dataclass
class DagWorld(World):
    """The shared world with Airflow in a child process, running the repository's DAGs."""

    airflow: AirflowProcess


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagWorld]:
    """MariaDB with 40 days x 600 rows, a MLflow SQLite store, and Airflow in a child process."""
    view = load_view_file(FEATURES_DIR / f"{VIEW}.yaml")
    tmp = tmp_path_factory.mktemp("ct_dag")
    with built_world(tmp, [view], prefix="ctloop_dagtest") as shared:
        # Airflow's connection as users write it: mysql://user@host:port/database
        conn_uri = (
            make_url(shared.url).set(drivername="mysql").render_as_string(hide_password=False)
        )
        env = airflow_env(
            tmp,
            AIRFLOW_CONN_FEATURE_STORE=conn_uri,
            MLFLOW_TRACKING_URI=shared.settings.tracking_uri,
        )
        airflow = AirflowProcess(tmp, env)  # starts up while the history is written
        try:
            write_history(shared, HISTORY)  # only labels that had arrived by the as-of date
            yield shared.extended(DagWorld, airflow=airflow)
        finally:
            airflow.close()


def task_states(outcome: dict) -> dict[str, str]:
    return {task: info["state"] for task, info in outcome["tasks"].items()}


@pytest.fixture(scope="module")
def first_run(world: DagWorld) -> dict[str, Any]:
    conf = {"as_of": AS_OF.isoformat(), "reason": "first model from the UI"}
    return world.airflow.trigger(CT_DAG, conf)


@pytest.fixture(scope="module")
def shuffled_run(world: DagWorld, first_run: dict) -> dict[str, Any]:
    """A drift-triggered run on labels shuffled at random: a worthless candidate."""
    label = world.view.label.name

    def shuffle(labels: pd.DataFrame) -> pd.DataFrame:
        labels[label] = np.random.default_rng(0).permutation(labels[label].to_numpy())
        return labels

    conf = {"trigger": "drift", "reason": "prediction drift 0.31 on credit_score",
            "findings": {"prediction_drift": 0.31}, "as_of": AS_OF.isoformat()}  # fmt: skip
    with replaced_labels(world, START, AS_OF, shuffle):
        return world.airflow.trigger(CT_DAG, conf)


@pytest.fixture(scope="module")
def null_run(world: DagWorld, shuffled_run: dict) -> dict[str, Any]:
    """A run on data where a non-nullable feature is NULL in 3 rows of 4."""

    def flood(features: pd.DataFrame) -> pd.DataFrame:
        features.loc[features.index % 4 != 0, "interest_rate"] = None
        return features

    before = [v.version for v in world.registry.versions(VIEW)]
    with replaced_features(world, START, AS_OF, flood):
        outcome = world.airflow.trigger(CT_DAG, {"as_of": AS_OF.isoformat()})
    outcome["versions_before"] = before
    return outcome


@pytest.mark.mariadb
@pytest.mark.slow
def test_first_run_trains_and_promotes_a_fully_tagged_champion(
    world: DagWorld, first_run: dict
) -> None:
    assert first_run["state"] == "success", first_run["log"][-4000:]
    assert task_states(first_run) == dict.fromkeys(CT_TASKS, "success")
    assert all(info["try_number"] == 1 for info in first_run["tasks"].values())
    xcom = first_run["xcom"]
    assert xcom["extract"]["as_of"] == AS_OF.isoformat()
    assert xcom["extract"]["trigger"] == "manual"
    assert xcom["extract"]["rows"] > world.view.gates.data.min_rows
    fingerprint = xcom["extract"]["fingerprint"]
    assert xcom["train"]["fingerprint"] == fingerprint  # passed on, and the data unchanged
    assert xcom["evaluate"]["blessed"] is True
    assert xcom["blessed"] is True

    registry = world.registry
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
def test_first_run_logs_artifacts_and_a_loadable_model(world: DagWorld, first_run: dict) -> None:
    assert first_run["state"] == "success"
    registry, view = world.registry, world.view
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
    mlflow.set_tracking_uri(world.settings.tracking_uri)
    mlflow.set_registry_uri(world.settings.tracking_uri)  # another test may have set another one
    try:
        model = mlflow.catboost.load_model(f"models:/{VIEW}@champion")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    assert [str(c) for c in model.classes_] == view.label.classes


@pytest.mark.mariadb
@pytest.mark.slow
def test_refused_candidate_skips_infra_check_and_promotion(
    world: DagWorld, first_run: dict, shuffled_run: dict
) -> None:
    assert shuffled_run["state"] == "success", shuffled_run["log"][-4000:]
    assert task_states(shuffled_run) == {
        **dict.fromkeys(CT_TASKS[:5], "success"), "infra_check": "skipped", "promote": "skipped"
    }  # fmt: skip
    xcom = shuffled_run["xcom"]
    assert xcom["extract"]["trigger"] == "drift"
    assert xcom["evaluate"]["blessed"] is False
    assert "drift findings" in shuffled_run["log"] and "prediction_drift" in shuffled_run["log"]

    registry = world.registry
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
def test_bad_data_fails_the_data_gate_at_once(
    world: DagWorld, first_run: dict, null_run: dict
) -> None:
    assert null_run["state"] == "failed"
    states = task_states(null_run)
    assert states["extract"] == "success"
    assert states["validate_data"] == "failed"
    assert null_run["tasks"]["validate_data"]["try_number"] == 1  # no retry on a refusal
    assert {states[t] for t in CT_TASKS[2:]} == {"upstream_failed"}
    assert "missing_rate:interest_rate" in null_run["log"]  # the log names the failed check
    assert "AirflowFailException" in null_run["log"]
    registry = world.registry
    assert [v.version for v in registry.versions(VIEW)] == null_run["versions_before"]
    assert registry.champion(VIEW).version == first_run["xcom"]["promote"]["champion"]


@pytest.mark.mariadb
@pytest.mark.slow
def test_ingest_dag_lands_a_day_and_queues_the_ct_dag(world: DagWorld) -> None:
    store, view = world.store, world.view
    label_day = AS_OF - dt.timedelta(days=view.training.label_delay_days)

    def counts() -> dict[dt.date, tuple[int, int]]:
        return {d.event_date: (d.features, d.labels) for d in store.status(view).days}

    before = counts()
    assert AS_OF not in before
    assert before[label_day] == (ROWS_PER_DAY, 0)  # its labels land on the as-of day
    conf = {"day": AS_OF.isoformat(), "rows_per_day": ROWS_PER_DAY, "seed": SEED}
    outcome = world.airflow.trigger(INGEST_DAG, conf)
    assert outcome["state"] == "success", outcome["log"][-4000:]
    after = counts()
    assert after[AS_OF] == (ROWS_PER_DAY, 0)
    assert after[label_day] == (ROWS_PER_DAY, ROWS_PER_DAY)
    assert {d: c for d, c in after.items() if d not in (AS_OF, label_day)} == {
        d: c for d, c in before.items() if d != label_day
    }
    asset = connection.asset_uri(VIEW)
    assert outcome["asset_events"] == [{"uri": asset, "extra": outcome["xcom"]["update_asset"]}]
    assert outcome["xcom"]["land"]["interval_start"] == f"{AS_OF.isoformat()}T00:00:00"
    assert outcome["xcom"]["land"]["taken"] == 2 * ROWS_PER_DAY
    assert [asset, CT_DAG] in outcome["queued"]  # the scheduler would now start ct_<view>
    # landing the same day again changes nothing (idempotent upserts)
    url = store.url.render_as_string(hide_password=False)
    land_synthetic_day(VIEW, AS_OF, ROWS_PER_DAY, SEED, url)
    assert counts() == after


# ------------------------------------------------------------------ the loop: monitor -> CT


def test_monitor_dag_triggers_a_drift_retrain_then_respects_the_cooldown(
    world: DagWorld, first_run: dict, shuffled_run: dict, null_run: dict
) -> None:
    """Drifted traffic -> monitor DAG -> ct DAG triggered with the reason -> new champion.

    Concept drift (same customers, new scoring rule) with labels landing the same day: the
    monitor finds accuracy decay. dag.test() has no scheduler, so the test runs the CT DAG
    with the conf the monitor's trigger queued, then retires the queued copy.
    """
    view, store, registry, airflow = world.view, world.store, world.registry, world.airflow
    registry.activate()  # models:/ URIs resolve in the registry
    before = registry.champion(VIEW)
    predictor = Predictor.load(view, before.uri, before.version)
    drift = StreamConfig(seed=SEED + 1, rows_per_day=ROWS_PER_DAY, label_delay_days=0,
                         scenario=Scenario.CONCEPT_DRIFT, drift_start=AS_OF)  # fmt: skip
    days = [AS_OF + dt.timedelta(days=i) for i in range(14)]
    for day in days:
        features, labels = generate_day(day, drift)
        store.ingest(view, features, labels)
        log_day(view, store, predictor, day, features)
    since = dt.datetime.combine(days[0], dt.time.min, tzinfo=dt.UTC)
    until = dt.datetime.combine(days[-1], dt.time.min, tzinfo=dt.UTC) + dt.timedelta(days=1)
    window = {"since": since.isoformat(), "until": until.isoformat()}

    checked = airflow.trigger(MONITOR_DAG, window)
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
    log_day(view, store, predictor, retrain_day, features)
    second_window = {"since": until.isoformat(),
                     "until": (until + dt.timedelta(days=2)).isoformat()}  # fmt: skip
    second = airflow.trigger(MONITOR_DAG, second_window)
    states = task_states(second)
    assert states["check"] == "success"
    assert states["trigger_ct"] == "skipped"
    assert second["triggered"] == []
    decision = second["xcom"]["check"]
    assert decision["status"] == "drift"
    assert decision["trigger"] is False
    assert "cooldown" in decision["blocked"]


@pytest.mark.mariadb
@pytest.mark.slow
def test_monitor_dag_runs_with_the_trigger_forms_defaults(world: DagWorld, first_run: dict) -> None:
    """Trigger with the form untouched: no since/until, the window runs from the last
    check to now, and no traffic since then is a quiet outcome, not a failure."""
    checked = world.airflow.trigger(MONITOR_DAG, {})
    states = task_states(checked)
    assert states["check"] == "success", checked["log"][-3000:]
    assert states["trigger_ct"] == "skipped"
    assert checked["xcom"]["check"]["trigger"] is False
    assert checked["triggered"] == []
