"""Secrets never leave ctloop in an error, a log line or an HTTP answer.

Users put credentials into URLs (`MLFLOW_TRACKING_URI=http://user:pw@host`,
`FEATURE_STORE_URL=mysql+pymysql://root:pw@db/...`) and libraries copy those URLs into their
exception messages, so redaction must work on any text, not only on URLs we format
ourselves. Everything that prints or returns text that may hold a URL passes it through
`redact()` first; `RedactingFilter` does the same for every log record of a handler.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host (password may hold anything but
# '/' and whitespace, up to the last '@' before the host; an empty one has nothing to hide).
_USERINFO = re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<pw>[^\s/]+)(?=@)")
# ?password=...&token=... and the like in query strings and key=value settings.
_QUERY = re.compile(
    r"(?P<pre>[?&;\s](?:password|passwd|pwd|token|secret|api_key|apikey|access_key)=)"
    r"(?P<pw>[^&\s;]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every URL password and credential-like query value masked."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group("pre") + MASK, text)
    return _QUERY.sub(lambda m: m.group("pre") + MASK, text)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's final message, arguments and exception text, so a
    traceback that quotes a connection URL is safe to ship to a log collector."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record: redaction must never drop a line."""
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
