"""The prediction service as it runs: a real `bentoml serve` process with two workers, a real
CatBoost champion in a real MLflow store, the prediction log in MariaDB, over HTTP.

The service reaches MariaDB through a small TCP proxy run by the test, so the test can cut
the database mid-stream and bring it back. One server serves the whole module (starting
one takes ~30 s here); the last test stops it to check that shutdown flushes the log.
Traffic is local (127.0.0.1), bounded in count and time. The request model on its own
(no server) is tested in `tests/unit/test_request_schema.py`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from serving.model import ModelManager

from ctloop.core.predictor import Predictor, to_model_frame
from ctloop.dev.stack.prometheus import render_config
from ctloop.features.records import model_rows, sample_records
from ctloop.features.view import FeatureView, load_view_file
from ctloop.predlog.store import PredictionLog
from ctloop.registry import GATES, VersionInfo
from ctloop.store.features import FeatureStore
from ctloop.training.infra import check_model
from tests.support.paths import FEATURES_DIR, ROOT
from tests.support.serving import (
    START,
    Server,
    TcpProxy,
    champion_and_challenger,
    client,
    labelled,
    metadata_of_workers,
    records,
    register_version,
    service_env,
)
from tests.support.world import World, built_world

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

TOKEN = "test-admin-token-" + uuid.uuid4().hex
JSON = {"Content-Type": "application/json"}


@dataclasses.dataclass
class ServingWorld(World):
    """The shared world serving two registered versions (v1 the champion) through `server`,
    which reaches MariaDB through `proxy` so a test can cut the database."""

    server: Server
    proxy: TcpProxy
    v1: str
    v2: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingWorld]:
    """An empty MariaDB store, versions 1 and 2 registered, and one `bentoml serve` for all."""
    view = load_view_file(FEATURES_DIR / "credit_score.yaml")
    tmp = tmp_path_factory.mktemp("serving")
    with built_world(tmp, [view], prefix="ctloop_serving") as shared:
        registry = shared.registry
        v1, v2 = champion_and_challenger(view, registry)
        proxy = TcpProxy()
        proxy.start()
        name = shared.url.rsplit("/", 1)[1]
        env = service_env(
            tmp, registry.tracking_uri, f"mysql+pymysql://root@127.0.0.1:{proxy.port}/{name}", TOKEN
        )
        server = Server(env, tmp / "serve.log")
        try:
            server.wait_every_worker(2)  # both workers loaded: /readyz of either is 200
            yield shared.extended(ServingWorld, server=server, proxy=proxy, v1=v1, v2=v2)
        finally:
            server.stop()
            proxy.close()


def wait_for_rows(store: FeatureStore, expected: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    count = PredictionLog(store).count()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        count = PredictionLog(store).count()
    return count


def settled_count(store: FeatureStore, quiet: float = 2.5) -> int:
    """The row count once earlier tests' rows stopped arriving (flush interval is 2 s)."""
    count, since = PredictionLog(store).count(), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = PredictionLog(store).count()
        if now != count:
            count, since = now, time.monotonic()
    return count


def logged(store: FeatureStore) -> pd.DataFrame:
    """Every logged row of the view, one column per feature (and the event date sent)."""
    return PredictionLog(store).read(
        "credit_score", dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1)
    )


def plain(value: Any) -> Any:
    """A logged value as the request carried it (a missing one is None, whatever its column)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def test_fast_path_rows_equal_the_model_frame(world: ServingWorld) -> None:
    view, registry = world.view, world.registry
    info = registry.version(view.name, world.v1)
    predictor = Predictor.load(view, info.uri, info.version)
    recs = records(view, 200)
    recs[0]["occupation"] = "Astronaut"  # unseen, passed through as a string
    recs[1]["annual_income"] = None
    fast = predictor.answer(model_rows(view, recs)).proba
    slow = predictor.predict(pd.DataFrame.from_records(recs)).proba
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    frame = to_model_frame(view, pd.DataFrame.from_records(recs))
    assert frame.iloc[1]["annual_income"] != frame.iloc[1]["annual_income"]  # NaN


class _Unreachable:
    """A registry whose server is down."""

    def champion(self, name: str) -> VersionInfo:
        raise ConnectionError("tracking server unreachable")


class _Pointing:
    """A registry whose champion is a (gated) version that cannot be loaded."""

    def champion(self, name: str) -> VersionInfo:
        return VersionInfo(name, "99", None, {f"gate.{g}": "passed" for g in GATES})


class _Ungated:
    """A registry whose champion alias was moved to a version no gate passed."""

    def champion(self, name: str) -> VersionInfo:
        return VersionInfo(name, "100", None, {"gate.data": "passed"})


def test_manager_keeps_serving_through_registry_failures(world: ServingWorld) -> None:
    view = world.view
    manager = ModelManager(view, world.registry)
    assert manager.refresh("start")["status"] == "swapped"
    serving = manager.current
    assert serving is not None and serving.version == world.v1
    manager.registry = _Unreachable()  # type: ignore[assignment]
    result = manager.refresh("poll")
    assert result["status"] == "error" and manager.current is serving
    status = manager.status()
    assert status["registry_ok"] is False and "unreachable" in status["last_error"]
    assert status["version"] == world.v1
    manager.registry = _Pointing()  # type: ignore[assignment]
    assert manager.refresh("poll")["status"] == "error"
    assert manager.current is serving and manager.rejected_version == "99"
    assert manager.refresh("poll")["status"] == "rejected"  # not reloaded on every poll
    manager.registry = _Ungated()  # type: ignore[assignment]
    refused = manager.refresh("poll")
    assert refused["status"] == "error" and "has not passed the gates" in refused["error"]
    assert manager.current is serving and manager.refused_version == "100"
    assert manager.refresh("poll")["status"] == "refused"  # said once, not on every poll


def test_a_model_with_other_classes_fails_the_serving_check(world: ServingWorld) -> None:
    from catboost import CatBoostClassifier

    view = world.view
    frame = labelled(view, START, 3, seed=3)
    binary = (frame[view.label.name] == "Good").map({True: "Good", False: "Poor"})
    cats = [f.name for f in view.categorical_features]
    model = CatBoostClassifier(
        iterations=5, verbose=False, allow_writing_files=False, cat_features=cats
    )
    model.fit(to_model_frame(view, frame), binary)
    problems = check_model(view, Predictor(view, model, "x", "memory"), sample_records(view))
    assert any("classes" in p for p in problems)


# ---------------------------------------------------------------------- the running service


def test_probes_metadata_docs(world: ServingWorld) -> None:
    url = world.server.url
    with client() as http:
        assert http.get(f"{url}/livez").status_code == 200
        assert http.get(f"{url}/readyz").status_code == 200
        meta = http.get(f"{url}/metadata").json()
        assert meta["view"] == "credit_score" and meta["model_name"] == "credit_score"
        assert meta["version"] == world.v1
        assert meta["training_window"] == "2026-01-01..2026-01-20"
        assert "macro_f1" in meta["metrics"]["tags"] and "run" in meta["metrics"]
        assert meta["loaded_at"] and meta["prediction_log"]["mode"] == "async"
        spec = http.get(f"{url}/docs.json").json()
        assert {"/predict", "/predict_batch", "/admin/reload"} <= set(spec["paths"])
        check_openapi_is_ctloops(spec, world.view)
        index = http.get(f"{url}/")
        assert index.status_code == 200 and "html" in index.headers["content-type"]
        metrics = http.get(f"{url}/metrics").text
        assert "ctloop_model_version" in metrics and "bentoml_service_request" in metrics


def check_openapi_is_ctloops(spec: dict[str, Any], view: FeatureView) -> None:
    """Issue 20: titled and versioned as ctloop's, answers described from the view's label
    kind with examples, and none of BentoML's template or our internal notes."""
    info = spec["info"]
    assert info["title"] == "ctloop prediction service: credit_score"
    assert info["version"].startswith("ctloop ") and "model credit_score" in info["version"]
    assert view.description.strip() in info["description"]
    text = json.dumps(spec).lower()
    for boilerplate in ("slack", "twitter", "bentoml team", "py-spy", "cpu"):
        assert boilerplate not in text, boilerplate
    for route in ("/predict", "/predict_batch", "/admin/reload"):  # no bare {} answers
        ok = spec["paths"][route]["post"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"]["properties"] and ok["example"], route
    predict = spec["paths"]["/predict"]["post"]
    answer = predict["responses"]["200"]["content"]["application/json"]
    props = answer["schema"]["properties"]
    assert props["prediction"]["enum"] == view.label.class_list
    assert set(props["probabilities"]["required"]) == set(view.label.class_list)
    assert {"request_id", "model_version"} <= set(answer["schema"]["required"])
    assert answer["example"]["prediction"] in view.label.class_list
    assert set(predict["requestBody"]["content"]["application/json"]["example"]) >= set(
        view.feature_names
    )
    batch = spec["paths"]["/predict_batch"]["post"]["responses"]["200"]["content"]
    assert batch["application/json"]["schema"]["properties"]["predictions"]["type"] == "array"


def test_prometheus_scrapes_the_service_with_the_shipped_config(
    world: ServingWorld, tmp_path: Path
) -> None:
    """Issue 20: a real Prometheus, given docker/prometheus/prometheus.yml aimed at this
    server as `make up` aims it (`render_config`), finds the target up and stores ctloop's
    and BentoML's series."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: scripts/bootstrap.sh installs Debian's package"
    render_config(ROOT, world.server.url.split("//", 1)[1], tmp_path, scrape_interval="1s")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        with client() as http:
            deadline = time.monotonic() + 90
            found: list[Any] = []
            while time.monotonic() < deadline and not found:
                time.sleep(1)
                try:
                    targets = http.get(f"{api}/targets").json()["data"]["activeTargets"]
                    if targets and targets[0]["health"] == "up":
                        query = {"query": "ctloop_model_version"}
                        found = http.get(f"{api}/query", params=query).json()["data"]["result"]
                except httpx.HTTPError:
                    continue
            assert found, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert {r["metric"]["view"] for r in found} == {"credit_score"}
            rules = http.get(f"{api}/rules").json()["data"]["groups"]
            assert any(r["name"] == "CtloopPredictionLogRowLost" for g in rules for r in g["rules"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_predictions_match_the_model_loaded_directly(world: ServingWorld) -> None:
    view, registry, url = world.view, world.registry, world.server.url
    info = registry.champion(view.name)
    predictor = Predictor.load(view, info.uri, info.version)
    recs = records(view, 40, seed=7)
    output = predictor.predict(pd.DataFrame.from_records(recs))
    expected_classes, expected = output.predictions, output.proba
    with client() as http:
        single = [http.post(f"{url}/predict", json=r).json() for r in recs]
        batch = http.post(f"{url}/predict_batch", json={"records": recs}).json()
    assert batch["model_version"] == info.version
    for answers in (single, batch["predictions"]):
        got = np.array([[a["probabilities"][c] for c in view.label.class_list] for a in answers])
        np.testing.assert_allclose(got, expected, atol=1e-12)
        assert [a["prediction"] for a in answers] == expected_classes
    assert {a["model_version"] for a in single} == {info.version}
    assert len({a["request_id"] for a in single + batch["predictions"]}) == 80


def batch_validations(http: httpx.Client, url: str) -> dict[str, float]:
    """`ctloop_batch_records_total` by validation path, summed over the workers."""
    out = {"columnar": 0.0, "request_model": 0.0}
    for line in http.get(f"{url}/metrics").text.splitlines():
        if line.startswith("ctloop_batch_records_total{"):
            path = line.split('validation="', 1)[1].split('"', 1)[0]
            out[path] += float(line.rsplit(" ", 1)[1])
    return out


def split(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Records in the split form: field names once, one list of values per record."""
    columns = list(recs[0])
    return {"columns": columns, "data": [[r[c] for c in columns] for r in recs]}


def test_a_batch_takes_the_columnar_path_or_the_request_model_with_one_answer(
    world: ServingWorld,
) -> None:
    """A plain batch is checked a column at a time, one the columnar check leaves to the
    request model (an event date with a time of day, which pydantic takes) is validated
    record by record; both answer exactly what the model loaded directly answers, and
    the logged features are the same either way."""
    view, registry, url = world.view, world.registry, world.server.url
    info = registry.champion(view.name)
    predictor = Predictor.load(view, info.uri, info.version)
    recs = records(view, 60, seed=17)
    expected = predictor.predict(pd.DataFrame.from_records(recs)).proba
    dated = [{**r, view.event_date: "2026-02-01"} for r in recs]
    odd = [{**r, view.event_date: "2026-02-01T00:00:00"} for r in recs]
    bodies = [{"records": dated}, {"records": odd}, split(dated), split(odd)]
    with client() as http:
        before = batch_validations(http, url)
        answers = [http.post(f"{url}/predict_batch", json=body).json()["predictions"]
                   for body in bodies]  # fmt: skip
        after = batch_validations(http, url)
    assert after["columnar"] - before["columnar"] == 2 * len(dated)  # both forms
    assert after["request_model"] - before["request_model"] == 2 * len(odd)
    for got in answers:
        proba = np.array([[a["probabilities"][c] for c in view.label.class_list] for a in got])
        np.testing.assert_allclose(proba, expected, atol=1e-12)
    ids = [[a["request_id"] for a in got] for got in answers]
    deadline = time.monotonic() + 30
    rows = logged(world.store).set_index("request_id")
    while not all(i in rows.index for part in ids for i in part):
        assert time.monotonic() < deadline, "the answers' log rows did not land in 30 s"
        time.sleep(0.2)
        rows = logged(world.store).set_index("request_id")
    for part in ids:
        got = rows.loc[part]
        assert list(got[view.event_date]) == ["2026-02-01"] * len(part)
        assert [{k: plain(got.loc[i, k]) for k in view.feature_names} for i in part] == [
            {k: r[k] for k in view.feature_names} for r in recs
        ]


def test_every_answer_is_logged_exactly_once(world: ServingWorld) -> None:
    store, url, view = world.store, world.server.url, world.view
    before = settled_count(store)
    recs = records(view, 150, seed=8)
    ids: dict[str, dict[str, Any]] = {}
    with client() as http:
        for r in recs[:100]:
            r = {**r, "event_date": "2026-02-01"}  # optional: lets the monitor join labels
            answer = http.post(f"{url}/predict", json=r).json()
            ids[answer["request_id"]] = {"version": answer["model_version"], "record": r}
        for part in (recs[100:125], recs[125:]):
            answer = http.post(f"{url}/predict_batch", json={"records": part}).json()
            for a, r in zip(answer["predictions"], part, strict=True):
                ids[a["request_id"]] = {"version": answer["model_version"], "record": r}
    assert wait_for_rows(store, before + 150) == before + 150
    time.sleep(2.5)  # one more flush interval: nothing else may appear
    rows = logged(store).set_index("request_id").loc[list(ids)]
    assert PredictionLog(store).count() == before + 150
    assert (rows["model_version"] == world.v1).all()
    first, last = next(iter(ids)), list(ids)[-1]
    assert rows.loc[first, "entity_id"] == ids[first]["record"]["customer_id"]
    assert rows.loc[first, "event_date"] == "2026-02-01"
    assert plain(rows.loc[last, "event_date"]) is None  # not sent: not stored
    assert (rows["latency_ms"] > 0).all() and (rows["feature_view"] == "credit_score").all()


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"age": "forty"}, ["age", "valid number"]),
        ({"age": None}, ["age"]),
        ({"interest_rate": 41}, ["interest_rate", "less than or equal to 40"]),
        ({"num_bank_accounts": -1}, ["num_bank_accounts", "greater than or equal to 0"]),
        ({"credit_mix": "Excellent"}, ["credit_mix", "'Bad', 'Standard' or 'Good'"]),
        ({"num_of_loan": 1.5}, ["num_of_loan", "whole number"]),
        ({"ssn": "123"}, ["ssn", "Extra inputs"]),
        ({"event_date": "2026-13-01"}, ["event_date", "valid date"]),
    ],
)
def test_bad_records_are_refused_naming_the_field(
    world: ServingWorld, change: dict[str, Any], names: list[str]
) -> None:
    good = records(world.view, 1, seed=9)[0]
    with client() as http:
        response = http.post(f"{world.server.url}/predict", json={**good, **change})
    assert response.status_code == 400
    for name in names:
        assert name in response.text


def test_other_bad_requests(world: ServingWorld) -> None:
    url, view = world.server.url, world.view
    good = records(view, 1, seed=9)[0]
    with client() as http:
        missing = http.post(f"{url}/predict", json={k: v for k, v in good.items() if k != "age"})
        assert missing.status_code == 400 and "age" in missing.text and "missing" in missing.text
        broken = http.post(f"{url}/predict", content=b'{"age": 30,', headers=JSON)
        assert broken.status_code == 400 and "json_invalid" in broken.text
        big = http.post(f"{url}/predict_batch", json={"records": [good] * 101})
        assert big.status_code == 400 and "at most 100 items" in big.text
        empty = http.post(f"{url}/predict_batch", json={"records": []})
        assert empty.status_code == 400 and "records" in empty.text
        one_bad = http.post(f"{url}/predict_batch", json={"records": [good, {**good, "age": 7}]})
        assert one_bad.status_code == 400
        assert one_bad.json()["detail"][0]["loc"] == ["records", 1, "age"]
        # the split form: values judged as records, its shape named where it is wrong
        body = split([good, {**good, "age": 7}])
        bad_value = http.post(f"{url}/predict_batch", json=body)
        assert bad_value.status_code == 400
        assert bad_value.json()["detail"][0]["loc"] == ["records", 1, "age"]
        ragged = http.post(f"{url}/predict_batch", json={**body, "data": [body["data"][0], [1]]})
        assert ragged.status_code == 400 and ragged.json()["detail"][0]["loc"] == ["data", 1]
        assert "1 values for" in ragged.json()["detail"][0]["msg"]
        twice = http.post(
            f"{url}/predict_batch", json={"columns": ["age", "age"], "data": [[1, 2]]}
        )
        assert twice.status_code == 400 and "'age' named more than once" in twice.text
        unknown = split([{**good, "agee": 3}])
        typo = http.post(f"{url}/predict_batch", json=unknown)
        assert typo.status_code == 400 and typo.json()["detail"][0]["loc"] == ["records", 0, "agee"]
        extra = http.post(f"{url}/predict_batch", json={**body, "format": "split"})
        assert extra.status_code == 400 and "format" in extra.text
        too_many = http.post(f"{url}/predict_batch", json=split([good] * 101))
        assert too_many.status_code == 400 and too_many.json()["detail"][0]["loc"] == ["data"]
        assert "1 to 100 rows expected, got 101" in too_many.text
        # a value orjson cannot read (NaN, as Python's json writes it) is judged as records
        nan = json.dumps(split([good, {**good, "age": float("nan")}])).encode()
        refused = http.post(f"{url}/predict_batch", content=nan, headers=JSON)
        assert refused.status_code == 400
        assert refused.json()["detail"][0]["loc"] == ["records", 1, "age"]


def test_admin_reload_needs_the_token(world: ServingWorld) -> None:
    url = f"{world.server.url}/admin/reload"
    body = {"view": "credit_score", "version": world.v1}
    with client() as http:
        assert http.post(url, json=body).status_code == 401
        wrong = http.post(url, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        auth = {"Authorization": f"Bearer {TOKEN}"}
        other = http.post(url, json={"view": "churn"}, headers=auth)
        assert other.status_code == 400 and "credit_score" in other.text
        same = http.post(url, json=body, headers=auth)
        assert same.status_code == 200 and same.json()["status"] == "unchanged"


def test_promotion_during_a_stream_swaps_with_no_failed_request(world: ServingWorld) -> None:
    view, registry, store = world.view, world.registry, world.store
    url = world.server.url
    before = settled_count(store)
    recs = records(view, 50, seed=10)
    answers: list[tuple[str, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def steady_stream() -> None:
        deadline = time.monotonic() + 90  # bounded whatever happens
        i = 0
        with client() as http:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    r = http.post(f"{url}/predict", json=recs[i % len(recs)])
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                    else:
                        body = r.json()
                        answers.append((body["request_id"], body["model_version"]))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                i += 1
                time.sleep(0.005)

    streams = [threading.Thread(target=steady_stream) for _ in range(2)]
    for t in streams:
        t.start()
    try:
        time.sleep(2)
        registry.promote(view.name, world.v2)
        with client() as http:
            reload = http.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"},
                               json={"view": view.name, "version": world.v2})  # fmt: skip
        assert reload.status_code == 200, reload.text
        assert reload.json()["version"] == world.v2
        # the other worker follows through the reload signal within about a second
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            tail = [v for _, v in answers[-40:]]
            if len(tail) == 40 and set(tail) == {world.v2}:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for t in streams:
            t.join(30)
    assert not failures, failures[:5]
    versions = [v for _, v in answers]
    assert world.v1 in versions and world.v2 in versions
    assert set(versions[-40:]) == {world.v2}
    assert wait_for_rows(store, before + len(answers)) == before + len(answers)
    rows = logged(store).set_index("request_id")
    for rid, version in answers:
        assert rows.loc[rid, "model_version"] == version
    with client() as http:
        metrics = http.get(f"{url}/metrics").text
    served = [line for line in metrics.splitlines() if line.startswith("ctloop_model_version{")]
    assert len(served) == 2 and all(line.endswith(f" {float(world.v2)}") for line in served)


def test_registry_poll_alone_picks_up_a_new_champion(world: ServingWorld) -> None:
    view, registry, url = world.view, world.registry, world.server.url
    registry.rollback(view.name)  # champion back to v1; no reload call: polling must see it
    deadline = time.monotonic() + 30
    seen: list[str] = []
    good = records(view, 1, seed=11)[0]
    with client() as http:
        while time.monotonic() < deadline:
            seen.append(http.post(f"{url}/predict", json=good).json()["model_version"])
            if seen[-20:] == [world.v1] * 20:
                break
            time.sleep(0.1)
    assert seen[-20:] == [world.v1] * 20


def test_an_alias_moved_around_the_gates_is_refused_until_forced(world: ServingWorld) -> None:
    """The MLflow UI's alias pencil can point `champion` at any version; serving keeps what it
    serves until the version passed its gates or `ctloop promote --force --reason` records
    who and why on it."""
    view, registry, server = world.view, world.registry, world.server
    url = server.url
    serving = registry.champion(view.name).version
    ungated = register_version(view, registry, seed=7, gated=False)
    registry.client.set_registered_model_alias(view.name, "champion", ungated)  # the pencil
    good = records(view, 1, seed=13)[0]
    refused: set[int] = set()
    deadline = time.monotonic() + 30
    with client() as http:
        while len(refused) < 2 and time.monotonic() < deadline:
            for meta in metadata_of_workers(url):
                if meta["model"]["refused_version"] == ungated:
                    refused.add(meta["worker"]["pid"])
                    assert "has not passed the gates" in meta["model"]["last_error"]
            time.sleep(0.2)
        assert len(refused) == 2, "both workers should have seen and refused the alias"
        answered = {http.post(f"{url}/predict", json=good).json()["model_version"]
                    for _ in range(20)}  # fmt: skip
        assert answered == {serving}
        metrics = http.get(f"{url}/metrics").text
    assert 'ctloop_model_events_total{event="untrusted_error"}' in metrics
    assert f"version {ungated} of {view.name} has not passed the gates" in server.tail(400)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=registry.tracking_uri, CTLOOP_DATA_DIR=str(world.tmp),
               CTLOOP_FEATURES_DIR=str(FEATURES_DIR))  # fmt: skip
    cli = [sys.executable, "-m", "ctloop.cli", "promote", view.name, ungated, "--force"]
    unexplained = subprocess.run(cli, env=env, capture_output=True, text=True, check=False)
    assert unexplained.returncode == 2 and "--reason" in unexplained.stderr
    subprocess.run([*cli, "--reason", "hotfix approved by on-call"], env=env, check=True,
                   capture_output=True, text=True)  # fmt: skip
    tags = registry.version(view.name, ungated).tags
    assert tags["forced"] == "true" and tags["forced_by"].startswith("cli:")
    assert tags["forced_reason"] == "hotfix approved by on-call"
    seen: list[str] = []
    deadline = time.monotonic() + 30
    with client() as http:
        while seen[-20:] != [ungated] * 20 and time.monotonic() < deadline:
            seen.append(http.post(f"{url}/predict", json=good).json()["model_version"])
            time.sleep(0.05)
    assert seen[-20:] == [ungated] * 20
    registry.promote(view.name, serving)  # back to the gated champion for the tests after


def test_metrics_add_up_over_both_workers(world: ServingWorld) -> None:
    url, view = world.server.url, world.view

    def scrape(http: httpx.Client) -> tuple[float, float]:
        predictions = queued = 0.0
        for line in http.get(f"{url}/metrics").text.splitlines():
            if line.startswith("ctloop_predictions_total{"):
                predictions += float(line.rsplit(" ", 1)[1])
            if line.startswith('ctloop_prediction_log_rows_total{outcome="queued"}'):
                queued += float(line.rsplit(" ", 1)[1])
        return predictions, queued

    good = records(view, 1, seed=12)[0]

    def call(_: int) -> int:
        """One prediction and the pid of a worker, each on a new connection."""
        with client() as http:
            assert http.post(f"{url}/predict", json=good).status_code == 200
            return int(http.get(f"{url}/metadata").json()["worker"]["pid"])

    # Sequential calls may all be accepted by one idle worker (the kernel wakes whichever
    # waits); concurrent ones reach both. Rounds go on until both answered, bounded.
    with client() as http:
        p0, q0 = scrape(http)
        pids: set[int] = set()
        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(pids) < 2 and sent < 400:
                pids.update(pool.map(call, range(16)))
                sent += 16
        p1, q1 = scrape(http)
    assert len(pids) == 2, f"{sent} requests should have reached both workers"
    assert (p1 - p0, q1 - q0) == (sent, sent)  # whichever worker answers the scrape


def test_database_outage_keeps_serving_and_loses_nothing(world: ServingWorld) -> None:
    store, proxy, url, view = world.store, world.proxy, world.server.url, world.view
    before = settled_count(store)
    recs = records(view, 60, seed=13)
    ids = []
    proxy.stop()  # the database is gone
    try:
        with client() as http:
            for r in recs:
                answer = http.post(f"{url}/predict", json=r)
                assert answer.status_code == 200, answer.text
                ids.append(answer.json()["request_id"])
            time.sleep(3)  # past a flush: the writers found the database down
            writers = [http.get(f"{url}/metadata").json()["prediction_log"]["writer"]
                       for _ in range(6)]  # fmt: skip
        assert any(w["database_ok"] is False and w["spilled"] > 0 for w in writers)
        assert PredictionLog(store).count() == before
    finally:
        proxy.start()  # back
    assert wait_for_rows(store, before + 60, timeout=45) == before + 60
    rows = logged(store)
    assert set(ids) <= set(rows["request_id"])
    assert rows["request_id"].is_unique


def test_shutdown_flushes_the_log(world: ServingWorld) -> None:
    """Last test: SIGTERM right after answering; every answered request is in the table."""
    store, server, view = world.store, world.server, world.view
    before = settled_count(store)
    with client() as http:
        for r in records(view, 25, seed=14):
            assert http.post(f"{server.url}/predict", json=r).status_code == 200
    start = time.monotonic()
    assert server.stop() == 0, server.tail()
    assert time.monotonic() - start < 30
    assert PredictionLog(store).count() == before + 25
    assert not list((world.tmp / "serving" / "spill").glob("*.jsonl"))
