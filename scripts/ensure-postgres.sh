#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 (Airflow's metadata in the stack test),
# starting the local cluster if it does not.
set -euo pipefail
host=${POSTGRES_HOST:-127.0.0.1}
port=${POSTGRES_PORT:-5432}

ping_db() { pg_isready -q -h "$host" -p "$port"; }

if ping_db; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in /etc/postgresql/*; do
    echo "==> starting PostgreSQL $(basename "$version")" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
  done
fi
for _ in $(seq 1 60); do
  ping_db && exit 0
  sleep 1
done
echo "PostgreSQL does not answer on $host:$port" >&2
exit 1
