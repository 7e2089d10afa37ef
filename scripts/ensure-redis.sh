#!/usr/bin/env bash
# Make sure Redis answers on 127.0.0.1:6379 (the Celery broker of tests/e2e/test_celery.py),
# starting Debian's redis-server (installed by scripts/bootstrap.sh) if it does not.
set -euo pipefail
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}

ping_redis() { redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG; }

if ping_redis; then exit 0; fi
echo "==> starting redis-server on $host:$port" >&2
redis-server --bind "$host" --port "$port" --daemonize yes --save "" --appendonly no >/dev/null
for _ in $(seq 1 30); do
  ping_redis && exit 0
  sleep 1
done
echo "Redis does not answer on $host:$port" >&2
exit 1
