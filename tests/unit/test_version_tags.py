"""A version's metric and gate-check tags: one tag each, read back the same way for
versions tagged before (one tag per metric, one per check)."""

from __future__ import annotations

from ctloop.registry import VersionInfo, metric_tags, version_description


def _version(tags: dict[str, str]) -> VersionInfo:
    return VersionInfo(name="v", version="3", run_id="r", tags=tags)


def test_metrics_are_one_tag_plus_the_primary_and_read_back() -> None:
    metrics = {"accuracy": 0.81234, "macro_f1": 0.7, "precision_Good": 0.9, "recall_Good": 0.5}
    tags = metric_tags(metrics, "macro_f1")
    assert set(tags) == {"metrics", "metric.macro_f1"}
    assert tags["metric.macro_f1"] == "0.7000"
    assert _version(tags).metrics == {
        "accuracy": 0.8123, "macro_f1": 0.7, "precision_Good": 0.9, "recall_Good": 0.5,
    }  # fmt: skip


def test_metrics_of_versions_tagged_one_tag_per_metric_still_read() -> None:
    old = _version({"metric.rmse": "1.5000", "metric.mae": "0.9", "metrics": "not json"})
    assert old.metrics == {"rmse": 1.5, "mae": 0.9}


def test_failed_checks_from_the_one_tag_or_the_older_per_check_tags() -> None:
    assert _version({"gate.model.failed": "floor,vs_champion"}).failed_checks == [
        "floor",
        "vs_champion",
    ]
    assert _version({"gate.model.failed": "none"}).failed_checks == []
    older = {"gate.model.floor": "failed", "gate.model.freshness": "passed",
             "gate.model.champion_version": "2", "gate.model.macro_f1": "0.5"}  # fmt: skip
    assert _version(older).failed_checks == ["floor"]


def test_description_lists_every_metric_and_the_refusing_checks() -> None:
    tags = {**metric_tags({"accuracy": 0.8, "macro_f1": 0.7, "best_iteration": 207.0}, "macro_f1"),
            "gate.model": "failed", "gate.model.failed": "floor"}  # fmt: skip
    text = version_description(_version(tags))
    assert "Validation: accuracy 0.8000, best_iteration 207, macro_f1 0.7000." in text
    assert "Model gate refused it on: floor (see gates/model.json)." in text


def test_a_version_without_metric_tags_has_none() -> None:
    assert _version({}).metrics == {}
    assert _version({"metrics": "[1, 2]"}).metrics == {}
