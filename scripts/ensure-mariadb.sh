#!/usr/bin/env bash
# Make sure MariaDB answers on 127.0.0.1:3306, starting the local server if it does not.
set -euo pipefail
host=${MARIADB_HOST:-127.0.0.1}
port=${MARIADB_PORT:-3306}

ping_db() { mariadb-admin --protocol=tcp -h "$host" -P "$port" -uroot ping >/dev/null 2>&1; }

if ping_db; then exit 0; fi
if [ -x /usr/sbin/mariadbd ]; then
  echo "==> starting MariaDB" >&2
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
for _ in $(seq 1 60); do
  ping_db && exit 0
  sleep 1
done
echo "MariaDB does not answer on $host:$port" >&2
exit 1
