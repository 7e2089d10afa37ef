"""The worker's hand-over to its shadow scorer: frames on the pipe, and the bound that
sheds shadow work (never answers) when the child falls behind. The child itself, a real
process scoring and logging beside a real `bentoml serve`, is tested in
`integration/test_rollout.py`."""

from __future__ import annotations

import io
import pickle
import time

from serving.shadow import _HEADER, ShadowScorer, ShadowWork, _frames


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


class Recording(ShadowScorer):
    """The sender's frames as they would go over the pipe (the child is the integration
    tests' business): how many records each carries."""

    def __init__(self, linger: float) -> None:
        self.frames: list[list[str]] = []
        super().__init__(linger=linger)

    def _send(self, work: list[ShadowWork]) -> None:
        self.frames.append([i for w in work for i in w.ids])
        with self._lock:
            self.pending -= sum(len(w.values) for w in work)


def test_requests_within_the_linger_go_over_in_one_frame_per_version() -> None:
    scorer = Recording(linger=5.0)  # far longer than the test: only closing sends
    try:
        for i, version in enumerate("33443"):  # as a worker answers them
            scorer.submit(version, "models:/v", [{"x": i}], [f"r{i}"], None)
            time.sleep(0.01)
    finally:  # closing hands over what waits at once
        scorer.close(timeout=5)
    assert scorer.frames == [["r0", "r1", "r4"], ["r2", "r3"]]
    assert scorer.pending == 0


def test_the_linger_ends_counted_from_the_first_record_not_the_last() -> None:
    scorer = Recording(linger=0.1)
    try:
        deadline = time.monotonic() + 0.6
        i = 0
        while time.monotonic() < deadline:  # steady traffic, a record every 10 ms
            scorer.submit("3", "models:/v", [{"x": i}], [f"r{i}"], None)
            i += 1
            time.sleep(0.01)
        sent_while_busy = len(scorer.frames)
        alone = time.monotonic() + 5  # a last record with nothing after it still goes
        scorer.submit("3", "models:/v", [{"x": i}], ["last"], None)
        while scorer.pending and time.monotonic() < alone:
            time.sleep(0.01)
        assert scorer.pending == 0 and scorer.frames[-1][-1] == "last"
    finally:
        scorer.close(timeout=5)
    assert sent_while_busy >= 3  # 0.6 s of traffic in frames of at most 0.1 s
    assert [r for frame in scorer.frames for r in frame] == [*(f"r{n}" for n in range(i)), "last"]


def test_without_a_linger_each_request_can_go_alone() -> None:
    scorer = Recording(linger=0.0)
    try:
        for i in range(3):
            scorer.submit("3", "models:/v", [{"x": i}], [f"r{i}"], None)
            deadline = time.monotonic() + 5
            while scorer.pending and time.monotonic() < deadline:  # sent before the next
                time.sleep(0.005)
    finally:
        scorer.close(timeout=5)
    assert scorer.frames == [["r0"], ["r1"], ["r2"]]
