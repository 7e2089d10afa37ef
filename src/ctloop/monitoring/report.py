"""The monitor's HTML report, logged to MLflow next to the numbers in `drift_report`.

Evidently is the field's reference for these reports, but its 0.7 line does not import
under pandas 3 (it uses `pandas.core.dtypes.common.infer_dtype_from_object`, removed in
pandas 3), so the report is built here from the same statistics the decision used.
"""

from __future__ import annotations

import html
import logging

import mlflow

from ctloop.monitoring.result import MonitorResult
from ctloop.registry import Registry

log = logging.getLogger(__name__)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}.bad{color:#b00020;font-weight:600}.ok{color:#2e7d32}
.status{font-size:1.3rem}
"""


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def render(result: MonitorResult) -> str:
    """A self-contained HTML page: decision, reasons, live metrics, every finding."""
    status_cls = "bad" if result.retrain else "ok"
    rows = "".join(
        f"<tr><td>{html.escape(f.kind)}</td><td>{html.escape(f.feature)}</td>"
        f"<td>{html.escape(f.statistic)}</td><td>{_fmt(f.value)}</td><td>{_fmt(f.threshold)}</td>"
        f"<td class='{'bad' if f.drifted else 'ok'}'>{'drift' if f.drifted else 'ok'}</td></tr>"
        for f in sorted(result.findings, key=lambda f: (not f.drifted, f.kind, f.feature))
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result.reasons) or "<li>none</li>"
    live = (
        "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>"
            for k, v in sorted(result.live_metrics.items())
        )
        or "<tr><td colspan=2>no labels have landed for this window yet</td></tr>"
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>ctloop drift report: {html.escape(result.view)} v{result.model_version}</title>
<style>{_STYLE}</style></head><body>
<h1>Drift report: {html.escape(result.view)}, model version {result.model_version}</h1>
<p class="status {status_cls}">Status: {html.escape(result.status)}</p>
<p>Window {result.window_start:%Y-%m-%d %H:%M} .. {result.window_end:%Y-%m-%d %H:%M} UTC;
{result.rows} predictions, {result.labelled_rows} with landed labels. Check {result.check_id}.</p>
<h2>Reasons</h2><ul>{reasons}</ul>
<h2>Live metrics</h2><table><tr><th>metric</th><th>value</th></tr>{live}</table>
<h2>Findings</h2>
<table><tr><th>kind</th><th>feature</th><th>statistic</th><th>value</th><th>threshold</th>
<th>result</th></tr>{rows}</table></body></html>"""


def log_to_mlflow(registry: Registry, result: MonitorResult) -> str:
    """Log the report and headline numbers as a run of the view's monitoring experiment."""
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
        mlflow.log_text(render(result), "drift_report.html")
        return run.info.run_id
