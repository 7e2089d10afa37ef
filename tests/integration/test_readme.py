"""The README's command blocks run as written (issue 20): a reader copying them gets what
the README promises, or this test fails naming the block and its output.

Unmarked blocks run here, in order, in one sandbox (a copy of `features/` and
`examples/`, the data folder in a temp dir), so state carries from block to block as it
does for a reader. The MariaDB block's database is swapped for a throw-away one. Blocks
marked `# readme-test: stack` run in `tests/e2e/test_stack.py` against a real `make up`;
`# readme-test: skip (...)` blocks say why they are not run.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from tests.support.databases import mariadb_database
from tests.support.paths import ROOT
from tests.support.readme import readme_blocks, run_block, shim_path

README_MARIADB = "mysql+pymysql://root@127.0.0.1:3306/ctloop"


def test_every_block_is_run_or_says_why_not() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 10
    for block in blocks:
        if block.kind == "skip":
            assert block.why, f"README line {block.line}: a skipped block must say why"
    runnable = [b for b in blocks if b.kind == "run"]
    assert len(runnable) >= 3, [b.name for b in blocks]
    assert any(b.kind == "stack" and "ctloop airflow" in b.text for b in blocks)
    assert not any("\nairflow " in f"\n{b.text}" for b in blocks), "bare `airflow` is not on PATH"


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_blocks_run_as_written(clean_env: dict[str, str], tmp_path: Path) -> None:
    sandbox = tmp_path / "checkout"
    for folder in ("features", "examples"):
        shutil.copytree(ROOT / folder, sandbox / folder)
    env = {**clean_env, "PATH": shim_path(tmp_path), "CTLOOP_DATA_DIR": str(sandbox / "data")}
    blocks = [b for b in readme_blocks() if b.kind == "run"]
    with mariadb_database("ctloop_readme") as mariadb_url:
        for block in blocks:
            text = block.text.replace(README_MARIADB, mariadb_url)
            done = run_block(dataclasses.replace(block, text=text), sandbox, env)
            assert done.returncode == 0, (
                f"README block at line {block.line} failed (exit {done.returncode}):\n"
                f"{block.text}\n--- stdout ---\n{done.stdout[-3000:]}\n"
                f"--- stderr ---\n{done.stderr[-3000:]}"
            )
            assert "Traceback" not in done.stderr, done.stderr[-3000:]
