"""Serving settings: everything the prediction service can be told from outside.

Read once per process from the environment (and `.env`), prefixed `CTLOOP_SERVING_`, and
validated at start so a typo fails the service loudly instead of serving with a default.
Where things are shared with the rest of ctloop (store URL, tracking URI, admin token,
data folder, default view) the ordinary `ctloop.settings.Settings` is used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ctloop.settings import Settings

LogMode = Literal["async", "off", "sync"]

MIN_ADMIN_TOKEN = 16
_PLACEHOLDER = re.compile(r"change[-_ ]?me|replace[-_ ]?me|placeholder|your[-_ ]?token|example",
                          re.IGNORECASE)  # fmt: skip


def admin_token_problem(token: str | None) -> str | None:
    """Why CTLOOP_ADMIN_TOKEN must not guard /admin/reload, or None when it may.

    A placeholder (`.env.example`'s "change-me-to-a-long-random-string", anything
    "change-me"-like) or a token shorter than 16 characters is one an attacker guesses.
    The service then keeps serving predictions, but the admin endpoint is disabled, with
    a warning at start and the reason in /metadata: refusing to start would take the
    predictions down over a setting only the reload needs. Unset is not a problem: the
    endpoint is simply off, as documented.
    """
    if not token:
        return None
    if _PLACEHOLDER.search(token):
        return "CTLOOP_ADMIN_TOKEN is a placeholder; set a long random value"
    if len(token) < MIN_ADMIN_TOKEN:
        return f"CTLOOP_ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN} characters"
    if len(set(token)) < 4:
        return "CTLOOP_ADMIN_TOKEN repeats too few characters to be secret"
    return None


SHADOW_LINGER_SECONDS = 0.25
"""How long a worker gathers shadow work after its first record before its shadow scorer
gets one frame (`serving.shadow`). Sent per request, a shadow costs a pickle, a pipe
write, a wake-up of the child and a model call for every request the worker answers;
gathered, one of each per frame (at 200 req/s per worker about 50 records per call:
CatBoost's cost per call dwarfs its cost per row). Shadow rows are evidence for a trial
read minutes later, so a quarter second is free."""


class ServingConfig(BaseSettings):
    """Knobs of the BentoML service; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_prefix="CTLOOP_SERVING_",
        extra="ignore",
        frozen=True,
    )

    view: str | None = Field(default=None, description="feature view served (default view)")
    workers: int = Field(default=2, ge=1, le=64, description="worker processes")
    threads: int = Field(default=1, ge=1, description="request threads per worker")
    model_threads: int = Field(default=1, ge=1, description="CatBoost threads per prediction")
    timeout_seconds: float = Field(default=30, gt=0, description="request timeout")
    max_batch: int = Field(default=1000, ge=1, description="records per /predict_batch")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="largest request body (413 above)"
    )
    poll_seconds: float = Field(default=30, gt=0, description="registry poll interval")
    log_mode: LogMode = Field(default="async", description="async | off | sync (benchmarks)")
    log_batch_size: int = Field(default=2_000, ge=1, description="rows per log insert")
    log_flush_seconds: float = Field(default=1.0, gt=0, description="max wait to fill a batch")
    log_queue_max: int = Field(default=20_000, ge=1, description="rows held in memory")
    log_retry_seconds: float = Field(default=5.0, gt=0, description="database retry interval")
    journal: bool = Field(default=True, description="rows on disk before each answer")
    journal_fsync_seconds: float = Field(
        default=1.0, ge=0, description="fsync the journal this often (0: every answer)"
    )
    shadow_linger_seconds: float = Field(
        default=SHADOW_LINGER_SECONDS,
        ge=0,
        le=10,
        description="shadow work gathered per model call",
    )
    state_dir: Path | None = Field(default=None, description="spill files and reload signal")

    def view_name(self, settings: Settings) -> str:
        """The view this service answers for: its own setting, else the project's default,
        so one deployment can serve a second view without changing the shared settings."""
        return self.view or settings.default_view

    def resolved_state_dir(self, settings: Settings) -> Path:
        """Where spill files and the reload signal live (default: <data dir>/serving)."""
        return self.state_dir or settings.data_dir / "serving"
