"""The serving Bento as `make bento` / `make serve-bento` build and serve it.

`bentoml build -f serving/bentofile.yaml .` packs the service, the library and the feature
views; `bentoml serve <tag>` of that exact build (never `:latest`) must answer like the
service in the checkout. Its pinned requirements must be the locked versions, or an image
built from it would serve with other libraries than the ones the tests ran
(`tests/unit/test_bento_requirements.py`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from ctloop.features.view import load_view_file
from ctloop.predlog.store import PredictionLog
from ctloop.registry import Registry
from ctloop.store.features import FeatureStore
from tests.support.databases import mariadb_database
from tests.support.paths import ROOT
from tests.support.serving import Server, records, register_version, service_env

TOKEN = "bento-test-token-" + uuid.uuid4().hex


def build_bento(env: dict[str, str]) -> str:
    """`bentoml build` as `make bento` runs it; returns the exact tag it made."""
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", "serving/bentofile.yaml", ".",
         "--output", "tag"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    found = re.search(r"__tag__:(\S+)", done.stdout)
    assert found, f"no tag in `bentoml build` output:\n{done.stdout}\n{done.stderr}"
    return found.group(1)


@pytest.mark.mariadb
@pytest.mark.slow
def test_built_bento_serves_the_champion_and_logs(tmp_path: Path) -> None:
    view = load_view_file(ROOT / "features" / "credit_score.yaml")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = Registry(tracking, tmp_path / "mlartifacts")
    version = register_version(view, registry, seed=5)
    registry.promote(view.name, version)
    with mariadb_database("ctloop_bento") as url:
        store = FeatureStore(url)
        store.init([view])
        env = service_env(tmp_path, tracking, url, TOKEN)
        tag = build_bento(env)
        name, _, bento_version = tag.partition(":")
        assert name == "ctloop" and bento_version
        src = Path(env["BENTOML_HOME"]) / "bentos" / name / bento_version / "src"
        # the service, the library (src layout flattened) and the views; no data, no tests
        for part in (
            "serving/service.py",
            "ctloop/store/features.py",
            "features/credit_score.yaml",
        ):
            assert (src / part).is_file(), part
        assert not (src / "tests").exists() and not (src / "data").exists()
        assert not (src / "ctloop" / "dev").exists()  # developer tools stay out
        away = tmp_path / "elsewhere"  # served from the Bento, not from the checkout
        away.mkdir()
        server = Server(env, tmp_path / "serve.log", target=tag, cwd=away)
        try:
            server.wait_every_worker(2)
            record = records(view, 1, seed=3)[0]
            answer = httpx.post(f"{server.url}/predict", json=record, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == version
            assert answer.json()["prediction"] in view.label.classes
            meta = httpx.get(f"{server.url}/metadata", timeout=10).json()
            assert meta["version"] == version
        finally:
            assert server.stop() == 0, server.tail()
        # SIGTERM flushed the log: the one answer is one row
        assert PredictionLog(store).count(view.name) == 1
        store.dispose()
