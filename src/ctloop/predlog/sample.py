"""The log's bounded samples: which rows a read or a summary past its bound keeps.

A busy view logs millions of rows a day, more than a monitor check can read, so a window
past `drift.max_rows_read` (or `max_rows_summarized`) is read as a sample. The sample is
made of whole blocks of `BLOCK_IDS` consecutive row ids, a block kept when a hash of its
number falls below the fraction: Fibonacci hashing (the number times 2^31 over the golden
ratio, modulo 2^31) spreads the kept blocks evenly over the window's time, plain integer
arithmetic in every dialect, the same rows on every read, and a smaller fraction keeps a
subset of a larger one's (rows read at one fraction can be cut down to a smaller one
with `in_sample`, without a second read).

Why blocks, not rows picked one by one: a typed log row is about 400 bytes, forty to a
page, so a one-in-a-hundred pick of single rows still touches every page and the
database reads the whole window, from disk once it is past the buffer pool (13-20 s per
pass over ten million rows here). A read names the kept blocks' id ranges
(`block_ranges`, over the ids the window's count saw: `Window`), so the database reads
about `fraction` of the window's pages along the primary key. Consecutive ids are
requests answered together and may be more alike than rows picked apart; blocks are
kept small (a page or two), so a 100,000-row read still spans about 1,500 blocks over the
window, and the live metric's bootstrap resamples whole blocks (`core.metrics`), so its
error bar counts that likeness instead of assuming it away.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

log = logging.getLogger(__name__)

SAMPLE_MODULUS = 1 << 31
SAMPLE_MULTIPLIER = 1_327_217_885
BLOCK_IDS = 64  # consecutive row ids per block: one or two pages of typed rows
MAX_RANGES = 200_000  # more runs of kept blocks than this in a span: a filtered scan
SPAN_CHUNK = 1 << 20  # blocks enumerated at a time
RANGES_PER_QUERY = 250  # id ranges a read names in one query


@dataclass(frozen=True)
class Window:
    """What a count of a window saw: its rows (every role and version), per table that
    holds some the lowest and highest row id among them, and the time range counted
    (None: given by hand, taken as it is)."""

    rows: int
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    since: dt.datetime | None = None
    before: dt.datetime | None = None

    def covers(self, since: dt.datetime, before: dt.datetime) -> bool:
        """Whether this count saw [since, before): a read of a wider range must count it
        again, or the rows outside the spans would silently drop out of its sample."""
        if self.since is None or self.before is None:
            return True
        return self.since <= since and before <= self.before

    def __add__(self, other: Window) -> Window:
        """Two adjacent windows as one (rows summed, each table's span the union)."""
        spans = dict(self.spans)
        for table, (first, last) in other.spans.items():
            mine = spans.get(table)
            spans[table] = (first, last) if mine is None else (min(mine[0], first),
                                                                max(mine[1], last))  # fmt: skip
        rows = self.rows + other.rows
        if self.since is None or self.before is None or other.since is None or other.before is None:
            return Window(rows, spans)  # a count given by hand: the sum is one too
        return Window(rows, spans, min(self.since, other.since), max(self.before, other.before))


def bounded_fraction(rows: int, max_rows: int) -> float:
    """The sampled share that brings `rows` down to about `max_rows` (1: no sampling)."""
    return 1.0 if rows <= max_rows else max_rows / rows


def hashed(numbers: Any) -> Any:
    """The sample's hash of block numbers: one expression for SQL and numpy, so the
    database's filter and `in_sample` cannot drift apart."""
    return ((numbers % SAMPLE_MODULUS) * SAMPLE_MULTIPLIER) % SAMPLE_MODULUS


def sample_threshold(fraction: float) -> int:
    """The hash below which a block is in a sample of `fraction` (see `hashed`)."""
    return max(1, round(fraction * SAMPLE_MODULUS))


def in_sample(ids: pd.Series, fraction: float) -> np.ndarray:
    """Which of these log row ids a read at `fraction` keeps: the database's filter, in
    numpy."""
    if fraction >= 1:
        return np.ones(len(ids), dtype=bool)
    return hashed(block_of(ids)) < sample_threshold(fraction)


def block_of(ids: np.ndarray | pd.Series) -> np.ndarray:
    """The sample block of each row id (what the bootstrap resamples)."""
    return np.asarray(ids, dtype=np.int64) // BLOCK_IDS


def block_ranges(first_id: int, last_id: int, fraction: float) -> list[tuple[int, int]] | None:
    """The id ranges (inclusive) of the kept blocks between two row ids, adjacent blocks
    merged; None when there would be more than `MAX_RANGES`. The span is walked
    `SPAN_CHUNK` blocks at a time, so a whole table's span costs no more memory than a
    window's."""
    threshold = sample_threshold(fraction)
    runs: list[list[int]] = []  # [first block, last block] of each run of kept blocks
    last_block = last_id // BLOCK_IDS
    for start in range(first_id // BLOCK_IDS, last_block + 1, SPAN_CHUNK):
        blocks = np.arange(start, min(start + SPAN_CHUNK, last_block + 1), dtype=np.int64)
        kept = blocks[hashed(blocks) < threshold]
        if not kept.size:
            continue
        breaks = np.flatnonzero(np.diff(kept) != 1)
        starts, ends = kept[np.r_[0, breaks + 1]], kept[np.r_[breaks, kept.size - 1]]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            if runs and runs[-1][1] == a - 1:  # a run across the chunks' boundary
                runs[-1][1] = b
            else:
                runs.append([a, b])
        if len(runs) > MAX_RANGES:
            return None
    return [(a * BLOCK_IDS, b * BLOCK_IDS + BLOCK_IDS - 1) for a, b in runs]


class _Block(FunctionElement[int]):
    """A row id's block number: integer division in every dialect (MySQL's `/` is
    decimal)."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(_Block)
def _block_default(element: _Block, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)} / {BLOCK_IDS})"


@compiles(_Block, "mysql")
@compiles(_Block, "mariadb")
def _block_mysql(element: _Block, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)} DIV {BLOCK_IDS})"


def sampled(
    id_column: sa.ColumnElement[Any], fraction: float, span: tuple[int, int] | None
) -> list[list[ColumnElement[bool]]]:
    """The conditions that keep a sample's rows, one list per query: the blocks' hash
    and, where the window's id span is known, up to `RANGES_PER_QUERY` of the kept
    blocks' id ranges, which let the database read those blocks only. A database tests
    an OR of ranges against every row it reads, so thousands in one query would cost
    more than the reading they save."""
    keep = hashed(_Block(id_column)) < sample_threshold(fraction)
    ranges = None if span is None else block_ranges(*span, fraction)
    if ranges is None:
        if span is not None:
            log.warning("ids %d..%d hold more than %d runs of kept blocks: the sample is "
                        "filtered from the whole window", *span, MAX_RANGES)  # fmt: skip
        return [[keep]]
    if not ranges:
        return [[keep, sa.false()]]
    return [
        [keep, sa.or_(*(id_column.between(a, b) for a, b in ranges[at : at + RANGES_PER_QUERY]))]
        for at in range(0, len(ranges), RANGES_PER_QUERY)
    ]
