"""Concurrent scoring calls answered by one call to the detector.

A served model gets one row per request, and validating and scoring cost about as much for one
row as for dozens (pandas and scikit-learn check their input once per call, an isolation forest
visits each tree once per call). So while one call scores, the calls that arrive wait, and the first of them to run
next scores all their rows together (group commit). There is no timer: a lone call waits for
nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import pandas as pd


class GroupScorer:
    """Calls `score(rows) -> frame` (one output row per input row, each scored on its own) for the
    rows of every caller waiting, and gives each caller its own rows' part."""

    def __init__(self, score: Callable[[pd.DataFrame], pd.DataFrame]):
        self._score = score
        self._waiting: list[tuple[pd.DataFrame, Future]] = []
        self._waiting_lock = threading.Lock()
        self._scoring_lock = threading.Lock()

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        future: Future = Future()
        with self._waiting_lock:
            self._waiting.append((rows, future))
        with self._scoring_lock:
            if not future.done():  # no other caller took these rows while this one waited
                with self._waiting_lock:
                    group, self._waiting = self._waiting, []
                self._score_group(group)
        return future.result()

    def _score_group(self, group: list[tuple[pd.DataFrame, Future]]) -> None:
        try:
            scored = self._score(pd.concat([rows for rows, _ in group], ignore_index=True))
        except Exception as group_error:
            if len(group) == 1:  # its error is its own: scoring it again would fail again
                group[0][1].set_exception(group_error)
                return
            for rows, future in group:  # scored one by one, each caller gets its own result or error
                try:
                    future.set_result(self._score(rows))
                except Exception as err:
                    future.set_exception(err)
            return
        start = 0
        for rows, future in group:
            future.set_result(scored.iloc[start:start + len(rows)].reset_index(drop=True))
            start += len(rows)
