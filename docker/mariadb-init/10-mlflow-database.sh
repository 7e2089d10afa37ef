#!/bin/sh
# Run once by the MariaDB image on an empty data volume: MLflow's backend store gets a
# database of its own next to the feature store (`ctloop`), owned by the same user.
set -eu
mariadb -uroot -p"${MARIADB_ROOT_PASSWORD}" <<SQL
CREATE DATABASE IF NOT EXISTS mlflow CHARACTER SET utf8mb4;
GRANT ALL PRIVILEGES ON mlflow.* TO '${MARIADB_USER}'@'%';
SQL
