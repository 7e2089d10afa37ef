"""Feature views: the one place where features are named.

A feature view (`features/<name>.yaml`) is the contract of one model: entity key, event
date, label, each feature's type and allowed values, the training window and every gate
threshold. The store, the gates, training, serving and drift monitoring all read it; none
of them names a feature. Loading is strict: an unknown key, a wrong type or an impossible
range fails with the file, the key and the problem, before anything touches data.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ctloop.errors import FeatureViewError

IDENTIFIER = r"^[a-z][a-z0-9_]{0,47}$"
_ident = Annotated[str, Field(pattern=IDENTIFIER)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureType(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class Feature(_Strict):
    """One model input: its type, nullability and allowed values."""

    name: _ident
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
            if any(len(c) > 64 for c in self.categories):
                raise ValueError("a category is longer than 64 characters")
        if not self.nullable and self.max_missing_rate not in (None, 0):
            raise ValueError("max_missing_rate needs nullable: true")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.type is FeatureType.NUMERIC


class LabelKind(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


class Label(_Strict):
    """The target: its column, its kind, and for classification the classes in a fixed order.

    `kind` may be left out only for three or more classes (multiclass, as views written
    before kinds existed); a two-class label must say `kind: binary` and name its
    `positive_class`, because "which class is positive" decides ROC-AUC, precision and
    the score serving returns, and guessing it from sort order is how AUCs get inverted.
    """

    name: _ident
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
        if classes is not None and any(len(c) > 64 or not c for c in classes):
            raise ValueError("a class is empty or longer than 64 characters")
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
        return self.kind is LabelKind.REGRESSION

    @property
    def is_binary(self) -> bool:
        return self.kind is LabelKind.BINARY

    @property
    def class_list(self) -> list[str]:
        """The classes (empty for regression), so loops over classes need no None check."""
        return list(self.classes or [])

    @property
    def negative_class(self) -> str | None:
        if not self.is_binary:
            return None
        return next(c for c in self.class_list if c != self.positive_class)


class Training(_Strict):
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


class DataGate(_Strict):
    """Gate 1 (TFX ExampleValidator style): stop before training on bad data."""

    min_rows: int = Field(default=1000, gt=0)
    min_validation_rows: int = Field(default=200, gt=0)
    max_missing_rate: float = Field(default=0.2, ge=0, le=1)
    max_out_of_range_rate: float = Field(default=0.0, ge=0, le=1)
    max_unseen_category_rate: float = Field(default=0.05, ge=0, le=1)
    min_class_share: float = Field(default=0.02, ge=0, lt=1)
    max_skew_distance: float = Field(default=0.2, gt=0, le=1)


class ModelGate(_Strict):
    """Gate 2 (TFX Evaluator style): never promote a worse model.

    Left out, each value takes its label kind's default when the view loads (see
    `ctloop.core.metrics`): the primary metric (roc_auc / macro_f1 / rmse), the tolerance, and a
    floor that is "beat a model that learnt only the label distribution" (the training
    mean for regression, the class shares for classification) on the same validation days.
    """

    primary_metric: str | None = None
    # absolute floor on the validation days; None: the candidate must beat the naive model
    min_value: float | None = None
    # how far the candidate may trail the champion: metric points for bounded metrics
    # (AUC, F1), a fraction of the champion's value for error metrics (RMSE, MAE, log-loss)
    max_degradation: float | None = Field(default=None, ge=0)


class DriftPolicy(_Strict):
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
    # live primary metric worse than the model's validation figure by more than this is
    # decay: points for bounded metrics, a fraction for error metrics (None: by kind)
    max_accuracy_drop: float | None = Field(default=None, gt=0)
    min_labelled_rows: int = Field(default=200, gt=0)
    # labels land late: live accuracy looks back this far, not just since the last check
    accuracy_window_days: int = Field(default=14, gt=0)
    cooldown_hours: float = Field(default=24, ge=0)


class Gates(_Strict):
    data: DataGate = DataGate()
    model: ModelGate = ModelGate()


DEFAULT_MISSING_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")


class ImportOptions(_Strict):
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
                    "latency_ms", "id")  # fmt: skip


class FeatureView(_Strict):
    """A model's whole data contract, loaded from `features/<name>.yaml`."""

    name: _ident
    description: str = ""
    entity: _ident
    event_date: _ident = "event_date"
    label: Label
    features: list[Feature] = Field(min_length=1)
    training: Training = Training()
    gates: Gates = Gates()
    drift: DriftPolicy = DriftPolicy()
    import_options: ImportOptions = Field(default_factory=ImportOptions, alias="import")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _kind_defaults(self) -> FeatureView:
        """Fill what the label kind decides: metric, tolerances (the view is frozen, so
        this is the one moment they can be set)."""
        from ctloop.core import metrics  # metrics reads LabelKind from this module

        kind = self.label.kind
        gate = self.gates.model
        name = gate.primary_metric or metrics.DEFAULT_PRIMARY[kind]
        allowed = metrics.names_for(kind)
        if name not in allowed:
            raise ValueError(
                f"gates.model.primary_metric '{name}' does not fit a {kind} label "
                f"(one of {', '.join(allowed)})"
            )
        fill: dict[str, object] = {"primary_metric": name}
        if gate.max_degradation is None:
            fill["max_degradation"] = metrics.default_tolerance(
                name, metrics.DEFAULT_MAX_DEGRADATION
            )
        # copies, never the shared default instances the fields were built from
        gates = self.gates.model_copy(update={"model": gate.model_copy(update=fill)})
        object.__setattr__(self, "gates", gates)
        if self.drift.max_accuracy_drop is None:
            drop = metrics.default_tolerance(name, metrics.DEFAULT_MAX_LIVE_DROP)
            object.__setattr__(
                self, "drift", self.drift.model_copy(update={"max_accuracy_drop": drop})
            )
        return self

    @property
    def primary_metric(self) -> str:
        return str(self.gates.model.primary_metric)

    @model_validator(mode="after")
    def _names_unique(self) -> FeatureView:
        seen: dict[str, str] = {}
        if self.entity == self.event_date:
            raise ValueError("entity and event_date must be different columns")
        reserved = {self.entity: "entity", self.event_date: "event_date",
                    **dict.fromkeys(RESERVED_COLUMNS, "a column ctloop adds")}  # fmt: skip
        for i, feature in enumerate(self.features):
            if feature.name.startswith("proba_"):
                raise ValueError(
                    f"features[{i}]: '{feature.name}': the prefix proba_ names class "
                    "probabilities in the prediction log"
                )
            if feature.name in reserved:
                raise ValueError(
                    f"features[{i}]: '{feature.name}' is already the {reserved[feature.name]}"
                )
            if feature.name in seen:
                raise ValueError(f"features[{i}]: duplicate feature name '{feature.name}'")
            seen[feature.name] = feature.name
        if self.label.name in seen or self.label.name in reserved:
            raise ValueError(f"label.name '{self.label.name}' clashes with another column")
        markers = set(self.import_options.missing_values)
        for i, feature in enumerate(self.features):
            clash = sorted(markers & set(feature.categories or []))
            if clash:
                raise ValueError(
                    f"features[{i}]: category {clash[0]!r} of '{feature.name}' is also an "
                    "import.missing_values marker; remove it from import.missing_values"
                )
        clash = sorted(markers & set(self.label.class_list))
        if clash:
            raise ValueError(
                f"label class {clash[0]!r} is also an import.missing_values marker; remove it "
                "from import.missing_values"
            )
        targets = set(self.import_options.columns.values())
        known = {self.entity, self.event_date, self.label.name, "arrived_at", *seen}
        unknown = sorted(targets - known)
        if unknown:
            raise ValueError(
                f"import.columns maps to '{unknown[0]}', which is not a column of this view"
            )
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[Feature]:
        return [f for f in self.features if f.is_numeric]

    @property
    def categorical_features(self) -> list[Feature]:
        return [f for f in self.features if not f.is_numeric]

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    @property
    def features_table(self) -> str:
        return f"{self.name}_features"

    @property
    def labels_table(self) -> str:
        return f"{self.name}_labels"


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_view_file(path: str | Path) -> FeatureView:
    """Parse and validate one feature view file; errors name the file, the key and the problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FeatureViewError(f"{path}: feature view file not found") from exc
    except yaml.YAMLError as exc:
        raise FeatureViewError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise FeatureViewError(f"{path}: expected a mapping at the top level")
    try:
        view = FeatureView.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _format_loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {where}: {msg}")
        raise FeatureViewError("invalid feature view\n  " + "\n  ".join(problems)) from exc
    if view.name != path.stem:
        raise FeatureViewError(
            f"{path}: name: '{view.name}' must match the file name '{path.stem}'"
        )
    return view


def view_path(name: str, features_dir: Path | None = None) -> Path:
    """Where the named view lives; a path to a .yaml file is taken as is."""
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    if not re.match(IDENTIFIER, name):
        raise FeatureViewError(f"'{name}' is not a valid feature view name")
    if features_dir is None:
        from ctloop.settings import get_settings

        features_dir = get_settings().features_dir
    return Path(features_dir) / f"{name}.yaml"


def load_view(name: str, features_dir: Path | None = None) -> FeatureView:
    """Load a feature view by name (from the features folder) or by file path."""
    return load_view_file(view_path(name, features_dir))


def list_views(features_dir: Path | None = None) -> list[str]:
    """Names of the feature views in the features folder."""
    if features_dir is None:
        from ctloop.settings import get_settings

        features_dir = get_settings().features_dir
    return sorted(p.stem for p in Path(features_dir).glob("*.yaml"))
