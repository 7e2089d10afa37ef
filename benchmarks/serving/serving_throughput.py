"""Serving throughput and latency: the BentoML service with and without its prediction log,
the naive log-inside-the-request design, and `mlflow models serve` on the same model.

    uv run python benchmarks/serving/serving_throughput.py --duration 10 --runs 3

Modes (same CatBoost champion, same records, same number of workers):

- `async`: the service as shipped, every answer logged through the background writer
  (each row journaled to disk before the answer is returned);
- `nojournal`: the same without the journal (`CTLOOP_SERVING_JOURNAL=false`): what the
  journal costs;
- `off`:   the service with logging off (`CTLOOP_SERVING_LOG_MODE=off`);
- `sync`:  the naive design, one INSERT + COMMIT inside each request (`...=sync`);
- `mlflow`: `mlflow models serve --env-manager local` (pyfunc; answers classes only, no
  validation, no log).

Each mode runs a single-record test (`/predict`, one record per request) and a batch test
(`/predict_batch`, `--batch-size` records per request); every test runs `--runs` times and
the table shows medians. The load generator is a separate process speaking raw HTTP/1.1
over keep-alive connections to 127.0.0.1 (an asyncio client costs the server's two cores
less than httpx would); it stops by itself after `--duration` seconds. After the `async`
runs the prediction log must hold exactly one row per answered record. The table is
printed and written to `benchmarks/serving/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ctloop.dev.launcher import (
    Server,
    bentoml_command,
    cpu_seconds,
    descendants,
    free_port,
    path_answers,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODES = ("async", "nojournal", "off", "sync", "mlflow")
LOGGED = ("async", "nojournal")  # the background writer, with and without its journal
MARIADB = os.environ.get("CTLOOP_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


# ---------------------------------------------------------------------- load generator


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    body = b""
    if chunked:
        parts = []
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            parts.append((await reader.readexactly(size + 2))[:-2])
        await reader.readline()
        body = b"".join(parts)
    elif length:
        body = await reader.readexactly(length)
    return status, body


def answered_records(body: bytes) -> int:
    """How many records an answer carries, read from the answer itself: a batch (ours or
    `mlflow models serve`'s) holds a `predictions` list, a single answer is one record.
    Counting what came back, not what was meant to be sent, keeps the figures honest."""
    import orjson

    answer = orjson.loads(body)
    if isinstance(answer, dict) and isinstance(answer.get("predictions"), list):
        return len(answer["predictions"])
    return 1


async def _load(
    url: str, path: str, bodies: list[bytes], concurrency: int, duration: float, rate: float = 0.0
):
    """Closed loop (each connection sends its next request once answered) when `rate` is 0;
    else open loop: requests are due at a fixed `rate` per second over `concurrency`
    connections, and each latency runs from the moment the request was due, so a server
    that falls behind shows it in the tail instead of slowing the client (no coordinated
    omission)."""
    host, port = url.removeprefix("http://").split(":")
    requests = [
        (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for body in bodies
    ]  # fmt: skip
    latencies: list[float] = []
    errors: list[str] = []
    answered = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + duration

    due: asyncio.Queue[float | None] = asyncio.Queue()
    late = 0

    async def connection(offset: int) -> None:
        nonlocal answered, late
        reader, writer = await asyncio.open_connection(host, int(port))
        k = offset
        try:
            while loop.time() < stop_at:
                if rate:
                    sent = await due.get()
                    if sent is None:
                        break
                    late += time.perf_counter() - sent > 0.001
                else:
                    sent = time.perf_counter()
                writer.write(requests[k % len(requests)])
                k += 1
                status, body = await _read_response(reader)
                if status == 200:
                    latencies.append(time.perf_counter() - sent)
                    answered += answered_records(body)
                else:
                    errors.append(str(status))
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            errors.append(repr(exc))
        finally:
            writer.close()

    async def schedule() -> None:
        """Put each request on the queue when it falls due."""
        origin, n = time.perf_counter(), 0
        while (at := origin + n / rate) < origin + duration:
            wait = at - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            due.put_nowait(at)
            n += 1
        for _ in range(concurrency):
            due.put_nowait(None)

    tasks = [connection(i * 7) for i in range(concurrency)]
    if rate:
        stop_at = start + duration + 30  # an open loop ends when its last request is answered
        tasks.append(schedule())
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "records": answered,
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50) if latencies else float("nan"),
        "p99_ms": pct(0.99) if latencies else float("nan"),
        "rate": rate,
        "sent_late": late,  # went out over 1 ms after due (busy connections, timer jitter)
    }


def loadgen_main(argv: list[str]) -> None:
    """`_loadgen URL PATH BODIES_FILE CONCURRENCY DURATION [RATE]`: one JSON line to stdout."""
    url, path, bodies_file, concurrency, duration, *rest = argv
    bodies = [line.encode() for line in Path(bodies_file).read_text().splitlines() if line]
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(
        _load(url, path, bodies, int(concurrency), float(duration), float(rest[0]) if rest else 0)
    )
    print(json.dumps(result))


# ---------------------------------------------------------------------- orchestration


def run_load(url: str, path: str, bodies_file: Path, concurrency: int, duration: float,
             rate: float = 0.0):  # fmt: skip
    """The load generator in a process of its own; `rate` > 0 is an open loop (see `_load`)."""
    out = subprocess.run(
        [sys.executable, __file__, "_loadgen", url, path, str(bodies_file), str(concurrency),
         str(duration), str(rate)],
        capture_output=True, text=True, check=True, timeout=duration + 90,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_records(view: Any, n: int) -> list[dict[str, Any]]:
    """`n` distinct request records from an unseen synthetic day, missing values as null."""
    import numpy as np

    from ctloop.ingest.synth import StreamConfig, stream

    config = StreamConfig(seed=123, rows_per_day=n)
    frame = next(iter(stream(view, dt.date(2026, 3, 1), 1, config)))[1]
    if len(frame) != n:
        raise SystemExit(f"asked the stream for {n} records, got {len(frame)}")
    out = []
    for rec in frame[[view.entity, *view.feature_names]].to_dict("records"):
        clean: dict[str, Any] = {}
        for key, value in rec.items():
            if isinstance(value, float) and np.isnan(value):
                value = None
            clean[key] = value.item() if isinstance(value, np.generic) else value
        clean[view.entity] = str(clean[view.entity])
        out.append(clean)
    return out


def as_split(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Records in the split form (`columns` once, one list of values per record)."""
    columns = list(records[0])
    return {"columns": columns, "data": [[r.get(c) for c in columns] for r in records]}


def mlflow_record(view: Any, rec: dict[str, Any]) -> dict[str, Any]:
    """The same record typed as the logged signature expects (what a pyfunc client sends)."""
    from ctloop.features.records import model_rows

    row = model_rows(view, [rec])[0]
    return {name: (None if v != v else v) for name, v in zip(view.feature_names, row, strict=True)}


def catboost_us_per_record(view: Any, model_uri: str, recs: list[dict[str, Any]],
                           repeats: int = 15) -> float:  # fmt: skip
    """CatBoost's own batched predict on these records, already typed as the model's frame,
    one thread: CPU µs per record (median of `repeats`). The floor a service's batch path
    is measured against (issue 19, P3: at most 3x this per record)."""
    import mlflow.catboost
    import pandas as pd

    from ctloop.core.predictor import to_model_frame

    model = mlflow.catboost.load_model(model_uri)
    frame = to_model_frame(view, pd.DataFrame.from_records(recs))
    predict = model.predict_proba if len(getattr(model, "classes_", [])) else model.predict
    predict(frame, thread_count=1)  # warm
    times = []
    for _ in range(repeats):
        start = time.process_time()
        predict(frame, thread_count=1)
        times.append(time.process_time() - start)
    return statistics.median(times) / len(recs) * 1e6


def median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of a process and all its live descendants.

    (circus, BentoML's process manager, puts its workers in their own process groups, so
    the tree is followed through parent pids.)
    """
    return cpu_seconds([root, *descendants(root)])


def log_metrics(url: str) -> dict[str, float]:
    """The service's prediction-log samples from /metrics, summed over workers: `pending`
    and the row counters by outcome (`written`, `spilled`, `replayed`, ...)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ctloop_prediction_log_pending":
                key = "pending"
            elif sample.name == "ctloop_prediction_log_rows_total":
                key = sample.labels["outcome"]
            else:
                continue
            out[key] = out.get(key, 0.0) + sample.value
    return out


def settle(server: Server, spill_dir: Path, timeout: float = 300.0) -> float:
    """Seconds until the service's prediction log caught up after the load stopped: no
    row waiting in memory and no spill file left to replay."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        pending = log_metrics(server.url).get("pending", 0.0)
        spills = [p for p in spill_dir.rglob("*.jsonl") if not p.name.startswith("journal-")]
        if pending == 0 and not spills:  # (journal segments go on their own, every 2 s)
            return time.monotonic() - start
        time.sleep(0.25)
    raise SystemExit(f"the prediction log did not catch up within {timeout:.0f} s")


def measure(server: Server, path: str, bodies: Path, concurrency: int, duration: float,
            records_per_request: int, log_dir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """One load run plus the server's CPU per answered record (robust to other load).

    With `log_dir` (the logged service) the run ends only once the prediction log caught
    up, so that a writer that fell behind and spilled pays for its replay in this run's
    CPU, not in the next mode's measurement; `catchup_s` says how long that took.
    """
    before = tree_cpu_seconds(server.proc.pid)
    result = run_load(server.url, path, bodies, concurrency, duration)
    result["catchup_s"] = settle(server, log_dir) if log_dir is not None else 0.0
    cpu = tree_cpu_seconds(server.proc.pid) - before
    if result["records"] != result["requests"] * records_per_request:
        raise SystemExit(
            f"{path}: {result['requests']} answers carried {result['records']} records, "
            f"not {records_per_request} each: the bodies are not what the figures assume"
        )
    records = result["records"]
    result["records_per_s"] = records / result["seconds"]
    result["sustained_per_s"] = records / (result["seconds"] + result["catchup_s"])
    result["cpu_ms_per_record"] = cpu * 1000 / records if records else float("nan")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per test")
    parser.add_argument("--runs", type=int, default=3, help="rounds over all modes (median)")
    parser.add_argument("--concurrency", type=int, default=16, help="single-record connections")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--batch-form", choices=("records", "split"), default="records",
                        help="batch bodies as records, or in the split form (columns once; "
                             "`dataframe_split` for mlflow)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--driver", default="mysqldb", help="MariaDB driver: mysqldb | pymysql")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--log-batch-size", type=int, default=None,
                        help="CTLOOP_SERVING_LOG_BATCH_SIZE of the logged modes (default: the "
                        "service's)")  # fmt: skip
    parser.add_argument("--log-queue-max", type=int, default=None,
                        help="CTLOOP_SERVING_LOG_QUEUE_MAX of the logged modes")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    import sqlalchemy as sa
    from benchmarks.serving.world import register_version

    from ctloop.features.view import load_view
    from ctloop.predlog.store import PredictionLog
    from ctloop.store.features import FeatureStore

    view = load_view("credit_score", ROOT / "features")
    server_url = MARIADB.replace("+pymysql", f"+{args.driver}")
    dbs = {m: f"ctloop_bench_{m}_{uuid.uuid4().hex[:8]}" for m in (*LOGGED, "sync")}
    admin = sa.create_engine(MARIADB, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        for db in dbs.values():
            conn.execute(sa.text(f"CREATE DATABASE `{db}`"))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {"single": [], "batch": []}
                                                           for m in modes}  # fmt: skip
    warm: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    checks: list[str] = []
    servers: dict[str, Server] = {}
    stores = {m: FeatureStore(f"{server_url}/{db}") for m, db in dbs.items()}
    try:
        with tempfile.TemporaryDirectory(prefix="ctloop-serving-bench-") as tmp_name:
            tmp = Path(tmp_name)
            tracking = f"sqlite:///{tmp / 'mlflow.db'}"
            print("training and registering the model ...", flush=True)
            version = register_version(view, tracking, tmp / "mlartifacts")
            for store in stores.values():
                store.init([view])
            # enough distinct records that every batch body carries exactly --batch-size
            # of them (at least four bodies to rotate through), never a short last chunk
            n_records = max(400, 4 * args.batch_size)
            n_records -= n_records % args.batch_size
            recs = make_records(view, n_records)
            chunks = [recs[i : i + args.batch_size] for i in range(0, len(recs), args.batch_size)]
            if {len(c) for c in chunks} != {args.batch_size}:
                raise SystemExit(f"batch bodies of {sorted({len(c) for c in chunks})} records")
            mlflow_chunks = [[mlflow_record(view, r) for r in c] for c in chunks]
            if args.batch_form == "split":  # field names once per body, for both servers
                batch = [json.dumps(as_split(c)) for c in chunks]
                mlflow_batch = [json.dumps({"dataframe_split": as_split(c)})
                                for c in mlflow_chunks]  # fmt: skip
            else:
                batch = [json.dumps({"records": c}) for c in chunks]
                mlflow_batch = [json.dumps({"dataframe_records": c}) for c in mlflow_chunks]
            bodies = {
                "single": [json.dumps(r) for r in recs],
                "batch": batch,
                "mlflow_single": [json.dumps({"dataframe_records": [mlflow_record(view, r)]})
                                  for r in recs],
                "mlflow_batch": mlflow_batch,
            }  # fmt: skip
            import mlflow

            mlflow.set_tracking_uri(tracking)
            catboost_us = catboost_us_per_record(view, f"models:/{view.name}/{version}",
                                                 chunks[0])  # fmt: skip
            files = {}
            for name, lines in bodies.items():
                files[name] = tmp / f"{name}.jsonl"
                files[name].write_text("\n".join(lines) + "\n")
            base_env = {k: v for k, v in os.environ.items()
                        if not k.startswith(("CTLOOP_", "MLFLOW_"))}  # fmt: skip
            base_env.update(
                CTLOOP_FEATURES_DIR=str(ROOT / "features"), MLFLOW_TRACKING_URI=tracking,
                CTLOOP_SERVING_WORKERS=str(args.workers),
                CTLOOP_SERVING_MAX_BATCH=str(max(1000, args.batch_size)),
                BENTOML_DO_NOT_TRACK="True",
                # `mlflow models serve` execs `uvicorn` from PATH: the venv's, also when
                # this script runs as .venv/bin/python rather than under `uv run`
                PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            )  # fmt: skip
            targets: dict[str, tuple[tuple[str, str], tuple[Path, Path]]] = {}
            for mode in modes:  # all servers start first; only one is loaded at a time
                port = free_port()
                env = {**base_env, "CTLOOP_DATA_DIR": str(tmp / mode),
                       "BENTOML_HOME": str(tmp / mode / "bentoml")}  # fmt: skip
                if mode == "mlflow":
                    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                           f"models:/{view.name}/{version}", "--env-manager", "local",
                           "-h", "127.0.0.1", "-p", str(port), "-w", str(args.workers)]  # fmt: skip
                    ready = "/ping"
                    targets[mode] = (("/invocations", "/invocations"),
                                     (files["mlflow_single"], files["mlflow_batch"]))  # fmt: skip
                else:
                    env["CTLOOP_SERVING_LOG_MODE"] = "async" if mode in LOGGED else mode
                    env["CTLOOP_SERVING_JOURNAL"] = str(mode != "nojournal").lower()
                    if args.log_batch_size is not None:
                        env["CTLOOP_SERVING_LOG_BATCH_SIZE"] = str(args.log_batch_size)
                    if args.log_queue_max is not None:
                        env["CTLOOP_SERVING_LOG_QUEUE_MAX"] = str(args.log_queue_max)
                    db = dbs.get(mode, dbs["async"])
                    env["FEATURE_STORE_URL"] = f"{server_url}/{db}"
                    cmd = bentoml_command(port)
                    ready = "/readyz"
                    targets[mode] = (("/predict", "/predict_batch"),
                                     (files["single"], files["batch"]))  # fmt: skip
                print(f"[{mode}] starting server ...", flush=True)
                servers[mode] = Server(
                    cmd,
                    env,
                    port,
                    tmp / f"{mode}.log",
                    ROOT,
                    ready=path_answers(ready),
                    ready_timeout=300,
                ).start()
            for mode, server in servers.items():
                server.wait_ready()
                (single_path, batch_path), (single_file, batch_file) = targets[mode]
                warm[mode] = [
                    run_load(server.url, single_path, single_file, args.concurrency, 2.0),
                    run_load(server.url, batch_path, batch_file, args.batch_concurrency, 2.0),
                ]
            for i in range(args.runs):  # rounds: every mode once per round, so background
                for mode, server in servers.items():  # load hits all modes alike
                    (single_path, batch_path), (single_file, batch_file) = targets[mode]
                    log_dir = tmp / mode if mode in LOGGED else None
                    single = measure(server, single_path, single_file, args.concurrency,
                                     args.duration, 1, log_dir)  # fmt: skip
                    batch = measure(server, batch_path, batch_file, args.batch_concurrency,
                                    args.duration, args.batch_size, log_dir)  # fmt: skip
                    results[mode]["single"].append(single)
                    results[mode]["batch"].append(batch)
                    print(f"[round {i + 1}] {mode:6} single {single['rps']:5.0f} req/s "
                          f"p50 {single['p50_ms']:6.1f} ms p99 {single['p99_ms']:6.1f} ms "
                          f"cpu {single['cpu_ms_per_record']:.2f} ms/req | batch "
                          f"{batch['records_per_s']:5.0f} rec/s p50 {batch['p50_ms']:6.1f} ms "
                          f"cpu {batch['cpu_ms_per_record']:.3f} ms/rec | errors "
                          f"{single['errors'] + batch['errors']} | log caught up "
                          f"{single['catchup_s']:.1f} / {batch['catchup_s']:.1f} s after "
                          "the load", flush=True)  # fmt: skip
            per_record = {mode: median(results[mode]["batch"], "cpu_ms_per_record") * 1000
                          for mode in ("off", "mlflow") if mode in results}  # fmt: skip
            checks.append(
                f"CatBoost's own predict on a typed frame of {args.batch_size} records, one "
                f"thread: {catboost_us:.2f} µs CPU per record"
                + "".join(f"; {mode} server CPU per batch record {us:.1f} µs = "
                          f"{us / catboost_us:.1f}x" for mode, us in per_record.items())
            )  # fmt: skip
            if "off" in results and "mlflow" in results:
                ratio = median(results["off"]["batch"], "sustained_per_s") / median(
                    results["mlflow"]["batch"], "sustained_per_s"
                )
                checks.append(f"unlogged batch records/s vs `mlflow models serve`: {ratio:.2f}x")
            if "async" in results:  # how far the log trailed the answers
                runs = results["async"]["batch"]
                sustained = median(runs, "sustained_per_s")
                checks.append(
                    "async: the prediction log caught up a median "
                    f"{median(results['async']['single'], 'catchup_s'):.1f} s after a single "
                    f"run and {median(runs, 'catchup_s'):.1f} s after a batch run; counting "
                    f"that time, the batch runs logged {sustained:.0f} records/s (records "
                    "counted from the answers the server returned)"
                )
            if "async" in servers:  # did the writer keep up, or spill and replay?
                c = log_metrics(servers["async"].url)
                checks.append(
                    f"async log writer: {c.get('written', 0):.0f} rows written at once, "
                    f"{c.get('spilled', 0):.0f} spilled to disk because the database fell "
                    f"behind, {c.get('replayed', 0):.0f} replayed so far, "
                    f"{c.get('failed', 0):.0f} lost"
                )
            for server in servers.values():
                server.stop()  # flushes the prediction log
            for mode in (*LOGGED, "sync"):
                if mode not in results:
                    continue
                singles = [*results[mode]["single"], warm[mode][0]]
                batches = [*results[mode]["batch"], warm[mode][1]]
                answered = sum(r["records"] for r in [*singles, *batches])
                logged = PredictionLog(stores[mode]).count()
                on_disk = sum(  # spilled rows a stopped service left for the next start
                    sum(1 for line in path.open() if line.strip())
                    for path in (tmp / mode).rglob("*.jsonl")
                )
                verdict = "exactly one each" if logged == answered else "MISMATCH"
                checks.append(f"{mode}: {answered} records answered (warm-up included), "
                              f"{logged} prediction log rows ({verdict}), {on_disk} rows "
                              "left in spill files")  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
        for store in stores.values():
            store.dispose()
        with admin.begin() as conn:
            for db in dbs.values():
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))
        admin.dispose()
    report = render(results, checks, args, serving_goals(results, catboost_us, args.batch_size))
    print(report)
    args.out.write_text(report)
    print(f"written to {args.out}")


def serving_goals(results: dict[str, Any], catboost_us: float, batch_size: int) -> list[str]:
    """Issue 19's P1 to P3 as this run's medians decide them (modes not run: not measured)."""
    from benchmarks.goals import (
        P1_TAIL,
        P1_THROUGHPUT,
        P2,
        P3_BATCH,
        P3_CPU,
        P3_THROUGHPUT,
        verdict,
    )

    def ratio(mode: str, base: str, test: str, key: str) -> float:
        if mode not in results or base not in results:
            return float("nan")
        return median(results[mode][test], key) / median(results[base][test], key)

    off_us = (median(results["off"]["batch"], "cpu_ms_per_record") * 1000
              if "off" in results else float("nan"))  # fmt: skip
    batches = f"{batch_size}-record batches"
    p3 = batch_size == P3_BATCH  # P3 is set at 1,000-record batches only
    nan = float("nan")
    p3_ratio = ratio("off", "mlflow", "batch", "records_per_s") if p3 else nan
    p3_cpu = off_us / catboost_us if p3 else nan
    p3_note = f"set at {P3_BATCH}-record batches, not judged at {batch_size}"
    return [
        verdict(P1_THROUGHPUT, ratio("async", "mlflow", "single", "rps")),
        verdict(P1_TAIL, ratio("async", "off", "single", "p99_ms")),
        verdict(P2, ratio("async", "off", "batch", "sustained_per_s"), batches),
        verdict(P3_THROUGHPUT, p3_ratio, batches if p3 else p3_note),
        verdict(P3_CPU, p3_cpu, f"{off_us:.1f} against {catboost_us:.2f} µs" if p3 else p3_note),
    ]


def render(results: dict[str, Any], checks: list[str], args: argparse.Namespace,
           goals: list[str]) -> str:  # fmt: skip
    names = {
        "async": "BentoML service, log written off the request path (shipped)",
        "nojournal": "the same without the journal (CTLOOP_SERVING_JOURNAL=false)",
        "off": "BentoML service, logging off",
        "sync": "BentoML service, INSERT+COMMIT inside each request (naive)",
        "mlflow": "`mlflow models serve --env-manager local`",
    }
    base = results.get("off")

    def rel(mode: str, test: str, key: str) -> str:
        if not base:
            return "n/a"
        return f"{median(results[mode][test], key) / median(base[test], key):.0%}"

    lines = [
        "# Serving benchmark",
        "",
        f"- measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; the load generator "
        "and MariaDB run on the same two cores as the server",
        f"- {args.workers} server workers per server; single: {args.concurrency} keep-alive "
        f"connections, one record per request; batch: {args.batch_concurrency} connections, "
        f"{args.batch_size} records per request ({args.batch_form} form); {args.duration:g} s "
        f"per run; {args.runs} "
        "rounds, each round runs every mode once (interleaved, so load from other processes "
        "on the machine hits all modes alike); medians; MariaDB driver "
        f"`{args.driver}`",
        "- server CPU = user+system time of the server's process tree per answered record",
        "- command: `uv run python benchmarks/serving/serving_throughput.py "
        f"--duration {args.duration:g} --runs {args.runs} --batch-size {args.batch_size} "
        f"--driver {args.driver} --modes {','.join(results)}"
        + (f" --log-batch-size {args.log_batch_size}" if args.log_batch_size else "")
        + (f" --log-queue-max {args.log_queue_max}" if args.log_queue_max else "")
        + (f" --batch-form {args.batch_form}" if args.batch_form != "records" else "")
        + "`",
        "",
        "Sustained = records answered / (load time + time the prediction log took to catch "
        "up afterwards): the rate a service can keep up for hours, and the headline figure.",
        "",
        "| mode | single req/s | sustained req/s | p50 ms | p99 ms | vs off | server CPU ms/req "
        "| batch records/s | sustained records/s | batch p50 ms | batch p99 ms | sustained vs off "
        "| server CPU ms/record | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, res in results.items():
        errors = sum(r["errors"] for r in res["single"] + res["batch"])
        lines.append(
            f"| {names[mode]} | {median(res['single'], 'rps'):.0f} "
            f"| {median(res['single'], 'sustained_per_s'):.0f} "
            f"| {median(res['single'], 'p50_ms'):.1f} | {median(res['single'], 'p99_ms'):.1f} "
            f"| {rel(mode, 'single', 'rps')} "
            f"| {median(res['single'], 'cpu_ms_per_record'):.2f} "
            f"| {median(res['batch'], 'records_per_s'):.0f} "
            f"| {median(res['batch'], 'sustained_per_s'):.0f} "
            f"| {median(res['batch'], 'p50_ms'):.1f} | {median(res['batch'], 'p99_ms'):.1f} "
            f"| {rel(mode, 'batch', 'sustained_per_s')} "
            f"| {median(res['batch'], 'cpu_ms_per_record'):.3f} | {errors} |"
        )
    lines += ["", "Goals of issue 19, from this run's medians:", *goals]
    lines += ["", "Checks:", *[f"- {c}" for c in checks], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2:])
    else:
        sys.path.insert(0, str(ROOT))
        main()
