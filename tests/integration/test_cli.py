"""The `ctloop` command as a user runs it: a real process, real databases, exit codes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import click
import pytest

from ctloop.cli import cli
from tests.support.paths import ROOT


def run(
    args: list[str],
    env_url: str,
    tmp_path: Path,
    ok: bool = True,
    base_env: Mapping[str, str] | None = None,
    timeout: float = 300,
):
    env = {
        **(os.environ if base_env is None else base_env),
        "FEATURE_STORE_URL": env_url,
        "CTLOOP_DATA_DIR": str(tmp_path / "data"),
        "CTLOOP_FEATURES_DIR": str(ROOT / "features"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "ctloop.cli", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def _counts(output: str) -> dict[str, int]:
    return {
        m.group(1): int(m.group(2).replace(",", ""))
        for m in re.finditer(r"^\s+(\w+)\s+([\d,]+) rows$", output, re.MULTILINE)
    }


def test_init_generate_twice_status(store_url: str, tmp_path: Path) -> None:
    run(["init-db"], store_url, tmp_path)
    run(["init-db"], store_url, tmp_path)  # safe to repeat
    args = ["generate", "--days", "4", "--rows-per-day", "150", "--start", "2026-02-01",
            "--labels-until", "2026-02-10"]  # fmt: skip
    first = run(args, store_url, tmp_path)
    assert "[4/4] 2026-02-04: 150 feature rows" in first.stderr
    assert re.search(r"\[4/4\] .* \([\d,]+ rows/s so far\)", first.stderr)  # progress
    counts_1 = _counts(run(["status"], store_url, tmp_path).stdout)
    run(args, store_url, tmp_path)
    status = run(["status", "--days", "0"], store_url, tmp_path).stdout
    assert _counts(status) == counts_1
    assert counts_1["credit_score_features"] == 600
    # labels arrive 7 days later: only those of 2026-02-01 and -02 had by 2026-02-10
    assert counts_1["credit_score_labels"] == 300
    assert re.search(r"2026-02-01\s+150\s+150\s+100%", status)
    assert re.search(r"2026-02-04\s+150\s+0\s+0%", status)


def test_import_error_exits_2_with_row_and_column(store_url: str, tmp_path: Path) -> None:
    run(["init-db"], store_url, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,event_date,age\nC1,2026-01-01,abc\n")
    result = run(["import", "credit_score", str(bad)], store_url, tmp_path, ok=False)
    assert result.returncode == 2
    assert "column 'interest_rate': column is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database(tmp_path: Path) -> None:
    url = "mysql+pymysql://root@127.0.0.1:9/ctloop"
    result = run(["init-db"], url, tmp_path, ok=False)
    assert result.returncode == 2
    assert "127.0.0.1:9" in result.stderr
    assert "unreachable" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_mlflow_fails_fast_in_one_line(sqlite_url: str, tmp_path: Path) -> None:
    """Issue 20: `ctloop models` against a dead MLflow port hung 4 min, then a traceback."""
    uri = f"http://ops:hunter2@127.0.0.1:{_free_port()}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    base["MLFLOW_TRACKING_URI"] = uri
    try:
        result = run(["models"], sqlite_url, tmp_path, ok=False, base_env=base, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("ctloop models did not give up on a dead MLflow server within 30 s")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "MLFLOW_TRACKING_URI http://ops:***@127.0.0.1:" in errors[0]
    assert "gave up after" in errors[0] and "MLFLOW_HTTP_REQUEST_TIMEOUT" in errors[0]
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgres://ops:hunter2@127.0.0.1/ctloop", "SQLAlchemy spells it postgresql://"),
        ("mysql+nosuchdriver://ops:hunter2@127.0.0.1/ctloop", "no such SQLAlchemy dialect"),
        ("postgresql+pg8000://ops:hunter2@127.0.0.1/ctloop", "driver is not installed"),
    ],
)
def test_store_url_with_unusable_scheme_names_setting_and_schemes(
    url: str, problem: str, tmp_path: Path
) -> None:
    result = run(["status"], url, tmp_path, ok=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: FEATURE_STORE_URL ") and problem in line
    assert "accepted schemes: sqlite:///PATH, mysql+pymysql://" in line


def test_bad_settings_name_the_variable_and_keep_secrets(tmp_path: Path) -> None:
    bad_url = run(["status"], "mysql+pymysql://ctloop:hunter2@db:port/ctloop", tmp_path, ok=False)
    assert bad_url.returncode == 2
    assert "FEATURE_STORE_URL:" in bad_url.stderr and "hunter2" not in bad_url.stderr
    env = {**os.environ, "CTLOOP_DATA_DIR": str(tmp_path), "CTLOOP_EXTRACT_CHUNK_ROWS": "0"}
    bad_number = subprocess.run(
        [sys.executable, "-m", "ctloop.cli", "status"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad_number.returncode == 2
    assert "CTLOOP_EXTRACT_CHUNK_ROWS: Input should be greater than 0 (got '0')" in (
        bad_number.stderr
    )


def test_malformed_view_is_named(tmp_path: Path) -> None:
    features = tmp_path / "views"
    features.mkdir()
    (features / "credit_score.yaml").write_text("name: credit_score\nentity: 3\n")
    env_url = f"sqlite:///{tmp_path / 's.db'}"
    env = {**os.environ, "CTLOOP_FEATURES_DIR": str(features), "FEATURE_STORE_URL": env_url}
    result = subprocess.run(
        [sys.executable, "-m", "ctloop.cli", "show-view"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "credit_score.yaml: entity: Input should be a valid string" in result.stderr
    assert "credit_score.yaml: label: Field required" in result.stderr


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_help(command: str, tmp_path: Path) -> None:
    result = run([command, "--help"], f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    assert "Usage:" in result.stdout
    assert len(result.stdout.splitlines()) > 3
    options = [p for p in cli.commands[command].params if isinstance(p, click.Option)]
    for option in options:  # every option says what it is for, in the text users read
        assert option.help, f"{command} {option.opts[0]} has no help text"
        assert option.opts[0] in result.stdout


def test_time_options_name_their_format(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    for command, option in [("monitor", "--since"), ("monitor", "--until"),
                            ("generate", "--labels-until"), ("labels", "--until")]:  # fmt: skip
        text = " ".join(run([command, "--help"], url, tmp_path).stdout.split())
        assert f"{option} ISO-TIME" in text, command
        assert "ISO 8601" in text and "UTC" in text, command
    assert (
        "--trigger [manual|schedule|new-data|drift]" in run(["train", "-h"], url, tmp_path).stdout
    )


def test_train_reports_each_step_on_stderr_and_json_on_stdout(
    sqlite_url: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """A run of minutes says what it is doing as it goes: one log line as each step starts
    and one as it ends with its headline, in order; stdout stays one JSON document."""
    env = {**clean_env, "CTLOOP_DATA_DIR": str(tmp_path / "data")}  # MLflow in there too
    run(["init-db"], sqlite_url, tmp_path, base_env=env)
    run(["generate", "--days", "30", "--rows-per-day", "200", "--start", "2026-01-01",
         "--labels-until", "2026-03-01"], sqlite_url, tmp_path, base_env=env)  # fmt: skip
    result = run(["train", "--as-of", "2026-01-31", "--reason", "cli progress test"],
                 sqlite_url, tmp_path, base_env=env)  # fmt: skip
    out = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert out["promoted"] is True
    version, fingerprint = out["train"]["version"], out["extract"]["fingerprint"]
    progress = [line.split(" ctloop.cli.loop: ", 1)[1] for line in result.stderr.splitlines()
                if " INFO ctloop.cli.loop: " in line]  # fmt: skip
    steps = ["extract", "data_gate", "train", "model_gate", "infra_check", "promote"]
    assert [line.split(":")[0] for line in progress] == [
        f"[{i}/6] {step}" for i, step in enumerate(steps, 1) for _ in ("start", "end")
    ]
    assert all(line.endswith(": started") for line in progress[::2])
    ends = dict(zip(steps, progress[1::2], strict=True))
    assert re.search(r"done in \d+\.\ds: ", ends["extract"])
    assert (
        f"{out['extract']['rows']} rows (2025-12-02..2026-01-30), fingerprint {fingerprint}"
        in (ends["extract"])
    )
    assert ends["data_gate"].endswith(f"passed ({len(out['data_gate']['checks'])} checks)")
    assert ends["train"].endswith(f"version {version}")
    assert "blessed: macro_f1 " in ends["model_gate"] and "(no champion)" in ends["model_gate"]
    assert f"champion is version {version}" in ends["promote"]
    assert result.stderr.rstrip().endswith(f"credit_score version {version}: promoted")


def test_drift_scenario_needs_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run(["generate", "--scenario", "concept_drift"], url, tmp_path, ok=False)
    assert result.returncode == 2
    assert "--drift-start" in result.stderr


def test_labels_land_later_from_the_synthetic_stream(store_url: str, tmp_path: Path) -> None:
    run(["init-db"], store_url, tmp_path)
    common = ["--start", "2026-02-01", "--days", "3", "--rows-per-day", "100"]
    run(["generate", *common[:2], "--days", "3", "--rows-per-day", "100", "--no-labels"],
        store_url, tmp_path)  # fmt: skip
    assert _counts(run(["status"], store_url, tmp_path).stdout)["credit_score_labels"] == 0
    # labels arrive 7 days after their day: by 2026-02-09 those of 02-01 have landed
    landed = run(["labels", *common, "--until", "2026-02-09"], store_url, tmp_path)
    assert "100 labels landed for credit_score" in landed.stdout
    run(["labels", *common, "--until", "2026-02-20"], store_url, tmp_path)
    assert _counts(run(["status"], store_url, tmp_path).stdout)["credit_score_labels"] == 300


def test_labels_csv_is_validated(sqlite_url: str, tmp_path: Path) -> None:
    run(["init-db"], sqlite_url, tmp_path)
    good = tmp_path / "labels.csv"
    good.write_text("customer_id,event_date,credit_score,arrived_at\n"
                    "C1,2026-01-01,Good,2026-01-08 10:00:00\n")  # fmt: skip
    assert "1 labels written" in run(["labels", "--file", str(good)], sqlite_url, tmp_path).stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,event_date,credit_score\nC1,2026-01-01,Excellent\n")
    result = run(["labels", "--file", str(bad)], sqlite_url, tmp_path, ok=False)
    assert result.returncode == 2
    assert "row 1, column 'credit_score': unknown class 'Excellent'" in result.stderr
