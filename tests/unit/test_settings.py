"""Settings read from a given mapping (what the local stack resolves for the processes it
starts) follow the same rules as the environment and leave the process's own untouched."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from ctloop.settings import Settings, settings_from


def test_settings_from_a_mapping_ignore_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEATURE_STORE_URL", "sqlite:////from/the/process.db")
    monkeypatch.setenv("CTLOOP_DEFAULT_VIEW", "from_process")
    before = dict(os.environ)
    given = {"FEATURE_STORE_URL": "mysql+pymysql://u@db/fs", "CTLOOP_DEFAULT_VIEW": "wine"}
    settings = settings_from(Settings, given)
    assert isinstance(settings, Settings)
    assert settings.feature_store_url == "mysql+pymysql://u@db/fs"
    assert settings.default_view == "wine"
    assert dict(os.environ) == before
    assert settings_from(Settings, {}).default_view == Settings.model_fields["default_view"].default


def test_settings_from_a_mapping_validate_as_the_environment_does() -> None:
    with pytest.raises(ValidationError, match="FEATURE_STORE_URL"):
        settings_from(Settings, {"FEATURE_STORE_URL": "not a url"})
