"""One percentile-rank function for the ensemble, the review order and meta-selection: scipy's definitions."""

import numpy as np
import pytest
from scipy.stats import percentileofscore, rankdata

from pynomaly_core.detectors.ranks import percentile_ranks


@pytest.mark.parametrize("kind", ["weak", "mean", "rank"])
@pytest.mark.parametrize("tied", [False, True])
def test_percentile_ranks_are_scipys(kind, tied):
    rng = np.random.default_rng(7)
    reference = rng.integers(0, 12, 300).astype(float) if tied else rng.normal(size=300)
    values = np.concatenate([reference[:50], rng.integers(-2, 14, 50).astype(float) if tied else rng.normal(size=50)])
    ours = percentile_ranks(np.sort(reference), values, kind)
    # scipy's "rank" is defined for scores in the reference; outside it, it is "mean".
    expected = percentileofscore(reference, values, kind=kind) / 100
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_rank_kind_of_the_reference_itself_is_rankdata_over_n():
    x = np.random.default_rng(3).integers(0, 20, 500).astype(float)
    assert np.array_equal(percentile_ranks(np.sort(x), x, "rank"), rankdata(x) / len(x))


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be weak, mean or rank, not 'strict'"):
        percentile_ranks(np.arange(3.0), [1.0], "strict")
