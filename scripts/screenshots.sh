#!/usr/bin/env bash
# Retake docs/*.png from a running `make up` stack (Airflow trigger forms, MLflow run and
# model version, the newest drift report, the OpenAPI page). Needs the `chromium` Debian
# package (`apt-get install chromium`); CI does not, the PNGs are committed files.
# The stack needs a champion and one monitor check first, e.g.
#   make up && make generate && uv run ctloop train && <traffic> && uv run ctloop monitor
set -euo pipefail
cd "$(dirname "$0")/.."
exec uv run --frozen python -m ctloop.dev.screenshots --out docs "$@"
