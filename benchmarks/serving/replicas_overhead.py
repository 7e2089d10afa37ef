"""Serving replicas behind HAProxy: what the balancer adds, and how fast a promotion
reaches every replica.

    uv run python benchmarks/serving/replicas_overhead.py --duration 10 --runs 3

Two `bentoml serve` replicas (one worker each, their own state folders, one MariaDB log)
and two HAProxy processes from `ctloop.dev.stack.balancer`: one in front of replica 1
alone, one in front of both. Each run sends single-record `/predict` load (the raw
HTTP/1.1 load generator of `serving_throughput.py`, `--concurrency` keep-alive
connections) to, in turn: replica 1 directly, the balancer in front of replica 1 (the
balancer's own cost: same server, one hop more), and the balancer in front of both. On a
2-core machine two replicas do not add CPU, so the point is the overhead, not a speedup.

Then `--promotions` times: under the same load through the balancer in front of both,
`champion` moves to the other version and the promote step's fan-out
(`ctloop.training.promotion.notify_serving`) tells both replicas; the time until it
returned (both replicas loaded and swapped) is recorded, and the run fails if any
request failed meanwhile.

Answered records are counted from the answers; after all runs the prediction log must
hold exactly that many rows (else the script exits 1). Results go to
`benchmarks/serving/REPLICAS.md`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving.serving_throughput import (  # noqa: E402
    MARIADB,
    make_records,
    run_load,
)

from ctloop.dev.launcher import Server, bentoml_command, free_port  # noqa: E402


def _haproxy(tmp: Path, name: str, backends: list[int]) -> tuple[subprocess.Popen[bytes], str]:
    from ctloop.dev.stack.balancer import write_config

    port = free_port()
    config = write_config(tmp / name, f"127.0.0.1:{port}",
                          [f"127.0.0.1:{p}" for p in backends], check_ms=500)  # fmt: skip
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit(f"HAProxy {name} did not route to a ready replica")
        time.sleep(0.2)


def _load_into(out: dict[str, Any], url: str, bodies: Path, concurrency: int) -> None:
    """Six seconds of load; the result into `out` (run in a thread during a promotion)."""
    out.update(run_load(url, "/predict", bodies, concurrency, 6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per test")
    parser.add_argument("--runs", type=int, default=3, help="rounds over the targets (median)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--promotions", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "REPLICAS.md")
    args = parser.parse_args()

    import sqlalchemy as sa
    from benchmarks.serving.world import register_version

    from ctloop.features.view import load_view
    from ctloop.predlog.store import PredictionLog
    from ctloop.registry import Registry
    from ctloop.settings import Settings
    from ctloop.store.features import FeatureStore
    from ctloop.training.promotion import notify_serving

    view = load_view("credit_score", ROOT / "features")
    db = f"ctloop_bench_replicas_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MARIADB, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{db}`"))
    store = FeatureStore(f"{MARIADB}/{db}")
    procs: list[subprocess.Popen[bytes]] = []
    servers: list[Server] = []
    token = uuid.uuid4().hex
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "lb1": [], "lb2": []}
    promotions: list[float] = []
    answered = 0
    try:
        with tempfile.TemporaryDirectory(prefix="ctloop-replicas-bench-") as tmp_name:
            tmp = Path(tmp_name)
            tracking = f"sqlite:///{tmp / 'mlflow.db'}"
            print("training and registering two versions ...", flush=True)
            v1 = register_version(view, tracking, tmp / "mlartifacts", seed=5)
            v2 = register_version(view, tracking, tmp / "mlartifacts", seed=6, promote=False)
            store.init([view])
            bodies = tmp / "single.jsonl"
            import json

            bodies.write_text("\n".join(json.dumps(r) for r in make_records(view, 400)) + "\n")
            base = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "MLFLOW_"))}
            base.update(CTLOOP_FEATURES_DIR=str(ROOT / "features"), MLFLOW_TRACKING_URI=tracking,
                        FEATURE_STORE_URL=f"{MARIADB}/{db}", CTLOOP_SERVING_WORKERS="1",
                        CTLOOP_SERVING_POLL_SECONDS="600", CTLOOP_ADMIN_TOKEN=token,
                        BENTOML_DO_NOT_TRACK="True")  # fmt: skip
            for i in (1, 2):
                port = free_port()
                env = {**base, "CTLOOP_DATA_DIR": str(tmp / f"replica{i}"),
                       "BENTOML_HOME": str(tmp / f"replica{i}" / "bentoml")}  # fmt: skip
                server = Server(bentoml_command(port), env, port, tmp / f"replica{i}.log", ROOT)
                servers.append(server.start())
            for server in servers:
                server.wait_ready()
            lb1, lb1_url = _haproxy(tmp, "lb1", [servers[0].port])
            lb2, lb2_url = _haproxy(tmp, "lb2", [s.port for s in servers])
            procs += [lb1, lb2]
            targets = {"direct": servers[0].url, "lb1": lb1_url, "lb2": lb2_url}
            for run in range(args.runs):
                for name, url in targets.items():
                    got = run_load(url, "/predict", bodies, args.concurrency, args.duration)
                    if got["errors"]:
                        raise SystemExit(f"{name}: {got['errors']} errors: {got['first_errors']}")
                    answered += got["records"]
                    results[name].append(got)
                    print(
                        f"run {run + 1} {name:6}: {got['rps']:7.0f} req/s  p50 "
                        f"{got['p50_ms']:6.2f} ms  p99 {got['p99_ms']:6.2f} ms",
                        flush=True,
                    )
            registry = Registry(tracking, tmp / "mlartifacts")
            told = Settings(serving_url=",".join(s.url for s in servers), admin_token=token)
            for k in range(args.promotions):
                target = v2 if k % 2 == 0 else v1
                load: dict[str, Any] = {}
                loader = threading.Thread(target=_load_into, args=(load, lb2_url, bodies,
                                                                   args.concurrency))  # fmt: skip
                loader.start()
                time.sleep(2)
                began = time.monotonic()
                registry.promote(view.name, target)
                said = notify_serving(told, view.name, target)
                promotions.append(time.monotonic() - began)
                loader.join()
                if not said.startswith("serving replicas reloaded: 2 of 2") or load["errors"]:
                    raise SystemExit(f"promotion {k + 1}: {said}; load errors {load['errors']}")
                answered += load["records"]
                print(
                    f"promotion {k + 1} to v{target}: both replicas in "
                    f"{promotions[-1]:.2f} s under {load['rps']:.0f} req/s",
                    flush=True,
                )
            deadline = time.monotonic() + 120
            logged = PredictionLog(store).count()
            while logged < answered and time.monotonic() < deadline:
                time.sleep(1)
                logged = PredictionLog(store).count()
    finally:
        for proc in procs:
            proc.terminate()
        for server in servers:
            server.stop()
        store.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))
    check = "OK" if logged == answered else "MISMATCH"
    text = render(results, promotions, answered, logged, check, args)
    print(text)
    args.out.write_text(text)
    if check != "OK":
        sys.exit(1)


def render(results: dict[str, list[dict[str, Any]]], promotions: list[float], answered: int,
           logged: int, check: str, args: argparse.Namespace) -> str:  # fmt: skip
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    labels = {"direct": "replica 1, direct", "lb1": "HAProxy -> replica 1",
              "lb2": "HAProxy -> replicas 1 and 2"}  # fmt: skip
    lines = [
        "# Serving replicas behind HAProxy",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; `{' '.join(sys.argv)}`",
        f"single-record /predict, {args.concurrency} keep-alive connections, "
        f"{args.duration:g} s per test, medians of {args.runs} runs; one worker per replica.",
        "",
        "| target | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for name, label in labels.items():
        lines.append(f"| {label} | {med(name, 'rps'):.0f} | {med(name, 'p50_ms'):.2f} | "
                     f"{med(name, 'p99_ms'):.2f} |")  # fmt: skip
    lines += [
        "",
        f"Balancer overhead (HAProxy -> replica 1 vs direct): p50 "
        f"{med('lb1', 'p50_ms') - med('direct', 'p50_ms'):+.2f} ms, p99 "
        f"{med('lb1', 'p99_ms') - med('direct', 'p99_ms'):+.2f} ms.",
        f"Promotion to both replicas under load ({len(promotions)} times): median "
        f"{statistics.median(promotions):.2f} s, max {max(promotions):.2f} s, no failed request.",
        f"Answered records {answered}, logged rows {logged}: {check}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
