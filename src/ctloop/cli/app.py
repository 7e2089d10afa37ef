"""The `ctloop` command group and what its commands share: view and date arguments,
the store of the settings, JSON output.

Commands import the library inside their bodies: `ctloop --help` and `ctloop status`
must not pay for MLflow, CatBoost and Airflow, which only training and the demo use.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import TYPE_CHECKING

import click

from ctloop.features.view import FeatureView, load_view
from ctloop.settings import get_settings

if TYPE_CHECKING:
    from ctloop.store.features import FeatureStore

log = logging.getLogger("ctloop")


def view_named(name: str | None) -> FeatureView:
    """The named view, or the settings' default view (CTLOOP_DEFAULT_VIEW)."""
    if name is None:
        name = get_settings().default_view
    return load_view(name)


def settings_store() -> FeatureStore:
    """The feature store of the settings (FEATURE_STORE_URL, else the embedded file)."""
    from ctloop.store.features import FeatureStore  # (b) light CLI start

    return FeatureStore.from_settings()


def parse_date(_ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    """Click callback: a YYYY-MM-DD option, with an error naming the option."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD)", param=param) from exc


def parse_datetime(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> dt.datetime | None:
    """Click callback: an ISO 8601 date or time option as naive UTC (the clock of the
    store and the prediction log), with an error naming the option. A time with an offset
    is converted, so `--since 2026-02-10T08:00+02:00` means 06:00 UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"'{value}' is not a date or time (ISO 8601)", param=param
        ) from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


ISO_TIME = "ISO-TIME"  # the metavar of the time options, whose help names the format


view_argument = click.argument("view", required=False, metavar="[VIEW]")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="ctloop")
def cli(verbose: bool) -> None:
    """ctloop: continuous training of CatBoost models over a feature store.

    VIEW is a feature view name from the features folder (default: $CTLOOP_DEFAULT_VIEW,
    credit_score).
    Configuration comes from the environment and .env (see .env.example).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def echo_json(data: object) -> None:
    """Print a step's outcome as indented JSON (what the DAG would put in XCom)."""
    click.echo(json.dumps(data, indent=2, default=str))
