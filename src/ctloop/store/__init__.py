"""The feature store: per-view feature and label tables, point-in-time training sets and
day status, on MariaDB (or the embedded SQLite file)."""
