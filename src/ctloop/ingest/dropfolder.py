"""A drop folder: CSV or Parquet files land over time; each is taken exactly once.

A file is identified by its SHA-256, not its name, so a re-delivered file (same bytes,
any name) is recognised and its rows are not counted twice. Per file, in order:

1. read it (every cell as text, `ctloop.ingest.files.read_table`); a file that cannot be
   read at all is rejected whole, with the reason;
2. check it (`ctloop.ingest.batch`): good rows land, bad rows are refused whole or
   (with the view's `partial_loads`) go to the rejects table by row and column;
3. write its rows, its ledger entry and its rejects in one transaction;
4. move it to `done/` or `rejected/` (a `<name>.reason.txt` next to a rejected file).

A crash between 3 and 4 leaves a file whose checksum is in the ledger: the next run moves
it to `done/` as a duplicate. Files are written by their producer under a name starting
with `.` or ending in `.part`/`.tmp` and renamed when complete; those names are left alone.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Connection

from ctloop.errors import CtloopError
from ctloop.features.frames import Problem
from ctloop.features.spec import FilesSource
from ctloop.features.view import FeatureView
from ctloop.ingest import ledger
from ctloop.ingest.batch import CheckedBatch, check_batch
from ctloop.ingest.files import read_table
from ctloop.store.features import FeatureStore

log = logging.getLogger(__name__)

DONE, REJECTED = "done", "rejected"
TABLE_SUFFIXES = (".csv", ".parquet")
IN_PROGRESS = (".part", ".tmp")


@dataclass
class FolderResult:
    """What one pass over a drop folder did."""

    files: list[dict] = field(default_factory=list)
    taken: int = 0
    rejected: int = 0
    duplicates: int = 0
    late_labels: int = 0


def sha256_of(path: Path) -> str:
    """The file's checksum, read in blocks (a 1M-row file is not held twice in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_of(source: FilesSource, data_dir: Path) -> Path:
    """The source's folder: absolute, or relative to the data folder."""
    path = Path(source.path).expanduser()
    return path if path.is_absolute() else data_dir / path


def pending(folder: Path, pattern: str) -> list[Path]:
    """Complete files waiting in the folder, oldest name first (names sort by date when
    producers put one in them)."""
    if not folder.is_dir():
        raise CtloopError(f"drop folder {folder} does not exist (create it, or fix sources.path)")
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(IN_PROGRESS)
    )


def _move(path: Path, to: str, sha256: str) -> Path:
    """Move the file under `done/` or `rejected/`, never over an earlier file of that name."""
    target_dir = path.parent / to
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{path.stem}.{sha256[:12]}{path.suffix}"
    shutil.move(str(path), target)
    return target


def _read(path: Path) -> tuple[object, str | None]:
    if path.suffix.lower() not in TABLE_SUFFIXES:
        return None, f"not a CSV or Parquet file (suffix '{path.suffix}')"
    try:
        return read_table(path), None
    except CtloopError as exc:
        return None, str(exc)


def take_file(
    store: FeatureStore,
    view: FeatureView,
    source: FilesSource,
    path: Path,
    run_id: str,
    *,
    partial: bool,
) -> dict:
    """Take one file: land what may land, record it in the ledger, move it; returns the
    ledger entry as a dict (plus late labels and duplicates)."""
    sha = sha256_of(path)
    size = path.stat().st_size
    before = ledger.taken_before(store, view.name, source.name, sha)
    if before is not None:
        moved = _move(path, DONE, sha)
        entry = ledger.FileEntry(
            view.name, source.name, path.name, sha, size, 0, 0, 0, "duplicate",
            "same checksum already taken", str(moved), run_id,
        )  # fmt: skip
        with store.begin() as conn:
            ledger.record_file(conn, store, entry)
        log.info("%s: already taken (%d rows), moved to %s", path.name, before, moved)
        return {**entry.__dict__, "duplicates": before, "late_labels": 0}

    raw, unreadable = _read(path)
    if unreadable is not None:
        checked = CheckedBatch(0, None, None, [Problem(None, "(file)", unreadable)], 0, unreadable)
    else:
        checked = check_batch(view, raw, source.contents, partial=partial)  # type: ignore[arg-type]
    refused = checked.refused is not None
    outcome = "rejected" if refused else ("partial" if checked.problems else "taken")
    # where the file will be: recorded with the rows, moved once they are committed
    target_dir = path.parent / (REJECTED if refused else DONE)
    entry = ledger.FileEntry(
        view.name, source.name, path.name, sha, size, checked.rows_read, checked.rows_taken,
        checked.rows_rejected, outcome, checked.refused, str(target_dir), run_id,
    )  # fmt: skip

    def bookkeeping(conn: Connection) -> None:
        ledger.record_file(conn, store, entry)
        ledger.record_rejects(
            conn, store, view=view.name, source=source.name, batch=path.name, run_id=run_id,
            problems=checked.problems,
        )  # fmt: skip

    if refused or (checked.rows_taken == 0 and checked.labels is None):
        with store.begin() as conn:
            bookkeeping(conn)
    else:
        store.ingest(
            view, checked.features, checked.labels,
            arrival_given=checked.arrival_given, also=bookkeeping,
        )  # fmt: skip
    moved = _move(path, REJECTED if refused else DONE, sha)
    if refused:
        moved.with_name(moved.name + ".reason.txt").write_text(f"{checked.refused}\n")
        log.warning("%s: rejected whole: %s", path.name, checked.refused)
    else:
        log.info("%s: %s, %d rows taken, %d rejected", path.name, outcome, checked.rows_taken,
                 checked.rows_rejected)  # fmt: skip
    return {**entry.__dict__, "moved_to": str(moved), "duplicates": 0,
            "late_labels": checked.late_labels}  # fmt: skip


def take_folder(
    store: FeatureStore,
    view: FeatureView,
    source: FilesSource,
    data_dir: Path,
    run_id: str,
) -> FolderResult:
    """Take every complete file waiting in the source's folder, one transaction each."""
    result = FolderResult()
    for path in pending(folder_of(source, data_dir), source.pattern):
        entry = take_file(store, view, source, path, run_id, partial=view.partial_loads)
        result.files.append(entry)
        result.taken += entry["rows_taken"]
        result.rejected += entry["rows_rejected"]
        result.duplicates += entry["duplicates"]
        result.late_labels += entry["late_labels"]
    return result
