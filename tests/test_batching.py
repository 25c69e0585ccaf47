"""GroupScorer: concurrent callers' rows go to the detector in one call, and each caller gets its own rows back."""

import threading

import pandas as pd
import pytest

from pynomaly_core.scoring.batching import GroupScorer
from tests.services import wait_until


class SlowDouble:
    """Doubles `x`; the first call holds until released, so that other callers queue behind it."""

    def __init__(self):
        self.calls: list[list[float]] = []
        self.release = threading.Event()

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        self.calls.append(rows["x"].tolist())
        if len(self.calls) == 1:
            self.release.wait(10)
        if (rows["x"] < 0).any():
            raise ValueError(f"negative x in {rows['x'].tolist()}")
        return pd.DataFrame({"score": rows["x"] * 2})


def run_concurrently(scorer: GroupScorer, score: SlowDouble, inputs: list[list[float]]) -> list:
    """The first input is scored alone while the others arrive; returns each caller's result or error."""
    results: list = [None] * len(inputs)

    def call(i):
        try:
            results[i] = scorer(pd.DataFrame({"x": inputs[i]}))["score"].tolist()
        except ValueError as err:
            results[i] = err

    threads = [threading.Thread(target=call, args=(0,))]
    threads[0].start()
    wait_until(lambda: score.calls, 10, "the first call scores", poll=0.01)
    threads += [threading.Thread(target=call, args=(i,)) for i in range(1, len(inputs))]
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: len(scorer._waiting) == len(inputs) - 1, 10, "every later caller waits behind the first", poll=0.01)
    score.release.set()
    for thread in threads:
        thread.join(10)
    return results


def test_callers_waiting_behind_a_call_are_scored_in_one_call():
    score = SlowDouble()
    inputs = [[1.0], [2.0, 3.0], [4.0], [5.0]]
    results = run_concurrently(GroupScorer(score), score, inputs)
    assert results == [[2.0], [4.0, 6.0], [8.0], [10.0]]
    assert len(score.calls) == 2  # the first caller alone, then the three that waited, together
    assert sorted(score.calls[1]) == [2.0, 3.0, 4.0, 5.0]


def test_a_failing_caller_does_not_fail_the_others_in_its_group():
    score = SlowDouble()
    results = run_concurrently(GroupScorer(score), score, [[1.0], [2.0], [-1.0], [3.0]])
    assert results[:2] == [[2.0], [4.0]] and results[3] == [6.0]
    assert isinstance(results[2], ValueError) and "negative x in [-1.0]" in str(results[2])


def test_a_lone_call_is_scored_at_once():
    scorer = GroupScorer(lambda rows: pd.DataFrame({"score": rows["x"] + 1}))
    assert scorer(pd.DataFrame({"x": [1.0, 2.0]}))["score"].tolist() == [2.0, 3.0]
    with pytest.raises(KeyError):
        scorer(pd.DataFrame({"y": [1.0]}))


def test_a_lone_failing_call_is_tried_once():
    calls = []

    def refuse(rows):
        calls.append(len(rows))
        raise ValueError("row 1: x: less_than(0)")

    with pytest.raises(ValueError, match="row 1"):
        GroupScorer(refuse)(pd.DataFrame({"x": [1.0]}))
    assert calls == [1]
