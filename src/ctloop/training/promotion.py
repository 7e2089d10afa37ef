"""Step 6: move `champion` to a gated version (the old one becomes `previous`) and tell
serving. Refuses what the gates did not pass unless forced, and a forced promotion is
recorded on the version before the alias moves."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import urllib.error
import urllib.request
from typing import Any

from ctloop.registry import VersionInfo, untrusted_reason
from ctloop.settings import Settings
from ctloop.training.run import ModelGateError, Run

log = logging.getLogger(__name__)


def notify_serving(cfg: Settings, view: str, version: str) -> str:
    """Tell the serving process to reload now; serving also polls, so failure is not fatal."""
    if not cfg.serving_url:
        return "no serving URL configured (CTLOOP_SERVING_URL); serving will poll the registry"
    url = cfg.serving_url.rstrip("/") + "/admin/reload"
    body = json.dumps({"view": view, "version": version}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if cfg.admin_token:
        request.add_header("Authorization", f"Bearer {cfg.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return f"serving answered {response.status}"
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        log.warning("could not reach serving at %s: %s (it will poll the registry)", url, exc)
        return f"serving not reached: {exc}"


COMPARED_TAG = "gate.model.champion_version"
"""The champion the model gate compared a candidate with ("none": there was none)."""


def champion_moved(registry: Any, name: str, info: VersionInfo) -> str | None:
    """Why promoting this version would replace a champion its gate never saw (None: it
    would not): the compare half of a compare-and-swap on the `champion` alias.

    A gate's blessing means "better than that champion". Had another run promoted in the
    meantime, moving the alias would make `previous` the other run's model (a twin of
    this one, perhaps) and a rollback could no longer reach the champion it replaced.
    """
    current = registry.champion(name)
    if current is None or current.version == info.version:
        return None
    compared = info.tags.get(COMPARED_TAG)
    compared = None if compared in (None, "none") else compared
    if compared == current.version:
        return None
    then = f"champion version {compared}" if compared else "no champion (there was none then)"
    return (
        f"{name} version {info.version} cannot be promoted: its model gate compared it with "
        f"{then}, but the champion is now version {current.version} (another run promoted "
        "in the meantime); run the pipeline again to gate it against the current champion"
    )


def promote(run: Run, version: str, force: bool = False) -> dict[str, Any]:
    """Step 6: move `champion` to the version (old champion -> `previous`), tell serving.

    Compare-and-swap: the champion must still be the one the model gate compared the
    version with (`champion_moved`), else the promotion is refused; a forced promotion
    (a person's decision, made on the registry as it is now) skips that check.

    Refuses a version whose gates did not pass, unless forced. A forced promotion writes
    who (`forced_by`: the Airflow run, else `cli:<user>`) and why (`forced_reason`: the
    run's reason) on the version *before* the alias moves, because serving refuses a
    champion that has neither passed its gates nor carries that record
    (`registry.untrusted_reason`).
    """
    registry = run.registry()
    name = run.view.name
    info = registry.version(name, version)
    problem = untrusted_reason(info)
    if problem is not None and not force:
        raise ModelGateError(
            f"{name} version {version} cannot be promoted: {problem} "
            "(use --force with --reason to override)"
        )
    moved = None if force else champion_moved(registry, name, info)
    if moved is not None:
        raise ModelGateError(moved)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    who = run.airflow_run_id or f"cli:{getpass.getuser()}"
    if force:
        reason = run.reason or "forced without a reason"
        registry.set_tags(name, version, {"forced": "true", "forced_by": who, "forced_at": now,
                                          "forced_reason": reason[:500]})  # fmt: skip
    new, old = registry.promote(name, version)
    registry.set_tags(name, version, {"promoted_at": now, "promoted_by": who})
    serving = notify_serving(run.cfg, name, new.version)
    return {"champion": new.version, "previous": old.version if old else None,
            "forced": force, "serving": serving}  # fmt: skip
