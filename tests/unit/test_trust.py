"""Which registered versions serving may load: the rule itself, on version records (the
service's refusal of an alias moved by hand is tested over HTTP in test_serving)."""

from __future__ import annotations

import pytest

from ctloop.registry import GATES, VersionInfo, untrusted_reason

GATED = {f"gate.{g}": "passed" for g in GATES}


@pytest.mark.parametrize(
    ("tags", "trusted"),
    [
        (GATED, True),
        ({**GATED, "gate.model": "failed"}, False),
        ({"gate.data": "passed"}, False),  # registered, never evaluated: the UI pencil case
        ({}, False),
        ({**GATED, "gate.infra": "failed", "forced": "true", "forced_by": "cli:ana"}, True),
        ({"forced": "true"}, False),  # forced by nobody: a hand-written tag, not a record
        # forced before `forced_by` existed: who is in `promoted_by`
        ({"gate.model": "failed", "forced": "true", "promoted_by": "cli"}, True),
    ],
)
def test_a_version_serves_when_gated_or_forced_on_record(tags: dict, trusted: bool) -> None:
    reason = untrusted_reason(VersionInfo("credit_score", "7", "run", tags))
    assert (reason is None) is trusted
    if not trusted:
        assert "version 7 of credit_score has not passed the gates" in reason
