"""The monitor on a real champion's logged predictions, day by day, per drift scenario.

Predictions are made by the real champion (loaded through the serving loader) and written
to the real prediction_log table; the HTTP path that writes them in production is tested
in `test_serving.py` (`tests.support.predictions` writes them here as serving does). Time
is simulated: each day's traffic is logged at that day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctloop.core.predictor import Predictor
from ctloop.features.view import load_view_file
from ctloop.ingest.synth import Scenario, StreamConfig, generate_day
from ctloop.monitoring import check as monitor
from ctloop.monitoring.reports import DriftReports
from ctloop.monitoring.result import MonitorResult
from ctloop.predlog.store import PredictionLog
from ctloop.training import pipeline
from tests.support.paths import FEATURES_DIR
from tests.support.predictions import log_day
from tests.support.world import History, World, built_world

START = dt.date(2026, 1, 1)
HISTORY = 30
GO_LIVE = START + dt.timedelta(days=HISTORY)
ROWS = 600


@dataclasses.dataclass
class MonitorWorld(World):
    """The shared world gone live: the champion promoted on 30 days of history, loaded as
    serving loads it."""

    predictor: Predictor


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorWorld]:
    """MariaDB with 30 days x 400 rows (labels 7 days late), and the first run's champion."""
    view = load_view_file(FEATURES_DIR / "credit_score.yaml")
    tmp = tmp_path_factory.mktemp("monitor")
    history = History(start=START, days=HISTORY, rows_per_day=400, seed=5, labels_before=GO_LIVE)
    with built_world(tmp, [view], history=history) as shared:
        result = pipeline.run_all(pipeline.Run(view, GO_LIVE, "manual", "", "", shared.settings))
        assert result["promoted"]
        info = shared.registry.champion(view.name)
        predictor = Predictor.load(view, info.uri, info.version)
        yield shared.extended(MonitorWorld, predictor=predictor)


@pytest.fixture
def fresh_logs(champion: MonitorWorld) -> Iterator[MonitorWorld]:
    """Each test starts with an empty prediction log and drift_report table, and no change
    onset recorded on the model."""
    from ctloop.registry import ONSET_FOUND_TAG, ONSET_TAG

    store, registry = champion.store, champion.registry
    yield champion
    for _ in PredictionLog(store).delete_before("credit_score", dt.datetime(2200, 1, 1), 10**9):
        pass  # both log tables (the view's own and the shared one), emptied
    with store.begin() as conn:
        conn.execute(DriftReports(store).table.delete())
    tags = registry.client.get_registered_model("credit_score").tags
    for tag in (ONSET_TAG, ONSET_FOUND_TAG):
        if tag in tags:
            registry.client.delete_registered_model_tag("credit_score", tag)


def live_days(
    world: MonitorWorld, cfg: StreamConfig, days: int, scheduled: bool = False
) -> Iterator[tuple[dt.date, dict]]:
    """Log each live day, then run the monitor at the end of the day: on that day's window,
    or (`scheduled`) from where the last check left off, as the monitor DAG does."""
    view, store, registry = world.view, world.store, world.registry
    for offset in range(days):
        day = GO_LIVE + dt.timedelta(days=offset)
        features, labels = generate_day(day, cfg)
        store.ingest(view, features, labels)  # labels carry their (future) arrival times
        log_day(view, store, world.predictor, day, features)
        since = dt.datetime.combine(day, dt.time.min)
        until = since + dt.timedelta(days=1)
        if scheduled and offset > 0:
            since = None  # type: ignore[assignment]
        yield day, monitor.monitor_step(view, store, registry, since, until)


@pytest.mark.parametrize("rows", [120, ROWS])
def test_no_drift_control_raises_no_alarm_over_30_days(fresh_logs: MonitorWorld, rows: int) -> None:
    """Checked daily as the DAG does: small days add up until a window is big enough to
    judge (500 rows), and no window of training-distribution traffic alarms."""
    cfg = StreamConfig(seed=99, rows_per_day=rows, label_delay_days=7)
    decisions = [d for _, d in live_days(fresh_logs, cfg, 30, scheduled=True)]
    statuses = [d["status"] for d in decisions]
    alarms = [d["summary"] for d in decisions if d["status"] in ("drift", "decay")]
    assert alarms == []
    judged = [d for d in decisions if d["status"] == "ok"]
    if rows >= fresh_logs.view.drift.min_rows:
        assert statuses == ["ok"] * 30
    else:  # 120 rows a day: every fifth check has the 500 rows it needs
        assert len(judged) == 30 * rows // 600, statuses
        assert all(d["result"]["rows"] >= 500 for d in judged)
    # a check's labelled look-back is judged too, at its own minimum of labels
    assert any(d["result"]["labelled_rows"] >= 200 for d in decisions)


def test_small_days_find_covariate_shift_on_the_first_check_with_enough_rows(
    fresh_logs: MonitorWorld,
) -> None:
    cfg = StreamConfig(seed=99, rows_per_day=120, scenario=Scenario.COVARIATE_SHIFT,
                       drift_start=GO_LIVE)  # fmt: skip
    statuses = [d["status"] for _, d in live_days(fresh_logs, cfg, 5, scheduled=True)]
    assert statuses == ["not_enough_data"] * 4 + ["drift"]


def test_small_days_find_concept_drift_once_enough_labels_land(fresh_logs: MonitorWorld) -> None:
    """Decay needs labels, not a full drift window: found as soon as 200 labels landed."""
    cfg = StreamConfig(seed=99, rows_per_day=120, scenario=Scenario.CONCEPT_DRIFT,
                       drift_start=GO_LIVE, label_delay_days=2)  # fmt: skip
    decisions = [d for _, d in live_days(fresh_logs, cfg, 4, scheduled=True)]
    # day 2: 120 labels have landed (< 200); day 3: 240
    assert [d["status"] for d in decisions] == ["not_enough_data"] * 3 + ["decay"]
    assert decisions[3]["result"]["labelled_rows"] == 240


@pytest.mark.parametrize("scenario", [Scenario.COVARIATE_SHIFT])
def test_covariate_shift_detected_on_first_check_after_onset(fresh_logs, scenario) -> None:
    onset = GO_LIVE + dt.timedelta(days=3)
    cfg = StreamConfig(seed=99, rows_per_day=ROWS, scenario=scenario, drift_start=onset)
    decisions = dict(live_days(fresh_logs, cfg, 5))
    for day, decision in decisions.items():
        if day < onset:
            assert decision["status"] == "ok", (day, decision["summary"])
    first = decisions[onset]
    assert first["status"] == "drift", first["summary"]
    assert first["trigger"] is True
    drifted = set(first["result"]["drifted_features"])
    assert {"annual_income", "occupation"} <= drifted
    assert "annual_income" in first["conf"]["reason"]
    # the next day's drift is inside the cooldown: recorded, but no second trigger
    after = decisions[onset + dt.timedelta(days=1)]
    assert after["status"] == "drift"
    assert after["trigger"] is False
    assert "cooldown" in after["blocked"]


def test_concept_drift_is_caught_by_accuracy_decay_once_labels_land(
    fresh_logs: MonitorWorld,
) -> None:
    """Daily checks: quiet until the first drifted labels land, then decay, not data drift."""
    onset = GO_LIVE
    cfg = StreamConfig(seed=99, rows_per_day=ROWS, scenario=Scenario.CONCEPT_DRIFT,
                       drift_start=onset, label_delay_days=2)  # fmt: skip
    decisions = [decision for _, decision in live_days(fresh_logs, cfg, 4)]
    # days 0 and 1: no label has landed yet, and features/predictions do not drift
    assert [d["status"] for d in decisions[:2]] == ["ok", "ok"]
    # day 2: the labels of day 0 land (2 days late) and the look-back window scores them
    first = decisions[2]
    assert first["status"] == "decay", first["summary"]
    assert first["result"]["rows"] == ROWS  # drift statistics read only the new day
    assert first["result"]["labelled_rows"] == ROWS
    assert first["result"]["drifted_features"] == []
    assert first["result"]["live_metrics"]["macro_f1"] < 0.7
    assert "accuracy decay" in first["conf"]["reason"]
    assert first["trigger"] is True
    # the change is dated to the first day of the bad run and recorded for later runs
    assert first["result"]["onset"] == first["conf"]["onset"] == onset.isoformat()
    registry = fresh_logs.registry
    # found: the newest labelled day that showed it (day 0, whose labels landed on day 2)
    assert registry.change_onset("credit_score") == (onset.isoformat(), onset.isoformat())
    assert decisions[3]["status"] == "decay"
    assert decisions[3]["result"]["labelled_rows"] == 2 * ROWS
    assert decisions[3]["trigger"] is False  # inside the cooldown


def test_small_window_reports_not_enough_data_and_triggers_nothing(
    fresh_logs: MonitorWorld,
) -> None:
    view = fresh_logs.view
    day = GO_LIVE
    small = StreamConfig(
        seed=1, rows_per_day=50, scenario=Scenario.COVARIATE_SHIFT, drift_start=day
    )
    features, _ = generate_day(day, small)
    log_day(view, fresh_logs.store, fresh_logs.predictor, day, features)
    since = dt.datetime.combine(day, dt.time.min)
    decision = monitor.monitor_step(view, fresh_logs.store, fresh_logs.registry,
                                    since, since + dt.timedelta(days=1))  # fmt: skip
    assert decision["status"] == "not_enough_data"
    assert decision["trigger"] is False
    assert "not enough data: 50 predictions" in decision["summary"]


def test_in_flight_ct_run_blocks_trigger_and_reports_are_stored(fresh_logs: MonitorWorld) -> None:
    view, store = fresh_logs.view, fresh_logs.store
    day = GO_LIVE
    cfg = StreamConfig(
        seed=3, rows_per_day=ROWS, scenario=Scenario.COVARIATE_SHIFT, drift_start=day
    )
    features, _ = generate_day(day, cfg)
    log_day(view, fresh_logs.store, fresh_logs.predictor, day, features)
    since = dt.datetime.combine(day, dt.time.min)
    decision = monitor.monitor_step(view, store, fresh_logs.registry, since,
                                    since + dt.timedelta(days=1), ct_in_flight=True)  # fmt: skip
    assert decision["status"] == "drift"
    assert decision["trigger"] is False
    assert decision["blocked"] == "a CT run is already in flight"
    rows = DriftReports(store).read(view.name)
    assert set(rows["check_id"]) == {decision["check_id"]}
    per_feature = rows[(rows["kind"] == "data") & (rows["statistic"] == "normed_wasserstein")]
    assert len(per_feature) == len(view.numeric_features)
    income = per_feature[per_feature["feature"] == "annual_income"].iloc[0]
    assert bool(income["drifted"]) and income["value"] > income["threshold"]
    decisionrow = rows[rows["kind"] == "decision"].iloc[0]
    assert not bool(decisionrow["drifted"])
    # the HTML report went to MLflow with the headline numbers
    client = fresh_logs.registry.client
    run = client.get_run(decision["report_run_id"])
    assert run.data.tags["ctloop.status"] == "drift"
    assert run.data.metrics["dataset_drifted_share"] >= view.drift.drift_share
    page = client.download_artifacts(run.info.run_id, "drift_report.html")
    text = Path(page).read_text(encoding="utf-8")
    assert "Status: drift" in text
    assert "annual_income" in text
    # one distribution plot per feature, the most drifted first (issue 20)
    features_grid = text.split('id="features"', 1)[1].split("<h2>", 1)[0]
    plotted = re.findall(r"<img class='plot' data-feature='([^']+)'", features_grid)
    deciding = rows["statistic"].isin(["normed_wasserstein", "jensen_shannon"])
    distances = rows[(rows["kind"] == "data") & deciding]
    ranked = sorted(distances.itertuples(), key=lambda r: (not r.drifted, -r.value / r.threshold))
    assert plotted == [r.feature for r in ranked]
    assert sorted(plotted) == sorted(f.name for f in view.features)
    assert bool(ranked[0].drifted) and not bool(ranked[-1].drifted)
    assert 'id="predictions"><div class=\'card' in text  # the class shares panel


def test_a_check_with_a_retention_deletes_the_older_days_after_reading_them(
    fresh_logs: MonitorWorld,
) -> None:
    """`CTLOOP_LOG_RETENTION_DAYS` on the monitor: the check reads its window, then the log's
    days older than the retention go (whole days); a too-short retention is not applied and
    says so in the check's line, and the check itself goes on."""
    view, store = fresh_logs.view, fresh_logs.store
    cfg = StreamConfig(seed=4, rows_per_day=ROWS)
    days = [GO_LIVE + dt.timedelta(days=d) for d in (0, 1, 20)]
    for day in days:
        features, _ = generate_day(day, cfg)
        log_day(view, store, fresh_logs.predictor, day, features)
    log = PredictionLog(store)
    per_day = log.count(view.name) // 3
    since = dt.datetime.combine(days[2], dt.time.min)
    short = monitor.monitor_step(view, store, fresh_logs.registry, since,
                                 since + dt.timedelta(days=1), keep_days=5)  # fmt: skip
    assert short["status"] != "not_enough_data" and short["pruned_rows"] is None
    assert "log retention NOT applied" in short["summary"]
    assert "keep at least 15 days" in short["summary"]
    assert log.count(view.name) == 3 * per_day
    decision = monitor.monitor_step(view, store, fresh_logs.registry, since,
                                    since + dt.timedelta(days=1), keep_days=15)  # fmt: skip
    assert decision["status"] != "not_enough_data"  # the check read its day
    assert decision["pruned_rows"] == 2 * per_day  # days 0 and 1: older than 15 days
    assert "log retention 15 days: " in decision["summary"]
    left = log.read(view.name, dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1),
                    expand_features=False)  # fmt: skip
    assert len(left) == per_day and left["created_at"].min() >= since


def test_a_window_past_max_rows_read_is_checked_on_an_even_sample(
    fresh_logs: MonitorWorld,
) -> None:
    """Issue 19 (P5): a busy day is read as a uniform sample of `drift.max_rows_read` rows,
    not whole; the verdicts match the whole read, the window's size is estimated, and the
    labelled rows (labels landed the same day) are the sample's."""
    view, store, registry = fresh_logs.view, fresh_logs.store, fresh_logs.registry
    day = GO_LIVE
    cfg = StreamConfig(seed=8, rows_per_day=2_400, scenario=Scenario.COVARIATE_SHIFT,
                       drift_start=day, label_delay_days=0)  # fmt: skip
    features, labels = generate_day(day, cfg)
    store.ingest(view, features, labels)
    log_day(view, store, fresh_logs.predictor, day, features)
    since = dt.datetime.combine(day, dt.time.min)
    until = since + dt.timedelta(days=1)
    bounded = view.model_copy(
        update={"drift": view.drift.model_copy(update={"max_rows_read": 1_000})}
    )
    whole = monitor.check(view, store, registry, since, until)
    sampled = monitor.check(bounded, store, registry, since, until)
    assert whole.sampled_rows is None and whole.rows == 2_400
    assert sampled.sampled_rows is not None and 900 <= sampled.sampled_rows <= 1_100
    # MariaDB summarizes every row of the typed log for drift: the window's exact size
    assert sampled.drift_rows == sampled.rows == 2_400, sampled.rows
    assert sampled.labelled_rows == sampled.sampled_rows  # every label has landed
    assert "drift on every row; live accuracy and skew on a sample of" in sampled.summary()
    assert sampled.status == whole.status == "drift"

    def drifted(result: MonitorResult) -> set[str]:
        return {f.feature for f in result.findings if f.kind == "data" and f.drifted
                and f.statistic in ("normed_wasserstein", "jensen_shannon")}  # fmt: skip

    assert {"annual_income", "occupation"} <= drifted(sampled) == drifted(whole)
    # each distance within the sample's own noise floor of the whole read's
    floors = {f.feature: f.value for f in sampled.findings if f.statistic == "noise_floor"}
    distances = [
        [f for f in result.findings if f.kind == "data"
         and f.statistic in ("normed_wasserstein", "jensen_shannon")]
        for result in (sampled, whole)
    ]  # fmt: skip
    assert len(distances[0]) == len(view.features)
    for mine, theirs in zip(*distances, strict=True):
        assert mine.feature == theirs.feature
        assert abs(mine.value - theirs.value) <= floors[mine.feature], (mine, theirs)
