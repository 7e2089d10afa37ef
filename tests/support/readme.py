"""The README's ```bash blocks as tests run them: parsed, classified by marker, run as written.

A block's first line may carry a visible marker that says how the tests treat it:

* `# readme-test: skip (<why>)` — not run (an example, a long-running server, the demo);
* `# readme-test: stack` — run by `tests/e2e/test_stack.py` against a real `make up`;
* no marker — run by `tests/integration/test_readme.py` in a sandbox.

Blocks run through bash, in order, with the text as written. `uv run` is answered by a
shim on PATH that runs the command in this test's environment (the project's venv): the
real `uv run` would sync a venv for the sandbox's copy, which is not what a reader does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import ROOT

README = ROOT / "README.md"
MARKER = re.compile(r"^#\s*readme-test:\s*(?P<kind>skip|stack)\b(?P<why>.*)$")

UV_SHIM = """#!/bin/sh
# `uv run [--frozen] CMD...` as the README writes it: CMD from the project's venv
[ "$1" = run ] || { echo "uv shim: only 'uv run' is supported" >&2; exit 2; }
shift
[ "$1" = --frozen ] && shift
exec "$@"
"""


@dataclass(frozen=True)
class Block:
    """One ```bash block of the README: where it starts, its marker, its text."""

    line: int
    kind: str  # "run", "skip" or "stack"
    why: str
    text: str

    @property
    def name(self) -> str:
        """A test id: the line and the first command."""
        first = next(
            (ln for ln in self.text.splitlines() if ln.strip() and not ln.startswith("#")), ""
        )
        return f"L{self.line}:{first.split('#')[0].strip()[:40]}"


def readme_blocks(path: Path = README) -> list[Block]:
    """Every ```bash block of the README, with its marker."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            found = MARKER.match(body[0].strip()) if body else None
            kind = found.group("kind") if found else "run"
            why = found.group("why").strip(" -—()") if found else ""
            blocks.append(Block(start + 1, kind, why, "\n".join(body)))
        i += 1
    return blocks


def shim_path(tmp: Path) -> str:
    """A PATH with the `uv` shim and this venv's scripts first."""
    bin_dir = tmp / "shim-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "uv"
    shim.write_text(UV_SHIM)
    shim.chmod(0o755)
    venv_bin = Path(sys.executable).parent
    system = "/usr/local/bin:/usr/bin:/bin"
    return f"{bin_dir}:{venv_bin}:{system}"


def run_block(
    block: Block, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a block with bash, stopping at the first failing command (`set -e`)."""
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run(
        [bash, "-e", "-o", "pipefail", "-c", block.text],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
