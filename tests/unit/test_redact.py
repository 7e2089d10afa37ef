import logging

import pytest

from ctloop.redact import MASK, RedactingFilter, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("http://user:PASSWORD@host:5000/api", "PASSWORD"),
        ("mysql+pymysql://root:s3cr@t!@db:3306/fs", "s3cr@t!"),
        ("postgresql://u:p%40ss@h:5432/d is down", "p%40ss"),
        ("https://host/?token=abc123&x=1", "abc123"),
        ("connect failed: password=hunter2 host=h", "hunter2"),
    ],
)
def test_redact_masks_the_secret_and_keeps_the_rest(text: str, secret: str) -> None:
    clean = redact(text)
    assert secret not in clean
    assert MASK in clean
    assert clean.replace(MASK, secret) == text


def test_redact_leaves_text_without_secrets_alone() -> None:
    for text in ["no url here", "mysql+pymysql://root:@127.0.0.1/db", "http://host:5000/x"]:
        assert redact(text) == text


def test_filter_redacts_message_args_and_traceback() -> None:
    args = ("http://u:pw1@h/",)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "url %s", args, None)
    try:
        raise RuntimeError("cannot reach http://u:pw2@h/")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert "pw1" not in record.getMessage()
    assert "pw2" not in (record.exc_text or "")
    assert "RuntimeError" in (record.exc_text or "")
