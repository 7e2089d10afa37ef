"""Prometheus's configuration for a stack: the shipped file, aimed at this stack's service.

`docker/prometheus/prometheus.yml` is written for docker-compose (it scrapes `serving:3000`
and loads `alerts.yml` beside it). The local stack serves on a configurable address and
keeps its state elsewhere, so `up` writes a copy into the state folder with the scrape
target and the rules file replaced, and starts Prometheus on that copy: the scrape jobs,
labels and alert rules stay the shipped ones, defined once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from ctloop.errors import CtloopError


def shipped_dir(root: Path) -> Path:
    """Where the checkout keeps the Prometheus configuration and its alert rules."""
    return root / "docker" / "prometheus"


def render_config(root: Path, target: str, dest: Path, scrape_interval: str | None = None) -> Path:
    """Write the shipped configuration into `dest`, scraping `target` (host:port) and
    loading the shipped rules by absolute path; the path of the file written."""
    source = shipped_dir(root) / "prometheus.yml"
    try:
        config: dict[str, Any] = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CtloopError(f"cannot read Prometheus's configuration {source}: {exc}") from exc
    jobs = config.get("scrape_configs") or []
    serving = [job for job in jobs if job.get("job_name") == "ctloop-serving"]
    if not serving:
        raise CtloopError(f"{source} has no scrape job `ctloop-serving` to aim at the service")
    for group in serving[0].get("static_configs") or []:
        group["targets"] = [target]
    config["rule_files"] = [
        str(shipped_dir(root) / name) for name in config.get("rule_files") or []
    ]
    if scrape_interval:
        config.setdefault("global", {})["scrape_interval"] = scrape_interval
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "prometheus.yml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def find_program(name: str, path: str | None = None) -> str | None:
    """The program's path on `path` (default: this process's PATH), or None: Prometheus
    is optional for the loop."""
    return shutil.which(name, path=path)
