"""The gates under attack: poisoned data and a vandalised view must never move `champion`.

One module-scoped world (`tests.support.world`), as in `test_pipeline.py`: 30 days of
clean synthetic history in MariaDB, a real MLflow store, and version 1 promoted by the
real pipeline. Each test corrupts the feature store (or the view file) the way a broken
upstream job or a careless edit would, runs the CT pipeline as `ctloop train` and the DAG
do (`pipeline.run_all`), and asserts that the run is refused by a named check and that
`champion` did not move. Each corruption is undone afterwards, so the tests are
independent.

Already covered elsewhere, not repeated here: shuffled labels (model gate floor and
vs_champion, `test_pipeline.py::test_label_shuffled_data_does_not_move_champion`), a
null-flooded feature (`test_null_flooded_data_stops_at_data_gate`), `outstanding_debt`
divided by 1000 (`test_rescaled_feature_is_refused_as_skew`), a column missing from the
extracted frame (`test_schema_and_range_checks_on_a_frame`), and the loader's message for
many malformed view files (`test_featureview.py`). New here: flipped labels, a rescale that
stays inside the allowed range, a column dropped from the table itself, and nonsense view
files stopping the CT run before it reads any data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from ctloop.errors import CtloopError, FeatureViewError, StoreUnavailableError
from ctloop.features.view import load_view_file
from ctloop.training import pipeline
from ctloop.training.datagate import DataGateError
from tests.support.paths import FEATURES_DIR
from tests.support.world import History, World, built_world, replaced_features, replaced_labels

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

START = dt.date(2026, 1, 1)
DAYS = 30
AS_OF = START + dt.timedelta(days=DAYS)
VIEW_FILE = FEATURES_DIR / "credit_score.yaml"


@dataclasses.dataclass
class AttackWorld(World):
    """The shared world with version 1 promoted: `champion` must never move."""

    champion: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackWorld]:
    """MariaDB with 30 days x 300 clean rows, an MLflow SQLite store, version 1 promoted.

    The view is the shipped one with 150 boosting rounds instead of 400 (as `make demo`
    uses): the gates do not depend on it, and three trainings take half the time.
    """
    tmp = tmp_path_factory.mktemp("gates_attack")
    raw = yaml.safe_load(VIEW_FILE.read_text(encoding="utf-8"))
    raw["training"]["iterations"] = 150
    (tmp / "features").mkdir()
    (tmp / "features" / "credit_score.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    view = load_view_file(tmp / "features" / "credit_score.yaml")
    history = History(start=START, days=DAYS, rows_per_day=300, seed=11, labels_before=AS_OF)
    with built_world(
        tmp, [view], prefix="ctloop_attack", features_dir=tmp / "features", history=history
    ) as shared:
        first = pipeline.run_all(pipeline.Run(view, AS_OF, "manual", "clean", "", shared.settings))
        assert first["promoted"] is True, first
        yield shared.extended(AttackWorld, champion=first["train"]["version"])


def run_of(world: AttackWorld, reason: str) -> pipeline.Run:
    return pipeline.Run(world.view, AS_OF, "schedule", reason, "", world.settings)


def assert_champion_unchanged(world: AttackWorld) -> None:
    registry, name = world.registry, world.view.name
    assert registry.champion(name).version == world.champion
    assert registry.previous(name) is None  # nothing was ever promoted over it


# ---------------------------------------------------------------------- poisoned labels


def test_label_flipped_training_set_is_refused(world: AttackWorld) -> None:
    """Good and Poor swapped upstream: every data check passes (the class shares barely
    move), and the candidate learns the flip and beats the champion on the flipped
    validation days. Only the champion's collapse on labels it used to predict well
    (`labels_vs_champion`) gives the poisoning away."""
    registry, view = world.registry, world.view
    label = view.label.name
    swap = {"Good": "Poor", "Poor": "Good", "Standard": "Standard"}

    def flip(labels: pd.DataFrame) -> pd.DataFrame:
        labels[label] = labels[label].map(swap)
        return labels

    with replaced_labels(world, START, AS_OF, flip):
        result = pipeline.run_all(run_of(world, "flipped labels"))
    assert result["promoted"] is False, "the model trained on flipped labels was promoted"
    assert result["data_gate"]["passed"] is True  # the data gate cannot see a flip
    verdict = result["model_gate"]
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["floor"]["passed"] is True  # the candidate looks excellent...
    assert checks["vs_champion"]["passed"] is True  # ...and better than the champion
    flipped = checks["labels_vs_champion"]
    assert flipped["passed"] is False
    assert "labels contradict the champion" in flipped["detail"]
    assert flipped["value"] > flipped["threshold"] == view.drift.max_accuracy_drop
    assert verdict["blessed"] is False
    candidate = registry.version(view.name, result["train"]["version"])
    assert candidate.tags["gate.model"] == "failed"
    assert "labels_vs_champion" in candidate.failed_checks
    assert "gate.infra" not in candidate.tags
    assert_champion_unchanged(world)
    with pytest.raises(pipeline.ModelGateError, match="cannot be promoted"):
        pipeline.promote(run_of(world, "promote the flipped model"), candidate.version)
    assert_champion_unchanged(world)


def test_label_flip_is_accepted_only_as_measured_concept_drift(world: AttackWorld) -> None:
    """The same new labels on a drift-triggered run (the monitor measured the decay) are
    concept drift the retrain must learn: the check reports the drop and lets it pass."""
    view = world.view
    swap = {"Good": "Poor", "Poor": "Good", "Standard": "Standard"}

    def flip(labels: pd.DataFrame) -> pd.DataFrame:
        labels[view.label.name] = labels[view.label.name].map(swap)
        return labels

    drift = pipeline.Run(view, AS_OF, "drift", "decay", "", world.settings)
    with replaced_labels(world, START, AS_OF, flip):
        candidate = pipeline.train(drift)["version"]  # the drift window: a new candidate
        verdict = pipeline.evaluate(drift, candidate)
    check = {c["name"]: c for c in verdict["checks"]}["labels_vs_champion"]
    assert check["passed"] is True
    assert "accepted: decay measured by the drift monitor" in check["detail"]
    assert_champion_unchanged(world)


# ---------------------------------------------------------------------- rescaled features


@pytest.mark.parametrize(
    ("factor", "failed", "passed"),
    [
        # yearly income in thousandths of a unit: leaves the allowed range [0, 1e7]
        (1000.0, {"range:annual_income", "skew:annual_income"}, set()),
        # monthly amounts written into the yearly column: stays inside the range, so only
        # the distance from the champion's training data can catch it
        (1 / 12, {"skew:annual_income"}, {"range:annual_income", "type:annual_income"}),
    ],
    ids=["x1000-out-of-range", "div12-inside-range"],
)
def test_silently_rescaled_feature_is_refused(
    world: AttackWorld, factor: float, failed: set[str], passed: set[str]
) -> None:
    registry, view = world.registry, world.view
    versions = [v.version for v in registry.versions(view.name)]

    def rescale(features: pd.DataFrame) -> pd.DataFrame:
        features["annual_income"] = features["annual_income"] * factor
        return features

    with replaced_features(world, START, AS_OF, rescale), pytest.raises(DataGateError) as refused:
        pipeline.run_all(run_of(world, f"annual_income x {factor:.4g}"))
    report = refused.value.report
    assert {c.name for c in report.failed} == failed
    states = {c.name: c.passed for c in report.checks}
    assert all(states[name] for name in passed)
    for name in failed:
        assert name in str(refused.value)  # the message names every failed check
    skew = next(c for c in report.failed if c.name == "skew:annual_income")
    assert "normed_wasserstein" in skew.detail
    assert skew.value > skew.threshold == view.gates.data.max_skew_distance
    assert [v.version for v in registry.versions(view.name)] == versions  # nothing trained
    assert_champion_unchanged(world)


# ---------------------------------------------------------------------- dropped column


@contextlib.contextmanager
def dropped_column(world: AttackWorld, column: str) -> Iterator[None]:
    """Drop a feature column from the table itself (an upstream migration gone wrong);
    add it back and restore its values afterwards."""
    store, view = world.store, world.view
    original = store.latest_features(view, AS_OF, 10**9, since=START).sort_values(
        [view.event_date, view.entity], ignore_index=True
    )
    table = view.features_table
    engine = sa.create_engine(world.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE `{table}` DROP COLUMN `{column}`"))
        try:
            yield
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE `{table}` ADD COLUMN `{column}` DOUBLE NULL"))
            store.ingest(view, original)
    finally:
        engine.dispose()


def test_feature_column_dropped_from_the_table_is_refused(world: AttackWorld) -> None:
    """The store reports a schema mismatch naming the table and column, as a refusal (a
    `CtloopError`, so Airflow fails the task at once) and not as an outage to retry."""
    registry, view = world.registry, world.view
    versions = [v.version for v in registry.versions(view.name)]
    with dropped_column(world, "annual_income"), pytest.raises(CtloopError) as refused:
        pipeline.run_all(run_of(world, "dropped column"))
    message = str(refused.value)
    assert "schema" in message
    assert "annual_income" in message and view.features_table in message
    assert not isinstance(refused.value, StoreUnavailableError)  # not retried as an outage
    assert [v.version for v in registry.versions(view.name)] == versions
    assert_champion_unchanged(world)
    # and once the column is back, the same run goes through the data gate again
    summary = pipeline.extract(run_of(world, "column restored"))
    assert summary["rows"] > view.gates.data.min_rows


# ---------------------------------------------------------------------- vandalised view file

NONSENSE = {
    "malformed-yaml": (
        lambda text: text.replace("label:\n  name: credit_score", "label: [credit_score\n  name:"),
        ["not valid YAML", "line"],
    ),
    "unknown-key": (
        lambda text: text.replace("  max_skew_distance: 0.25", "  max_skew_distanse: 0.25"),
        ["gates.data.max_skew_distanse", "Extra inputs are not permitted"],
    ),
    "wrong-type": (
        lambda text: text.replace("  window_days: 60", "  window_days: sixty"),
        ["training.window_days", "valid integer"],
    ),
}


def vandalised_view(tmp: Path, kind: str) -> Path:
    """A features folder whose credit_score.yaml was edited into nonsense of one kind."""
    edit, _ = NONSENSE[kind]
    text = VIEW_FILE.read_text(encoding="utf-8")
    broken = edit(text)
    assert broken != text, f"the {kind} edit no longer matches the shipped view"
    folder = tmp / f"views-{kind}"
    folder.mkdir(exist_ok=True)
    (folder / "credit_score.yaml").write_text(broken, encoding="utf-8")
    return folder


@pytest.mark.parametrize("kind", sorted(NONSENSE))
def test_nonsense_view_file_refuses_the_ct_run(world: AttackWorld, kind: str) -> None:
    """`Run.make` is where the CLI and every DAG task start a run; a view that does not
    load stops it there, before any data is read, naming the file, the key and the problem.
    (In Airflow that `CtloopError` becomes `AirflowFailException`, no retry: see
    `test_dags.py::test_refusals_fail_fast_and_outages_keep_retries`.)"""
    folder = vandalised_view(world.tmp, kind)
    path = folder / "credit_score.yaml"
    with pytest.raises(FeatureViewError) as refused:
        pipeline.Run.make(str(path), AS_OF, "schedule")
    message = str(refused.value)
    assert str(path) in message
    for expected in NONSENSE[kind][1]:
        assert expected in message, message
    assert_champion_unchanged(world)


def test_ctloop_train_refuses_to_start_on_a_nonsense_view(world: AttackWorld) -> None:
    """The same through the command a person runs: exit 2, the message, no traceback, and
    nothing registered in the registry the run would have used."""
    registry, view = world.registry, world.view
    versions = [v.version for v in registry.versions(view.name)]
    folder = vandalised_view(world.tmp, "wrong-type")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "MLFLOW_"))},
        "CTLOOP_FEATURES_DIR": str(folder),
        "CTLOOP_DATA_DIR": str(world.tmp / "cli"),
        "FEATURE_STORE_URL": world.url,
        "MLFLOW_TRACKING_URI": world.settings.tracking_uri,
    }
    done = subprocess.run(
        [sys.executable, "-m", "ctloop.cli", "train", "credit_score", "--as-of", AS_OF.isoformat()],
        env=env, cwd=world.tmp, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "credit_score.yaml: training.window_days" in done.stderr
    assert "Traceback" not in done.stderr
    assert [v.version for v in registry.versions(view.name)] == versions
    assert_champion_unchanged(world)
