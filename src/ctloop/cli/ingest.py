"""`ctloop ingest`: one ingestion run of a view's sources by hand, the same code the
`ingest_<view>` DAG's `land` task runs (without the Asset: a hand run does not start CT)."""

from __future__ import annotations

import datetime as dt
import uuid

import click

from ctloop.cli.app import ISO_TIME, cli, echo_json, parse_datetime, settings_store, view_named


@cli.command("ingest")
@click.argument("view")
@click.option("--since", metavar=ISO_TIME, callback=parse_datetime,
              help="Start of the interval (ISO 8601, UTC unless it has an offset). "
                   "Empty: SQL sources read from their watermark.")  # fmt: skip
@click.option("--until", metavar=ISO_TIME, callback=parse_datetime,
              help="End of the interval, excluded (ISO 8601). Empty: now; with --since "
                   "a date only, the end of that day.")  # fmt: skip
def ingest(view: str, since: dt.datetime | None, until: dt.datetime | None) -> None:
    """Take new rows and late labels from every source VIEW declares (`sources:` in its
    YAML): new files of its drop folders, a SQL source's interval, the synthetic stream.

    Files are taken once (ledger by checksum) whatever the interval. SQL sources read
    `since <= column < until`; without --since, everything after their watermark. SQL
    sources' connections are Airflow connections (AIRFLOW_CONN_<ID> or the metadata DB).
    Prints the run's summary; the same summary is in `ctloop status`.
    """
    from ctloop.ingest.sources import Interval  # (b) light CLI start
    from ctloop.orchestration.ingest import run_ingest  # (b) as above

    fv = view_named(view)
    if since is not None and until is None and since.time() == dt.time.min:
        until = since + dt.timedelta(days=1)
    if since is not None and until is not None and until <= since:
        raise click.BadParameter("--until must be after --since", param_hint="--until")
    store = settings_store()
    run_id = f"cli__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:6]}"
    url = store.url.render_as_string(hide_password=False)
    store.dispose()
    echo_json(run_ingest(fv.name, Interval(since, until), run_id=run_id, store_url=url))
