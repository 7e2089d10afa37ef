#!/usr/bin/env bash
# Install what a bare machine lacks to build and run ctloop, then sync the locked env.
# Used by `make install` and by CI, so both start from the same steps. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

# mysqlclient (for the Airflow MySQL provider) builds from source: it needs these.
# docker-compose (1.29, Debian) validates docker-compose.yml offline in tests/unit/test_stack_config.py.
# prometheus (Debian) brings promtool for the alert rules and a server the serving test scrapes with.
# mariadb-server-core (mariadbd, mariadb-install-db; no service scripts, nothing started):
# tests/e2e/test_chaos.py runs and kills a private MariaDB of its own; the read-replica tests
# run a primary and a replica.
# haproxy: the load balancer in front of serving replicas (tests/integration/test_replicas.py).
# redis-server: the Celery broker of the Celery stack (tests/e2e/test_celery.py), when the
# machine does not run one already.
missing=()
for pkg in pkg-config default-libmysqlclient-dev build-essential docker-compose prometheus mariadb-server-core haproxy redis-server; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})"
    exit 1
  fi
fi

if ! command -v uv >/dev/null 2>&1; then
  say "installing uv from PyPI"
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi

say "syncing the locked environment (uv sync --frozen)"
uv sync --frozen --python 3.11
