"""The parts of a feature view: features, label, training window, gates, import options.

Each part is a strict, frozen pydantic model that refuses what it cannot mean (a numeric
feature with categories, a binary label without its positive class), so a wrong view
fails when it loads with the key and the problem, before anything touches data. How the
feature rules are applied to values (import, data gate, serving) is decided in one place,
`ctloop.features.schema`; `FeatureView` (`ctloop.features.view`) assembles the parts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ctloop.features.kinds import LabelKind

IDENTIFIER = r"^[a-z][a-z0-9_]{0,47}$"
# The longest entity key and category the store's columns, the prediction log and the
# request model take: one figure, so a value the edge accepts always fits the table.
ENTITY_LEN = 64
CATEGORY_LEN = 64
# What a missing category becomes in model input and in drift profiles: CatBoost needs a
# string, and "missing" must stay one category apart from every real one.
MISSING = "__missing__"

# names become SQL columns and MLflow keys: lower-case identifiers only
Identifier = Annotated[str, Field(pattern=IDENTIFIER)]


class StrictModel(BaseModel):
    """A part of a view: unknown keys are typos, refused; frozen, since a loaded view is
    shared by every part of a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureType(StrEnum):
    """How a feature's values are read: numbers (with a range) or a category list."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class Feature(StrictModel):
    """One model input: its type, nullability and allowed values."""

    name: Identifier
    type: FeatureType
    description: str = ""
    nullable: bool = False
    # numeric only
    min: float | None = None
    max: float | None = None
    integer: bool = False
    # categorical only
    categories: list[str] | None = None
    allow_unseen: bool = False
    # data gate: the largest share of missing values training data may have
    max_missing_rate: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type is FeatureType.NUMERIC:
            if self.categories is not None or self.allow_unseen:
                raise ValueError("numeric features take min/max, not categories/allow_unseen")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        else:
            if self.min is not None or self.max is not None or self.integer:
                raise ValueError("categorical features take categories, not min/max/integer")
            if not self.categories:
                raise ValueError("categorical features need a non-empty 'categories' list")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError("'categories' has duplicates")
            if any(len(c) > CATEGORY_LEN for c in self.categories):
                raise ValueError(f"a category is longer than {CATEGORY_LEN} characters")
        if not self.nullable and self.max_missing_rate not in (None, 0):
            raise ValueError("max_missing_rate needs nullable: true")
        return self

    @property
    def is_numeric(self) -> bool:
        """Numeric features get ranges and distances; the others get category sets."""
        return self.type is FeatureType.NUMERIC


class Label(StrictModel):
    """The target: its column, its kind, and for classification the classes in a fixed order.

    `kind` may be left out only for three or more classes (multiclass, as views written
    before kinds existed); a two-class label must say `kind: binary` and name its
    `positive_class`, because "which class is positive" decides ROC-AUC, precision and
    the score serving returns, and guessing it from sort order is how AUCs get inverted.
    """

    name: Identifier
    kind: LabelKind | None = None
    classes: list[str] | None = None
    # binary only: the class whose probability is "the score"
    positive_class: str | None = None
    # binary only: score at or above which the positive class is predicted
    decision_threshold: float = Field(default=0.5, gt=0, lt=1)
    # regression only: the values a label may take (import refuses others)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Label:
        classes = self.classes
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError("'classes' has duplicates")
        if classes is not None and any(len(c) > CATEGORY_LEN or not c for c in classes):
            raise ValueError(f"a class is empty or longer than {CATEGORY_LEN} characters")
        kind = self.kind
        if kind is None:
            if classes is None:
                raise ValueError(
                    "label needs 'kind': binary (with classes and positive_class), "
                    "multiclass (with classes) or regression"
                )
            if len(classes) < 3:
                raise ValueError(
                    "a label with two classes needs 'kind: binary' and 'positive_class' "
                    "(the class whose probability is the score)"
                )
            object.__setattr__(self, "kind", LabelKind.MULTICLASS)
            kind = LabelKind.MULTICLASS
        if kind is LabelKind.REGRESSION:
            if classes is not None or self.positive_class is not None:
                raise ValueError("a regression label takes min/max, not classes/positive_class")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
            return self
        if self.min is not None or self.max is not None:
            raise ValueError("min/max are for regression labels; classification takes classes")
        if kind is LabelKind.BINARY:
            if classes is None or len(classes) != 2:
                raise ValueError("a binary label needs exactly two 'classes'")
            if self.positive_class is None:
                raise ValueError(
                    "a binary label needs 'positive_class': the class whose probability is "
                    f"the score (one of {classes})"
                )
            if self.positive_class not in classes:
                raise ValueError(f"positive_class '{self.positive_class}' is not in {classes}")
        else:
            if classes is None or len(classes) < 3:
                raise ValueError(
                    "a multiclass label needs at least three 'classes' (two classes: "
                    "kind: binary with positive_class)"
                )
            if self.positive_class is not None:
                raise ValueError("positive_class is for binary labels")
        return self

    @property
    def is_regression(self) -> bool:
        """A regression label has no classes: values are answered and scored by error."""
        return self.kind is LabelKind.REGRESSION

    @property
    def is_binary(self) -> bool:
        """Two classes: the only kind with a positive class, a score and a threshold."""
        return self.kind is LabelKind.BINARY

    @property
    def class_list(self) -> list[str]:
        """The classes (empty for regression), so loops over classes need no None check."""
        return list(self.classes or [])

    @property
    def negative_class(self) -> str | None:
        """The class a binary score below the threshold means (None for other kinds)."""
        if not self.is_binary:
            return None
        return next(c for c in self.class_list if c != self.positive_class)


class Training(StrictModel):
    """What a training run reads and how it splits it."""

    window_days: int = Field(default=60, gt=0)
    # drift-triggered runs read this shorter, recent window: after a concept change the
    # old days teach the old rule (None: the same window as any other run)
    drift_window_days: int | None = Field(default=None, gt=0)
    validation_days: int = Field(default=7, gt=0)
    label_delay_days: int = Field(default=7, ge=0)
    iterations: int = Field(default=500, gt=0)
    learning_rate: float | None = Field(default=None, gt=0)
    depth: int = Field(default=6, ge=1, le=16)
    early_stopping_rounds: int = Field(default=50, gt=0)
    # the newest share of the training rows early stopping watches; the validation days
    # stay unseen until the model gate (0: no early stopping, all iterations)
    early_stopping_share: float = Field(default=0.15, ge=0, lt=0.5)
    # after a concept change the monitor found, rows from before it weigh this much while
    # the days since the change hold fewer than gates.data.min_rows labelled rows
    pre_change_weight: float = Field(default=0.1, gt=0, le=1)
    seed: int = 42

    @model_validator(mode="after")
    def _split_fits(self) -> Training:
        if self.validation_days >= min(
            self.window_days, self.drift_window_days or self.window_days
        ):
            raise ValueError(
                "validation_days must be smaller than window_days and drift_window_days"
            )
        return self


class DataGate(StrictModel):
    """Gate 1 (TFX ExampleValidator style): stop before training on bad data."""

    min_rows: int = Field(default=1000, gt=0)
    min_validation_rows: int = Field(default=200, gt=0)
    max_missing_rate: float = Field(default=0.2, ge=0, le=1)
    max_out_of_range_rate: float = Field(default=0.0, ge=0, le=1)
    max_unseen_category_rate: float = Field(default=0.05, ge=0, le=1)
    min_class_share: float = Field(default=0.02, ge=0, lt=1)
    max_skew_distance: float = Field(default=0.2, gt=0, le=1)
    # target leakage: a feature whose one-feature model reaches this skill on the
    # validation days (1 - loss / loss of the label alone; 1 = a copy of the label)
    # refuses the run, unless the feature is listed in leakage_allowed
    max_single_feature_skill: float = Field(default=0.95, gt=0, le=1)
    leakage_allowed: list[str] = Field(default_factory=list)


class ModelGate(StrictModel):
    """Gate 2 (TFX Evaluator style): never promote a worse model.

    Left out, each value takes its label kind's default when the view loads (see
    `ctloop.features.kinds`): the primary metric (roc_auc / macro_f1 / rmse), the
    tolerance, and a floor that is "beat a model that learnt only the label distribution"
    (the training mean for regression, the class shares for classification) on the same
    validation days.
    """

    primary_metric: str | None = None
    # absolute floor on the validation days; None: the candidate must beat the naive model
    min_value: float | None = None
    # how far the candidate may trail the champion: metric points for bounded metrics
    # (AUC, F1), a fraction of the champion's value for error metrics (RMSE, MAE, log-loss)
    max_degradation: float | None = Field(default=None, ge=0)


class Online(StrictModel):
    """Online features: serving fills what a request leaves out from the entity's newest
    feature row in the store, so a caller may send only the entity key."""

    # a row older than this (by its event date, against the day `now - ttl` falls on) is
    # stale: the request is refused, never answered from old values
    ttl_hours: float = Field(gt=0)
    # how long a worker may answer from a row it read before reading it again: the most
    # time an ingested row takes to reach serving
    max_staleness_seconds: float = Field(default=30.0, ge=0)
    # rows a worker keeps in memory (least recently used go first)
    cache_entities: int = Field(default=100_000, gt=0)


class Rollout(StrictModel):
    """How a candidate that passed the offline gates goes live, and the live gate's rule."""

    # direct: champion at once (the promote step); shadow: alias `challenger`, scored on
    # every request beside the champion; canary: alias `challenger` answers the requests
    # of `canary_share` of the entities. Shadow and canary end at the live gate.
    mode: Literal["direct", "shadow", "canary"] = "direct"
    canary_share: float = Field(default=0.1, gt=0, lt=1)
    # labelled requests before the live gate decides: answered by both (shadow), or by
    # each (canary)
    min_labelled_pairs: int = Field(default=200, gt=0)
    # the paired confidence interval of (challenger - champion) on the primary metric
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    # a trial with no decision by then is dropped (no evidence it is better)
    max_trial_days: float = Field(default=14.0, gt=0)


class DriftPolicy(StrictModel):
    """When the monitor calls drift and triggers retraining."""

    numeric_threshold: float = Field(default=0.1, gt=0)
    # chance that one check alarms on traffic from the training distribution: thresholds
    # rise to the distances a window of the check's size reaches by noise alone
    false_alarm_rate: float = Field(default=0.01, gt=0, lt=0.5)
    categorical_threshold: float = Field(default=0.1, gt=0)
    psi_threshold: float = Field(default=0.2, gt=0)
    drift_share: float = Field(default=0.5, gt=0, le=1)
    prediction_threshold: float = Field(default=0.1, gt=0)
    min_rows: int = Field(default=500, gt=0)
    # a check reads at most this many of a window's logged predictions: beyond, a sample
    # of about this many (whole blocks of row ids, `predlog.sample`), so a check's time
    # and memory stay bounded
    # however busy the service; the noise floors are those of the sample's size
    max_rows_read: int = Field(default=100_000, ge=1_000)
    # where the database summarizes the window for the drift statistics (MariaDB/MySQL,
    # the view's typed log), it counts up to this many rows; a bigger window is summarized
    # on an even sample of this size (the same hash as the read), so a check's time stays
    # bounded too
    max_rows_summarized: int = Field(default=500_000, ge=1_000)
    # training-serving skew: share of the feature values callers sent that may differ
    # from the store's row for the same entity and day before the report flags the feature
    max_skew_rate: float = Field(default=0.01, ge=0, le=1)
    # live primary metric worse than the model's validation figure by more than this is
    # decay: points for bounded metrics, a fraction for error metrics (None: by kind)
    max_accuracy_drop: float | None = Field(default=None, gt=0)
    min_labelled_rows: int = Field(default=200, gt=0)
    # labels land late: live accuracy looks back this far, not just since the last check
    accuracy_window_days: int = Field(default=14, gt=0)
    cooldown_hours: float = Field(default=24, ge=0)


class Gates(StrictModel):
    """The thresholds of the data gate and the model gate, side by side in the view."""

    data: DataGate = DataGate()
    model: ModelGate = ModelGate()


DEFAULT_MISSING_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")


class ImportOptions(StrictModel):
    """How `ctloop import` reads a real file into this view (the `import:` block).

    Column names resolve in this order: an explicit `columns` mapping (source name ->
    view name), an exact match, then the normalised source name (lower case, every run of
    characters other than letters and digits replaced by `_`, trimmed: `Total day
    minutes` -> `total_day_minutes`). Cells equal to one of `missing_values` (after
    trimming spaces) are missing.
    """

    columns: dict[str, str] = Field(default_factory=dict)
    normalize_names: bool = True
    missing_values: list[str] = Field(default_factory=lambda: list(DEFAULT_MISSING_VALUES))
    # columns the view does not name: refuse the file ("error") or leave them ("ignore")
    extra_columns: Literal["error", "ignore"] = "error"


# Columns the store, the prediction log and the monitor add next to a view's own: a
# feature, entity or label with one of these names would collide with them.
RESERVED_COLUMNS = ("ingested_at", "arrived_at", "created_at", "request_id", "feature_view",
                    "model_version", "entity_id", "features", "prediction", "probabilities",
                    "latency_ms", "id", "role", "from_store", "_from_store")  # fmt: skip


# --------------------------------------------------------------------------- sources

# An Airflow connection id as Airflow accepts them (letters, digits, `_`, `-`, `.`).
CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"
# A table name, optionally with its schema (`crm.applications`): quoted by SQLAlchemy.
TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_$]{0,63}(\.[A-Za-z_][A-Za-z0-9_$]{0,63})?$"
SOURCE_COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class FilesSource(StrictModel):
    """A drop folder: CSV or Parquet files of features (or of labels) landing over time.

    Each file is taken once (the ledger keys it by checksum), then moved to `done/` or
    `rejected/` under the folder. `path` is absolute or relative to `CTLOOP_DATA_DIR`.
    """

    kind: Literal["files"]
    name: Identifier
    path: str = Field(min_length=1)
    contents: Literal["features", "labels"] = "features"
    # which files of the folder are taken (a glob on the file name)
    pattern: str = Field(default="*", min_length=1)


class SqlSource(StrictModel):
    """A table or query in another database, reached through an Airflow connection
    (MySQL/MariaDB or PostgreSQL provider) and read incrementally by one column: the
    event date, or an updated-at time for rows that change after they are written."""

    kind: Literal["sql"]
    name: Identifier
    conn_id: str = Field(pattern=CONN_ID)
    table: str | None = Field(default=None, pattern=TABLE_NAME)
    query: str | None = None
    contents: Literal["features", "labels"] = "features"
    # the source's column the read is bounded by: [interval start, interval end)
    incremental_column: str = Field(pattern=SOURCE_COLUMN)

    @model_validator(mode="after")
    def _one_of(self) -> SqlSource:
        if (self.table is None) == (self.query is None or not self.query.strip()):
            raise ValueError("a sql source takes exactly one of 'table' or 'query'")
        return self


class SyntheticSource(StrictModel):
    """The seeded synthetic stream the demo lands (one day per data interval)."""

    kind: Literal["synthetic"]
    name: Identifier = "synthetic"
    rows_per_day: int = Field(default=2000, gt=0, le=1_000_000)
    seed: int = 7


Source = Annotated[FilesSource | SqlSource | SyntheticSource, Field(discriminator="kind")]
