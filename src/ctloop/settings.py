"""One typed settings object, read from the environment and `.env`.

Settings are validated once at the boundary (CLI, DAG task, service start) and then passed
around frozen, so a typo in a URL fails loudly at start instead of deep inside a task.
With nothing configured everything lives in embedded SQLite files under the data folder,
which is what lets `make demo` run on a bare machine.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources import PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from ctloop.errors import CtloopError


def project_root() -> Path | None:
    """The source checkout this package runs from, if any (editable install / src layout)."""
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").is_file() else None


def _default_data_dir() -> Path:
    root = project_root()
    return (root / "data") if root else Path.home() / ".ctloop"


def _default_features_dir() -> Path:
    cwd_features = Path.cwd() / "features"
    if cwd_features.is_dir():
        return cwd_features
    root = project_root()
    return (root / "features") if root else cwd_features


class Settings(BaseSettings):
    """Everything ctloop can be told from outside; `.env.example` documents each variable."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_prefix="CTLOOP_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    features_dir: Path = Field(default_factory=_default_features_dir)
    feature_store_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FEATURE_STORE_URL", "CTLOOP_FEATURE_STORE_URL"),
    )
    feature_store_read_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FEATURE_STORE_READ_URL", "CTLOOP_FEATURE_STORE_READ_URL"),
    )
    replica_max_lag_seconds: float = Field(default=30.0, gt=0)
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CTLOOP_MLFLOW_TRACKING_URI"),
    )
    mlflow_artifact_root: Path | None = None
    serving_url: str | None = None
    admin_token: str | None = None
    default_view: str = "credit_score"
    extract_chunk_rows: int = Field(default=50_000, gt=0)
    write_batch_rows: int = Field(default=5_000, gt=0)
    task_retry_delay_seconds: float = Field(default=60.0, ge=0)
    """How long Airflow waits before it retries a failed I/O step of a ctloop DAG."""
    log_bulk_load: bool = True
    """Write prediction log batches to MariaDB/MySQL with LOAD DATA LOCAL INFILE (half the
    server CPU per row of the INSERT path) where the server allows it
    (ctloop.predlog.store)."""
    log_retention_days: int | None = Field(default=None, gt=0)
    """Whole days of prediction log a monitor check keeps (None: every row); the disk
    fills otherwise (ctloop.predlog.retention)."""

    @field_validator("feature_store_url", "feature_store_read_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        # (a) settings load at DAG parse time (the views read them) and for `ctloop --help`
        from sqlalchemy.engine import make_url  # (a) see above
        from sqlalchemy.exc import ArgumentError  # (a) see above

        try:
            make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a SQLAlchemy URL: {exc}") from exc
        return value

    @property
    def store_url(self) -> str:
        """The feature store URL, falling back to the embedded SQLite file."""
        return self.feature_store_url or f"sqlite:///{self.data_dir / 'feature_store.db'}"

    @property
    def artifact_root(self) -> Path:
        """Where a local MLflow store keeps artifacts (a server manages its own)."""
        return self.mlflow_artifact_root or self.data_dir / "mlartifacts"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI, falling back to an embedded SQLite store."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"


_SECRET_WORDS = ("url", "uri", "token", "password", "secret", "key", "conn")


def env_name(model: type[BaseSettings], field: str) -> str:
    """The environment variable a settings field is read from (its first alias, else the
    model's prefix + the field name), which is what a user has to fix."""
    info = model.model_fields.get(field)
    if info is None:  # pydantic names a field read through an alias by that alias
        return field
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{model.model_config.get('env_prefix', '')}{field}".upper()


def settings_error(model: type[BaseSettings], exc: Any) -> CtloopError:
    """A pydantic ValidationError of a settings model as one CtloopError naming each
    variable, its problem and the value given."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        name = env_name(model, loc[0]) if loc else "settings"
        secret = any(word in name.lower() for word in _SECRET_WORDS)  # a URL holds passwords
        value = err.get("input")
        given = f" (got {value!r})" if isinstance(value, str | int) and not secret else ""
        lines.append(f"{'.'.join([name, *loc[1:]])}: {err['msg']}{given}")
    return CtloopError("invalid settings:\n  " + "\n  ".join(lines))


@functools.cache
def get_settings() -> Settings:
    """Settings for this process, validated once; errors name the variable at fault."""
    try:
        return Settings()
    except ValidationError as exc:
        raise settings_error(Settings, exc) from exc


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def settings_from(model: type[SettingsT], environ: Mapping[str, str]) -> SettingsT:
    """Settings read from `environ` instead of the process environment and `.env`.

    The local stack resolves the settings of processes it is about to start (its own
    environment merged with the checkout's `.env` and overrides), so it must not read,
    let alone rewrite, its own `os.environ`. The same rules apply (prefixes, aliases,
    validation); only the source of the variables differs.
    """

    class _Given(EnvSettingsSource):
        def _load_env_vars(self) -> Mapping[str, str | None]:
            return parse_env_vars(
                environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
            )

    def sources(
        cls: type[BaseSettings],
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_others: PydanticBaseSettingsSource,  # the environment, `.env`, secrets: not read
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _Given(settings_cls))

    given = type(model.__name__, (model,), {"settings_customise_sources": classmethod(sources)})
    return given()
