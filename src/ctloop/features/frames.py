"""Row-level validation of incoming files against a feature view.

Used where outside data enters in bulk (file import). The value rules of each feature and
of the label come from `ctloop.features.schema`, the one reader of them; this module owns
the file's shape (column names, keys, duplicates, arrival times) and turns every breach
into a problem with its row, column and reason, sorted by row, so a user can fix a file
in one pass. Checks are vectorised per column (a 1M-row file is checked in seconds).

Cells arrive as text and only this module decides what they mean: a cell equal to one of
the view's `import.missing_values` markers (after trimming spaces) or empty is missing,
whatever the column. Times follow one rule everywhere: ISO 8601, a value with a UTC offset
(`+02:00`, `Z`) is converted to UTC, a value without one is taken as UTC, and the result is
stored as naive UTC.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ctloop.features.schema import Breach, schema_of
from ctloop.features.spec import ENTITY_LEN
from ctloop.features.view import FeatureView

log = logging.getLogger(__name__)

MAX_REPORTED = 1000
ARRIVED_AT = "arrived_at"
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True)
class Problem:
    """One bad value: 1-based data row (header excluded; None: the whole file), column, reason."""

    row: int | None
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        return f"{where}, column '{self.column}': {self.reason}"


@dataclass
class ValidatedFrame:
    """The typed rows that passed, and the problems of those that did not."""

    features: pd.DataFrame
    labels: pd.DataFrame | None
    problems: list[Problem]
    bad_rows: set[int]
    total_rows: int


@dataclass
class ResolvedColumns:
    """A raw frame with its header mapped to view names, and what the mapping did."""

    frame: pd.DataFrame
    # source name -> view name, only for columns whose name changed
    renamed: dict[str, str] = field(default_factory=dict)
    # source names dropped because the view does not use them (extra_columns: ignore)
    ignored: list[str] = field(default_factory=list)
    # file-level problems: two source columns resolving to the same view column
    problems: list[Problem] = field(default_factory=list)


def normalize_name(name: str) -> str:
    """`Total day minutes` -> `total_day_minutes`: runs of anything but ASCII letters and
    digits become one `_`, trimmed, lower case (the rule `import:` documents)."""
    return _NOT_ALNUM.sub("_", name).strip("_").lower()


def view_columns(view: FeatureView) -> list[str]:
    """Every column a file for this view may carry, in the order the view names them."""
    return [view.entity, view.event_date, *view.feature_names, view.label.name, ARRIVED_AT]


def resolve_columns(
    view: FeatureView, raw: pd.DataFrame, wanted: Iterable[str] | None = None
) -> ResolvedColumns:
    """Map a raw file's header to the view's column names.

    Real files name columns their own way (`Customer ID`, `Total day minutes`), and
    renaming them by hand before every import is where columns get swapped. Each source
    column resolves, in this order, through the view's explicit `import.columns` mapping,
    an exact match, then (with `import.normalize_names`) its normalised name. Columns that
    resolve to nothing, or to a view column not in `wanted` (default: all of them), are
    dropped and listed as ignored under `import.extra_columns: ignore`; otherwise they stay
    so that validation refuses them by name. Two kept source columns resolving to the same
    view column are a file-level problem naming both: picking one would be a guess.
    """
    options = view.import_options
    known = set(view_columns(view))
    keep = known if wanted is None else set(wanted)
    resolved = ResolvedColumns(frame=raw)
    positions: list[int] = []
    names: list[str] = []
    source_of: dict[str, str] = {}
    for pos, source in enumerate(map(str, raw.columns)):
        target: str | None = None
        if source in options.columns:
            target = options.columns[source]
        elif source in known:
            target = source
        elif options.normalize_names and normalize_name(source) in known:
            target = normalize_name(source)
        if (target is None or target not in keep) and options.extra_columns == "ignore":
            resolved.ignored.append(source)
            continue
        if target is not None:
            if target in source_of:
                resolved.problems.append(
                    Problem(
                        None,
                        target,
                        f"columns '{source_of[target]}' and '{source}' both map to '{target}'",
                    )
                )
                continue
            source_of[target] = source
            if target != source:
                resolved.renamed[source] = target
        positions.append(pos)
        names.append(target or source)
    frame = raw.iloc[:, positions]
    frame.columns = names
    resolved.frame = frame
    if resolved.renamed:
        log.info(
            "renamed columns: %s",
            ", ".join(f"'{s}' -> {t}" for s, t in resolved.renamed.items()),
        )
    if resolved.ignored:
        log.info("ignored columns: %s", ", ".join(f"'{c}'" for c in resolved.ignored))
    return resolved


def sort_problems(problems: Iterable[Problem], columns: Sequence[str]) -> list[Problem]:
    """File-level problems first, then by row, then by the column's place in the file.

    A user fixes a file top to bottom; problems in the order the checks ran (column by
    column) scatter one row's faults over the whole report. Columns not in the file (a
    missing column) come after those that are, in the order they were found.
    """
    order: dict[str, int] = {}
    for col in columns:
        order.setdefault(str(col), len(order))
    return sorted(
        problems,
        key=lambda p: (p.row is not None, p.row or 0, order.get(p.column, len(order))),
    )


def _as_text(raw: pd.DataFrame, markers: Sequence[str]) -> pd.DataFrame:
    """Every cell as trimmed text, with empty cells and missing-value markers as NA.

    An empty cell is missing even when the view's markers leave "" out: it cannot be a
    number, a category or a key, and calling it one would only produce a worse message.
    """
    text = raw.astype("string").apply(lambda col: col.str.strip())
    missing = text.isna() | text.isin(list(markers)) | (text == "")
    return text.mask(missing)


def parse_times(text: pd.Series) -> pd.Series:
    """ISO 8601 dates or date-times as naive UTC; what does not parse becomes NaT.

    A value with a UTC offset (`2026-01-05T10:00:00+02:00`, `...Z`) is converted to UTC, a
    value without one is taken as UTC, so one file may mix forms and still mean one
    instant per cell: the store keeps naive UTC everywhere.
    """
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    return parsed.dt.tz_localize(None)


def parse_calendar_dates(text: pd.Series) -> pd.Series:
    """ISO 8601 dates, or date-times cut to the date they are written with (their offset
    ignored); what does not parse becomes NaT."""
    day = text.str.strip().str.slice(0, 10)
    rest = text.str.strip().str.slice(10)
    parsed = pd.to_datetime(day, errors="coerce", format="%Y-%m-%d")
    whole = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    # the rest must itself be a time of that date (or nothing), not trailing garbage
    return parsed.where(rest.fillna("").eq("") | whole.notna())


def _report(
    mask: pd.Series | np.ndarray,
    rows: np.ndarray,
    column: str,
    reason: str | Callable[[int], str],
    problems: list[Problem],
) -> None:
    """Add one problem per flagged row; `reason` is a string or a function of the position."""
    flags = mask.to_numpy() if isinstance(mask, pd.Series) else mask
    _add(Breach(column, "", flags, reason), rows, problems)


def _add(breaches: Breach | Iterable[Breach], rows: np.ndarray, problems: list[Problem]) -> None:
    """One problem per flagged row of each breach, in the schema's order of rules."""
    for breach in [breaches] if isinstance(breaches, Breach) else breaches:
        for i in breach.positions():
            problems.append(Problem(int(rows[i]), breach.column, breach.message(i)))


def _keys(
    view: FeatureView, text: pd.DataFrame, rows: np.ndarray, problems: list[Problem]
) -> tuple[pd.Series, pd.Series]:
    """Entity keys and event dates: a plain date or an ISO date-time whose calendar date is
    taken as written (`2026-01-05T00:30+01:00` is 2026-01-05, never moved to its UTC day:
    clients send the same date with a request, and the monitor joins on it)."""
    entity = text[view.entity]
    _report(entity.isna(), rows, view.entity, "entity key is missing", problems)
    too_long = (entity.str.len() > ENTITY_LEN).fillna(False).astype(bool)
    _report(
        too_long, rows, view.entity, f"entity key longer than {ENTITY_LEN} characters", problems
    )
    raw_dates = text[view.event_date]
    dates = parse_calendar_dates(raw_dates)
    _report(raw_dates.isna(), rows, view.event_date, "event date is missing", problems)
    _report(
        dates.isna() & raw_dates.notna(),
        rows,
        view.event_date,
        lambda i: f"'{raw_dates.iloc[i]}' is not a date",
        problems,
    )
    return entity.astype(object), dates.dt.normalize()


def _labels(
    view: FeatureView,
    text: pd.DataFrame,
    keys: tuple[pd.Series, pd.Series],
    arrived_at_default: pd.Timestamp | None,
    rows: np.ndarray,
    problems: list[Problem],
) -> pd.DataFrame:
    """Every row's label (float64 for regression, class names otherwise), its arrival time
    and whether it is present (`_present`), with the label rules' breaches reported."""
    values, present, breaches = schema_of(view).label.parse(text[view.label.name])
    _add(breaches, rows, problems)
    arrived = _arrived(text, present, arrived_at_default, rows, problems)
    # a label known before its event happened is a wrong arrival time (or a wrong date),
    # and would let point-in-time training sets see the outcome before the event
    early = (present & arrived.notna() & keys[1].notna() & (arrived < keys[1])).fillna(False)
    _report(
        early.astype(bool),
        rows,
        ARRIVED_AT,
        lambda i: (
            f"label arrives at {arrived.iloc[i]:%Y-%m-%d %H:%M:%S} UTC, before its event "
            f"date {keys[1].iloc[i]:%Y-%m-%d}"
        ),
        problems,
    )
    return pd.DataFrame({view.entity: keys[0], view.event_date: keys[1],
                         view.label.name: values, ARRIVED_AT: arrived,
                         "_present": present.to_numpy()})  # fmt: skip


def _column_problems(
    columns: Sequence[str], needed: Sequence[str], allowed: Sequence[str], extra: str
) -> list[Problem]:
    """Whole-file problems: a needed column absent, a column that is not `allowed`."""
    problems = [Problem(None, col, "column is missing") for col in needed if col not in columns]
    return problems + [Problem(None, col, extra) for col in columns if col not in allowed]


def _arrived(
    text: pd.DataFrame,
    present: pd.Series,
    default: pd.Timestamp | None,
    rows: np.ndarray,
    problems: list[Problem],
) -> pd.Series:
    """When each label became known, as naive UTC (see `parse_times`).

    Without the column every label arrives at `default` (now). A row that has a label but
    an empty `arrived_at` is refused rather than given "now": the file claims to know the
    arrival time, and a guessed one silently moves the label in point-in-time reads.
    """
    if ARRIVED_AT not in text.columns:
        when = default if default is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
        return pd.Series(when, index=text.index)
    raw = text[ARRIVED_AT]
    arrived = parse_times(raw)
    _report(
        present & raw.isna(),
        rows,
        ARRIVED_AT,
        "arrival time is missing (the row has a label)",
        problems,
    )
    _report(
        present & raw.notna() & arrived.isna(),
        rows,
        ARRIVED_AT,
        lambda i: f"'{raw.iloc[i]}' is not a time",
        problems,
    )
    return arrived


def _duplicates(
    view: FeatureView, keys: pd.DataFrame, rows: np.ndarray, problems: list[Problem]
) -> None:
    dupes = keys.duplicated(subset=[view.entity, view.event_date], keep="first")
    _report(dupes, rows, view.entity, "duplicate entity and event date in this file", problems)


def _finish(
    features: pd.DataFrame,
    labels: pd.DataFrame | None,
    problems: list[Problem],
    columns: Sequence[str],
    total: int,
) -> ValidatedFrame:
    problems = sort_problems(problems, columns)
    bad_rows = {p.row for p in problems if p.row is not None}
    return ValidatedFrame(features, labels, problems, bad_rows, total)


def validate_frame(
    view: FeatureView,
    raw: pd.DataFrame,
    *,
    label_column: bool | None = None,
    arrived_at_default: pd.Timestamp | None = None,
) -> ValidatedFrame:
    """Check raw text columns (already named as the view names them) and return typed
    frames plus the problems, sorted by row.

    Missing and unexpected columns are whole-file problems (row None). The label and its
    `arrived_at` are optional; a label without arrival time column arrives at
    `arrived_at_default` (default: now). Event dates and `arrived_at` follow the time rule
    of this module (offsets converted to UTC, no offset taken as UTC, stored naive).
    A regression label becomes float64; a classification label stays its class name.
    """
    columns = [str(c) for c in raw.columns]
    rows = np.arange(1, len(raw) + 1)
    expected = [view.entity, view.event_date, *view.feature_names]
    allowed = [*expected, view.label.name, ARRIVED_AT]
    extra = "column is not part of the feature view"
    problems = _column_problems(columns, expected, allowed, extra)
    if problems:
        return _finish(pd.DataFrame(), None, problems, columns, len(raw))

    text = _as_text(raw, view.import_options.missing_values)
    out: dict[str, pd.Series] = {}
    out[view.entity], out[view.event_date] = _keys(view, text, rows, problems)
    for rule in schema_of(view).features:
        out[rule.name], breaches = rule.parse(text[rule.name])
        _add(breaches, rows, problems)
    features = pd.DataFrame(out)

    labels = None
    has_label = view.label.name in columns if label_column is None else label_column
    if has_label:
        keys = (out[view.entity], out[view.event_date])
        labels = _labels(view, text, keys, arrived_at_default, rows, problems)
    _duplicates(view, features, rows, problems)
    return _finish(features, labels, problems, columns, len(raw))


def validate_labels(
    view: FeatureView, raw: pd.DataFrame, *, arrived_at_default: pd.Timestamp | None = None
) -> ValidatedFrame:
    """Check a labels file (entity, event date, label, optional `arrived_at`).

    Same value rules as `validate_frame`; here a row without a label is a problem, since a
    labels file has nothing else to say about it. `features` is empty; `labels` carries
    every row (with `_present`) so the caller can pick the good ones.
    """
    columns = [str(c) for c in raw.columns]
    rows = np.arange(1, len(raw) + 1)
    needed = [view.entity, view.event_date, view.label.name]
    extra = "column is not expected in a labels file"
    problems = _column_problems(columns, needed, [*needed, ARRIVED_AT], extra)
    if problems:
        return _finish(pd.DataFrame(), None, problems, columns, len(raw))

    text = _as_text(raw, view.import_options.missing_values)
    keys = _keys(view, text, rows, problems)
    labels = _labels(view, text, keys, arrived_at_default, rows, problems)
    _report(~labels["_present"], rows, view.label.name, "label is missing", problems)
    _duplicates(view, labels, rows, problems)
    return _finish(pd.DataFrame(), labels, problems, columns, len(raw))


def good_rows(result: ValidatedFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The rows without problems; labels only where a label was given."""
    keep = ~pd.Series(np.arange(1, result.total_rows + 1)).isin(result.bad_rows).to_numpy()
    features = result.features.loc[keep].reset_index(drop=True)
    labels = None
    if result.labels is not None:
        lab = result.labels.loc[keep]
        labels = lab.loc[lab["_present"].to_numpy()].drop(columns="_present").reset_index(drop=True)
    return features, labels
