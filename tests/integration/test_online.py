"""Online features (issue 21, item 1): predict by entity from the feature store.

A copy of the credit-score view with an `online` block (TTL 72 h, staleness 1 s), three
days of its synthetic rows up to today in MariaDB, a real champion in MLflow and one
`bentoml serve` with two workers. An entity-only request is answered exactly as the full
record built from the store's newest row; a sent feature overrides the store's; an unknown
entity is a 404 and a stale one a 422, each naming it; a row ingested later is served
within the view's staleness; the log says which features came from the store.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from ctloop.features.view import FeatureView, load_view_file
from ctloop.ingest.synth import StreamConfig, stream
from ctloop.predlog.store import PredictionLog
from ctloop.store.features import FeatureStore
from tests.support.paths import FEATURES_DIR
from tests.support.serving import Server, champion_and_challenger, client, service_env
from tests.support.world import World, built_world

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

TOKEN = "online-test-token-" + "x" * 20
STALENESS = 1.0


@dataclass
class OnlineWorld:
    view: FeatureView
    store: FeatureStore
    server: Server
    shared: World


def online_view(folder: Path) -> FeatureView:
    """The shipped credit-score view with an `online` block, written where serving reads."""
    data = yaml.safe_load((FEATURES_DIR / "credit_score.yaml").read_text())
    data["online"] = {"ttl_hours": 72, "max_staleness_seconds": STALENESS}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "credit_score.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_view_file(folder / "credit_score.yaml")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnlineWorld]:
    tmp = tmp_path_factory.mktemp("online")
    view = online_view(tmp / "features")
    today = dt.datetime.now(dt.UTC).date()
    with built_world(tmp, [view], prefix="ctloop_online", features_dir=tmp / "features") as w:
        store = FeatureStore(w.url)
        for _, features, _ in stream(view, today - dt.timedelta(days=2), 3,
                                     StreamConfig(seed=41, rows_per_day=150)):  # fmt: skip
            store.ingest(view, features)
        champion_and_challenger(view, w.registry)
        env = service_env(tmp, w.registry.tracking_uri, w.url, TOKEN,
                          LOG_FLUSH_SECONDS="0.5")  # fmt: skip
        env["CTLOOP_FEATURES_DIR"] = str(tmp / "features")
        server = Server(env, tmp / "serve.log")
        try:
            server.wait_every_worker(2)
            yield OnlineWorld(view, store, server, w)
        finally:
            server.stop()
            store.dispose()


def newest_rows(world: OnlineWorld, n: int, with_day: bool = False) -> list[dict[str, Any]]:
    """`n` entities' newest feature rows, read with plain SQL: the full records (with the
    row's event date, as a request may send it, when `with_day`)."""
    view = world.view
    table = view.features_table
    key, day = view.entity, view.event_date  # identifiers from the view (checked names)
    query = sa.text(
        f"SELECT f.* FROM {table} f JOIN (SELECT {key} AS k, MAX({day}) AS d FROM {table} "
        f"GROUP BY {key}) m ON f.{key} = m.k AND f.{day} = m.d ORDER BY f.{key} LIMIT :n"
    )
    with world.store.connect() as conn:
        frame = pd.read_sql(query, conn, params={"n": n})
    out = []
    for row in frame.to_dict("records"):
        rec = {view.entity: str(row[view.entity])}
        if with_day:
            rec[view.event_date] = str(pd.Timestamp(row[view.event_date]).date())
        for name in view.feature_names:
            value = row[name]
            rec[name] = None if pd.isna(value) else _plain(value)
        out.append(rec)
    return out


def post(world: OnlineWorld, path: str, body: Any) -> httpx.Response:
    with client() as http:
        return http.post(f"{world.server.url}{path}", json=body)


def answer_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    return {k: body[k] for k in ("prediction", "probabilities", "model_version")}


def test_an_entity_alone_is_answered_as_the_full_record_from_the_store(world: OnlineWorld) -> None:
    view = world.view
    full = newest_rows(world, 12)
    for rec in full:
        alone = answer_of(post(world, "/predict", {view.entity: rec[view.entity]}))
        assert alone == answer_of(post(world, "/predict", rec)), rec[view.entity]
    batch = post(
        world, "/predict_batch", {"records": [{view.entity: r[view.entity]} for r in full]}
    )
    assert batch.status_code == 200, batch.text
    sent = post(world, "/predict_batch", {"records": full})
    strip = [
        {k: p[k] for k in ("prediction", "probabilities")} for p in batch.json()["predictions"]
    ]
    assert strip == [{k: p[k] for k in ("prediction", "probabilities")}
                     for p in sent.json()["predictions"]]  # fmt: skip
    # a feature sent overrides the store's: the answer is the full record's with that value
    numeric = next(f.name for f in view.features if f.is_numeric and f.max is not None)
    override = {view.entity: full[0][view.entity], numeric: view.feature(numeric).max}
    changed = {**full[0], numeric: view.feature(numeric).max}
    assert answer_of(post(world, "/predict", override)) == answer_of(
        post(world, "/predict", changed)
    )


def test_unknown_stale_and_unfillable_records_are_refused_naming_them(world: OnlineWorld) -> None:
    view = world.view
    missing = post(world, "/predict", {view.entity: "nobody-here"})
    assert missing.status_code == 404, missing.text
    assert "nobody-here" in missing.json()["error"] and view.entity in missing.json()["error"]
    known = newest_rows(world, 1)[0][view.entity]
    in_batch = post(world, "/predict_batch", {"records": [{view.entity: known},
                                                           {view.entity: "ghost-7"}]})  # fmt: skip
    assert in_batch.status_code == 404, in_batch.text
    assert in_batch.json()["error"].startswith("records[1]: ") and "ghost-7" in in_batch.text
    # a row older than the TTL is never served
    old_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    (_, features, _), = stream(view, old_day, 1, StreamConfig(seed=43, rows_per_day=1))  # fmt: skip
    features[view.entity] = "stale-1"
    world.store.ingest(view, features)
    stale = post(world, "/predict", {view.entity: "stale-1"})
    assert stale.status_code == 422, stale.text
    assert "stale-1" in stale.text and str(old_day) in stale.text and "72 h" in stale.text
    # a feature left out with no entity to look it up; a null where none is allowed
    required = next(f.name for f in view.features if not f.nullable)
    record = newest_rows(world, 1)[0]
    no_key = {k: v for k, v in record.items() if k not in (view.entity, required)}
    refused = post(world, "/predict", no_key)
    assert refused.status_code == 422 and required in refused.text, refused.text
    null = post(world, "/predict", {**record, required: None})
    assert null.status_code == 422 and f"{required}: null is not allowed" in null.text


def test_an_ingested_row_is_served_within_the_staleness(world: OnlineWorld) -> None:
    view = world.view
    entity = newest_rows(world, 1)[0][view.entity]
    before = answer_of(post(world, "/predict", {view.entity: entity}))  # cached by one worker
    # a new row for today (the newest now) whose full record the champion answers
    # differently, landed as ingestion lands it
    today = dt.datetime.now(dt.UTC).date()
    (_, features, _), = stream(view, today, 1, StreamConfig(seed=97, rows_per_day=60))  # fmt: skip
    want: dict[str, Any] | None = None
    for i in range(len(features)):
        candidate = {view.entity: entity}
        for name in view.feature_names:
            value = features.iloc[i][name]
            candidate[name] = None if pd.isna(value) else _plain(value)
        answer = answer_of(post(world, "/predict", candidate))
        if answer != before:
            want, replacement = answer, features.iloc[[i]].copy()
            break
    assert want is not None, "no synthetic row the champion answers differently"
    replacement[view.entity] = entity
    world.store.ingest(view, replacement)
    landed = time.monotonic()
    deadline = landed + STALENESS + 10  # staleness, plus a request's own time on a busy box
    seen_all = 0
    while time.monotonic() < deadline:
        answers = [answer_of(post(world, "/predict", {view.entity: entity})) for _ in range(6)]
        if all(a == want for a in answers):  # both workers (new connection per request)
            seen_all += 1
            if seen_all == 2:
                break
        else:
            seen_all = 0
        time.sleep(0.2)
    assert seen_all == 2, f"not served within {STALENESS} s (+ slack): {answers} != {want}"


def test_the_log_says_which_features_came_from_the_store(world: OnlineWorld) -> None:
    view = world.view
    rec = newest_rows(world, 1)[0]
    alone = post(world, "/predict", {view.entity: rec[view.entity]}).json()["request_id"]
    numeric = next(f.name for f in view.features if f.is_numeric)
    partly = post(world, "/predict", {view.entity: rec[view.entity], numeric: rec[numeric]})
    sent = post(world, "/predict", {k: _plain(v) for k, v in rec.items()}).json()["request_id"]
    ids = {alone, partly.json()["request_id"], sent}
    rows = logged_rows(world, ids)
    assert len(rows) == 3, rows
    by_id = rows.set_index("request_id")
    assert by_id.loc[alone, "from_store"] == ",".join(view.feature_names)
    others = [n for n in view.feature_names if n != numeric]
    assert by_id.loc[partly.json()["request_id"], "from_store"] == ",".join(others)
    assert by_id.loc[sent, "from_store"] == ""
    for name in view.feature_names:  # the features as used, whoever supplied them
        assert by_id.loc[alone, name] == by_id.loc[sent, name] or (
            pd.isna(by_id.loc[alone, name]) and pd.isna(by_id.loc[sent, name])
        ), name


def _plain(value: Any) -> Any:
    """A numpy scalar as the JSON value a client sends."""
    return value.item() if hasattr(value, "item") else value


def test_the_monitor_measures_skew_between_sent_features_and_the_store(
    world: OnlineWorld,
) -> None:
    """What callers send is compared with the store's row of the same entity and day:
    half the requests carry a changed feature, so its mismatch rate is one half."""
    from ctloop.monitoring.skew import skew_findings

    view = world.view
    numeric = next(f.name for f in view.features if f.is_numeric and f.max is not None)
    full = newest_rows(world, 40, with_day=True)  # rated from 30 compared requests on
    ids = set()
    for i, rec in enumerate(full):
        sent = dict(rec)
        if i % 2 == 0:
            sent[numeric] = view.feature(numeric).max
        ids.add(answer_id(post(world, "/predict", sent)))
    rows = logged_rows(world, ids)
    changed = rows[numeric] == view.feature(numeric).max
    stored = {r[view.entity]: r[numeric] for r in full}
    expected = float((changed & (rows["entity_id"].map(stored) != rows[numeric])).mean())
    found = {f.statistic: f.value for f in skew_findings(view, world.store, rows)
             if f.feature == numeric}  # fmt: skip
    assert found["compared_rows"] == len(rows)
    assert found["mismatch_rate"] == expected and expected > 0
    others = [f for f in skew_findings(view, world.store, rows)
              if f.statistic == "mismatch_rate" and f.feature != numeric]  # fmt: skip
    assert others and all(f.value == 0.0 for f in others), others


def answer_id(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def logged_rows(world: OnlineWorld, ids: set[str]) -> pd.DataFrame:
    """The log rows of these requests, once the writer has flushed them all."""
    log = PredictionLog(world.store)
    start = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=5)
    deadline = time.monotonic() + 30
    rows = pd.DataFrame()
    while time.monotonic() < deadline:
        rows = log.read(world.view.name, start, dt.datetime(2100, 1, 1))
        rows = rows[rows["request_id"].isin(ids)]
        if len(rows) == len(ids):
            return rows
        time.sleep(0.5)
    pytest.fail(f"{len(rows)} of {len(ids)} rows logged")
