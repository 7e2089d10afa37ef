"""circusd's arbiter runs one command at a time and refuses others meanwhile ("arbiter is
already running watcher_start command"): `make up` failed once on exactly that, adding
the next service while the previous one was still starting. The supervisor asks again
until its timeout; any other refusal still raises at once. The circus client is faked
here (only its answers matter); the real circusd runs in
`tests/integration/test_stack_supervisor.py` and `tests/e2e/test_stack.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctloop.dev.stack import supervisor
from ctloop.dev.stack.supervisor import Supervisor
from ctloop.errors import CtloopError

BUSY = {"status": "error", "reason": "arbiter is already running watcher_start command"}


def fake_client(monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]) -> list[str]:
    """Answer each call with the next answer (the last one repeats); the commands sent."""
    sent: list[str] = []

    class Client:
        def __init__(self, **_: Any) -> None:
            pass

        def call(self, message: dict[str, Any]) -> dict[str, Any]:
            sent.append(message["command"])
            return answers[min(len(sent), len(answers)) - 1]

        def stop(self) -> None:
            pass

    monkeypatch.setattr(supervisor, "CircusClient", Client)
    monkeypatch.setattr(supervisor, "BUSY_RETRY_SECONDS", 0.01)
    return sent


def test_a_busy_arbiter_is_asked_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sent = fake_client(monkeypatch, [BUSY, BUSY, {"status": "ok", "watchers": ["mlflow"]}])
    assert Supervisor(tmp_path, tmp_path / "log", 5)._call("add", name="x")["status"] == "ok"
    assert sent == ["add", "add", "add"]


def test_a_busy_arbiter_past_the_timeout_and_other_refusals_raise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent = fake_client(monkeypatch, [BUSY])
    with pytest.raises(CtloopError, match="already running"):
        Supervisor(tmp_path, tmp_path / "log", 5)._call("add", timeout=0.1, name="x")
    assert len(sent) > 2
    sent = fake_client(monkeypatch, [{"status": "error", "reason": "watcher exists"}])
    with pytest.raises(CtloopError, match="watcher exists"):
        Supervisor(tmp_path, tmp_path / "log", 5)._call("add", name="x")
    assert sent == ["add"]
