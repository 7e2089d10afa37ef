"""What the demo tells: one line per day while it runs, the verdict (did the loop close,
each link named), the day-by-day table, and the accuracy plot.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ctloop.dev.demo.world import DayRecord, DemoConfig


def day_line(rec: DayRecord) -> str:
    """The progress line printed after each simulated day."""
    drift = "drift" if rec.drifting else "     "
    served = ",".join(f"v{v}" for v in rec.served_versions)
    ct = f" -> live gate: {rec.live_gate}" if rec.live_gate else ""
    if rec.triggered:
        done = "on shadow trial" if rec.ct_trial else ("promoted" if rec.ct_promoted else "refused")
        ct += f" -> ct run: v{rec.ct_version} {done}"
    elif rec.scheduled_version:
        verdict = "promoted" if rec.scheduled_promoted else "champion kept"
        verdict = "on shadow trial" if rec.scheduled_trial else verdict
        ct += f" -> scheduled ct run: v{rec.scheduled_version} {verdict}"
    elif rec.scheduled_skipped:
        ct += f" -> scheduled ct run skipped: {rec.scheduled_skipped}"
    return (f"{rec.day} {drift} traffic {rec.answered} ({served}), labels +{rec.labels_landed}; "
            f"monitor: {rec.monitor}{ct}")  # fmt: skip


def verdict(
    config: DemoConfig, records: list[DayRecord], sent: int, logged: int, first: str
) -> dict[str, Any]:
    """Did the loop close? Each condition named, so a failure says which link broke."""
    promoted = [r for r in records if r.ct_promoted]
    tail = records[-3:]

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    served_tail = mean([r.served_accuracy for r in tail])
    static_tail = mean([r.static_accuracy for r in tail])
    oracle_tail = mean([r.oracle_accuracy for r in tail])
    drifting = [r for r in records if r.drifting]
    checks = {
        "first champion promoted": bool(first),
        "drift found by the monitor": any(r.monitor_status in ("drift", "decay") for r in drifting),
        "no false alarm before drift": not any(
            r.triggered for r in records if not r.drifting
        ),
        "drift-triggered model promoted": bool(promoted),
        "drift-triggered model served": any(
            r.ct_version in later.served_versions
            for i, r in enumerate(records) if r.ct_promoted for later in records[i + 1 :]
        ),
        "every answer logged": sent == logged,
        "live accuracy recovered": (
            served_tail is not None and static_tail is not None
            and served_tail >= static_tail + config.min_recovery
        ),
        f"served within {config.oracle_tolerance} of the oracle": (
            served_tail is not None and oracle_tail is not None
            and served_tail >= oracle_tail - config.oracle_tolerance
        ),
    }  # fmt: skip
    if config.rollout == "shadow":
        checks["drift retrain promoted by the live gate"] = any(
            r.gate_promoted for r in records
        ) and any(r.ct_trial and r.ct_promoted for r in records)
    return {
        "closed": all(checks.values()),
        "checks": checks,
        "answered": sent,
        "logged": logged,
        "first_champion": first,
        "promoted": [r.ct_version for r in promoted],
        "served_accuracy_last_days": served_tail,
        "static_accuracy_last_days": static_tail,
        "oracle_accuracy_last_days": oracle_tail,
        "timeline": [asdict(r) for r in records],
    }


def timeline_table(summary: dict[str, Any]) -> str:
    """The day-by-day timeline as a text table."""
    head = (f"{'day':<11} {'drift':<5} {'traffic':>7} {'served':<9} {'acc':>5} {'static':>6} "
            f"{'oracle':>6}  events")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in summary["timeline"]:
        acc = "" if r["served_accuracy"] is None else f"{r['served_accuracy']:.3f}"
        static = "" if r["static_accuracy"] is None else f"{r['static_accuracy']:.3f}"
        oracle = "" if r.get("oracle_accuracy") is None else f"{r['oracle_accuracy']:.3f}"
        events = r["monitor_status"] or ""
        if r.get("live_gate"):
            events += f"; live gate: {str(r['live_gate']).split(' (')[0]}"
        if r["triggered"]:
            verdict = "promoted" if r["ct_promoted"] else "refused"
            if r.get("ct_trial"):
                verdict = "shadow trial" + (", promoted later" if r["ct_promoted"] else "")
            events += f"; retrain -> v{r['ct_version']} {verdict}"
        elif r.get("scheduled_version"):
            verdict = "promoted" if r["scheduled_promoted"] else "kept champion"
            verdict = "shadow trial" if r.get("scheduled_trial") else verdict
            events += f"; schedule -> v{r['scheduled_version']} {verdict}"
        served = ",".join(f"v{v}" for v in r["served_versions"])
        lines.append(f"{r['day']:<11} {'yes' if r['drifting'] else '':<5} {r['answered']:>7} "
                     f"{served:<9} {acc:>5} {static:>6} {oracle:>6}  {events}")  # fmt: skip
    return "\n".join(lines)


def plot(records: list[DayRecord], drift_day: str, path: Path) -> None:
    """Live accuracy per day: continuously trained vs never retrained."""
    # (c) matplotlib is heavy and must get its non-GUI backend before pyplot loads.
    import matplotlib  # (c) heavy, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (c) heavy, figures only

    x = list(range(len(records)))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    served = [r.served_accuracy for r in records]
    static = [r.static_accuracy for r in records]
    ax.plot(x, served, "o-", color="tab:blue", label="served (continuously trained)")
    ax.plot(x, static, "s--", color="tab:gray", label="first champion, never retrained")
    oracle = [r.oracle_accuracy for r in records]
    ax.plot(x, oracle, "^:", color="tab:orange",
            label="oracle: retrained daily on every label since the change")  # fmt: skip
    onset = next((i for i, r in enumerate(records) if r.day == drift_day), None)
    if onset is not None:
        ax.axvline(onset - 0.5, color="tab:red", linestyle=":", label="concept drift starts")
    for i, r in enumerate(records):
        live = bool(r.gate_promoted)
        if live or (r.ct_promoted and not r.ct_trial) or r.scheduled_promoted:
            # promoted end of day i: serves from i + 1
            if live:
                version, how = r.gate_promoted, "live gate"
            elif r.ct_promoted:
                version, how = r.ct_version, "drift"
            else:
                version, how = r.scheduled_version, "schedule"
            ax.axvline(i + 0.5, color="tab:green", alpha=0.4)
            ax.annotate(f"v{version} ({how})", (i + 0.5, 0.05), rotation=90,
                        color="tab:green", ha="right", va="bottom")  # fmt: skip
    ax.set_xticks(x, [r.day[5:] for r in records], rotation=45)
    ax.set_xlabel("day")
    ax.set_ylabel("live accuracy (labels joined to logged predictions)")
    ax.set_title("ctloop demo: the loop closes")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
