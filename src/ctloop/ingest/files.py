"""File import (CSV or Parquet) into a view's feature and label tables.

The file is read and checked in full before anything is written, and written in one
transaction: a failing file leaves the store exactly as it was, unless the user asks to
skip the bad rows, in which case only the rows without problems land.

Every cell is read as text, whatever the format, so that one set of rules (the view's
`import:` block and `ctloop.features.frames`) decides column names, missing values, numbers and
times, instead of a reader's guesses (pandas reading `NA` as missing in one column and a
string in the next, or a Parquet file's float where the view wants an integer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ctloop.errors import CtloopError, DataValidationError
from ctloop.features.frames import (
    ARRIVED_AT,
    MAX_REPORTED,
    Problem,
    good_rows,
    resolve_columns,
    sort_problems,
    validate_frame,
    validate_labels,
)
from ctloop.features.view import FeatureView
from ctloop.store.features import FeatureStore

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet",)


@dataclass
class ImportResult:
    """What an import did: rows read, written, the problems it found, and how it read the
    header (columns renamed to view names, columns left out under `extra_columns: ignore`)."""

    rows_read: int
    features_written: int
    labels_written: int
    problems: list[Problem] = field(default_factory=list)
    skipped_rows: int = 0
    renamed: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def read_csv(path: Path) -> pd.DataFrame:
    """Read every cell as text so that validation, not pandas, decides what a value means.

    The header is read as a data row: pandas would rename a repeated header (`age.1`) and so
    hide it, while validation must see both and refuse the file. A UTF-8 byte order mark
    (spreadsheet exports) is dropped.
    """
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            header=None,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
        )
    except FileNotFoundError as exc:
        raise CtloopError(f"{path}: file not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CtloopError(f"{path}: not a readable CSV file: {exc}") from exc
    header = [str(name) for name in frame.iloc[0]]
    body = frame.iloc[1:].reset_index(drop=True)
    body.columns = header
    return body


def _cell_text(column: pd.Series) -> pd.Series:
    """One typed column as text: numbers in their shortest exact form, times as ISO 8601
    (with their offset when they have one), nulls as NA."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):  # naive or with a zone
        text = column.map(lambda v: v.isoformat(), na_action="ignore")
    else:
        text = column.astype(object).map(_plain, na_action="ignore")
    return text.astype("string")


def _plain(value: object) -> str:
    """A cell as a person would write it: a whole float as an integer (pandas turns an
    integer column with a missing value into floats, and `1.0` is not the class `1`)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a Parquet file and turn every column into text, as a CSV would arrive.

    Typed columns would let pandas decide what a value is (a float 30.0 for an integer
    feature, a timestamp with its zone); as text they go through the same checks as a CSV.
    A named index (pandas writes it as one) comes back as a column.
    """
    try:
        frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
    except FileNotFoundError as exc:
        raise CtloopError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid/ArrowIOError among them
        raise CtloopError(f"{path}: not a readable Parquet file: {exc}") from exc
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    else:
        frame = frame.reset_index(drop=True)
    return pd.DataFrame(
        {str(name): _cell_text(frame[name]) for name in frame.columns}, index=frame.index
    )


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or (by its `.parquet` suffix) a Parquet file, every cell as text."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return read_parquet(path)
    return read_csv(path)


def _refuse(
    path: Path,
    problems: Sequence[Problem],
    bad_rows: set[int],
    renamed: dict[str, str],
    hint: str,
) -> DataValidationError:
    """One error for a refused file: problems sorted by row, capped, and the renames made
    (a wrong mapping is the usual reason for a "column is missing")."""
    file_level = any(p.row is None for p in problems)
    where = (["the columns"] if file_level else []) + (
        [f"{len(bad_rows)} row(s)"] if bad_rows else []
    )
    shown = "\n  ".join(str(p) for p in problems[:MAX_REPORTED])
    more = len(problems) - MAX_REPORTED
    tail = f"\n  ... and {more} more" if more > 0 else ""
    names = ", ".join(f"'{s}' -> {t}" for s, t in renamed.items())
    renames = f"\n(renamed columns: {names})" if renamed else ""
    return DataValidationError(
        f"{path}: {len(problems)} problem(s) in {' and '.join(where)}:\n  {shown}{tail}"
        f"\n({hint}){renames}",
        list(problems),
    )


def _rate(rows: int, seconds: float) -> str:
    return f"{rows:,} rows in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} rows/s)"


def import_csv(
    store: FeatureStore,
    view: FeatureView,
    path: str | Path,
    *,
    skip_bad_rows: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Validate a CSV or Parquet file against the view and upsert it; all or nothing unless
    skipping bad rows.

    Columns: the entity, the event date, every feature; optionally the label and
    `arrived_at` (ISO 8601; offsets converted to UTC, none taken as UTC; default: now),
    named as the view names them or as `import:` resolves them. File-level problems (a
    missing, extra or doubly mapped column) always refuse the whole file.
    """
    say = progress or (lambda _line: None)  # a big file takes minutes: say each phase
    path = Path(path)
    began = time.perf_counter()
    raw = read_table(path)
    say(f"read {path}: {_rate(len(raw), time.perf_counter() - began)}")
    store.require_tables(view)
    began = time.perf_counter()
    resolved = resolve_columns(view, raw)
    checked = validate_frame(view, resolved.frame)
    say(f"validated: {_rate(len(raw), time.perf_counter() - began)}")
    problems = sort_problems([*resolved.problems, *checked.problems], resolved.frame.columns)
    file_level = any(p.row is None for p in problems)
    if file_level or (problems and not skip_bad_rows):
        hint = (
            "nothing was written"
            if file_level
            else "nothing was written; --skip-bad-rows imports the rest"
        )
        raise _refuse(path, problems, checked.bad_rows, resolved.renamed, hint)
    features, labels = good_rows(checked)
    given = ARRIVED_AT in resolved.frame.columns  # else "now": kept for unchanged labels
    began = time.perf_counter()
    n_features, n_labels = store.ingest(view, features, labels, arrival_given=given)
    say(f"written: {_rate(n_features + n_labels, time.perf_counter() - began)}")
    log.info("%s: wrote %d feature rows and %d labels", path, n_features, n_labels)
    return ImportResult(
        rows_read=checked.total_rows,
        features_written=n_features,
        labels_written=n_labels,
        problems=problems,
        skipped_rows=len(checked.bad_rows),
        renamed=resolved.renamed,
        ignored=resolved.ignored,
    )


def import_labels_csv(store: FeatureStore, view: FeatureView, path: str | Path) -> ImportResult:
    """Land labels from a CSV or Parquet file (entity, event date, label, optional
    `arrived_at`, default now); all or nothing.

    Column names and missing values follow the view's `import:` block; a regression label
    must be a finite number within the label's min/max, a classification label one of its
    classes; `arrived_at` follows the same UTC rule as `import_csv`.
    """
    path = Path(path)
    raw = read_table(path)
    needed = [view.entity, view.event_date, view.label.name, ARRIVED_AT]
    resolved = resolve_columns(view, raw, wanted=needed)
    checked = validate_labels(view, resolved.frame)
    problems = sort_problems([*resolved.problems, *checked.problems], resolved.frame.columns)
    if problems:
        raise _refuse(path, problems, checked.bad_rows, resolved.renamed, "nothing was written")
    assert checked.labels is not None  # no problems: every column was there
    labels = checked.labels.drop(columns="_present").reset_index(drop=True)
    written = store.upsert_labels(view, labels, arrival_given=ARRIVED_AT in resolved.frame.columns)
    log.info("%s: wrote %d labels", path, written)
    return ImportResult(
        rows_read=checked.total_rows,
        features_written=0,
        labels_written=written,
        renamed=resolved.renamed,
        ignored=resolved.ignored,
    )
