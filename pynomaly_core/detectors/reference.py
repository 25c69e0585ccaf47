"""The bounded, seeded sample of training rows that reference-keeping detectors fit on.

KNN, LOF, KDE and OCSVM (PyOD's and scikit-learn's) keep their training rows as the reference a
new row is compared with (a neighbour index, a kernel density's points, an SVM's support vectors
among them): a served row's cost and the saved model grow with them. They are fitted on at most
`REFERENCE_ROWS` rows, drawn with the detector's seed (`reference_rows` in its params overrides
the bound; None keeps every row); the other training rows are then scored against the sample as
new rows, so the training scores still cover every row. The ADBench protocol behind the
knowledge base fits on at most 7,000 rows, so its figures hold unchanged.
"""

from __future__ import annotations

import numpy as np

REFERENCE_ROWS = 10_000


def reference_rows(n_rows: int, limit: int | None, seed) -> np.ndarray | None:
    """The sorted rows to fit on; None when every row is kept."""
    if limit is None or n_rows <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, limit, replace=False))


def fit_on_sample(fit, training_scores, new_scores, X: np.ndarray, limit: int | None, seed) -> np.ndarray:
    """`fit(rows)` on the sample (or every row), then the training scores of every row of X:
    the sample's own (`training_scores(rows)`), the others' as new rows (`new_scores(rows)`)."""
    sample = reference_rows(len(X), limit, seed)
    if sample is None:
        fit(X)
        return training_scores(X)
    fit(X[sample])
    rest = np.ones(len(X), dtype=bool)
    rest[sample] = False
    scores = np.empty(len(X))
    scores[sample] = training_scores(X[sample])
    scores[rest] = new_scores(X[rest])
    return scores
