"""The Prometheus scrape config, alert rules and Grafana dashboard under `docker/`.

`promtool` (Debian's `prometheus` package, installed by `scripts/bootstrap.sh`) checks the
config and the rules, and runs `alerts_test.yml`: each alert fires on the series it is
about and stays quiet on a healthy service. The dashboard is checked for the fields
Grafana needs to import it (uid, title, schemaVersion, panels with id, type, gridPos,
datasource and targets), and every metric it or the alerts name must be one the service
exports. That a real Prometheus scrapes a real `bentoml serve` is checked in
`tests/integration/test_serving.py`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import ROOT

PROMETHEUS = ROOT / "docker" / "prometheus"
DASHBOARD = ROOT / "docker" / "grafana" / "ctloop-dashboard.json"
BENTOML_METRICS = {
    "bentoml_service_request_duration_seconds_bucket",
    "bentoml_service_request_total",
    "bentoml_service_request_in_progress",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: scripts/bootstrap.sh installs Debian's prometheus")
    return subprocess.run([binary, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def exported_metrics() -> set[str]:
    """The ctloop_* metrics serving/metrics.py declares, with their sample suffixes."""
    source = (ROOT / "serving" / "metrics.py").read_text()
    names = set(re.findall(r'"(ctloop_[a-z_]+)"', source))
    return names | {f"{n}_total" for n in names} | BENTOML_METRICS | {"up"}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:ctloop|bentoml)_[a-z_]+|up)\b", expr))


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts_test.yml"),
    ],
)
def test_promtool_accepts_config_and_rules(args: tuple[str, ...]) -> None:
    done = promtool(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alerts_name_only_exported_metrics_and_say_what_to_do() -> None:
    rules = [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
             for r in g["rules"]]  # fmt: skip
    names = {r["alert"] for r in rules}
    assert {"CtloopPredictionLogRowLost", "CtloopPredictionLogSpillGrowing",
            "CtloopNoModelLoaded", "CtloopServingDown"} <= names  # fmt: skip
    for rule in rules:
        assert metric_names(rule["expr"]) <= exported_metrics(), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_grafana_dashboard_has_the_fields_grafana_imports() -> None:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "ctloop-serving" and dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("latency", "model version", "prediction log", "drift"):
        assert topic in titles, topic
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat", "table", "gauge")
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        source = panel["datasource"]
        assert source["uid"].startswith("${DS_") and source["uid"][2:-1] in variables
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"]
            if source["type"] == "prometheus":
                assert metric_names(target["expr"]) <= exported_metrics(), panel["title"]
            else:
                assert "FROM drift_report" in target["rawSql"]


def test_scrape_config_targets_the_service() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert Path(PROMETHEUS / config["rule_files"][0]).is_file()
