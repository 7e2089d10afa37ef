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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ctloop.registry import VersionInfo, untrusted_reason
from ctloop.settings import Settings
from ctloop.training.run import ModelGateError, Run

log = logging.getLogger(__name__)


def serving_urls(cfg: Settings) -> list[str]:
    """The serving replicas a promotion tells: `CTLOOP_SERVING_URL`, comma-separated (each
    replica's own address, not the load balancer's, which would reach one of them)."""
    return [u.strip().rstrip("/") for u in (cfg.serving_url or "").split(",") if u.strip()]


def _reload(cfg: Settings, base: str, view: str, version: str) -> str:
    """One replica's `/admin/reload` answer, in words."""
    url = base + "/admin/reload"
    body = json.dumps({"view": view, "version": version}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if cfg.admin_token:
        request.add_header("Authorization", f"Bearer {cfg.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return f"answered {response.status}"
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        log.warning("could not reach serving at %s: %s (it will poll the registry)", url, exc)
        return f"not reached: {exc}"


def notify_serving(cfg: Settings, view: str, version: str) -> str:
    """Tell every serving replica to reload now, all at once (so two versions answer side
    by side for the time of one model load, not one poll interval); serving also polls, so
    a replica that is down is not fatal: it loads the champion when it comes back."""
    urls = serving_urls(cfg)
    if not urls:
        return "no serving URL configured (CTLOOP_SERVING_URL); serving will poll the registry"
    if len(urls) == 1:
        return "serving " + _reload(cfg, urls[0], view, version)
    with ThreadPoolExecutor(max_workers=min(len(urls), 16)) as pool:
        answers = list(pool.map(lambda base: _reload(cfg, base, view, version), urls))
    reached = sum(a.startswith("answered 2") for a in answers)
    each = "; ".join(f"{base} {answer}" for base, answer in zip(urls, answers, strict=True))
    return f"serving replicas reloaded: {reached} of {len(urls)} ({each})"


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
    """Step 6: move `champion` to the version (old champion -> `previous`), tell serving;
    for a view whose `rollout.mode` is `shadow` or `canary` (and a champion to compare
    with), put it on that live trial instead (alias `challenger`): the live gate decides.

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
    current = registry.champion(name)
    rollout = run.view.rollout
    if rollout.mode != "direct" and not force and current is not None:
        # through a live trial: the live gate (monitor) promotes or drops it on live evidence
        registry.start_trial(name, version, rollout.mode, rollout.canary_share)
        serving = notify_serving(run.cfg, name, version)
        return {"champion": current.version, "previous": None, "forced": False,
                "challenger": version, "rollout": rollout.mode, "serving": serving}  # fmt: skip
    if force:
        reason = run.reason or "forced without a reason"
        registry.set_tags(name, version, {"forced": "true", "forced_by": who, "forced_at": now,
                                          "forced_reason": reason[:500]})  # fmt: skip
    new, old = registry.promote(name, version)
    registry.set_tags(name, version, {"promoted_at": now, "promoted_by": who})
    serving = notify_serving(run.cfg, name, new.version)
    return {"champion": new.version, "previous": old.version if old else None,
            "forced": force, "serving": serving}  # fmt: skip
