"""A prediction-log row's JSON fields (`features`, `probabilities`) as the table stores them.

The service hands the writer rows whose JSON fields are still Python objects; the store
encodes them only where its insert path needs text (MariaDB's JSON_TABLE path embeds the
objects in its batch document instead). Both the writer's spill files and the store use
the encoder here, so a value is written as the same text whichever way it travels.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

JSON_FIELDS = ("features", "probabilities")
# the features-JSON key naming the features serving took from the store (online views)
FROM_STORE = "_from_store"

_json_fallback = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def encode_json(value: Any) -> str:
    """Compact UTF-8 JSON text. orjson, not the json module: encoding was a third of the
    writer's CPU per row with json (20 us of a 17-feature record, 2 us with orjson), and
    the writer shares its process's GIL with the request thread. What orjson refuses (an
    integer beyond 64 bits) the json module still writes: a row is never lost to its
    encoder."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _json_fallback(value)


def encode_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the table stores it: the JSON fields as text (text is kept as given)."""
    out = dict(row)
    for key in JSON_FIELDS:
        value = out.get(key)
        if value is not None and not isinstance(value, str):
            out[key] = encode_json(value)
    return out


def decode_json(text: str) -> Any:
    """Parsed by orjson for speed (a sampled check parses 400k documents); by the standard
    parser when orjson refuses one (NaN, which `json.dumps` writes, in older rows; an
    integer past 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
