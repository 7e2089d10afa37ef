"""Online features on the embedded store: newest row per entity, the staleness-bounded
cache and its LRU bound, the TTL's date, the view's `online` block and the request model
it relaxes. Served over HTTP on MariaDB in `tests/integration/test_online.py`."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from pydantic import ValidationError

from ctloop.errors import FeatureViewError
from ctloop.features.records import record_model
from ctloop.features.spec import Online
from ctloop.features.view import FeatureView, load_view_file
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.store.features import FeatureStore
from ctloop.store.online import OnlineFeatures
from tests.support.paths import FEATURES_DIR

DAY = dt.date(2026, 3, 1)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def online(view: FeatureView, **policy: float) -> FeatureView:
    return view.model_copy(update={"online": Online(**{"ttl_hours": 48, **policy})})


def rows_for(view: FeatureView, entity: str, day: dt.date, seed: int) -> pd.DataFrame:
    features, _ = generate_day(day, StreamConfig(seed=seed, rows_per_day=1))
    features[view.entity] = entity
    return features


def test_newest_row_per_entity_and_a_cache_of_bounded_staleness(
    store: FeatureStore, view: FeatureView
) -> None:
    view = online(view, max_staleness_seconds=5, cache_entities=2)
    store.ingest(
        view,
        pd.concat(
            [
                rows_for(view, "a", DAY, 1),
                rows_for(view, "a", DAY + dt.timedelta(days=1), 2),
                rows_for(view, "b", DAY, 3),
            ]
        ),
    )
    clock = Clock()
    features = OnlineFeatures(store, view, clock=clock)
    found = features.latest(["a", "b", "nobody", "a"])
    assert found["a"] is not None and found["a"].event_date == DAY + dt.timedelta(days=1)
    assert found["b"] is not None and found["b"].event_date == DAY
    assert found["nobody"] is None
    newest = rows_for(view, "a", DAY + dt.timedelta(days=1), 2).iloc[0]
    for name in view.feature_names:
        stored, given = found["a"].values[name], newest[name]
        assert (pd.isna(stored) and pd.isna(given)) or stored == pytest.approx(given), name
    assert features.reads == 1  # one statement for the whole batch
    # a newer row lands: within the staleness the cached row is served, after it the new one
    store.ingest(view, rows_for(view, "nobody", DAY, 4))
    clock.now += 4.9
    assert features.latest(["nobody"])["nobody"] is None and features.reads == 1
    clock.now += 0.2
    assert features.latest(["nobody"])["nobody"] is not None and features.reads == 2
    # at most `cache_entities` kept: the least recently used ("a", read first) went first
    assert list(features._cache) == ["b", "nobody"]


def test_the_ttl_names_the_oldest_fresh_date(view: FeatureView, sqlite_url: str) -> None:
    store = FeatureStore(sqlite_url)
    features = OnlineFeatures(store, online(view, ttl_hours=36))
    now = dt.datetime(2026, 3, 10, 6, 0)
    assert features.oldest_fresh_date(now) == dt.date(2026, 3, 8)
    with pytest.raises(ValueError, match="declares no `online` block"):
        OnlineFeatures(store, view)
    store.dispose()


def test_an_online_block_is_checked_and_lets_requests_leave_features_out(
    view: FeatureView, tmp_path
) -> None:
    text = (FEATURES_DIR / "credit_score.yaml").read_text()
    (tmp_path / "credit_score.yaml").write_text(text + "online:\n  ttl_hours: 0\n")
    with pytest.raises(FeatureViewError, match=r"online.*ttl_hours"):
        load_view_file(tmp_path / "credit_score.yaml")
    required = next(f.name for f in view.features if not f.nullable)
    with pytest.raises(ValidationError, match=required):
        record_model(view).model_validate({view.entity: "a"})  # offline: still required
    relaxed = record_model(online(view)).model_validate({view.entity: "a"})
    assert relaxed.model_fields_set == {view.entity}  # serving fills the rest from the store


def test_the_fill_takes_what_a_record_leaves_out_and_refuses_what_it_cannot(
    store: FeatureStore, view: FeatureView
) -> None:
    """`serving.online.OnlineFill` on the embedded store: int and repeated entity ids, a
    nullable feature left out, an event date sent (point in time), and each refusal with
    its status and the record it names."""
    from serving.online import FillError, OnlineFill

    view = online(view, ttl_hours=72)
    today = dt.datetime.now(dt.UTC).date()
    older = today - dt.timedelta(days=1)
    store.ingest(
        view,
        pd.concat(
            [
                rows_for(view, "42", older, 1),
                rows_for(view, "42", today, 2),
                rows_for(view, "old", today - dt.timedelta(days=9), 3),
            ]
        ),
    )
    features = OnlineFeatures(store, view)
    fill = OnlineFill(view, features)
    model = record_model(view)
    nullable = next(f.name for f in view.features if f.nullable)
    required = next(f.name for f in view.features if not f.nullable)
    newest = features.latest(["42"])["42"]
    assert newest is not None and newest.event_date == today

    values, absent = fill.complete(
        [model.model_validate({view.entity: 42}), model.model_validate({view.entity: "42"})],
        batch=True,
    )
    assert absent == [view.feature_names, view.feature_names]
    for vals in values:  # an int id is the same entity; read once for both records
        assert {n: vals[n] for n in view.feature_names} == newest.values
        assert vals[view.event_date] == today  # the log joins labels of the row's day
    assert features.reads == 1
    # an event date sent: the newest row on or before it
    [vals], _ = fill.complete(
        [model.model_validate({view.entity: "42", view.event_date: str(older)})], batch=False
    )
    assert vals[view.event_date] == older
    assert vals[required] == pytest.approx(features.as_of("42", older).values[required])
    # no entity: a nullable feature left out is missing, a required one is refused
    full = {n: newest.values[n] for n in view.feature_names}
    [vals], _ = fill.complete(
        [model.model_validate({k: v for k, v in full.items() if k != nullable})], batch=False
    )
    assert vals[nullable] is None
    with pytest.raises(FillError) as err:
        fill.complete(
            [model.model_validate({k: v for k, v in full.items() if k != required})], batch=False
        )
    assert err.value.status == 422 and err.value.message.startswith(f"{required}: field required")
    with pytest.raises(FillError) as err:
        fill.complete(
            [
                model.model_validate({view.entity: "42"}),
                model.model_validate({view.entity: "42", required: None}),
            ],
            batch=True,
        )
    assert err.value.status == 422
    assert err.value.message.startswith(f"records[1].{required}: null is not allowed")
    with pytest.raises(FillError) as err:
        fill.complete([model.model_validate({view.entity: "nobody"})], batch=False)
    assert err.value.status == 404 and "'nobody' has no feature rows" in err.value.message
    with pytest.raises(FillError) as err:
        fill.complete([model.model_validate({view.entity: "old"})], batch=False)
    assert err.value.status == 422 and "older than the view's TTL of 72 h" in err.value.message
