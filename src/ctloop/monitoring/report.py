"""The monitor's HTML report, logged to MLflow next to the numbers in `drift_report`.

A person reads it to judge the call, so it shows, per feature, the reference (training)
and current (logged traffic) distributions side by side, with the statistic against its
threshold, the most drifted feature first; then the model's answers (class shares, score
or value) and the live metrics against the validation figures. The plots are PNGs drawn
with matplotlib (already a dependency for the training plots) and embedded in the page,
so the one file opened from MLflow's artifact view shows everything, offline.

Why not a library's report (checked 2026-12-03 against the locked pandas 3.1.1, each in
a scratch venv):
* Evidently 0.7.23, the current release, declares `pandas>=1.3.5` and installs beside
  pandas 3, but `from evidently import Report` fails: its legacy tests module imports
  `pandas.core.dtypes.common.infer_dtype_from_object`, which pandas 3 removed. Its
  presets would also recompute their own statistics (p-values below 1000 rows, fixed
  thresholds) and contradict the decision ctloop made with its noise floors.
* NannyML 0.13.1 (July 2025, the current release) pins `python<3.13`, its wheel's metadata
  omits `statsmodels`, which `import nannyml` needs, and it has its own thresholds too.
* plotly 7 is in the environment (through MLflow), but each page would carry 3.5 MB of
  plotly.js or need the network to open.
So the page is drawn here from the same reference profile and window the check measured.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ctloop.monitoring.result import Finding, MonitorResult
from ctloop.redact import redact
from ctloop.registry import Registry

log = logging.getLogger(__name__)

DISTANCES = ("normed_wasserstein", "jensen_shannon")
REPORT_ARTIFACT = "drift_report.html"
MAX_CATEGORIES = 15
REFERENCE_COLOR, CURRENT_COLOR = "#4c78a8", "#f58518"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd;
white-space:nowrap}th{text-align:left;background:#f4f4f4}td.num{text-align:right;
font-variant-numeric:tabular-nums}.bad{color:#b00020;font-weight:600}.ok{color:#2e7d32}
.status{font-size:1.3rem}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));
gap:1rem}.card{border:1px solid #ddd;border-radius:6px;padding:.6rem}
.card.drifted{border-color:#b00020}
.card h3{margin:.2rem 0;font-size:1rem}.card img{width:100%}.meter{display:inline-block;width:120px;
height:.6rem;background:#eee;vertical-align:middle}.meter span{display:block;height:100%}
.wrap{overflow-x:auto}
"""


@dataclass(frozen=True)
class Evidence:
    """What a check measured, for the plots: the champion's training profile and the
    window's logged predictions (features as used, answers)."""

    reference: dict[str, Any]
    logs: pd.DataFrame
    answers: np.ndarray | None = None  # the binary score or the regression value per row


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def severity(finding: Finding) -> float:
    """How far past its threshold a distance is (1.0 = at the threshold)."""
    if finding.value is None or not finding.threshold or not math.isfinite(finding.value):
        return 0.0
    return finding.value / finding.threshold


def feature_distances(result: MonitorResult) -> list[Finding]:
    """The deciding distance of each feature, most severe first."""
    found = [f for f in result.findings if f.kind == "data" and f.statistic in DISTANCES]
    return sorted(found, key=lambda f: (not f.drifted, -severity(f), f.feature))


def _png(fig: Figure) -> str:
    """The figure as base64 PNG. The figures are made with a tight layout, which places the
    axes once; `bbox_inches="tight"` would draw each figure twice to find its edges."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode()


def _numeric_plot(title: str, reference: list[float], current: pd.Series) -> str:
    ref = np.asarray(reference, dtype=float)
    cur = pd.to_numeric(current, errors="coerce").dropna().to_numpy(dtype=float)
    both = np.concatenate([ref, cur]) if cur.size else ref
    fig = Figure(figsize=(5.5, 2.6), layout="tight")
    ax = fig.add_subplot()
    if both.size:
        low, high = np.quantile(both, [0.005, 0.995])
        if high <= low:
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, 31)
        # binned here and drawn as steps: `ax.hist` makes an artist per bar
        for values, color, label in ((ref, REFERENCE_COLOR, "reference"),
                                     (cur, CURRENT_COLOR, "current")):  # fmt: skip
            if values.size:
                heights, _ = np.histogram(np.clip(values, low, high), bins=bins, density=True)
                ax.stairs(heights, bins, fill=True, alpha=0.55, color=color,
                          label=f"{label} ({values.size})")  # fmt: skip
    ax.set_title(title, fontsize=9)
    ax.set_yticks([])
    ax.legend(fontsize=7)
    return _png(fig)


def _shares_plot(title: str, reference: dict[str, float], current: pd.Series) -> str:
    cur = current.astype(object).where(current.notna(), "(missing)").astype(str)
    cur_shares = cur.value_counts(normalize=True).to_dict()
    ref = {str(k): float(v) for k, v in reference.items()}
    order = sorted(
        set(ref) | set(cur_shares), key=lambda c: -max(ref.get(c, 0), cur_shares.get(c, 0))
    )
    order = order[:MAX_CATEGORIES]  # the largest categories of either side
    x = np.arange(len(order))
    fig = Figure(figsize=(5.5, 2.6), layout="tight")
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [ref.get(c, 0.0) for c in order], 0.4, color=REFERENCE_COLOR,
           label="reference")  # fmt: skip
    ax.bar(x + 0.2, [cur_shares.get(c, 0.0) for c in order], 0.4, color=CURRENT_COLOR,
           label=f"current ({len(cur)})")  # fmt: skip
    ax.set_xticks(x, order, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("share", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def _title(finding: Finding) -> str:
    verdict = "DRIFT" if finding.drifted else "ok"
    return (
        f"{finding.feature}: {finding.statistic} {_fmt(finding.value)} vs threshold "
        f"{_fmt(finding.threshold)} ({verdict})"
    )


def _feature_plot(finding: Finding, evidence: Evidence) -> str | None:
    ref = evidence.reference.get("features", {}).get(finding.feature)
    if ref is None or finding.feature not in evidence.logs.columns:
        return None
    current = evidence.logs[finding.feature]
    if ref.get("type") == "numeric":
        return _numeric_plot(_title(finding), ref.get("sample", []), current)
    return _shares_plot(_title(finding), ref.get("shares", {}), current)


def _card(finding: Finding, image: str | None, css: str) -> str:
    name = html.escape(finding.feature)
    body = (
        f"<img class='plot' data-feature='{name}' alt='{html.escape(_title(finding))}' "
        f"src='data:image/png;base64,{image}'>"
        if image
        else "<p>no distribution to show</p>"
    )
    return (
        f"<div class='card {css}' id='feature-{name}'><h3>{name} "
        f"<span class='{'bad' if finding.drifted else 'ok'}'>"
        f"{'drift' if finding.drifted else 'ok'}</span></h3>{body}</div>"
    )


def _meter(finding: Finding) -> str:
    ratio = severity(finding)
    width = min(ratio, 2.0) / 2.0 * 100
    color = "#b00020" if finding.drifted else "#4c78a8"
    return (
        f"<span class='meter' title='{ratio:.2f} x threshold'>"
        f"<span style='width:{width:.0f}%;background:{color}'></span></span> {ratio:.2f}x"
    )


def _prediction_panel(result: MonitorResult, evidence: Evidence) -> str:
    ref = evidence.reference.get("prediction", {})
    logs = evidence.logs
    found = {f.feature: f for f in result.findings if f.kind == "prediction"}
    cards = []
    table = ref.get("shares") if isinstance(ref.get("shares"), dict) else None
    if table and "prediction" in logs.columns and "prediction" in found:
        image = _shares_plot(_title(found["prediction"]), table, logs["prediction"])
        css = "drifted" if found["prediction"].drifted else ""
        cards.append(_card(found["prediction"], image, css))
    distribution = ref.get("distribution")
    for what in ("score", "value"):
        if what in found and distribution is not None and evidence.answers is not None:
            image = _numeric_plot(
                _title(found[what]), distribution.get("sample", []), pd.Series(evidence.answers)
            )
            cards.append(_card(found[what], image, "drifted" if found[what].drifted else ""))
    return "".join(cards) or "<p>no prediction distribution in this window</p>"


def _live_panel(result: MonitorResult, evidence: Evidence | None) -> str:
    if not result.live_metrics:
        return "<p>no labels have landed for this window yet</p>"
    validation = (evidence.reference.get("validation_metrics", {}) if evidence else {}) or {}
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td class='num'>{_fmt(v)}</td>"
        f"<td class='num'>{_fmt(validation.get(k))}</td></tr>"
        for k, v in sorted(result.live_metrics.items())
    )
    decay = "".join(
        f"<p class='{'bad' if f.drifted else 'ok'}'>{html.escape(f.feature)} "
        f"{html.escape(f.statistic)}: {_fmt(f.value)} (limit {_fmt(f.threshold)})</p>"
        for f in result.findings
        if f.kind == "accuracy" and f.threshold is not None
    )
    image = ""
    shared = [k for k in sorted(result.live_metrics) if validation.get(k) is not None]
    if shared:
        fig = Figure(figsize=(6, 2.4), layout="tight")
        ax = fig.add_subplot()
        x = np.arange(len(shared))
        ax.bar(x - 0.2, [validation[k] for k in shared], 0.4, color=REFERENCE_COLOR,
               label="validation")  # fmt: skip
        ax.bar(x + 0.2, [result.live_metrics[k] for k in shared], 0.4, color=CURRENT_COLOR,
               label=f"live ({result.labelled_rows} labelled)")  # fmt: skip
        ax.set_xticks(x, shared, rotation=30, ha="right", fontsize=7)
        ax.legend(fontsize=7)
        ax.set_title("live metrics vs the model's validation figures", fontsize=9)
        image = f"<img class='live' alt='live metrics' src='data:image/png;base64,{_png(fig)}'>"
    return (
        f"{decay}<div class='wrap'><table><tr><th>metric</th><th>live</th><th>validation</th></tr>"
        f"{rows}</table></div>{image}"
    )


def render(result: MonitorResult, evidence: Evidence | None = None) -> str:
    """A self-contained HTML page: decision, reasons, one plot per feature sorted by
    severity, the prediction and live-metric panels, then every finding as a table."""
    status_cls = "bad" if result.retrain else "ok"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result.reasons) or "<li>none</li>"
    ranked = feature_distances(result)
    summary = "".join(
        f"<tr><td><a href='#feature-{html.escape(f.feature)}'>{html.escape(f.feature)}</a></td>"
        f"<td>{html.escape(f.statistic)}</td><td class='num'>{_fmt(f.value)}</td>"
        f"<td class='num'>{_fmt(f.threshold)}</td><td>{_meter(f)}</td>"
        f"<td class='{'bad' if f.drifted else 'ok'}'>{'drift' if f.drifted else 'ok'}</td></tr>"
        for f in ranked
    )
    cards = "".join(
        _card(f, _feature_plot(f, evidence) if evidence else None, "drifted" if f.drifted else "")
        for f in ranked
    )
    predictions = _prediction_panel(result, evidence) if evidence else "<p>not measured</p>"
    rows = "".join(
        f"<tr><td>{html.escape(f.kind)}</td><td>{html.escape(f.feature)}</td>"
        f"<td>{html.escape(f.statistic)}</td><td class='num'>{_fmt(f.value)}</td>"
        f"<td class='num'>{_fmt(f.threshold)}</td>"
        f"<td class='{'bad' if f.drifted else 'ok'}'>{'drift' if f.drifted else 'ok'}</td></tr>"
        for f in sorted(result.findings, key=lambda f: (not f.drifted, f.kind, f.feature))
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>ctloop drift report: {html.escape(result.view)} v{result.model_version}</title>
<style>{_STYLE}</style></head><body>
<h1>Drift report: {html.escape(result.view)}, model version {result.model_version}</h1>
<p class="status {status_cls}">Status: {html.escape(result.status)}</p>
<p>Window {result.window_start:%Y-%m-%d %H:%M} .. {result.window_end:%Y-%m-%d %H:%M} UTC;
{result.rows} predictions, {result.labelled_rows} with landed labels. Check {result.check_id}.</p>
<h2>Reasons</h2><ul>{reasons}</ul>
<h2>Features, most drifted first</h2>
<div class="wrap"><table><tr><th>feature</th><th>statistic</th><th>value</th><th>threshold</th>
<th>value / threshold</th><th>result</th></tr>{summary}</table></div>
<p>Reference: the champion's training data; current: the window's logged requests.</p>
<div class="grid" id="features">{cards}</div>
<h2>Predictions</h2><div class="grid" id="predictions">{predictions}</div>
<h2>Live metrics</h2>{_live_panel(result, evidence)}
<h2>All findings</h2>
<div class="wrap"><table><tr><th>kind</th><th>feature</th><th>statistic</th><th>value</th>
<th>threshold</th><th>result</th></tr>{rows}</table></div></body></html>"""


def report_location(registry: Registry, experiment_id: str, run_id: str) -> str:
    """Where a person opens the report: the MLflow UI's run page on a tracking server,
    else the artifact's URI in the local store (redacted: URIs may carry passwords)."""
    if not registry.local_store:
        base = registry.tracking_uri.rstrip("/")
        page = f"#/experiments/{experiment_id}/runs/{run_id}/artifacts"
        return redact(f"{base}/{page}?workflowType=machine_learning")
    return redact(mlflow.get_artifact_uri(REPORT_ARTIFACT))


def log_to_mlflow(
    registry: Registry, result: MonitorResult, evidence: Evidence | None = None
) -> str:
    """Log the report and headline numbers as a run of the view's monitoring experiment;
    the task log gets one line saying where the report is."""
    registry.activate()
    experiment = registry.experiment_id(f"{result.view}-monitoring")
    name = f"monitor-{result.window_end:%Y%m%d-%H%M}-{result.status}"
    with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
        mlflow.set_tags({
            "ctloop.check_id": result.check_id,
            "ctloop.status": result.status,
            "ctloop.model_version": str(result.model_version),
            "ctloop.window": f"{result.window_start.isoformat()}..{result.window_end.isoformat()}",
        })  # fmt: skip
        metrics = {"rows": float(result.rows), "labelled_rows": float(result.labelled_rows)}
        for f in result.findings:
            if f.kind in ("dataset", "prediction") and f.value is not None:
                metrics[f"{f.kind}_{f.statistic}"] = float(f.value)
        metrics.update({f"live_{k}": v for k, v in result.live_metrics.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_text(render(result, evidence), REPORT_ARTIFACT)
        log.info("drift report: %s", report_location(registry, experiment, run.info.run_id))
        return run.info.run_id
