"""Ingestion throughput on MariaDB: a drop-folder Parquet file and a SQL source, next to
`ctloop import` and the `mariadb` client's own `LOAD DATA LOCAL INFILE`, on the same rows.

One database of its own for the feature store and one for the SQL source (created, then
dropped). The rows (credit-score features of the synthetic stream, `--rows` over
`--days` event days) are generated once, untimed, and written as one Parquet file, as
one CSV for `LOAD DATA`, and into the source table. Each round, into an empty features
table (truncated before each measurement), in this order:

* `drop folder`: the Parquet file dropped in a `files` source, `ingest_view` (checksum,
  read, every value checked, one transaction, ledger, move to done/);
* `sql source`: a `sql` source over the same rows in another MariaDB database, one
  interval covering every day (read, checked, one transaction, watermark);
* `ctloop import`: `import_csv` of the same Parquet file (what the CLI runs);
* `LOAD DATA`: `mariadb --local-infile` loading the CSV straight into the table, no
  checks: the floor.

    uv run python benchmarks/ingest_throughput.py --rows 1000000 --days 50 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from ctloop.features.view import FeatureView, load_view
from ctloop.ingest.files import import_csv
from ctloop.ingest.sources import Interval, ingest_view
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.store.features import FeatureStore

SERVER = "mysql+pymysql://root@127.0.0.1:3306"
VIEW = "credit_score"
FIRST_DAY = dt.date(2026, 1, 1)


def log(message: str = "") -> None:
    print(message, flush=True)


def rows_of(total: int, days: int) -> pd.DataFrame:
    per_day = total // days
    config = StreamConfig(seed=3, rows_per_day=per_day, label_delay_days=7)
    frames = [generate_day(FIRST_DAY + dt.timedelta(days=d), config)[0] for d in range(days)]
    return pd.concat(frames, ignore_index=True)


def with_sources(view: FeatureView, folder: Path) -> FeatureView:
    raw = view.model_dump(by_alias=True)
    raw["sources"] = [
        {"kind": "files", "name": "drop", "path": str(folder)},
        {"kind": "sql", "name": "crm", "conn_id": "bench_src", "table": "applications",
         "incremental_column": "event_date"},
    ]  # fmt: skip
    return FeatureView.model_validate(raw)


def only(view: FeatureView, kind: str) -> FeatureView:
    return view.model_copy(update={"sources": [s for s in view.sources if s.kind == kind]})


def timed(what: str, rows: int, func: object) -> float:
    start = time.perf_counter()
    func()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    log(f"  {what:16} {seconds:8.2f} s  {rows / seconds:>10,.0f} rows/s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    suffix = uuid.uuid4().hex[:8]
    store_db, source_db = f"bench_ingest_{suffix}", f"bench_source_{suffix}"
    server = sa.create_engine(SERVER, poolclass=sa.pool.NullPool)
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{store_db}`"))
        conn.execute(sa.text(f"CREATE DATABASE `{source_db}`"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        log(f"generating {args.rows:,} rows over {args.days} days ...")
        frame = rows_of(args.rows, args.days)
        rows = len(frame)
        view = with_sources(load_view(VIEW), tmp / "drop")
        parquet = tmp / "rows.parquet"
        frame.to_parquet(parquet)
        csv = tmp / "rows.csv"
        columns = [view.entity, view.event_date, *view.feature_names]
        loadable = frame[columns].copy()
        loadable["ingested_at"] = dt.datetime(2026, 3, 1).isoformat(sep=" ")
        loadable.to_csv(csv, index=False, header=False, na_rep="\\N")
        source_url = f"{SERVER}/{source_db}"
        source = sa.create_engine(source_url)
        frame.to_sql("applications", source, index=False, chunksize=50_000)
        with source.begin() as conn:
            conn.execute(sa.text("CREATE INDEX ix_applications_date ON applications (event_date)"))
        source.dispose()
        store = FeatureStore(f"{SERVER}/{store_db}")
        store.init([view])
        ftable = view.features_table
        end = dt.datetime.combine(FIRST_DAY + dt.timedelta(days=args.days), dt.time.min)
        interval = Interval(dt.datetime.combine(FIRST_DAY, dt.time.min), end)

        def empty() -> None:
            with store.begin() as conn:
                conn.execute(sa.text(f"TRUNCATE TABLE `{ftable}`"))
                for table in ("ingest_files", "ingest_watermarks", "ingest_runs"):
                    conn.execute(sa.delete(store.metadata.tables[table]))

        def drop_folder() -> None:
            (tmp / "drop").mkdir(exist_ok=True)
            shutil.copy(parquet, tmp / "drop" / f"rows-{uuid.uuid4().hex[:6]}.parquet")
            done = ingest_view(only(view, "files"), store, interval, run_id="bench",
                               data_dir=tmp, url_of=lambda _: source_url)  # fmt: skip
            assert done.taken == rows, done.as_dict()

        def sql_source() -> None:
            done = ingest_view(only(view, "sql"), store, interval, run_id="bench",
                               data_dir=tmp, url_of=lambda _: source_url)  # fmt: skip
            assert done.taken == rows, done.as_dict()

        def ctloop_import() -> None:
            result = import_csv(store, view, parquet)
            assert result.features_written == rows

        def load_data() -> None:
            sql = (f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE `{ftable}` "
                   "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
                   f"({', '.join(f'`{c}`' for c in [*columns, 'ingested_at'])})")  # fmt: skip
            subprocess.run(["mariadb", "--local-infile=1", "-uroot", "-h127.0.0.1", store_db,
                            "-e", sql], check=True)  # fmt: skip
            with store.connect() as conn:
                count = sa.select(sa.func.count()).select_from(sa.table(ftable))
                n = conn.execute(count).scalar_one()
            assert n == rows, n

        measures: dict[str, list[float]] = {}
        steps = {"drop folder": drop_folder, "sql source": sql_source,
                 "ctloop import": ctloop_import, "LOAD DATA": load_data}  # fmt: skip
        for round_ in range(1, args.repeats + 1):
            log(f"round {round_}/{args.repeats}")
            for name, step in steps.items():
                empty()
                measures.setdefault(name, []).append(timed(name, rows, step))
        store.dispose()

        floor = statistics.median(measures["LOAD DATA"])
        log()
        log(f"{rows:,} rows, {args.days} days, {args.repeats} rounds; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")  # fmt: skip
        log("| path | median s | rows/s | runs (s) | vs LOAD DATA |")
        log("|---|---:|---:|---|---:|")
        for name, seconds in measures.items():
            median = statistics.median(seconds)
            runs = ", ".join(f"{s:.2f}" for s in seconds)
            log(f"| {name} | {median:.2f} | {rows / median:,.0f} | {runs} | "
                f"{median / floor:.2f}× |")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{store_db}`"))
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{source_db}`"))
        server.dispose()


if __name__ == "__main__":
    main()
