"""Shadow trials: what scoring every request with a challenger costs the caller.

    uv run python benchmarks/serving/shadow_overhead.py --duration 10 --runs 3

One `bentoml serve` (two workers, MariaDB log) with a champion. Each round sends
single-record `/predict` load (the raw HTTP/1.1 load generator of
`serving_throughput.py`, keep-alive connections) twice per load: once with no
challenger, once with a second version on shadow trial (alias `challenger`, every request
scored again by the worker's shadow scorer process and logged with role `shadow`). The
target of issue 21 is the caller's p99 with a shadow within 1.2x of the p99 without one.

Two kinds of load: closed loops (`--concurrency`: each connection sends its next request
once answered, which saturates the machine) and open loops at fixed rates over 16
connections, latency counted from when each request was due: how a service sized with
headroom runs. The rates are `--shares` of the capacity measured first (8 closed-loop
connections, no shadow), so the load means the same on a faster or slower machine. Both
kinds are reported. Each test starts once the log holds every row of the tests before it,
so no test pays for another's backlog.

Answered records are counted from the answers. After all rounds the log must hold exactly
one champion row per answered request (else exit 1), and the shadow rows are counted
against the requests answered during shadow rounds (a worker sheds shadow work past
10,000 waiting records; the figure says how much was shed). Results go to
`benchmarks/serving/SHADOW.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
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
    tree_cpu_seconds,
)

from ctloop.dev.launcher import (  # noqa: E402
    Server,
    bentoml_command,
    cpu_seconds,
    every_worker_loaded,
    free_port,
    processes_named,
)

OPEN_LOOP_CONNECTIONS = 16


def _name(level: tuple[int, float]) -> str:
    connections, rate = level
    if rate:
        return f"{rate:.0f} req/s (open loop, {connections} conn.)"
    return f"{connections} connections (closed loop)"


def _challengers(url: str) -> set[str | None]:
    """The challenger each worker holds, from several concurrent /metadata calls."""
    import httpx

    seen = set()
    for _ in range(8):
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            meta = http.get(f"{url}/metadata").json()
        seen.add((meta["model"].get("challenger") or {}).get("version"))
    return seen


def _switch(url: str, token: str, view: str, want: str | None) -> None:
    """Tell the service to reload and wait until every worker holds `want`."""
    import httpx

    httpx.post(f"{url}/admin/reload", json={"view": view},
               headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip
    deadline = time.monotonic() + 60
    while _challengers(url) != {want}:
        if time.monotonic() > deadline:
            raise SystemExit(f"workers hold {_challengers(url)}, not {want}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per test")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians)")
    parser.add_argument(
        "--concurrency",
        default="2,8",
        help="closed loops: keep-alive connections, a list ('' for none)",
    )
    parser.add_argument(
        "--shares",
        default="0.3,0.6",
        help="open loops: shares of the measured capacity, a list ('' for none)",
    )
    parser.add_argument(
        "--shadow-linger",
        type=float,
        default=None,
        help="CTLOOP_SERVING_SHADOW_LINGER_SECONDS of the service (default: the service's)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "SHADOW.md")
    args = parser.parse_args()
    levels = [(int(c), 0.0) for c in args.concurrency.split(",") if c.strip()]
    shares = [float(r) for r in args.shares.split(",") if r.strip()]
    if any(not 0 < share < 1 for share in shares):
        parser.error(f"--shares: each share must lie between 0 and 1, got {args.shares!r}")

    import sqlalchemy as sa
    from benchmarks.serving.world import register_version

    from ctloop.features.view import load_view
    from ctloop.predlog.store import CHAMPION_ROLE, SHADOW_ROLE
    from ctloop.registry import Registry
    from ctloop.store.features import FeatureStore

    view = load_view("credit_score", ROOT / "features")
    db = f"ctloop_bench_shadow_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MARIADB, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{db}`"))
    store = FeatureStore(f"{MARIADB}/{db}")
    token = uuid.uuid4().hex
    results: dict[tuple[str, tuple[int, float]], list[dict[str, Any]]] = {}
    answered = {"off": 0, "on": 0}
    server: Server | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="ctloop-shadow-bench-") as tmp_name:
            tmp = Path(tmp_name)
            tracking = f"sqlite:///{tmp / 'mlflow.db'}"
            print("training and registering two versions ...", flush=True)
            register_version(view, tracking, tmp / "mlartifacts", seed=5)
            v2 = register_version(view, tracking, tmp / "mlartifacts", seed=6, promote=False)
            registry = Registry(tracking, tmp / "mlartifacts")
            store.init([view])
            bodies = tmp / "single.jsonl"
            bodies.write_text("\n".join(json.dumps(r) for r in make_records(view, 400)) + "\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "MLFLOW_"))}
            env.update(CTLOOP_FEATURES_DIR=str(ROOT / "features"), MLFLOW_TRACKING_URI=tracking,
                       FEATURE_STORE_URL=f"{MARIADB}/{db}", CTLOOP_SERVING_WORKERS="2",
                       CTLOOP_SERVING_POLL_SECONDS="600", CTLOOP_ADMIN_TOKEN=token,
                       CTLOOP_DATA_DIR=str(tmp / "serving"), BENTOML_DO_NOT_TRACK="True",
                       BENTOML_HOME=str(tmp / "bentoml"))  # fmt: skip
            if args.shadow_linger is not None:
                env["CTLOOP_SERVING_SHADOW_LINGER_SECONDS"] = str(args.shadow_linger)
            port = free_port()
            server = Server(bentoml_command(port), env, port, tmp / "serve.log", ROOT,
                            ready=every_worker_loaded(2)).start()  # fmt: skip
            server.wait_ready()
            calibration = run_load(server.url, "/predict", bodies, 8, args.duration)
            answered["off"] += calibration["records"]
            capacity = calibration["rps"]
            print(f"capacity without shadow: {capacity:.0f} req/s", flush=True)
            levels += [(OPEN_LOOP_CONNECTIONS, round(share * capacity, -1)) for share in shares]
            for run in range(args.runs):
                for mode in ("off", "on"):
                    if mode == "on":
                        registry.start_trial(view.name, v2, "shadow")
                        _switch(server.url, token, view.name, v2)
                    for level in levels:
                        cpu_before = _cpu(server)
                        got = run_load(server.url, "/predict", bodies, level[0], args.duration,
                                       rate=level[1])  # fmt: skip
                        if got["errors"]:
                            raise SystemExit(
                                f"{mode}: {got['errors']} errors: {got['first_errors']}"
                            )
                        answered[mode] += got["records"]
                        results.setdefault((mode, level), []).append(got)
                        _wait_counts(store, answered, CHAMPION_ROLE, SHADOW_ROLE)
                        # until every row of the test is logged (the shadow's included)
                        cpu = [b - a for a, b in zip(cpu_before, _cpu(server), strict=True)]
                        got["service_cpu_ms"] = cpu[0] * 1000 / got["requests"]
                        got["mariadb_cpu_ms"] = cpu[1] * 1000 / got["requests"]
                        print(f"run {run + 1} shadow {mode:3} {_name(level):28}: {got['rps']:6.0f} "
                              f"req/s  p50 {got['p50_ms']:6.2f} ms  p99 {got['p99_ms']:6.2f} ms",
                              flush=True)  # fmt: skip
                    if mode == "on":
                        registry.end_trial(view.name, "dropped", "benchmark round over")
                        _switch(server.url, token, view.name, None)
            counts = _wait_counts(store, answered, CHAMPION_ROLE, SHADOW_ROLE)
    finally:
        if server is not None:
            server.stop()
        store.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))
    total = answered["off"] + answered["on"]
    check = "OK" if counts[CHAMPION_ROLE] == total else "MISMATCH"
    text = render(results, levels, answered, counts, check, args, capacity)
    print(text)
    args.out.write_text(text)
    if check != "OK":
        sys.exit(1)


def _cpu(server: Server) -> tuple[float, float]:
    """CPU seconds so far of the service's process tree (workers and their shadow scorers)
    and of MariaDB."""
    return tree_cpu_seconds(server.proc.pid), cpu_seconds(processes_named("mariadbd", "mysqld"))


def _wait_counts(store: Any, answered: dict[str, int], champion: str, shadow: str) -> dict:
    """Rows per role once the champion rows reach the answers and the shadow rows reach
    the shadowed answers, or stopped growing for 3 s once the champion rows are all in
    (shadow work shed by an overloaded worker never arrives), or two minutes passed."""
    from ctloop.predlog.store import PredictionLog

    total = answered["off"] + answered["on"]
    deadline = time.monotonic() + 120
    counts: dict[str, int] = {}
    last, still_since = None, time.monotonic()
    while True:
        log = PredictionLog(store)  # the view's typed table and the shared one
        counts = {role: log.count(role=role) for role in (champion, shadow)}
        if counts[champion] >= total and counts[shadow] >= answered["on"]:
            return counts
        if counts != last:
            last, still_since = counts, time.monotonic()
        elif counts[champion] >= total and time.monotonic() - still_since > 3:
            return counts
        if time.monotonic() > deadline:
            return counts
        time.sleep(0.25)


def render(results: dict[tuple[str, tuple[int, float]], list[dict[str, Any]]],
           levels: list[tuple[int, float]],
           answered: dict[str, int], counts: dict[str, int], check: str,
           args: argparse.Namespace, capacity: float) -> str:  # fmt: skip
    def med(mode: str, level: tuple[int, float], key: str) -> float:
        return statistics.median(r[key] for r in results[(mode, level)])

    lines = [
        "# Shadow trials: the caller's latency with and without a challenger",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; `{' '.join(sys.argv)}`",
        f"single-record /predict, two workers, {args.duration:g} s per test, medians of "
        f"{args.runs} runs; MariaDB log. Capacity without shadow (8 closed-loop "
        f"connections, measured first): {capacity:.0f} req/s; open-loop rates are "
        f"{args.shares} of it.",
        "",
        "The p99 ratio is the medians' ratio; the paired one is the median over rounds of "
        "each round's shadow p99 over the same round's no-shadow p99 (both in the same "
        "round, a minute or two apart, so a slow spell of the host is more likely to touch "
        "both). CPU is per answered request, measured until the test's last log row (the "
        "shadow's included) is in; the MariaDB figure includes this script's own polling "
        "of the log's row counts while it waits.",
        "",
        "| load | shadow | req/s | p50 ms | p99 ms | p99 vs no shadow | paired p99 ratio | "
        "service CPU ms/req | MariaDB CPU ms/req | sent late |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        base = med("off", level, "p99_ms")
        pairs = zip(results[("off", level)], results[("on", level)], strict=True)
        paired = statistics.median(on["p99_ms"] / off["p99_ms"] for off, on in pairs)
        for mode in ("off", "on"):
            late = med(mode, level, "sent_late") if level[1] else float("nan")
            lines.append(f"| {_name(level)} | {mode} | {med(mode, level, 'rps'):.0f} | "
                         f"{med(mode, level, 'p50_ms'):.2f} | {med(mode, level, 'p99_ms'):.2f} | "
                         f"{med(mode, level, 'p99_ms') / base:.2f}x | "
                         f"{'' if mode == 'off' else f'{paired:.2f}x'} | "
                         f"{med(mode, level, 'service_cpu_ms'):.2f} | "
                         f"{med(mode, level, 'mariadb_cpu_ms'):.2f} | "
                         f"{'' if late != late else f'{late:.0f}'} |")  # fmt: skip
    lines += ["", "p99 per run (ms), no shadow / shadow:"]
    for level in levels:
        off, on = (", ".join(f"{r['p99_ms']:.1f}" for r in results[(m, level)])
                   for m in ("off", "on"))  # fmt: skip
        lines.append(f"- {_name(level)}: {off} / {on}")
    shed = answered["on"] - counts.get("shadow", 0)
    lines += [
        "",
        f"Answered {answered['off'] + answered['on']} requests ({answered['on']} during "
        f"shadow rounds); champion rows {counts.get('champion', 0)}: {check}; shadow rows "
        f"{counts.get('shadow', 0)} ({shed} shed by overloaded workers).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
