"""The worker's hand-over to its shadow scorer: frames on the pipe, and the bound that
sheds shadow work (never answers) when the child falls behind. The child itself, a real
process scoring and logging beside a real `bentoml serve`, is tested in
`integration/test_rollout.py`."""

from __future__ import annotations

import io
import pickle

from serving.shadow import _HEADER, ShadowScorer, _frames


def framed(obj: object) -> bytes:
    body = pickle.dumps(obj)
    return _HEADER.pack(len(body)) + body


def test_frames_come_back_whole_and_a_cut_last_frame_is_dropped() -> None:
    one = {"version": "3", "values": [{"x": 1.5, "when": None}], "ids": ["a"]}
    two = {"version": "4", "values": [{"x": 2}] * 3, "ids": ["b", "c", "d"]}
    stream = framed(one) + framed(two)
    assert list(_frames(io.BytesIO(stream))) == [one, two]
    cut = stream + framed(one)[:-4]  # a worker killed mid-write
    assert list(_frames(io.BytesIO(cut))) == [one, two]
    assert list(_frames(io.BytesIO(stream + b"\x00\x00"))) == [one, two]  # a cut header


def test_work_past_the_bound_is_shed_and_counted_not_queued() -> None:
    scorer = ShadowScorer(max_pending=4)
    try:
        assert scorer.submit("2", "models:/v/2", [{"x": 1}] * 5, list("abcde"), None) is False
        assert scorer.stats()["skipped"] == 5 and scorer.pending == 0
        assert scorer.stats()["child_pid"] is None  # nothing was handed over: no child
    finally:
        scorer.close(timeout=5)
