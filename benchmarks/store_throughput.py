"""Feature store write and extraction throughput on MariaDB, against the raw `mariadb` client.

Measured in one run on a database of its own (created, then dropped unless --keep):

* write: `FeatureStore.ingest` of every pre-generated day into empty tables (generation is
  not timed; the tables are truncated between repeats), then one idempotent re-write of
  the same days (every row hits ON DUPLICATE KEY UPDATE);
* extract: `FeatureStore.training_set` of all rows, through PyMySQL and through mysqlclient
  (MySQLdb), each run in a fresh subprocess so that its peak RSS growth can be read;
* baseline: the `mariadb` command-line client running the same point-in-time SELECT with
  `--batch --quick` into /dev/null, the "how fast could it be" reference;
* pandas: `pandas.read_sql` of the same query through SQLAlchemy (skip with --skip-pandas).

    uv run python benchmarks/store_throughput.py --rows 1000000 --days 50 --repeats 3

Client CPU is this process's (or the worker's) CPU time during the timed part: wall time
minus client CPU is roughly the time spent waiting for the server (and the disk).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = "mysql+mysqldb://root@127.0.0.1:3306/"
VIEW = "credit_score"
FIRST_DAY = dt.date(2026, 1, 1)
LABEL_DELAY_DAYS = 7
SEED = 7


def log(message: str = "") -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- helpers


@dataclass
class Measure:
    """Repeated timings of one thing, with the rows each run handled."""

    name: str
    seconds: list[float] = field(default_factory=list)
    rows: int = 0
    rss_growth_mib: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    frame_mib: float | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.rows / self.median if self.median else float("nan")

    def add(
        self, seconds: float, rows: int, rss_mib: float | None = None, cpu: float | None = None
    ) -> None:
        self.seconds.append(seconds)
        self.rows = rows
        extra = ""
        if cpu is not None:
            self.cpu.append(cpu)
            extra += f", client CPU {cpu:.2f} s"
        if rss_mib is not None:
            self.rss_growth_mib.append(rss_mib)
            extra += f", peak RSS +{rss_mib:,.0f} MiB"
        log(
            f"  {self.name} run {len(self.seconds)}: {seconds:.2f} s, "
            f"{rows / seconds:,.0f} rows/s{extra}"
        )

    def summary(self) -> None:
        runs = ", ".join(f"{s:.2f}" for s in self.seconds)
        log(f"  {self.name}: median {self.median:.2f} s ({runs}) -> {self.rate:,.0f} rows/s")


def maxrss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_cpu() -> float:
    """User + system CPU seconds of the waited-for child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def plan(rows: int, days: int) -> tuple[int, dt.date, int]:
    """(rows per day, as-of date, window days) that cover every generated row and label.

    Labels of day D arrive during day D + delay, so as of the day after the last day's
    labels every label has arrived; the window reaches back to the first day.
    """
    per_day = rows // days
    last = FIRST_DAY + dt.timedelta(days=days - 1)
    as_of = last + dt.timedelta(days=LABEL_DELAY_DAYS + 1)
    return per_day, as_of, (as_of - FIRST_DAY).days


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cli_command(url) -> tuple[list[str], dict[str, str]]:
    """The `mariadb` client invocation (and environment) for the database of a URL."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise SystemExit("the mariadb (or mysql) command-line client is not on PATH")
    cmd = [client, "--batch", "--quick", "-h", url.host or "127.0.0.1"]
    cmd += ["-P", str(url.port or 3306), "-u", url.username or "root", url.database]
    env = dict(os.environ)
    if url.password:
        env["MYSQL_PWD"] = str(url.password)  # kept off the command line
    return cmd, env


# --------------------------------------------------------------------------- workers


def worker(spec: dict) -> dict:
    """One extraction in this (fresh) process; returns its timing and memory figures."""
    import logging

    import pandas as pd

    from ctloop.features.view import load_view
    from ctloop.store.features import FeatureStore

    logging.basicConfig(level=logging.WARNING)
    view = load_view(VIEW, ROOT / "features")
    as_of = dt.date.fromisoformat(spec["as_of"])
    store = FeatureStore(spec["url"])
    store.ping()  # connect, load the driver and the dialect before the baseline
    before = maxrss_mib()
    cpu = time.process_time()
    if spec["kind"] == "training_set":
        start = time.perf_counter()
        frame = store.training_set(view, as_of, spec["window_days"])
        seconds = time.perf_counter() - start
    elif spec["kind"] == "read_sql":
        begin, end = store.window(view, as_of, spec["window_days"])
        query = store._training_query(view, begin, end)
        start = time.perf_counter()
        with store.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        seconds = time.perf_counter() - start
    else:
        raise ValueError(spec["kind"])
    cpu = time.process_time() - cpu
    after = maxrss_mib()
    store.dispose()
    return {
        "seconds": seconds,
        "rows": len(frame),
        "rss_growth_mib": after - before,
        "cpu": cpu,
        "frame_mib": float(frame.memory_usage(deep=True).sum()) / 1024**2,
    }


def run_worker(spec: dict) -> dict:
    """Run `worker` in a fresh interpreter and read its JSON answer (last stdout line)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- benchmark


def bench(args: argparse.Namespace, url, results: list[Measure]) -> dict:
    import pandas as pd
    import sqlalchemy as sa

    from ctloop.features.view import load_view
    from ctloop.ingest.synth import StreamConfig, generate_day
    from ctloop.store.features import FeatureStore

    view = load_view(VIEW, ROOT / "features")
    per_day, as_of, window_days = plan(args.rows, args.days)
    store = FeatureStore(url)
    store.init([view])
    ftable, ltable = store.view_tables(view)

    log(f"generating {args.days} days x {per_day:,} rows (not timed)")
    cfg = StreamConfig(seed=SEED, rows_per_day=per_day, label_delay_days=LABEL_DELAY_DAYS)
    t0 = time.perf_counter()
    days = [generate_day(FIRST_DAY + dt.timedelta(days=i), cfg) for i in range(args.days)]
    total = sum(len(f) for f, _ in days)
    in_memory = sum(
        f.memory_usage(deep=True).sum() + lab.memory_usage(deep=True).sum() for f, lab in days
    )
    log(
        f"  {total:,} feature rows + {total:,} label rows, {in_memory / 1024**2:,.0f} MiB "
        f"of DataFrames, in {time.perf_counter() - t0:.1f} s"
    )

    def ingest_all() -> tuple[float, int, None, float]:
        cpu = time.process_time()
        start = time.perf_counter()
        n = 0
        for features, labels in days:
            n += store.ingest(view, features, labels)[0]
        return time.perf_counter() - start, n, None, time.process_time() - cpu

    writes = args.write_repeats or args.repeats
    log(f"\nwrite: ingest of {args.days} days into empty tables, {writes} repeat(s)")
    insert = Measure("write (insert)")
    for i in range(writes):
        if i:
            with store.begin() as conn:
                conn.execute(sa.text(f"TRUNCATE TABLE {ftable.name}"))
                conn.execute(sa.text(f"TRUNCATE TABLE {ltable.name}"))
        insert.add(*ingest_all())
    insert.note = "ingest per day; each feature row also writes its label row"
    results.append(insert)

    log("\nwrite: idempotent re-write of the same days (upsert of existing rows), 1 run")
    upsert = Measure("write (upsert re-run)")
    upsert.add(*ingest_all())
    upsert.note = "same rows again: ON DUPLICATE KEY UPDATE on every row"
    results.append(upsert)
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(ftable)).scalar_one()
    if stored != total:
        raise SystemExit(f"expected {total:,} stored feature rows, found {stored:,}")
    days.clear()  # free the generated frames before the extractions

    query = store._training_query(view, *store.window(view, as_of, window_days))
    sql = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    store.dispose()

    cmd, env = cli_command(url)
    log("\nbaseline check: the mariadb client's row count for the same SELECT (not timed)")
    out = subprocess.run([*cmd, "-e", sql], env=env, check=True, capture_output=True).stdout
    cli_rows = out.count(b"\n") - 1  # minus the header line
    del out
    log(f"  {cli_rows:,} rows")

    drivers = {
        name: url.set(drivername=f"{url.get_backend_name()}+{dbapi}").render_as_string(False)
        for name, dbapi in (("pymysql", "pymysql"), ("mysqlclient", "mysqldb"))
    }
    extract = {
        name: Measure(f"extract training_set ({name})", note="fresh subprocess per run")
        for name in drivers
    }
    cli = Measure("mariadb CLI --batch --quick > /dev/null", note="same SQL text, literal values")
    pandas_m = Measure("pandas.read_sql (SQLAlchemy, mysqlclient)", note="fresh subprocess per run")
    base = {"as_of": as_of.isoformat(), "window_days": window_days}

    log(f"\nextract as of {as_of} over {window_days} days, {args.repeats} rounds (interleaved)")
    for _ in range(args.repeats):
        with Path(os.devnull).open("wb") as sink:
            cpu = children_cpu()
            start = time.perf_counter()
            subprocess.run([*cmd, "-e", sql], env=env, check=True, stdout=sink)
            cli.add(time.perf_counter() - start, cli_rows, cpu=children_cpu() - cpu)
        for name, driver_url in drivers.items():
            spec = {**base, "kind": "training_set", "url": driver_url}
            r = run_worker(spec)
            extract[name].add(r["seconds"], r["rows"], r["rss_growth_mib"], r["cpu"])
            extract[name].frame_mib = r["frame_mib"]
        if not args.skip_pandas:
            spec = {**base, "kind": "read_sql", "url": drivers["mysqlclient"]}
            r = run_worker(spec)
            pandas_m.add(r["seconds"], r["rows"], r["rss_growth_mib"], r["cpu"])
            pandas_m.frame_mib = r["frame_mib"]
    results.extend(extract.values())
    results.append(cli)
    if not args.skip_pandas:
        results.append(pandas_m)
    for m in extract.values():
        if m.rows != cli_rows:
            raise SystemExit(f"{m.name} returned {m.rows:,} rows, the client {cli_rows:,}")

    with sa.create_engine(url, poolclass=sa.pool.NullPool).connect() as conn:
        server = conn.execute(sa.text("SELECT VERSION()")).scalar_one()
        pool = conn.execute(sa.text("SELECT @@innodb_buffer_pool_size")).scalar_one()
    client = subprocess.run([cmd[0], "--version"], capture_output=True, text=True).stdout
    return {
        "server": server,
        "buffer_pool_mib": int(pool) // 1024**2,
        "client": client.strip(),
        "pandas": pd.__version__,
        "rows": total,
        "as_of": as_of,
    }


def markdown(results: list[Measure], info: dict, args: argparse.Namespace) -> str:
    cli = next(m for m in results if m.name.startswith("mariadb CLI"))
    lines = [
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['mem_gib']:.0f} GiB RAM, "
        f"load average {info['load']:.2f} at start; MariaDB {info['server']} "
        f"(innodb_buffer_pool_size {info['buffer_pool_mib']} MiB); Python {info['python']}, "
        f"SQLAlchemy {info['sqlalchemy']}, PyMySQL {info['pymysql']}, "
        f"mysqlclient {info['mysqlclient']}, pandas {info['pandas']}, numpy {info['numpy']}.",
        "",
        f"{info['rows']:,} rows ({args.days} days); medians of {args.repeats} runs for reads, "
        f"{args.write_repeats or args.repeats} for the insert, 1 for the upsert re-run.",
        "",
        "| measurement | median s | rows/s | runs (s) | client CPU s | peak RSS growth "
        "| DataFrame | vs CLI |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for m in results:
        runs = ", ".join(f"{s:.2f}" for s in m.seconds)
        rss = f"{statistics.median(m.rss_growth_mib):,.0f} MiB" if m.rss_growth_mib else ""
        cpu = f"{statistics.median(m.cpu):.1f}" if m.cpu else ""
        frame = f"{m.frame_mib:,.0f} MiB" if m.frame_mib is not None else ""
        reads = m.name.startswith(("extract", "pandas", "mariadb"))
        ratio = f"{m.median / cli.median:.2f}x" if reads else ""
        lines.append(
            f"| {m.name} | {m.median:.2f} | {m.rate:,.0f} | {runs} | {cpu} | {rss} | {frame} "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=None,
        help=f"SQLAlchemy URL of a database that does not exist yet "
        f"(default {SERVER}ctloop_bench_<random>)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--write-repeats",
        type=int,
        default=None,
        help="repeats of the (slow) first-insert write; default: --repeats",
    )
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--skip-pandas", action="store_true", help="skip pandas.read_sql")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # a child process: one extraction, answer as JSON on the last line
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    import numpy as np
    import sqlalchemy as sa
    from sqlalchemy.engine import URL, make_url

    url = make_url(args.url or f"{SERVER}ctloop_bench_{uuid.uuid4().hex[:8]}")
    if not url.database:
        url = url.set(database=f"ctloop_bench_{uuid.uuid4().hex[:8]}")
    server_url = URL.create(  # url.set(database=None) would keep the database
        url.drivername, url.username, url.password, url.host, url.port, query=url.query
    )
    server = sa.create_engine(server_url, poolclass=sa.pool.NullPool)
    with server.connect() as conn:
        exists = conn.execute(sa.text("SHOW DATABASES LIKE :db"), {"db": url.database}).first()
    if exists:
        raise SystemExit(
            f"database {url.database} already exists; the benchmark truncates and drops its "
            "database, so give it a new name"
        )

    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "mem_gib": mem_total_gib(),
        "load": os.getloadavg()[0],
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "pymysql": version("PyMySQL"),  # pymysql.__version__ is its MySQLdb-compat number
        "mysqlclient": version("mysqlclient"),
        "numpy": np.__version__,
    }
    log(f"database {url.render_as_string()} ({args.rows:,} rows, {args.repeats} repeats)")
    # A plain `kill` (SIGTERM) still runs the finally block that drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: list[Measure] = []
    started = time.perf_counter()
    try:
        info |= bench(args, url, results)
    finally:
        if args.keep:
            log(f"\nkept database {url.database}")
        else:
            with server.begin() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{url.database}`"))
            log(f"\ndropped database {url.database}")
        server.dispose()

    log("\nmedians:")
    for m in results:
        m.summary()
    log(f"\ntotal wall time {time.perf_counter() - started:.0f} s\n")
    log(markdown(results, info, args))


if __name__ == "__main__":
    main()
