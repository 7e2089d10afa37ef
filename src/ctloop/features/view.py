"""Feature views: the one place where features are named.

A feature view (`features/<name>.yaml`) is the contract of one model: entity key, event
date, label, each feature's type and allowed values, the training window and every gate
threshold. The store, the gates, training, serving and drift monitoring all read it; none
of them names a feature. Loading is strict: an unknown key, a wrong type or an impossible
range fails with the file, the key and the problem, before anything touches data. The
parts a view is made of live in `ctloop.features.spec` (re-exported here).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ctloop.errors import FeatureViewError
from ctloop.features import kinds
from ctloop.features.kinds import LabelKind
from ctloop.features.spec import (
    DEFAULT_MISSING_VALUES,
    IDENTIFIER,
    RESERVED_COLUMNS,
    DataGate,
    DriftPolicy,
    Feature,
    FeatureType,
    Gates,
    Identifier,
    ImportOptions,
    Label,
    ModelGate,
    Online,
    Rollout,
    Source,
    StrictModel,
    Training,
)
from ctloop.settings import get_settings

__all__ = [
    "DEFAULT_MISSING_VALUES",
    "IDENTIFIER",
    "RESERVED_COLUMNS",
    "DataGate",
    "DriftPolicy",
    "Feature",
    "FeatureType",
    "FeatureView",
    "Gates",
    "ImportOptions",
    "Label",
    "LabelKind",
    "ModelGate",
    "Online",
    "Rollout",
    "Source",
    "Training",
    "list_views",
    "load_view",
    "load_view_file",
    "view_path",
]


class FeatureView(StrictModel):
    """A model's whole data contract, loaded from `features/<name>.yaml`."""

    name: Identifier
    description: str = ""
    entity: Identifier
    event_date: Identifier = "event_date"
    label: Label
    features: list[Feature] = Field(min_length=1)
    training: Training = Training()
    gates: Gates = Gates()
    drift: DriftPolicy = DriftPolicy()
    import_options: ImportOptions = Field(default_factory=ImportOptions, alias="import")
    # where the ingest DAG takes new rows and labels from (none: nothing to ingest)
    sources: list[Source] = Field(default_factory=list)
    # a batch with bad rows lands its good rows (the bad ones go to the rejects table);
    # off: the batch is refused whole
    partial_loads: bool = False
    # predict by entity: serving takes the features a request leaves out from the store
    online: Online | None = None
    # how a gated candidate goes live: at once, or through a shadow trial and the live gate
    rollout: Rollout = Rollout()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _kind_defaults(self) -> FeatureView:
        """Fill what the label kind decides: metric, tolerances (the view is frozen, so
        this is the one moment they can be set)."""
        kind = self.label.kind
        gate = self.gates.model
        name = gate.primary_metric or kinds.DEFAULT_PRIMARY[kind]
        allowed = kinds.names_for(kind)
        if name not in allowed:
            raise ValueError(
                f"gates.model.primary_metric '{name}' does not fit a {kind} label "
                f"(one of {', '.join(allowed)})"
            )
        fill: dict[str, object] = {"primary_metric": name}
        if gate.max_degradation is None:
            fill["max_degradation"] = kinds.default_tolerance(name, kinds.DEFAULT_MAX_DEGRADATION)
        # copies, never the shared default instances the fields were built from
        gates = self.gates.model_copy(update={"model": gate.model_copy(update=fill)})
        object.__setattr__(self, "gates", gates)
        if self.drift.max_accuracy_drop is None:
            drop = kinds.default_tolerance(name, kinds.DEFAULT_MAX_LIVE_DROP)
            object.__setattr__(
                self, "drift", self.drift.model_copy(update={"max_accuracy_drop": drop})
            )
        return self

    @property
    def primary_metric(self) -> str:
        """The one metric the model gate and the decay check judge this view's models by."""
        return str(self.gates.model.primary_metric)

    @model_validator(mode="after")
    def _names_unique(self) -> FeatureView:
        seen: dict[str, str] = {}
        if self.entity == self.event_date:
            raise ValueError(
                f"entity: '{self.entity}' is also the event_date column; the key needs two "
                "different columns"
            )
        # the key columns live only in the store's tables (the log keeps the entity as
        # entity_id), so they may take the log's names (an entity called `id`) but not
        # the store's own columns
        for where, name, columns in (
            ("entity", self.entity, STORE_COLUMNS),
            ("event_date", self.event_date, STORE_COLUMNS),
            ("label.name", self.label.name, RESERVED_COLUMNS),
        ):
            problem = reserved_name_problem(name, columns)
            if problem:
                raise ValueError(f"{where}: {problem}")
        for where, identifier in self.store_identifiers().items():
            if len(identifier) > MAX_IDENTIFIER:
                raise ValueError(
                    f"name: '{self.name}' is too long: the {where} '{identifier}' has "
                    f"{len(identifier)} characters, MariaDB takes at most {MAX_IDENTIFIER} "
                    f"(keep the name to {MAX_VIEW_NAME} characters)"
                )
        reserved = {self.entity: "entity", self.event_date: "event_date"}
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
            problem = reserved_name_problem(feature.name)
            if problem:
                raise ValueError(f"features[{i}].name: {problem}")
            if feature.name in seen:
                raise ValueError(f"features[{i}]: duplicate feature name '{feature.name}'")
            seen[feature.name] = feature.name
        if self.label.name in seen or self.label.name in reserved:
            raise ValueError(f"label.name: '{self.label.name}' clashes with another column")
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
        unknown_allowed = sorted(set(self.gates.data.leakage_allowed) - set(seen))
        if unknown_allowed:
            raise ValueError(
                f"gates.data.leakage_allowed names '{unknown_allowed[0]}', which is not a "
                "feature of this view"
            )
        targets = set(self.import_options.columns.values())
        known = {self.entity, self.event_date, self.label.name, "arrived_at", *seen}
        unknown = sorted(targets - known)
        if unknown:
            raise ValueError(
                f"import.columns maps to '{unknown[0]}', which is not a column of this view"
            )
        names = [source.name for source in self.sources]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"sources[{i}]: duplicate source name '{name}'")
        return self

    @property
    def feature_names(self) -> list[str]:
        """The model's input columns, in the order training and serving both use."""
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[Feature]:
        """The features checked by range and compared by distribution distance."""
        return [f for f in self.features if f.is_numeric]

    @property
    def categorical_features(self) -> list[Feature]:
        """The features CatBoost treats as categories and drift compares by frequencies."""
        return [f for f in self.features if not f.is_numeric]

    def feature(self, name: str) -> Feature:
        """The rules of one named feature (KeyError for a name the view does not have)."""
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def store_identifiers(self) -> dict[str, str]:
        """Every database identifier derived from the view's name (tables and indexes), by
        what it is: one source for `ctloop.store.tables` and the length check above."""
        name = self.name
        return {
            "features table": self.features_table,
            "labels table": self.labels_table,
            "features date index": f"ix_{name}_features_date",
            "labels date index": f"ix_{name}_labels_date",
            "labels arrival index": f"ix_{name}_labels_arrived",
            "log table": self.log_table,
            "log time index": f"ix_{name}_pred_time",
            "log entity index": f"ix_{name}_pred_entity",
            "log request key": f"uq_{name}_pred_request",
        }

    @property
    def features_table(self) -> str:
        """The store's table of this view's feature rows, named from the view alone."""
        return f"{self.name}_features"

    @property
    def log_table(self) -> str:
        """The view's own prediction log (typed: one column per feature)."""
        return log_table_name(self.name)

    @property
    def labels_table(self) -> str:
        """The store's table of labels, apart from features because they arrive later."""
        return f"{self.name}_labels"


MAX_IDENTIFIER = 64
"""MariaDB's limit on table, index and column names (a longer one failed at `init-db` with
error 1059, reported as an unreachable store)."""
MAX_VIEW_NAME = MAX_IDENTIFIER - len("ix__labels_arrived")
LOG_TABLE_SUFFIX = "_predictions"  # a view's own prediction log table: `<view>_predictions`


def log_table_name(view_name: str) -> str:
    """A view's own prediction log table, from its name alone: readers that know only the
    name a log row carries find the view's table without loading the view."""
    return f"{view_name}{LOG_TABLE_SUFFIX}"


# Names the request model (a pydantic model with one field per column) cannot take: a
# field named like one of BaseModel's attributes breaks the model or vanishes from it, and
# pydantic keeps the `model_` prefix for itself.
PYDANTIC_NAMES = frozenset(n for n in dir(BaseModel) if not n.startswith("_"))


STORE_COLUMNS = ("ingested_at", "arrived_at")
"""The columns the store adds to a view's tables next to the key columns."""


def reserved_name_problem(name: str, reserved: Sequence[str] = RESERVED_COLUMNS) -> str | None:
    """Why a view may not name a column `name` (None: it may): one of the `reserved`
    columns ctloop adds, or a name the request model cannot take."""
    if name in reserved:
        return (
            f"'{name}' clashes with a column ctloop adds to the store or the prediction log "
            f"(reserved: {', '.join(reserved)})"
        )
    if name.startswith("model_") or name in PYDANTIC_NAMES:
        return (
            f"'{name}' clashes with an attribute of the request model (pydantic reserves "
            "the prefix model_ and names such as dict, json, copy, schema)"
        )
    return None


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
        features_dir = get_settings().features_dir
    return Path(features_dir) / f"{name}.yaml"


def load_view(name: str, features_dir: Path | None = None) -> FeatureView:
    """Load a feature view by name (from the features folder) or by file path."""
    return load_view_file(view_path(name, features_dir))


def list_views(features_dir: Path | None = None) -> list[str]:
    """Names of the feature views in the features folder."""
    if features_dir is None:
        features_dir = get_settings().features_dir
    return sorted(p.stem for p in Path(features_dir).glob("*.yaml"))
