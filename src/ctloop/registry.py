"""The MLflow model registry as ctloop uses it: one registered model per view, aliases.

`champion` is what serving loads; `previous` is the champion it replaced, kept for a
one-command rollback. Aliases (not the deprecated stages) point at exact versions, and
every decision is recorded as tags on the version it concerns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ctloop.errors import CtloopError
from ctloop.settings import get_settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"  # a gated candidate on live trial (shadow or canary)
ROLLOUT_MODES = ("shadow", "canary")
GATES = ("data", "model", "infra")
ONSET_TAG = "ctloop.change_onset"
ONSET_FOUND_TAG = "ctloop.change_onset_found"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_ML = "custom_model_development"
"""MLflow 3's UI opens an experiment in GenAI mode (traces, the assistant) unless its
`mlflow.experimentKind` tag says "custom_model_development" (read from the UI bundle of
mlflow 3.x: `ExperimentKind.CUSTOM_MODEL_DEVELOPMENT`); ctloop's experiments are classic
model training, so they say so. Links ctloop prints add `?workflowType=machine_learning`,
the switch newer UIs read instead."""
GATES_ARTIFACT = "gates/{gate}.json"
"""Each gate's whole report (every check's verdict, measurement, threshold and words) on the
version's run, one JSON file per gate, where a person reads it; the version keeps only the
verdict tags serving and the next gate read."""
METRIC_TAG_PREFIX = "metric."
FAILED_CHECKS_TAG = "gate.model.failed"
"""The model gate's refusing checks, comma-separated: one tag,
where there was one per check; "none" when every check passed (always written, so a
re-evaluation that passes clears an older refusal); each check's figures are in
`gates/model.json`."""
REFERENCE_ARTIFACT = "reference/profile.json"
"""Where a version's run keeps its training profile: what the data gate measures skew and
the monitor measures drift against."""


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version: its number, source run, URI and tags."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        """The exact `models:/` URI of this version: loads never go through "latest"."""
        return f"models:/{self.name}/{self.version}"

    @property
    def metrics(self) -> dict[str, float]:
        """The validation metrics recorded at training: the one `metrics` tag (JSON), and
        `metric.<name>` tags (the primary metric, and every metric of older versions)."""
        found: dict[str, float] = {}
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            recorded = json.loads(self.tags.get("metrics") or "{}")
            found.update({str(k): float(v) for k, v in recorded.items()})
        for key, value in self.tags.items():
            if key.startswith(METRIC_TAG_PREFIX):
                with contextlib.suppress(ValueError):
                    found[key.removeprefix(METRIC_TAG_PREFIX)] = float(value)
        return found

    @property
    def failed_checks(self) -> list[str]:
        """The model gate's checks that refused this version, by name (the `gate.model.failed`
        tag; versions tagged before it carry one `gate.model.<check>` tag per check)."""
        listed = self.tags.get(FAILED_CHECKS_TAG)
        if listed is not None:
            return [name for name in listed.split(",") if name and name != "none"]
        prefix = "gate.model."
        return sorted(k.removeprefix(prefix) for k, v in self.tags.items()
                      if k.startswith(prefix) and v == "failed")  # fmt: skip


def metric_tags(metrics: dict[str, float], primary: str) -> dict[str, str]:
    """A version's metric tags: the primary one alone (the gate compares it, MLflow's search
    and the version list show it) and all of them in one `metrics` tag, so the version list
    stays one row high instead of one tag per class and metric."""
    rounded = {k: round(v, 4) for k, v in sorted(metrics.items())}
    tags = {"metrics": json.dumps(rounded, separators=(",", ":"))}
    if primary in metrics:
        tags[METRIC_TAG_PREFIX + primary] = f"{metrics[primary]:.4f}"
    return tags


def untrusted_reason(info: VersionInfo) -> str | None:
    """Why a version may not serve (None: it may): every gate passed, or a person or run
    forced it with `ctloop promote --force --reason`, which records who and why. An alias
    moved by any other hand (the MLflow UI's pencil, a script) does not make a version
    fit to serve."""
    states = {g: info.tags.get(f"gate.{g}", "missing") for g in GATES}
    if all(state == "passed" for state in states.values()):
        return None
    if info.tags.get("forced") == "true" and (
        info.tags.get("forced_by") or info.tags.get("promoted_by")  # forced before forced_by
    ):
        return None
    return (
        f"version {info.version} of {info.name} has not passed the gates {states} and was not "
        "promoted with `ctloop promote --force --reason ...`"
    )


def version_description(info: VersionInfo) -> str:
    """What the MLflow UI shows for a version, in words: why and on what it was trained,
    what the gates said, whether it was promoted. Rebuilt from the tags on every change,
    so it can never disagree with them."""
    tags = info.tags
    lines = [
        f"Trained as of {tags.get('as_of', '?')} on {tags.get('window', '?')} "
        f"({tags.get('train_rows', '?')} training rows, {tags.get('validation_rows', '?')} "
        f"validation rows); trigger: {tags.get('trigger', '?')}"
        + (f" ({tags['reason']})" if tags.get("reason") else "")
        + ".",
    ]
    gates = ", ".join(f"{g} {tags.get(f'gate.{g}', 'not run')}" for g in GATES)
    lines.append(f"Gates: {gates}.")
    metrics = ", ".join(
        f"{k} {int(v) if v.is_integer() and abs(v) >= 2 else f'{v:.4f}'}"  # best_iteration
        for k, v in sorted(info.metrics.items())
    )
    if metrics:
        lines.append(f"Validation: {metrics}.")
    failed = info.failed_checks
    if failed:
        lines.append(
            f"Model gate refused it on: {', '.join(sorted(failed))} (see gates/model.json)."
        )
    if tags.get("gate.infra.reason"):
        lines.append(f"Infra check: {tags['gate.infra.reason']}")
    if tags.get("promoted_at"):
        forced = " (forced: " + tags.get("forced_reason", "") + ")" if tags.get("forced") else ""
        lines.append(f"Promoted {tags['promoted_at']} by {tags.get('promoted_by', '?')}{forced}.")
    return "\n\n".join(lines)


def _info(mv: Any) -> VersionInfo:
    return VersionInfo(mv.name, str(mv.version), mv.run_id, dict(mv.tags or {}))


class Registry:
    """Registry access bound to one tracking URI, without touching global MLflow state."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_settings(cls, settings: Any = None) -> Registry:
        """The registry the settings name (`MLFLOW_TRACKING_URI`, the artifact root)."""
        if settings is None:
            settings = get_settings()
        return cls(settings.tracking_uri, settings.artifact_root)

    def activate(self) -> Registry:
        """Point MLflow's fluent API (runs, logging, `models:/` loads) at this registry.

        The one place ctloop sets MLflow's process-wide URIs: the client above needs no
        global state, but `mlflow.start_run`, `log_model` and `mlflow.*.load_model` read
        it. Called right before such use, so two registries in one process (tests, the
        demo) never leave one another's URI behind.
        """
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return self

    def reference_profile(self, info: VersionInfo) -> dict[str, Any] | None:
        """The training profile a version's run logged (None for a version without a run)."""
        if info.run_id is None:
            return None
        self.activate()  # `runs:/` URIs resolve in this registry
        return mlflow.artifacts.load_dict(f"runs:/{info.run_id}/{REFERENCE_ARTIFACT}")

    @property
    def local_store(self) -> bool:
        """A SQLite/file store (artifacts on this disk) rather than a tracking server."""
        return not self.tracking_uri.startswith(("http://", "https://", "databricks"))

    def experiment_id(self, name: str) -> str:
        """The experiment of a view, created on first use with a stable artifact location."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # made before ctloop tagged them
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_ML)
            return exp.experiment_id
        location = None
        if self.local_store and self.artifact_root is not None:
            self.artifact_root.mkdir(parents=True, exist_ok=True)
            location = (self.artifact_root / name).resolve().as_uri()
        return self.client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: CLASSIC_ML}
        )

    def describe_model(self, name: str, description: str) -> None:
        """The registered model's description: the view's own words, so the Models page
        says what the model is for (kept in step with the view at every training run)."""
        text = description.strip()
        current = self.client.get_registered_model(name).description or ""
        if text and current.strip() != text:
            self.client.update_registered_model(name, description=text)

    def log_gate_report(self, info: VersionInfo, gate: str, report: dict[str, Any]) -> None:
        """A gate's whole report as one JSON artifact of the version's run."""
        if info.run_id is not None:
            self.client.log_dict(info.run_id, report, GATES_ARTIFACT.format(gate=gate))

    def _by_alias(self, name: str, alias: str) -> VersionInfo | None:
        try:
            return _info(self.client.get_model_version_by_alias(name, alias))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def champion(self, name: str) -> VersionInfo | None:
        """The version serving should load (None before the first promotion)."""
        return self._by_alias(name, CHAMPION)

    def previous(self, name: str) -> VersionInfo | None:
        """The champion the current one replaced: the target of a rollback."""
        return self._by_alias(name, PREVIOUS)

    def challenger(self, name: str) -> VersionInfo | None:
        """The candidate on live trial, if any: serving scores it beside the champion."""
        return self._by_alias(name, CHALLENGER)

    def start_trial(self, name: str, version: str, mode: str, share: float = 0.0) -> VersionInfo:
        """Put a gated candidate on live trial: alias `challenger`, with how it is tried
        (`rollout`: shadow or canary, and the canary's share of traffic) on its tags. A
        trial already running ends (`live_gate=superseded`): the newer candidate, trained
        on newer data, takes its place."""
        if mode not in ROLLOUT_MODES:
            raise CtloopError(f"rollout mode '{mode}' is not one of {', '.join(ROLLOUT_MODES)}")
        running = self.challenger(name)
        if running is not None and running.version != str(version):  # a newer candidate
            self.set_tags(name, running.version, {"live_gate": "superseded",
                                                  "live_gate.reason": f"version {version} "
                                                  "took its place on trial"})  # fmt: skip
        started = dt.datetime.now(dt.UTC).isoformat()
        tags = {"rollout": mode, "rollout.share": share, "rollout.started": started}
        info = self.set_tags(name, version, tags)
        self.client.set_registered_model_alias(name, CHALLENGER, str(version))
        log.info("%s version %s on live trial (%s)", name, version, mode)
        return info

    def end_trial(self, name: str, outcome: str, reason: str) -> VersionInfo | None:
        """End the live trial: record the live gate's outcome and reason on the challenger,
        drop its alias, and when the outcome is `promoted` make it the champion."""
        current = self.challenger(name)
        if current is None:
            return None
        self.set_tags(name, current.version, {"live_gate": outcome,
                                              "live_gate.reason": reason[:4000]})  # fmt: skip
        if outcome == "promoted":
            self.promote(name, current.version)
        self.client.delete_registered_model_alias(name, CHALLENGER)
        log.info("%s version %s: live trial ended, %s (%s)", name, current.version, outcome,
                 reason)  # fmt: skip
        return current

    def version(self, name: str, version: str | int) -> VersionInfo:
        """One exact version; a missing one is the user's error, an outage is re-raised."""
        try:
            return _info(self.client.get_model_version(name, str(version)))
        except MlflowException as exc:
            # Only "no such version" is the user's problem. An unreachable tracking server
            # is an outage: re-raised as is, so Airflow retries the task instead of failing
            # the run at once with a misleading "has no version".
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise CtloopError(f"model '{name}' has no version {version}") from exc
            raise

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of a model, oldest first (by number, not by registration time)."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((_info(mv) for mv in found), key=lambda v: int(v.version))

    def find(self, name: str, **tags: str) -> list[VersionInfo]:
        """Versions of a model whose tags have all the given values."""
        return [v for v in self.versions(name) if all(v.tags.get(k) == t for k, t in tags.items())]

    def set_tags(self, name: str, version: str, tags: dict[str, Any]) -> VersionInfo:
        """Record decisions on the version they concern (values become strings, as MLflow
        stores them); the version as it is now, read once to rewrite its description."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value))
        current = self.client.get_model_version(name, str(version))
        info = _info(current)
        text = version_description(info)
        if text != (current.description or ""):
            self.client.update_model_version(name, str(version), description=text)
        return info

    def promote(self, name: str, version: str) -> tuple[VersionInfo, VersionInfo | None]:
        """Point `champion` at `version`; the replaced champion becomes `previous`.

        Promoting the current champion again changes nothing (no alias flapping).
        """
        target = self.version(name, version)
        current = self.champion(name)
        if current is not None and current.version == target.version:
            return target, self.previous(name)
        if current is not None:
            self.client.set_registered_model_alias(name, PREVIOUS, current.version)
        self.client.set_registered_model_alias(name, CHAMPION, target.version)
        log.info("promoted %s version %s (previous: %s)", name, target.version,
                 current.version if current else None)  # fmt: skip
        return target, current

    def change_onset(self, name: str) -> tuple[str, str] | None:
        """The last change onset the monitor recorded for this model: (onset day, day it
        was found), ISO dates; None when no change was found."""
        try:
            tags = self.client.get_registered_model(name).tags or {}
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        onset, found = tags.get(ONSET_TAG), tags.get(ONSET_FOUND_TAG)
        return (onset, found or onset) if onset else None

    def record_change_onset(self, name: str, onset: str, found: str) -> bool:
        """Remember when the concept changed (the monitor's estimate), so every later run,
        whatever its trigger, learns from the new concept. An onset at or before the one
        already recorded, or before the newest day that showed it, is the same change
        seen again: kept, not moved (a look-back that no longer reaches the first bad day
        would otherwise creep the onset forward day by day)."""
        current = self.change_onset(name)
        if current is not None and onset <= current[1]:  # not after what was already seen
            return False
        self.client.set_registered_model_tag(name, ONSET_TAG, onset)
        self.client.set_registered_model_tag(name, ONSET_FOUND_TAG, found)
        return True

    def rollback(self, name: str) -> tuple[VersionInfo, VersionInfo]:
        """Swap `champion` and `previous`, so a rollback can itself be undone."""
        current, previous = self.champion(name), self.previous(name)
        if previous is None or current is None:
            raise CtloopError(f"model '{name}' has no previous champion to roll back to")
        problem = untrusted_reason(previous)
        if problem is not None:  # serving would refuse it and keep the current model
            raise CtloopError(f"cannot roll back: {problem}")
        self.client.set_registered_model_alias(name, CHAMPION, previous.version)
        self.client.set_registered_model_alias(name, PREVIOUS, current.version)
        return previous, current
