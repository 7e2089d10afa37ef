"""The world the integration tests share: a MariaDB feature store with synthetic history,
the settings that name it, and a real MLflow SQLite store.

The CT pipeline, the gates under attack, the DAGs, the monitor, serving and the any-task
tests all start from this, so it is built in one place (`built_world`) and handed over as
one typed `World`. A module that needs more (a promoted champion, an Airflow child, a
running server) keeps it in typed fields of a small subclass, made with `World.extended`:
a misspelt field fails when the module is imported, not halfway through a 10-minute run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from ctloop.features.view import FeatureView
from ctloop.ingest.synth import StreamConfig, stream
from ctloop.registry import Registry
from ctloop.settings import Settings
from ctloop.store.features import FeatureStore
from tests.support.databases import mariadb_database
from tests.support.paths import FEATURES_DIR

W = TypeVar("W", bound="World")


@dataclasses.dataclass(frozen=True)
class History:
    """Days of the seeded synthetic stream, as the store held them on `labels_before`.

    Labels arrive days after their features (the view's `label_delay_days`); only those
    that had arrived before `labels_before` are written, so a run as of that date sees
    exactly what it would have seen in production.
    """

    start: dt.date
    days: int
    rows_per_day: int
    seed: int
    labels_before: dt.date


@dataclasses.dataclass
class World:
    """One test module's feature store, settings and MLflow registry, all in `tmp`."""

    views: dict[str, FeatureView]
    tmp: Path
    url: str
    settings: Settings
    store: FeatureStore
    registry: Registry

    @property
    def view(self) -> FeatureView:
        """The world's view, for the (usual) world of one view."""
        if len(self.views) != 1:
            raise ValueError(f"this world holds {sorted(self.views)}: take one from `views`")
        return next(iter(self.views.values()))

    def extended(self, cls: type[W], **extra: Any) -> W:
        """This world with a module's own fields: `cls` is a subclass of `World`."""
        shared = {field.name: getattr(self, field.name) for field in dataclasses.fields(World)}
        return cls(**shared, **extra)


def write_history(world: World, history: History) -> None:
    """Ingest the history of the world's view, labels cut at `history.labels_before`."""
    view = world.view
    config = StreamConfig(
        seed=history.seed, rows_per_day=history.rows_per_day,
        label_delay_days=view.training.label_delay_days,
    )  # fmt: skip
    cutoff = pd.Timestamp(history.labels_before)
    for _, features, labels in stream(view, history.start, history.days, config):
        world.store.ingest(view, features, labels[labels["arrived_at"] < cutoff])


@contextlib.contextmanager
def built_world(
    tmp: Path,
    views: Sequence[FeatureView],
    *,
    prefix: str = "ctloop_test",
    features_dir: Path = FEATURES_DIR,
    history: History | None = None,
    tracking_uri: str | None = None,
) -> Iterator[World]:
    """A fresh MariaDB database with the views' tables (and `history`, if given), settings
    naming it and an MLflow SQLite store under `tmp` (or the `mlflow server` at
    `tracking_uri`); the database is dropped afterwards.

    Without `history` the caller writes the data itself, e.g. after starting a slow child
    process (Airflow) that can load while the rows are written (`write_history`).
    """
    with mariadb_database(prefix) as url:
        settings = Settings(
            data_dir=tmp,
            features_dir=features_dir,
            feature_store_url=url,
            mlflow_tracking_uri=tracking_uri or f"sqlite:///{tmp / 'mlflow.db'}",
        )
        store = FeatureStore(url)
        try:
            store.init(list(views))
            world = World(
                views={view.name: view for view in views}, tmp=tmp, url=url,
                settings=settings, store=store, registry=Registry.from_settings(settings),
            )  # fmt: skip
            if history is not None:
                write_history(world, history)
            yield world
        finally:
            store.dispose()


@contextlib.contextmanager
def replaced_labels(
    world: World, start: dt.date, as_of: dt.date, change: Callable[[pd.DataFrame], pd.DataFrame]
) -> Iterator[None]:
    """Upsert `change`d labels of the days before `as_of` (same keys, as arrived by then);
    restore the originals afterwards, so the module's later tests see clean data."""
    store, view = world.store, world.view
    original = store.labels_for_days(view, start, as_of, dt.datetime.combine(as_of, dt.time.min))
    store.upsert_labels(view, change(original.copy()))
    try:
        yield
    finally:
        store.upsert_labels(view, original)


@contextlib.contextmanager
def replaced_features(
    world: World, start: dt.date, as_of: dt.date, change: Callable[[pd.DataFrame], pd.DataFrame]
) -> Iterator[None]:
    """Ingest `change`d features of the days before `as_of` (same keys); restore the
    originals afterwards."""
    store, view = world.store, world.view
    original = store.latest_features(view, as_of, 10**9, since=start).sort_values(
        [view.event_date, view.entity], ignore_index=True
    )
    store.ingest(view, change(original.copy()))
    try:
        yield
    finally:
        store.ingest(view, original)
